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
  to a ThreadPoolExecutor of at most WORKERS threads, which ask the
  Daemon actor and send the answer: the daemon's thread count stays
  bounded.  The pool lives while requests are in hand and ends
  POOL_LINGER seconds after the last is answered, so an idle daemon
  keeps no worker thread.  (Ended at once, a burst with lulls made a
  pool at each, and the threads of the last were still ending while the
  next started: more than WORKERS at a time.)
- A request that holds its connection (a `wait`, a `watch`) goes back to
  the select loop once the daemon has taken it: it costs a file
  descriptor and no thread while it waits.  At most `max_held` (setting,
  default MAX_HELD) are held at once; past that, such requests are told
  the daemon is busy.  The daemon hands their lines over through a
  `Reply` that never blocks it: each connection queues at most
  QUEUE_LINES unsent lines; past that, new lines are dropped and counted,
  and the reader is told `{"event": "dropped", "count": n}` once there is
  room.  A held client that goes away is noticed (EOF) and the daemon is
  told (`on_hangup`), so it frees what it kept for it.
- Answers are sent with MSG_NOSIGNAL: a client that went away is an
  EPIPE to ignore, never a SIGPIPE, whatever the process's disposition.

Only root and the daemon's own user (or members of the configured socket
group) are obeyed: the peer's credentials come from SO_PEERCRED, not from
anything the client says.  A refusal names the socket, the daemon's uid
and the refused one.  The peer's uid goes to the daemon with the request
(`peer_uid`, a field no client may send).
"""

from __future__ import annotations

import collections
import errno
import grp
import itertools
import json
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
from concurrent.futures import ThreadPoolExecutor

from . import protocol

__all__ = ["Server", "Reply", "prepare_socket", "LiveDaemonError", "MAX_CLIENTS", "IDLE_TIMEOUT",
           "EVICT_AFTER", "ANSWER_TIMEOUT", "WORKERS", "MAX_HELD", "QUEUE_LINES"]

log = logging.getLogger("clinit.server")

MAX_CLIENTS = 64  # connections open at once, sending a request or having it answered
IDLE_TIMEOUT = 5.0  # seconds a client may take, in all, to send its request
ANSWER_TIMEOUT = 30.0  # seconds the daemon actor may take to answer
WORKERS = 4  # threads asking the daemon actor and sending answers, at most
POOL_LINGER = 0.5  # seconds the worker pool outlives the last request in hand
MAX_HELD = 256  # waiting and watching connections at once
QUEUE_LINES = 1024  # lines a held connection may have unsent; past that, new ones are dropped
REQUEST_QUEUE_SIZE = 1024  # listen backlog (the kernel caps it at net.core.somaxconn)
_FD_RESERVE = 64  # file descriptors kept for everything but clients
EVICT_AFTER = 0.1  # seconds a connection has to send its request before it may be evicted
_ACCEPT_BURST = 64  # connections accepted per wake-up, so reads are not starved
_EMFILE_PAUSE = 0.1  # seconds the listener rests when the process is out of fds
_SEND_CHUNK = 65536  # bytes of queued lines joined into one send

_FLAGS = getattr(socket, "MSG_NOSIGNAL", 0)
_LISTEN, _WAKE = "listen", "wake"
# bytes on the wake pipe: serve() returns; a slot is free; lines or connections to hand over
_QUIT, _ROOM, _POST = b"q", b"r", b"p"
_READING, _WORKING, _HELD = "reading", "working", "held"


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

    __slots__ = ("sock", "fd", "buf", "since", "deadline", "uid", "allowed", "phase", "hold",
                 "token", "out", "dropped", "last", "closed", "writing")

    def __init__(self, sock: socket.socket, since: float, deadline: float, uid: int,
                 allowed: bool):
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = bytearray()
        self.since = since  # accepted at (monotonic)
        self.deadline = deadline
        self.uid = uid  # the peer's, from SO_PEERCRED
        self.allowed = allowed
        self.phase = _READING  # then _WORKING (a worker has it), maybe _HELD (the loop again)
        self.hold = False  # a wait or watch: counted in Server._holding until closed
        self.token = 0
        self.out: collections.deque[bytes] = collections.deque()  # lines not yet sent (held)
        self.dropped = 0  # lines dropped since the last "dropped" notice
        self.last = False  # the final line is queued: close once it is sent
        self.closed = False
        self.writing = False  # registered for EVENT_WRITE


class Reply:
    """How the daemon answers a waiting request, or feeds a watch, later.

    Callable from any thread, never blocks: `reply(line, last=False)`
    queues `line` (a dict, an `(ok, text)` pair, or encoded bytes) for the
    listener's loop to send.  Past QUEUE_LINES unsent lines, new ones are
    dropped and counted, and the reader then gets `{"event": "dropped",
    "count": n}`; a `last` line is never dropped, and the connection
    closes once it is sent.  Returns False when the client has gone (or
    its last line was queued): forget the reply then.  `token` names the
    connection in `Server.on_hangup(token)`.
    """

    __slots__ = ("_server", "_conn", "token")

    def __init__(self, server: "Server", conn: _Conn):
        self._server = server
        self._conn = conn
        self.token = conn.token

    def __call__(self, line, last: bool = False) -> bool:
        return self._server._post(self._conn, (_encode(line),), last)

    def lines(self, lines: list[bytes]) -> bool:
        """Queue several encoded lines at once: one lock and one wake of the
        listener, where a line at a time would hand it the GIL for each."""
        return self._server._post(self._conn, lines, False)

    def __repr__(self) -> str:
        return f"<Reply {self.token}>"


class Server(socketserver.UnixStreamServer):
    """The listener.

    `dispatch(request, reply)` is given by the daemon: it returns the
    answer (an `(ok, text)` pair or a dict with at least "ok" and
    "answer"), or None for a request that holds its connection (see
    `protocol.holds`): the daemon answers it later through `reply`.
    `on_hangup(token)` is called when a held connection's client goes
    away before its last line: the daemon frees what it kept for it.
    """

    allow_reuse_address = False
    # A burst of connects waits in the backlog (connect() blocks) instead
    # of failing; the kernel caps it at net.core.somaxconn.
    request_queue_size = REQUEST_QUEUE_SIZE

    def __init__(self, path: str, dispatch, socket_group: str | None = None,
                 idle_timeout: float = IDLE_TIMEOUT, max_clients: int = MAX_CLIENTS,
                 workers: int = WORKERS, max_held: int = MAX_HELD,
                 queue_lines: int = QUEUE_LINES, pool_linger: float = POOL_LINGER):
        self.path = path
        self.dispatch = dispatch
        self.on_hangup = None
        self.idle_timeout = float(idle_timeout) if float(idle_timeout) > 0 else IDLE_TIMEOUT
        self.max_clients = _fit_fd_limit(max(1, int(max_clients)))
        self.max_held = _fit_fd_limit(max(1, int(max_held)), self.max_clients, "max_held")
        self.queue_lines = max(1, int(queue_lines))
        self.workers = max(1, int(workers))
        self.pool_linger = max(0.0, float(pool_linger))
        self._uid = os.getuid()
        self._group = socket_group
        self._gid = grp.getgrnam(socket_group).gr_gid if socket_group else None
        self._conns: dict[int, _Conn] = {}  # fd -> connection reading or working, oldest first
        self._held: dict[int, _Conn] = {}  # fd -> connection held for a wait or a watch
        self._holding = 0  # holding requests in hand: working or held
        self._handback: list[_Conn] = []  # held connections workers gave back to the loop
        # held connections with lines to send, in the order lines came for
        # them: a watch's events go out before the answer posted after them
        self._dirty: dict[_Conn, None] = {}
        self._wake_pending = False
        self._lock = threading.Lock()  # guards all of the above, _busy and _pool
        self._busy = 0  # requests in the pool's hands
        self._pool: ThreadPoolExecutor | None = None
        self._pool_ends = 0.0  # when the idle pool ends (0: requests are in hand, or no pool)
        self._idle = threading.Condition(self._lock)
        self._tokens = itertools.count(1)
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

    def peer(self, conn: socket.socket) -> tuple[int, bool]:
        """The peer's uid, and whether it may command us."""
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", creds)
        if uid in (0, self._uid):
            return uid, True
        if self._gid is not None and (gid == self._gid or self._gid in _groups_of(pid)):
            return uid, True
        log.warning("refused a client of uid %d (pid %d)", uid, pid)
        return uid, False

    def allowed(self, conn: socket.socket) -> bool:
        return self.peer(conn)[1]

    def _refusal(self, uid: int) -> str:
        who = f"root and uid {self._uid}" if self._uid else "root"
        if self._group:
            who += f" and members of group {self._group}"
        return (f"permission denied: the clinit daemon on {self.path} (uid {self._uid}) "
                f"refused uid {uid}: only {who} may command it; run clinit as one of them")

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
                    for key, events in selector.select(self._next_timeout()):
                        if key.data is _WAKE:
                            _drain(self._wake_r)
                            if self._quitting:
                                return
                            self._take_posts()
                        elif key.data is _LISTEN:
                            self._accept()
                        elif key.data.closed:
                            continue  # closed earlier in this batch
                        elif key.data.phase is _HELD:
                            self._serve_held(key.data, events)
                        elif self._owns(key.data):
                            self._read(key.data)
                    self._expire()
                    self._resume_listening()
            finally:
                self._selector = None

    def _next_timeout(self) -> float | None:
        now = time.monotonic()
        reading = self._reading()
        deadlines = [c.deadline for c in reading]
        with self._lock:
            if self._pool is not None:  # while busy, look again then
                deadlines.append(self._pool_ends or now + self.pool_linger)
        if self._listen_paused_until:
            deadlines.append(self._listen_paused_until)
        elif not self._listening and reading:  # full: the oldest may be evicted then
            deadlines.append(reading[0].since + EVICT_AFTER)
        if not deadlines:
            return None
        return min(max(0.0, min(deadlines) - now), 3600.0)  # epoll takes at most ~24 days

    def _owns(self, conn: _Conn) -> bool:
        with self._lock:
            return conn.phase is _READING and self._conns.get(conn.fd) is conn

    def _reading(self) -> list[_Conn]:
        with self._lock:
            return [c for c in self._conns.values() if c.phase is _READING]

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
        oldest = next((c for c in self._conns.values() if c.phase is _READING), None)
        if oldest is not None and time.monotonic() - oldest.since >= EVICT_AFTER:
            return oldest
        return None

    def _admit(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        now = time.monotonic()
        uid, allowed = self.peer(sock)
        conn = _Conn(sock, now, now + self.idle_timeout, uid, allowed)
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
            self._close(conn, {"ok": False, "answer": self._refusal(conn.uid), "refused": True,
                               "uid": conn.uid, "owner": self._uid})
            return
        try:
            request = protocol.decode_request(data)
        except protocol.ProtocolError as err:
            self._close(conn, False, str(err))
            return
        request["peer_uid"] = conn.uid  # never from the client: decode_request refuses it
        hold = protocol.holds(request)
        with self._lock:
            full = hold and self._holding >= self.max_held
            if hold and not full:
                self._holding += 1
                conn.hold = True
                conn.token = next(self._tokens)
        if full:
            self._close(conn, False, f"daemon busy: {self.max_held} clients already wait or "
                                     "watch; try again later")
            return
        self._selector.unregister(conn.fd)
        with self._lock:
            conn.phase = _WORKING
            self._busy += 1
            self._pool_ends = 0.0
            if self._pool is None:
                # A pool lives while requests come (until POOL_LINGER
                # past the last): an idle daemon keeps no worker thread.
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="clinit-client")
            pool = self._pool
        try:
            pool.submit(self._work, conn, request)
        except RuntimeError as err:  # no thread to be had
            log.error("cannot start a worker thread: %s", err)
            self._finish_work(conn, "daemon busy: cannot start a thread")

    def _expire(self) -> None:
        now = time.monotonic()
        if self._listen_paused_until and now >= self._listen_paused_until:
            self._listen_paused_until = 0.0  # _resume_listening takes it from here
        with self._lock:
            pool = None
            if self._pool is not None and not self._busy and now >= self._pool_ends:
                pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)  # its threads are idle: they end now
        for conn in self._reading():
            if conn.deadline <= now:
                self._close(conn, False,
                            f"timed out waiting for a request ({self.idle_timeout:g} s)")

    def _close(self, conn: _Conn, ok=None, text: str = "") -> None:
        """Close a connection the loop owns, answering first if `ok` is given
        (a bool with `text`, or a whole answer dict).

        Its fd number may already belong to a newer connection (closed and
        reused in one batch of events): only this connection's entries go.
        """
        with self._lock:
            conn.closed = True
            if self._conns.get(conn.fd) is conn:
                del self._conns[conn.fd]
        if self._selector is not None:
            key = self._selector.get_map().get(conn.fd)
            if key is not None and key.data is conn:
                self._selector.unregister(conn.fd)
        if ok is not None:
            _say(conn.sock, ok if isinstance(ok, dict) else (ok, text))
        conn.sock.close()

    # -- workers -------------------------------------------------------------

    def _work(self, conn: _Conn, request: dict) -> None:
        if conn.closed:
            return
        reply = Reply(self, conn) if conn.hold else None
        try:
            answer = self.dispatch(request, reply)
        except Exception as err:  # the actor is gone or too slow: say so
            log.error("request %r: %r", request, err)
            answer = (False, f"daemon error: {type(err).__name__}: {err}")
        if answer is None and reply is not None:  # the daemon answers later
            with self._lock:
                self._conns.pop(conn.fd, None)
                self._handback.append(conn)
                wake = not self._wake_pending
                self._wake_pending = True
                self._busy_done()
            if wake:
                _write_wake(self._wake_w, _POST)
            return
        if answer is None:
            answer = (False, f"internal error: no answer to {request['cmd']}")
        try:
            conn.sock.settimeout(self.idle_timeout)  # a client that never reads
            conn.sock.sendall(_encode(answer), _FLAGS)
        except OSError:
            pass  # the client went away; the request was carried out all the same
        self._finish_work(conn)

    def _finish_work(self, conn: _Conn, busy_text: str | None = None) -> None:
        """A worker is done with a connection: close it, free its slot."""
        with self._lock:
            conn.closed = True
            self._conns.pop(conn.fd, None)
            if conn.hold:
                conn.hold = False
                self._holding -= 1
            nudge, self._room_wanted = self._room_wanted, False
            self._busy_done()
        if busy_text is not None:
            _say(conn.sock, (False, busy_text))
        conn.sock.close()
        if nudge:
            _write_wake(self._wake_w, _ROOM)

    def _busy_done(self) -> None:
        """One request fewer in hand (lock held); after the last one, the
        pool ends in `pool_linger` seconds unless a request comes (the loop
        looks at least that often while a pool exists: see _next_timeout)."""
        self._busy -= 1
        if not self._busy:
            self._pool_ends = time.monotonic() + self.pool_linger
            self._idle.notify_all()

    # -- held connections: waits and watches -----------------------------------

    def _post(self, conn: _Conn, lines, last: bool) -> bool:
        """Queue lines for a held connection (any thread; see Reply)."""
        with self._lock:
            if conn.closed or conn.last:
                return False
            queued = len(conn.out)
            for line in lines:
                if last:
                    conn.last = True
                elif len(conn.out) >= self.queue_lines:
                    conn.dropped += 1
                    continue
                elif conn.dropped:
                    conn.out.append(_dropped(conn.dropped))
                    conn.dropped = 0
                conn.out.append(line)
            if len(conn.out) == queued:
                return True  # every line dropped: nothing new to send
            self._dirty[conn] = None
            wake = not self._wake_pending
            self._wake_pending = True
        if wake:
            _write_wake(self._wake_w, _POST)
        return True

    def _take_posts(self) -> None:
        with self._lock:
            handback, self._handback = self._handback, []
            dirty, self._dirty = self._dirty, {}
            self._wake_pending = False
        for conn in handback:
            self._hold(conn)
        for conn in dirty:
            if conn.phase is _HELD and not conn.closed:
                self._flush(conn)

    def _hold(self, conn: _Conn) -> None:
        """A worker gave a held connection back: the loop sends what comes
        for it and notices when its client goes away."""
        conn.sock.setblocking(False)
        with self._lock:
            if conn.closed:
                return
            conn.phase = _HELD
            self._held[conn.fd] = conn
        self._selector.register(conn.fd, selectors.EVENT_READ, conn)
        self._flush(conn)

    def _serve_held(self, conn: _Conn, events: int) -> None:
        if events & selectors.EVENT_READ:
            try:
                data = conn.sock.recv(4096)  # nothing is expected: read to notice the end
            except (BlockingIOError, InterruptedError):
                data = b"?"
            except OSError:
                data = b""
            if not data:
                self._drop_held(conn, hung_up=True)
                return
        if events & selectors.EVENT_WRITE:
            self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        """Send what a held connection has queued, as far as it goes without blocking."""
        while True:
            with self._lock:
                if not conn.out and conn.dropped and not conn.last:
                    conn.out.append(_dropped(conn.dropped))
                    conn.dropped = 0
                if not conn.out:
                    break
                parts, size = [], 0
                for line in conn.out:  # one send for many lines: a watch costs few syscalls
                    parts.append(line)
                    size += len(line)
                    if size >= _SEND_CHUNK:
                        break
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            try:
                sent = conn.sock.send(data, _FLAGS | socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._drop_held(conn, hung_up=True)
                return
            with self._lock:  # others only append: the lines sent are still the first
                for _ in parts:
                    conn.out.popleft()
                if sent < len(data):
                    conn.out.appendleft(data[sent:])
                    break
        with self._lock:
            pending, last = bool(conn.out), conn.last
        if not pending and last:
            self._drop_held(conn, hung_up=False)
        elif pending != conn.writing:
            conn.writing = pending
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if pending else 0)
            self._selector.modify(conn.fd, events, conn)

    def _drop_held(self, conn: _Conn, hung_up: bool) -> None:
        with self._lock:
            if conn.closed:
                return
            conn.closed = True
            if self._held.get(conn.fd) is conn:
                del self._held[conn.fd]
            if conn.hold:
                conn.hold = False
                self._holding -= 1
            told = conn.last
        if self._selector is not None:
            key = self._selector.get_map().get(conn.fd)
            if key is not None and key.data is conn:
                self._selector.unregister(conn.fd)
        conn.sock.close()
        if hung_up and not told and self.on_hangup is not None:
            try:
                self.on_hangup(conn.token)
            except Exception as err:  # noqa: BLE001 - the daemon is going away
                log.debug("hangup of %d: %r", conn.token, err)

    def held(self) -> int:
        """Connections held for a wait or a watch (for tests and diagnostics)."""
        with self._lock:
            return len(self._held)

    # -- the end -------------------------------------------------------------

    def wake(self) -> None:
        """Make `serve()` return; safe from any thread or a signal handler."""
        self._quitting = True
        _write_wake(self._wake_w, _QUIT)

    def server_close(self) -> None:
        super().server_close()
        # Requests in a worker's hands (the shutdown request itself, often)
        # get their answers; the others are closed unanswered.  Held
        # connections get what was queued for them, as far as it goes
        # without blocking.
        with self._lock:
            self._idle.wait_for(lambda: not self._busy, timeout=2.0)
            left = list(self._conns.values())
            self._conns.clear()
            held = list(self._held.values()) + self._handback
            self._held.clear()
            self._handback = []
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        for conn in held:
            while conn.out:
                try:
                    sent = conn.sock.send(conn.out[0], _FLAGS | socket.MSG_DONTWAIT)
                except OSError:
                    break
                if sent < len(conn.out[0]):
                    break
                conn.out.popleft()
        for conn in left + held:
            conn.closed = True
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


def _encode(answer) -> bytes:
    if isinstance(answer, bytes):
        return answer
    if isinstance(answer, dict):
        return (json.dumps(answer) + "\n").encode()
    ok, text = answer
    return protocol.encode_response(ok, text)


def _dropped(count: int) -> bytes:
    return protocol.encode_line({"event": "dropped", "time": time.time(), "count": count})


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


def _say(sock: socket.socket, answer) -> None:
    """Send a short answer without blocking; a client that went away is ignored."""
    try:
        sock.send(_encode(answer), _FLAGS | socket.MSG_DONTWAIT)
    except OSError:
        pass


def _fit_fd_limit(wanted: int, others: int = 0, name: str = "max_clients") -> int:
    """`wanted` connections, fewer if the file limit (less `others` and a
    reserve) cannot hold them."""
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):
        return wanted
    if soft == resource.RLIM_INFINITY or wanted + others + _FD_RESERVE <= soft:
        return wanted
    fitted = max(1, soft - others - _FD_RESERVE)
    log.warning("%s %d lowered to %d to fit the file limit (%d)", name, wanted, fitted, soft)
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
