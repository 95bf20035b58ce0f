"""Driver of the floor daemon (bench/floor.py)."""

import os
import socket

from common import PY, SLEEP_CMD, REPO, run, start_daemon, stop_daemon, wait_until

FLOOR = os.path.join(REPO, "bench", "floor.py")


class Floor:
    name = "floor"

    @staticmethod
    def available():
        return None

    def __init__(self, tmpdir, n, respawn=False):
        self.dir, self.n, self.respawn = tmpdir, n, respawn
        self.sock = os.path.join(tmpdir, "floor.sock")
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid

    def client(self, *request):
        return [PY, FLOOR, "client", self.sock, *request]

    def start(self):
        self.proc = start_daemon([PY, FLOOR, "daemon", self.sock],
                                 os.path.join(self.dir, "floor.log"))
        wait_until(lambda: self.proc.poll() is not None or self.wire("status"),
                   30, "floor to answer")
        if self.proc.poll() is not None:
            raise RuntimeError(f"floor daemon exited {self.proc.returncode}")

    def shutdown(self):
        stop_daemon(self.proc, lambda: run(self.client("shutdown")))

    # -- scenario verbs: each runs one client process
    def spawn(self):
        verb = "respawn" if self.respawn else "spawn"
        out = run(self.client(verb, str(self.n), SLEEP_CMD))
        assert out.strip() == f"spawned {self.n}", out

    def stop(self):
        out = run(self.client("stop"))
        assert out.strip() == "stopped", out

    def started(self):
        return True     # the answer comes after the spawns

    def stopped(self):
        return True     # the answer comes after the reaps

    def retell_mark(self):
        return None

    def retell(self):
        run(self.client("status"))   # the floor's "nothing to do"

    def retold(self, mark):
        return True

    def status_argv(self):
        return self.client("status")

    def cli_tell_argv(self):
        return self.client("status")

    def wire(self, request="status"):
        """One request over the socket; the answer, or None."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(self.sock)
                s.sendall(request.encode() + b"\n")
                buf = b""
                while not buf.endswith(b"\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
            return buf.decode().strip() or None
        except OSError:
            return None

    def wire_tell(self):
        return (self.wire("status") or "").startswith("children ")
