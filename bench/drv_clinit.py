"""Driver of clinit, the product, run from this checkout (installed or not).

cltab: N entries `bench:pNNNN:run:once|respawn:exec sleep 100000`.
`run` starts them, `stop` (a level no entry uses) stops them. The group is
settled when the status file says `Cluster::Init::Group bench LEVEL DONE`.

`CLINIT_BENCH_FOLLOWERS=K` attaches K `clinit --follow --json` clients to
each daemon (output to a file in its folder), to measure the cost of watch
streams; the daemon logs at INFO to its log file either way.
"""

import json
import os
import socket
import subprocess

from common import PY, REPO, SLEEP_CMD, env, run, start_daemon, stop_daemon, wait_until

GROUP = "bench"


class Clinit:
    name = "clinit"

    @staticmethod
    def available():
        p = subprocess.run([PY, "-c", "import clinit.cli, clinit.daemonactor"], cwd=REPO,
                           env=env(), capture_output=True, text=True)
        if p.returncode != 0:
            return "clinit does not import: " + (p.stderr.strip().splitlines() or ["?"])[-1]
        return None

    def __init__(self, tmpdir, n, respawn=False):
        self.dir, self.n, self.respawn = tmpdir, n, respawn
        self.cltab = os.path.join(tmpdir, "cltab")
        self.sock = os.path.join(tmpdir, "clinit.sock")
        self.clstat = os.path.join(tmpdir, "clstat")
        self.proc = None
        mode = "respawn" if respawn else "once"
        with open(self.cltab, "w") as f:
            f.write(f":::socket:{self.sock}\n:::clstat:{self.clstat}\n")
            for i in range(1, n + 1):
                f.write(f"{GROUP}:p{i:04d}:run:{mode}:{SLEEP_CMD}\n")

    @property
    def pid(self):
        return self.proc.pid

    def cli(self, *args):
        return [PY, "-m", "clinit.cli", "-c", self.cltab, *args]

    def start(self):
        self.proc = start_daemon([PY, "-m", "clinit.cli", "-d", "-c", self.cltab],
                                 os.path.join(self.dir, "clinit.log"))
        wait_until(lambda: self.proc.poll() is not None or self.request({"cmd": "ping"}),
                   30, "clinit to answer on its socket")
        if self.proc.poll() is not None:
            raise RuntimeError(f"clinit daemon exited {self.proc.returncode}")
        self.followers = []
        for i in range(int(os.environ.get("CLINIT_BENCH_FOLLOWERS", "0"))):
            out = os.path.join(self.dir, f"follow{i}.jsonl")
            self.followers.append(start_daemon(self.cli("--follow", "--json"), out))
        # Measure the watches, not the followers' interpreter starts: each
        # counts once it holds its connection (its imports are done by then).
        wait_until(lambda: _connections(self.sock) >= len(self.followers), 30,
                   "the followers to connect")

    def shutdown(self):
        stop_daemon(self.proc, lambda: run(self.cli("-k")))
        for f in getattr(self, "followers", []):
            stop_daemon(f)

    def request(self, obj):
        """One JSON request over the socket; the decoded answer, or None."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(self.sock)
                s.sendall(json.dumps(obj).encode() + b"\n")
                buf = b""
                while not buf.endswith(b"\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
            return json.loads(buf) if buf.strip() else None
        except (OSError, ValueError):
            return None

    def state(self):
        """(level, state) of the group from the status file, or None."""
        try:
            with open(self.clstat) as f:
                for line in f:
                    w = line.split()
                    if len(w) == 4 and w[0] == "Cluster::Init::Group" and w[1] == GROUP:
                        return w[2], w[3]
        except OSError:
            pass
        return None

    def _identity(self):
        try:
            st = os.stat(self.clstat)
            return st.st_ino, st.st_mtime_ns, st.st_size
        except OSError:
            return None

    # -- scenario verbs: each runs one client process
    def spawn(self):
        run(self.cli(GROUP, "run"))

    def stop(self):
        run(self.cli(GROUP, "stop"))

    def started(self):
        return self.state() == ("run", "DONE")

    def stopped(self):
        return self.state() == ("stop", "DONE")

    def retell_mark(self):
        return self._identity()

    def retell(self):
        run(self.cli(GROUP, "run"))

    def retold(self, mark):
        # rewritten (a new file: atomic rename) and settled again
        return self._identity() != mark and self.started()

    def status_argv(self):
        return self.cli("-v")

    def cli_tell_argv(self):
        return self.cli(GROUP, "run")

    def wire_tell(self):
        a = self.request({"cmd": "tell", "group": GROUP, "level": "run"})
        return bool(a) and a.get("ok") is True and a.get("answer", "").startswith("level transition started")


def _connections(path):
    """Connected sockets bound to `path` (/proc/net/unix): the daemon's ends
    of its clients' connections."""
    count = 0
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == path and fields[5] == "03":
                count += 1
    return count
