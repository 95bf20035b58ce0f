"""The control socket: a socketserver UNIX listener that turns requests into
messages to the Daemon actor.

Limits, so that no client, broken or hostile, can hurt the daemon:

- One request line per connection, at most `protocol.MAX_REQUEST` bytes:
  reading stops there (the rest is never read, so never buffered) and
  the client is told the request is too long.
- `idle_timeout` seconds (setting `idle_timeout`, default IDLE_TIMEOUT)
  from connect to a complete request, in total: a client that sends
  nothing, or half a request, or trickles a byte now and then, is told
  it timed out and is closed.
- `max_clients` connections open at once (setting `max_clients`, default
  MAX_CLIENTS).  When a new one arrives at the limit, the oldest
  connection that has not finished sending its request, if it has had
  EVICT_AFTER seconds to do so, is told the daemon is busy and closed to
  make room: idle connections can never lock out a client that sends its
  request at once.  Otherwise (every open connection has its request in,
  or has only just connected) newcomers wait in the listen backlog
  (REQUEST_QUEUE_SIZE deep) until a slot frees: none is refused.
  Running out of file descriptors (EMFILE) is met the same way; with
  nothing to evict, the listener rests briefly instead of spinning.
- Reading happens in `serve()`'s select loop, so a waiting connection
  costs a file descriptor, not a thread.  A complete request is handed
  to at most WORKERS short-lived threads, which ask the Daemon actor
  and send the answer: the daemon's thread count stays bounded.
- Answers are sent with MSG_NOSIGNAL: a client that went away is an
  EPIPE to ignore, never a SIGPIPE, whatever the process's disposition.

Only root and the daemon's own user (or members of the configured socket
group) are obeyed: the peer's credentials come from SO_PEERCRED, not from
anything the client says.
"""

from __future__ import annotations

import collections
import errno
import grp
import logging
import os
import resource
import selectors
import socket
import socketserver
import stat
import struct
import threading
import time

from . import protocol

__all__ = ["Server", "prepare_socket", "LiveDaemonError", "MAX_CLIENTS", "IDLE_TIMEOUT",
           "EVICT_AFTER", "ANSWER_TIMEOUT", "WORKERS"]

log = logging.getLogger("clinit.server")

MAX_CLIENTS = 64  # connections open at once
IDLE_TIMEOUT = 5.0  # seconds a client may take, in all, to send its request
ANSWER_TIMEOUT = 30.0  # seconds the daemon actor may take to answer
WORKERS = 4  # threads asking the daemon actor and sending answers, at most
REQUEST_QUEUE_SIZE = 1024  # listen backlog (the kernel caps it at net.core.somaxconn)
_FD_RESERVE = 64  # file descriptors kept for everything but clients
EVICT_AFTER = 0.1  # seconds a connection has to send its request before it may be evicted
_ACCEPT_BURST = 64  # connections accepted per wake-up, so reads are not starved
_EMFILE_PAUSE = 0.1  # seconds the listener rests when the process is out of fds

_FLAGS = getattr(socket, "MSG_NOSIGNAL", 0)
_LISTEN, _WAKE = "listen", "wake"
_QUIT, _ROOM = b"q", b"r"  # bytes on the wake pipe: serve() returns; a slot is free


class LiveDaemonError(RuntimeError):
    """Another daemon answers on the socket."""


def prepare_socket(path: str) -> None:
    """Make the socket's folder (0700 if we create it) and clear a stale socket.

    Refuses to start over a live daemon, and never removes a file that
    is not a socket.  A folder that already exists keeps its mode.
    """
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        os.makedirs(folder, mode=0o700, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise LiveDaemonError(f"{path} exists and is not a socket: not touching it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(path)
    except OSError as err:
        if err.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise
        log.info("removing stale socket %s", path)
        os.unlink(path)
        return
    finally:
        probe.close()
    raise LiveDaemonError(f"a clinit daemon is already listening on {path}")


class _Conn:
    """One client connection, from accept to close."""

    __slots__ = ("sock", "fd", "buf", "since", "deadline", "allowed", "reading")

    def __init__(self, sock: socket.socket, since: float, deadline: float, allowed: bool):
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = bytearray()
        self.since = since  # accepted at (monotonic)
        self.deadline = deadline
        self.allowed = allowed
        self.reading = True  # False once its request is in a worker's hands


class Server(socketserver.UnixStreamServer):
    """The listener.  `dispatch(request) -> (ok, answer)` is given by the daemon."""

    allow_reuse_address = False
    # A burst of connects waits in the backlog (connect() blocks) instead
    # of failing; the kernel caps it at net.core.somaxconn.
    request_queue_size = REQUEST_QUEUE_SIZE

    def __init__(self, path: str, dispatch, socket_group: str | None = None,
                 idle_timeout: float = IDLE_TIMEOUT, max_clients: int = MAX_CLIENTS,
                 workers: int = WORKERS):
        self.path = path
        self.dispatch = dispatch
        self.idle_timeout = float(idle_timeout) if float(idle_timeout) > 0 else IDLE_TIMEOUT
        self.max_clients = _fit_fd_limit(max(1, int(max_clients)))
        self.workers = max(1, int(workers))
        self._uid = os.getuid()
        self._gid = grp.getgrnam(socket_group).gr_gid if socket_group else None
        self._conns: dict[int, _Conn] = {}  # fd -> connection, oldest first
        self._ready: collections.deque[tuple[_Conn, dict]] = collections.deque()
        self._lock = threading.Lock()  # guards _conns, _ready, _busy
        self._busy = 0  # worker threads alive
        self._idle = threading.Condition(self._lock)
        self._selector: selectors.BaseSelector | None = None
        self._listen_paused_until = 0.0
        self._next_fd_warning = 0.0
        self._listening = False
        self._room_wanted = False  # the loop waits for a worker to free a slot
        self._quitting = False
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        old = os.umask(0o177)  # the socket is born 0600: no window where others may connect
        try:
            super().__init__(path, None)
        finally:
            os.umask(old)
        self.socket.setblocking(False)
        if self._gid is not None:
            os.chown(path, -1, self._gid)
            os.chmod(path, 0o660)
        self._inode = os.stat(path).st_ino

    # -- who may command us ------------------------------------------

    def allowed(self, conn: socket.socket) -> bool:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", creds)
        if uid in (0, self._uid):
            return True
        if self._gid is not None and (gid == self._gid or self._gid in _groups_of(pid)):
            return True
        log.warning("refused a client of uid %d (pid %d)", uid, pid)
        return False

    # -- the loop --------------------------------------------------------

    def serve(self) -> None:
        """Serve until `wake()` is called.  Sleeps in select() until a client
        sends something, a connection's deadline comes, or we are woken."""
        with selectors.DefaultSelector() as selector:
            self._selector = selector
            self._listening = False
            self._listen(True)
            selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)
            try:
                while True:
                    for key, _ in selector.select(self._next_timeout()):
                        if key.data is _WAKE:
                            _drain(self._wake_r)
                            if self._quitting:
                                return
                        elif key.data is _LISTEN:
                            self._accept()
                        elif self._owns(key.data):  # not closed earlier in this batch
                            self._read(key.data)
                    self._expire()
                    self._resume_listening()
            finally:
                self._selector = None

    def _next_timeout(self) -> float | None:
        now = time.monotonic()
        reading = self._reading()
        deadlines = [c.deadline for c in reading]
        if self._listen_paused_until:
            deadlines.append(self._listen_paused_until)
        elif not self._listening and reading:  # full: the oldest may be evicted then
            deadlines.append(reading[0].since + EVICT_AFTER)
        if not deadlines:
            return None
        return min(max(0.0, min(deadlines) - now), 3600.0)  # epoll takes at most ~24 days

    def _owns(self, conn: _Conn) -> bool:
        with self._lock:
            return conn.reading and self._conns.get(conn.fd) is conn

    def _reading(self) -> list[_Conn]:
        with self._lock:
            return [c for c in self._conns.values() if c.reading]

    def _accept(self) -> None:
        for _ in range(_ACCEPT_BURST):
            with self._lock:
                full = len(self._conns) >= self.max_clients
                victim = self._victim() if full else None
                if full and victim is None:
                    # Every client has its request in, or is still within
                    # EVICT_AFTER of its connect: the newcomer waits in the
                    # backlog until a worker frees a slot (it nudges us) or
                    # the oldest connection has had its time.
                    self._room_wanted = True
            if full and victim is None:
                self._listen(False)
                return
            try:
                sock, _ = self.get_request()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                if err.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._short_of_files(err)
                    with self._lock:
                        victim = self._victim()
                    if victim is not None:  # a waiting connection makes room: accept again
                        self._close(victim, False, "daemon busy: too many clients")
                        continue
                    self._pause_listening()
                elif err.errno != errno.ECONNABORTED:
                    log.error("accept: %s", err)
                return
            if victim is not None:
                self._close(victim, False, "daemon busy: too many clients")
            try:
                self._admit(sock)
            except OSError:
                sock.close()

    def _short_of_files(self, err: OSError) -> None:
        now = time.monotonic()
        if now >= self._next_fd_warning:  # once a minute at most: a flood must not flood the log
            self._next_fd_warning = now + 60.0
            log.error("cannot accept a client: %s (the oldest waiting client makes room, "
                      "or the listener rests %g s)", err.strerror, _EMFILE_PAUSE)

    def _pause_listening(self) -> None:
        # The listener stays readable while we cannot accept: without a
        # rest, select() would spin.  Resume at the next deadline.
        self._listen(False)
        self._listen_paused_until = time.monotonic() + _EMFILE_PAUSE

    def _listen(self, on: bool) -> None:
        if on != self._listening:
            if on:
                self._selector.register(self.fileno(), selectors.EVENT_READ, _LISTEN)
            else:
                self._selector.unregister(self.fileno())
            self._listening = on

    def _resume_listening(self) -> None:
        if self._listening or self._listen_paused_until:
            return
        with self._lock:
            room = len(self._conns) < self.max_clients or self._victim() is not None
            if not room:
                self._room_wanted = True
        if room:
            self._listen(True)

    def _victim(self) -> _Conn | None:
        """The connection to close for a newcomer (lock held): the oldest one
        still sending its request, once it has had EVICT_AFTER to send it."""
        oldest = next((c for c in self._conns.values() if c.reading), None)
        if oldest is not None and time.monotonic() - oldest.since >= EVICT_AFTER:
            return oldest
        return None

    def _admit(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        now = time.monotonic()
        conn = _Conn(sock, now, now + self.idle_timeout, self.allowed(sock))
        with self._lock:
            self._conns[conn.fd] = conn
        self._selector.register(conn.fd, selectors.EVENT_READ, conn)
        self._read(conn)  # the request is often there already

    def _read(self, conn: _Conn) -> None:
        room = protocol.MAX_REQUEST + 1 - len(conn.buf)
        try:
            chunk = conn.sock.recv(min(65536, room))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not chunk:  # the client shut its side: take what came as the request
            if conn.buf:
                self._complete(conn, bytes(conn.buf))
            else:
                self._close(conn)
            return
        newline = chunk.find(b"\n")
        if newline >= 0:
            conn.buf += chunk[: newline + 1]
            self._complete(conn, bytes(conn.buf))
        else:
            conn.buf += chunk
            if len(conn.buf) > protocol.MAX_REQUEST:
                self._complete(conn, bytes(conn.buf))  # refused by size, never read further

    def _complete(self, conn: _Conn, data: bytes) -> None:
        conn.buf = bytearray()
        if not conn.allowed:
            self._close(conn, False, "permission denied: only root and the daemon's user "
                        "may command this daemon")
            return
        try:
            request = protocol.decode_request(data)
        except protocol.ProtocolError as err:
            self._close(conn, False, str(err))
            return
        self._selector.unregister(conn.fd)
        with self._lock:
            conn.reading = False
            self._ready.append((conn, request))
            start = self._busy < self.workers
            if start:
                self._busy += 1
        if start:
            try:
                threading.Thread(target=self._work, name="clinit-client", daemon=True).start()
            except RuntimeError as err:  # no thread to be had: the queue waits for a worker
                with self._lock:
                    self._busy -= 1
                    stuck = not self._busy
                if stuck:
                    log.error("cannot start a worker thread: %s", err)
                    self._drop_ready("daemon busy: cannot start a thread")

    def _expire(self) -> None:
        now = time.monotonic()
        if self._listen_paused_until and now >= self._listen_paused_until:
            self._listen_paused_until = 0.0  # _resume_listening takes it from here
        for conn in self._reading():
            if conn.deadline <= now:
                self._close(conn, False,
                            f"timed out waiting for a request ({self.idle_timeout:g} s)")

    def _close(self, conn: _Conn, ok: bool | None = None, text: str = "") -> None:
        """Close a connection the loop owns, answering first if `ok` is given.

        Its fd number may already belong to a newer connection (closed and
        reused in one batch of events): only this connection's entries go.
        """
        with self._lock:
            if self._conns.get(conn.fd) is conn:
                del self._conns[conn.fd]
        if self._selector is not None:
            key = self._selector.get_map().get(conn.fd)
            if key is not None and key.data is conn:
                self._selector.unregister(conn.fd)
        if ok is not None:
            _say(conn.sock, ok, text)
        conn.sock.close()

    def _drop_ready(self, text: str) -> None:
        with self._lock:
            dropped, self._ready = list(self._ready), collections.deque()
            for conn, _ in dropped:
                self._conns.pop(conn.fd, None)
        for conn, _ in dropped:
            _say(conn.sock, False, text)
            conn.sock.close()

    # -- workers -------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._ready:
                    self._busy -= 1
                    self._idle.notify_all()
                    return
                conn, request = self._ready.popleft()
            try:
                ok, answer = self.dispatch(request)
            except Exception as err:  # the actor is gone or too slow: say so
                log.error("request %r: %r", request, err)
                ok, answer = False, f"daemon error: {type(err).__name__}: {err}"
            try:
                conn.sock.settimeout(self.idle_timeout)  # a client that never reads
                conn.sock.sendall(protocol.encode_response(ok, answer), _FLAGS)
            except OSError:
                pass  # the client went away; the request was carried out all the same
            finally:
                with self._lock:
                    self._conns.pop(conn.fd, None)
                    nudge, self._room_wanted = self._room_wanted, False
                conn.sock.close()
                if nudge:
                    _write_wake(self._wake_w, _ROOM)

    # -- the end -------------------------------------------------------------

    def wake(self) -> None:
        """Make `serve()` return; safe from any thread or a signal handler."""
        self._quitting = True
        _write_wake(self._wake_w, _QUIT)

    def server_close(self) -> None:
        super().server_close()
        # Requests in a worker's hands (the shutdown request itself, often)
        # get their answers; the others are closed unanswered.
        with self._lock:
            self._idle.wait_for(lambda: not self._busy, timeout=2.0)
            left = list(self._conns.values())
            self._conns.clear()
            self._ready.clear()
        for conn in left:
            conn.sock.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            if os.stat(self.path).st_ino == self._inode:  # still ours, not a successor's
                os.unlink(self.path)
        except OSError:
            pass


def _write_wake(fd: int, what: bytes) -> None:
    try:
        os.write(fd, what)
    except OSError:
        pass  # the pipe is full, so the loop wakes anyway (or it is closed: we are done)


def _drain(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:
        return b""


def _say(sock: socket.socket, ok: bool, text: str) -> None:
    """Send a short answer without blocking; a client that went away is ignored."""
    try:
        sock.send(protocol.encode_response(ok, text), _FLAGS | socket.MSG_DONTWAIT)
    except OSError:
        pass


def _fit_fd_limit(max_clients: int) -> int:
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):
        return max_clients
    if soft == resource.RLIM_INFINITY or max_clients + _FD_RESERVE <= soft:
        return max_clients
    fitted = max(1, soft - _FD_RESERVE)
    log.warning("max_clients %d lowered to %d to fit the file limit (%d)",
                max_clients, fitted, soft)
    return fitted


def _groups_of(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return {int(g) for g in line.split()[1:]}
    except OSError:
        pass
    return set()
