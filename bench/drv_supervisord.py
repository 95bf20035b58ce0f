"""Driver of Supervisor (supervisord + supervisorctl, from PyPI).

N programs `/bin/sh -c "exec sleep 100000"`, not autostarted, stopped by
SIGINT to the whole process group, output discarded (clinit inherits its
stdout; supervisord would otherwise write 2N log files).
"""

import importlib.util
import os

from common import PY, SLEEP_CMD, run, start_daemon, stop_daemon, wait_until

PROGRAM = """
[program:{name}]
command=/bin/sh -c "{cmd}"
autostart=false
autorestart={autorestart}
startsecs=0
stopsignal=INT
stopasgroup=true
killasgroup=true
stdout_logfile=NONE
stderr_logfile=NONE
"""


class Supervisord:
    name = "supervisord"

    @staticmethod
    def available():
        if importlib.util.find_spec("supervisor") is None:
            return "supervisor is not installed (pip install 'supervisor>=4')"
        return None

    def __init__(self, tmpdir, n, respawn=False):
        self.dir, self.n, self.respawn = tmpdir, n, respawn
        self.conf = os.path.join(tmpdir, "supervisord.conf")
        self.sock = os.path.join(tmpdir, "supervisor.sock")
        self.proc = None
        with open(self.conf, "w") as f:
            f.write(f"""[supervisord]
nodaemon=true
logfile={tmpdir}/supervisord.log
pidfile={tmpdir}/supervisord.pid
childlogdir={tmpdir}
minfds={max(1024, 4 * n + 64)}

[unix_http_server]
file={self.sock}
chmod=0700

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{self.sock}
""")
            for i in range(1, n + 1):
                f.write(PROGRAM.format(name=f"p{i:04d}", cmd=SLEEP_CMD,
                                       autorestart=str(respawn).lower()))

    @property
    def pid(self):
        return self.proc.pid

    def ctl(self, *args):
        return [PY, "-m", "supervisor.supervisorctl", "-c", self.conf, *args]

    def start(self):
        self.proc = start_daemon([PY, "-m", "supervisor.supervisord", "-c", self.conf],
                                 os.path.join(self.dir, "supervisord.out"))
        wait_until(lambda: self.proc.poll() is not None or self.rpc_state(),
                   30, "supervisord to answer")
        if self.proc.poll() is not None:
            raise RuntimeError(f"supervisord exited {self.proc.returncode}")

    def shutdown(self):
        stop_daemon(self.proc, lambda: run(self.ctl("shutdown")))

    def server(self):
        from supervisor.xmlrpc import SupervisorTransport
        import xmlrpc.client
        return xmlrpc.client.ServerProxy(
            "http://127.0.0.1", transport=SupervisorTransport(None, None, "unix://" + self.sock))

    def rpc_state(self):
        try:
            return self.server().supervisor.getState()["statename"] == "RUNNING"
        except OSError:
            return False

    # -- scenario verbs: each runs one client process
    def spawn(self):
        run(self.ctl("start", "all"))

    def stop(self):
        run(self.ctl("stop", "all"))

    def started(self):
        return True     # `start all` returns once every program is RUNNING

    def stopped(self):
        return True     # `stop all` returns once every program is STOPPED

    def retell_mark(self):
        return None

    def retell(self):
        run(self.ctl("start", "all"))   # all already started: nothing to do

    def retold(self, mark):
        return True

    def status_argv(self):
        return self.ctl("status")

    def cli_tell_argv(self):
        return self.ctl("start", "all")

    def wire_tell(self):
        """`start all` over XML-RPC on a new connection, as supervisorctl does.

        supervisord only lists the programs it had to act on: with all of
        them running the correct answer is an empty list.
        """
        from supervisor.xmlrpc import Faults
        res = self.server().supervisor.startAllProcesses()
        return isinstance(res, list) and all(
            r["status"] in (Faults.SUCCESS, Faults.ALREADY_STARTED) for r in res)
