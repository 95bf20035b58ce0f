"""The floor: the least a per-node init daemon has to do, done directly.

    python3 floor.py daemon SOCKET        serve until "shutdown"
    python3 floor.py client SOCKET REQUEST...

Requests (one line in, one line out, then the daemon closes):
    spawn N CMD     spawn N x `/bin/sh -c CMD` (new session, stdin
                    /dev/null); answers once all are spawned
    respawn N CMD   the same, and spawn again whenever one exits
    stop            SIGINT to every child's process group; answers once
                    every child is reaped
    status          "children K"
    pids            the child pids, space separated
    shutdown        stop, answer, exit

Single-threaded: one selector loop, SIGCHLD through a wakeup pipe,
children spawned with os.posix_spawn(setsid=True).
"""

import os
import signal
import socket
import sys


def client(path, request):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(request.encode() + b"\n")
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    s.close()
    answer = buf.decode().strip()
    print(answer)
    return 0 if answer and not answer.startswith("error") else 1


class Floor:
    def __init__(self, path):
        import selectors
        self.path = path
        self.children = {}      # pid -> (cmd, respawn?)
        self.bufs = {}          # connection -> bytes read so far
        self.stoppers = []      # connections waiting for "all reaped"
        self.exiting = False
        self.sel = selectors.DefaultSelector()
        self.READ = selectors.EVENT_READ
        self.devnull = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]
        self.sigdef = (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP,
                       signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD)
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        signal.set_wakeup_fd(w)   # each signal writes its number to the pipe
        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *a: None)
        self.sel.register(r, self.READ, self.on_signal)
        if os.path.exists(path):
            os.unlink(path)
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(path)
        os.chmod(path, 0o600)
        self.lsock.listen(128)
        self.lsock.setblocking(False)
        self.sel.register(self.lsock, self.READ, self.on_accept)

    def run(self):
        while not (self.exiting and not self.children):
            for key, _ in self.sel.select():
                key.data(key.fileobj)
        self.lsock.close()
        os.unlink(self.path)

    def spawn(self, cmd, respawn):
        pid = os.posix_spawn("/bin/sh", ["sh", "-c", cmd], os.environ,
                             file_actions=self.devnull, setsid=True,
                             setsigdef=self.sigdef, setsigmask=())
        self.children[pid] = (cmd, respawn)

    def on_signal(self, fd):
        sigs = b""
        try:
            while chunk := os.read(fd, 512):
                sigs += chunk
        except BlockingIOError:
            pass
        while self.children:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            cmd, respawn = self.children.pop(pid, (None, False))
            if respawn and not self.exiting:
                self.spawn(cmd, True)
        if signal.SIGINT in sigs or signal.SIGTERM in sigs:
            self.shutdown(None)
        if not self.children:
            for conn in self.stoppers:
                self.answer(conn, "stopped")
            self.stoppers = []

    def on_accept(self, lsock):
        try:
            conn, _ = lsock.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        self.bufs[conn] = b""
        self.sel.register(conn, self.READ, self.on_read)

    def on_read(self, conn):
        try:
            chunk = conn.recv(65536)
        except BlockingIOError:
            return
        buf = self.bufs[conn] = self.bufs[conn] + chunk
        if b"\n" in buf or not chunk:
            self.sel.unregister(conn)
            del self.bufs[conn]
            if b"\n" in buf:
                self.handle(conn, buf.split(b"\n", 1)[0].decode())
            else:
                conn.close()

    def answer(self, conn, text):
        conn.setblocking(True)
        try:
            conn.sendall(text.encode() + b"\n")
        except OSError:
            pass
        conn.close()

    def handle(self, conn, line):
        words = line.split(None, 2)
        op = words[0] if words else ""
        if op in ("spawn", "respawn") and len(words) == 3 and words[1].isdigit():
            for _ in range(int(words[1])):
                self.spawn(words[2], op == "respawn")
            self.answer(conn, f"spawned {words[1]}")
        elif op == "stop" and len(words) == 1:
            self.stop(conn)
        elif op == "status" and len(words) == 1:
            self.answer(conn, f"children {len(self.children)}")
        elif op == "pids" and len(words) == 1:
            self.answer(conn, " ".join(map(str, self.children)))
        elif op == "shutdown" and len(words) == 1:
            self.answer(conn, "shutting down")
            self.shutdown(None)
        else:
            self.answer(conn, f"error: bad request {line!r}")

    def stop(self, conn):
        """SIGINT every child's group; conn gets its answer when all reaped."""
        for pid, (cmd, _) in list(self.children.items()):
            self.children[pid] = (cmd, False)
            try:
                os.killpg(pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        if conn is not None:
            if self.children:
                self.stoppers.append(conn)
            else:
                self.answer(conn, "stopped")

    def shutdown(self, conn):
        self.exiting = True
        self.stop(conn)


def main(argv):
    if len(argv) >= 3 and argv[1] == "client":
        return client(argv[2], " ".join(argv[3:]))
    if len(argv) == 3 and argv[1] == "daemon":
        Floor(argv[2]).run()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
