"""The control socket: a socketserver UNIX listener that turns requests into
messages to the Daemon actor.

Each connection gets a thread (at most MAX_CLIENTS at once; one more is
told the daemon is busy), one request line of at most MAX_REQUEST bytes,
and IDLE_TIMEOUT seconds to send it.  Only root and the daemon's own user
(or members of the configured socket group) are obeyed: the peer's
credentials come from SO_PEERCRED, not from anything the client says.
"""

from __future__ import annotations

import errno
import grp
import logging
import os
import selectors
import socket
import socketserver
import stat
import struct
import threading

from . import protocol

__all__ = ["Server", "prepare_socket", "LiveDaemonError", "MAX_CLIENTS", "IDLE_TIMEOUT"]

log = logging.getLogger("clinit.server")

MAX_CLIENTS = 64  # connections served at once
IDLE_TIMEOUT = 5.0  # seconds a client may take to send its request
ANSWER_TIMEOUT = 30.0  # seconds the daemon actor may take to answer


class LiveDaemonError(RuntimeError):
    """Another daemon answers on the socket."""


def prepare_socket(path: str) -> None:
    """Make the socket's folder (0700 if we create it) and clear a stale socket.

    Refuses to start over a live daemon, and never removes a file that
    is not a socket.
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


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: Server = self.server  # type: ignore[assignment]
        conn: socket.socket = self.request
        conn.settimeout(server.idle_timeout)
        try:
            if not server.allowed(conn):
                self._answer(False, "permission denied: only root and the daemon's user may "
                             "command this daemon")
                return
            data = self._read_line(conn)
            if data is None:
                return  # the client went away or idled out: nothing to answer
            try:
                request = protocol.decode_request(data)
            except protocol.ProtocolError as err:
                self._answer(False, str(err))
                return
            try:
                ok, answer = server.dispatch(request)
            except Exception as err:  # the actor is gone or too slow: say so
                log.error("request %r: %r", request, err)
                ok, answer = False, f"daemon error: {type(err).__name__}: {err}"
            self._answer(ok, answer)
        except OSError:
            pass  # the client went away; nothing changed on its behalf

    def _read_line(self, conn: socket.socket) -> bytes | None:
        chunks, size = [], 0
        while True:
            try:
                chunk = conn.recv(4096)
            except socket.timeout:
                self._answer(False, f"timed out waiting for a request ({IDLE_TIMEOUT:g} s)")
                return None
            if not chunk:
                if chunks:
                    return b"".join(chunks)  # decode_request names the missing newline
                return None
            chunks.append(chunk)
            size += len(chunk)
            if b"\n" in chunk:
                data = b"".join(chunks)
                return data[: data.index(b"\n") + 1]
            if size > protocol.MAX_REQUEST:
                return b"".join(chunks)  # decode_request refuses it by size

    def _answer(self, ok: bool, text: str) -> None:
        try:
            self.request.sendall(protocol.encode_response(ok, text))
        except OSError:
            pass


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The listener.  `dispatch(request) -> (ok, answer)` is given by the daemon."""

    daemon_threads = True
    allow_reuse_address = False
    request_queue_size = 128

    def __init__(self, path: str, dispatch, socket_group: str | None = None,
                 idle_timeout: float = IDLE_TIMEOUT, max_clients: int = MAX_CLIENTS):
        self.path = path
        self.dispatch = dispatch
        self.idle_timeout = idle_timeout
        self._slots = threading.BoundedSemaphore(max_clients)
        self._uid = os.getuid()
        self._gid = grp.getgrnam(socket_group).gr_gid if socket_group else None
        self._wake_r, self._wake_w = os.pipe()
        old = os.umask(0o177)  # the socket is born 0600: no window where others may connect
        try:
            super().__init__(path, _Handler)
        finally:
            os.umask(old)
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
        if self._gid is not None:
            return gid == self._gid or self._gid in _groups_of(pid)
        log.warning("refused a request from uid %d (pid %d)", uid, pid)
        return False

    # -- connection limit ----------------------------------------------

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            try:
                request.settimeout(0.5)
                request.sendall(protocol.encode_response(False, "daemon busy: too many clients"))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    # -- the loop --------------------------------------------------------

    def serve(self) -> None:
        """Serve until `wake()` is called.  Sleeps in select(): no polling."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.fileno(), selectors.EVENT_READ, "listen")
            selector.register(self._wake_r, selectors.EVENT_READ, "wake")
            while True:
                for key, _ in selector.select():
                    if key.data == "wake":
                        return
                    self._handle_request_noblock()

    def wake(self) -> None:
        """Make `serve()` return; safe from any thread or a signal handler."""
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def server_close(self) -> None:
        super().server_close()
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


def _groups_of(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return {int(g) for g in line.split()[1:]}
    except OSError:
        pass
    return set()
