"""The OCF resource agent for clinit groups (Pacemaker): `clinit-ocf ACTION`.

One Pacemaker resource is one clinit group on this node's daemon.  The
agent is a client of the daemon and nothing more: it imports the client
side of clinit only (no pykka), and every question it asks the daemon goes
through the few `_daemon_*` functions below.

Parameters come from the environment as `OCF_RESKEY_NAME`:

    group    the clinit group (required, unique)
    level    the level that "started" means (default: run)
    cltab    the table (default: /etc/cltab); it names the socket
    socket   the daemon's socket, when the cltab does not set one
    timeout  seconds start and stop wait for the group to settle
             (default: the operation's own timeout less 2 s, else 60)

Actions and their exit statuses (OCF 1.1):

    start         tell GROUP LEVEL and wait until it settles: 0 at DONE or
                  PASSED (at once when it is settled there already), 1 at
                  FAILED or when it does not settle in time or no daemon
                  answers, 5/6 when the cltab or the parameters are wrong
    stop          halt GROUP and wait until every process is reaped (the
                  daemon escalates to SIGKILL by itself): 0, also when the
                  group was never told or no daemon runs; 1 only when
                  processes survive
    monitor       read-only: 0 settled at LEVEL, 7 halted / never told /
                  at another level / no daemon, 1 FAILED or a respawn
                  entry throttled (or no daemon but processes of the group
                  left running unmanaged)
    validate-all  the parameters, and the cltab parses and names GROUP
    meta-data     the XML description

`clinit-ocf --install [--ocf-root DIR] [--python PATH]` installs the agent
as DIR/resource.d/clinit/clinit (DIR defaults to /usr/lib/ocf): see
clinit/ocfinstall.py.  The meta-data is in clinit/ocfmeta.py, the handling
of processes a killed daemon left behind in clinit/orphans.py.
"""

from __future__ import annotations

import os
import sys
import time

from . import orphans
from .cltab import BadName, CltabError, check_name, load_cltab, read_settings
from .control import Client, NoDaemon, Refused
from .ocfmeta import DEFAULT_CLTAB, DEFAULT_LEVEL, START_DAEMON_SETTING, metadata
from .protocol import ProtocolError

__all__ = ["main", "Params", "validate", "monitor", "start", "stop", "log",
           "OCF_SUCCESS", "OCF_ERR_GENERIC", "OCF_ERR_ARGS", "OCF_ERR_UNIMPLEMENTED", "OCF_ERR_PERM",
           "OCF_ERR_INSTALLED", "OCF_ERR_CONFIGURED", "OCF_NOT_RUNNING"]

# The OCF exit statuses.
OCF_SUCCESS = 0
OCF_ERR_GENERIC = 1
OCF_ERR_ARGS = 2
OCF_ERR_UNIMPLEMENTED = 3
OCF_ERR_PERM = 4
OCF_ERR_INSTALLED = 5
OCF_ERR_CONFIGURED = 6
OCF_NOT_RUNNING = 7

DEFAULT_TIMEOUT = 60.0
MARGIN = 2.0                        # seconds kept from the operation's timeout for the answer
SETTLED = ("DONE", "PASSED")

# ---------------------------------------------------------------- logging (ocf_log)

def log(prio: str, msg: str) -> None:
    """One line on stderr, as ocf_log writes it; Pacemaker puts it in its log."""
    if prio == "DEBUG" and os.environ.get("HA_debug", "0") in ("0", ""):
        return
    tag = f"clinit({os.environ.get('OCF_RESOURCE_INSTANCE', '')})[{os.getpid()}]"
    sys.stderr.write(f"{tag}: {prio}: {msg}\n")
    sys.stderr.flush()


# ---------------------------------------------------------------- parameters

class Params:
    """The resource's parameters, read from OCF_RESKEY_*."""

    def __init__(self, env=None):
        env = os.environ if env is None else env
        self.group = env.get("OCF_RESKEY_group", "")
        self.level = env.get("OCF_RESKEY_level") or DEFAULT_LEVEL
        self.cltab = env.get("OCF_RESKEY_cltab") or DEFAULT_CLTAB
        self.socket = env.get("OCF_RESKEY_socket") or None
        self._timeout = env.get("OCF_RESKEY_timeout") or ""
        self._op_timeout = env.get("OCF_RESKEY_CRM_meta_timeout") or ""  # ms
        self.interval = env.get("OCF_RESKEY_CRM_meta_interval") or "0"

    def check(self) -> str | None:
        """The first problem with the parameters themselves, or None."""
        if not self.group:
            return "parameter 'group' is required: the clinit group this resource is"
        for name, value in (("group", self.group), ("level", self.level)):
            try:
                check_name(name, value)
            except BadName as err:
                return f"parameter {name!r}: {err}"
        if self._timeout:
            try:
                if not float(self._timeout) > 0:
                    raise ValueError
            except ValueError:
                return f"parameter 'timeout' is {self._timeout!r}: give seconds, a number > 0"
        if not os.path.isabs(self.cltab):
            return f"parameter 'cltab' is {self.cltab!r}: give an absolute path"
        return None

    def timeout(self) -> float:
        """Seconds to wait for the group: the parameter, else the operation's timeout less
        a margin, else 60; never more than the operation allows."""
        op = None
        try:
            op = max(float(self._op_timeout) / 1000.0 - MARGIN, 1.0) if self._op_timeout else None
        except ValueError:
            op = None
        try:
            own = float(self._timeout) if self._timeout else None
        except ValueError:
            own = None
        if own is None:
            return op if op is not None else DEFAULT_TIMEOUT
        return min(own, op) if op is not None else own

    def client(self, timeout: float = 10.0) -> Client:
        return Client(cltab=self.cltab, socket=self.socket, timeout=timeout)


# ---------------------------------------------------------------- the daemon calls

def _daemon_group(client: Client, group: str) -> dict | None:
    """The group's status line from the daemon, None if it was never told.

    Asks for every group: the daemon answers an error for one never told."""
    for line in client.group_status():
        if line.get("group") == group:
            return line
    return None


def _daemon_throttled(client: Client, group: str) -> list[str]:
    """Tags of the group's respawn entries paused for restarting too rapidly."""
    now = time.time()
    return [p.get("tag", "?") for p in client.processes(group)
            if p.get("group") == group and p.get("throttled_until") is not None
            and float(p["throttled_until"]) > now]


def _daemon_live_pids(client: Client, group: str) -> list[int]:
    """Pids the daemon still has for the group's processes."""
    return [int(p["pid"]) for p in client.processes(group)
            if p.get("group") == group and p.get("pid")]


def _daemon_tell_wait(client: Client, group: str, level: str, timeout: float) -> dict:
    return client.tell_wait(group, level, timeout=timeout)


def _daemon_halt_wait(client: Client, group: str, timeout: float) -> dict:
    return client.halt(group, wait=True, timeout=timeout)


def _daemon_ping(client: Client) -> bool:
    try:
        return client.request("ping")[0]
    except (NoDaemon, OSError):
        return False


# ---------------------------------------------------------------- starting the daemon

def _start_daemon(p: Params, client: Client, settings: dict, deadline: float,
                  daemon_command: list[str] | None) -> str | None:
    """Start `clinit -d -c CLTAB` in a session of its own; None once it answers, else why not."""
    import subprocess  # here only: the other actions start faster without it

    from .ocfinstall import default_daemon_command

    cmd = list(daemon_command or default_daemon_command()) + ["-d", "-c", p.cltab]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCF_", "HA_", "__OCF"))}
    logfile = settings.get("log")
    try:
        out = open(logfile, "ab") if logfile else subprocess.DEVNULL
    except OSError as err:
        return f"cannot open the cltab's log file {logfile}: {err.strerror}"
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                                start_new_session=True, close_fds=True)
    except OSError as err:
        return f"cannot run {' '.join(cmd)}: {err.strerror}"
    finally:
        if logfile and out is not subprocess.DEVNULL:
            out.close()
    log("INFO", f"no daemon answered: started `{' '.join(cmd)}` (pid {proc.pid}), "
                f"as the cltab's {START_DAEMON_SETTING} allows")
    while time.monotonic() < deadline:
        if _daemon_ping(client):
            return None
        if proc.poll() is not None:
            return (f"the clinit daemon it started (pid {proc.pid}) exited with status "
                    f"{proc.returncode}" + (f": see {logfile}" if logfile else ""))
        time.sleep(0.02)
    return f"the clinit daemon it started (pid {proc.pid}) did not answer in time"


# ---------------------------------------------------------------- actions

def validate(p: Params, full: bool = True) -> int:
    """Parameters, then (full) the cltab: it parses and names the group."""
    problem = p.check()
    if problem:
        log("ERROR", problem)
        return OCF_ERR_CONFIGURED
    if not full:
        return OCF_SUCCESS
    try:
        table = load_cltab(p.cltab)
    except CltabError as err:
        # the cltab is this node's file: a bad one keeps the group off this node only
        log("ERROR", f"the cltab does not load: {err}")
        return OCF_ERR_INSTALLED
    except OSError as err:
        log("ERROR", f"cannot read cltab {p.cltab}: {err.strerror or err}")
        return OCF_ERR_INSTALLED
    entries = table.group(p.group)
    if not entries:
        log("ERROR", f"cltab {p.cltab} has no entry for group {p.group}")
        return OCF_ERR_INSTALLED
    if not table.level(p.group, p.level):
        log("WARNING", f"no entry of group {p.group} in {p.cltab} is in level {p.level}: "
                       f"starting it empties the group")
    if p.socket and table.settings.get("socket") and table.settings["socket"] != p.socket:
        log("WARNING", f"parameter socket={p.socket} is ignored: cltab {p.cltab} sets "
                       f"socket {table.settings['socket']}")
    return OCF_SUCCESS


def monitor(p: Params) -> int:
    problem = p.check()
    if problem:
        log("ERROR", problem)
        return OCF_ERR_CONFIGURED
    client = p.client()
    try:
        line = _daemon_group(client, p.group)
        if line is None:
            log("DEBUG", f"group {p.group} was never told: not running")
            return OCF_NOT_RUNNING
        state, level = line.get("state"), line.get("level")
        if state == "FAILED":
            log("ERROR", f"group {p.group} is FAILED at level {level}")
            return OCF_ERR_GENERIC
        if state in ("CONFIGURED", "HALTING"):
            return OCF_NOT_RUNNING
        if level != p.level:
            log("WARNING", f"group {p.group} is at level {level} ({state}), not {p.level}: "
                           "not running as this resource")
            return OCF_NOT_RUNNING
        throttled = _daemon_throttled(client, p.group)
        if throttled:
            log("ERROR", f"group {p.group}: respawn entry {', '.join(throttled)} restarts too "
                         "rapidly and is paused (throttled)")
            return OCF_ERR_GENERIC
        if state not in SETTLED:
            log("INFO", f"group {p.group} is {state} at level {level}: counted as running")
        return OCF_SUCCESS
    except NoDaemon as err:
        return _monitor_no_daemon(p, client, err)
    except Refused as err:
        log("ERROR", str(err))
        return OCF_ERR_PERM
    except ProtocolError as err:
        log("ERROR", f"the clinit daemon's answer about group {p.group}: {err}")
        return OCF_ERR_GENERIC


def _monitor_no_daemon(p: Params, client: Client, err: Exception) -> int:
    left = orphans.find(client.conf("socket"), p.group)
    if left:
        log("ERROR", f"{err}; processes of group {p.group} are left running unmanaged: "
                     f"{' '.join(map(str, left))} (a stop ends them)")
        return OCF_ERR_GENERIC
    log("DEBUG" if p.interval in ("0", "") else "INFO", f"{err}: group {p.group} not running")
    return OCF_NOT_RUNNING


def start(p: Params, daemon_command: list[str] | None = None) -> int:
    rc = validate(p)
    if rc != OCF_SUCCESS:
        return rc
    wait = p.timeout()
    deadline = time.monotonic() + wait
    client = p.client()
    settings = read_settings(p.cltab)
    try:
        try:
            line = _daemon_group(client, p.group)
        except NoDaemon as err:
            if str(settings.get(START_DAEMON_SETTING, "no")).lower() not in ("yes", "true", "1"):
                log("ERROR", f"{err} (`clinit -d -c {p.cltab}` on this node); or set "
                             f":::{START_DAEMON_SETTING}:yes in {p.cltab} to let the agent "
                             "start it")
                return OCF_ERR_GENERIC
            why = _start_daemon(p, client, settings, deadline, daemon_command)
            if why:
                log("ERROR", f"{err}; {why}")
                return OCF_ERR_GENERIC
            line = _daemon_group(client, p.group)
        if line and line.get("level") == p.level and line.get("state") in SETTLED:
            log("INFO", f"group {p.group} is {line['state']} at level {p.level} already")
            return OCF_SUCCESS
        left = max(deadline - time.monotonic(), 0.5)
        log("INFO", f"telling group {p.group} level {p.level} (waiting up to {left:.0f} s)")
        client.timeout = left + 10.0
        answer = _daemon_tell_wait(client, p.group, p.level, left)
    except NoDaemon as err:
        log("ERROR", str(err))
        return OCF_ERR_GENERIC
    except Refused as err:
        log("ERROR", str(err))
        return OCF_ERR_PERM
    except ProtocolError as err:
        log("ERROR", f"starting group {p.group}: {err}")
        return OCF_ERR_GENERIC
    state = answer.get("state")
    if answer.get("ok") and state in SETTLED:
        log("INFO", f"group {p.group} is {state} at level {p.level}")
        return OCF_SUCCESS
    if answer.get("timed_out"):
        log("ERROR", f"group {p.group} did not settle at level {p.level} in {wait:.0f} s "
                     f"(it is {state}): raise the start timeout or look at its entries")
    else:
        log("ERROR", f"group {p.group} at level {p.level}: {state or 'error'}: "
                     f"{answer.get('answer', '')}")
    return OCF_ERR_GENERIC


def stop(p: Params) -> int:
    problem = p.check()
    if problem:
        log("ERROR", problem)
        return OCF_ERR_CONFIGURED
    wait = p.timeout()
    deadline = time.monotonic() + wait
    client = p.client()
    try:
        line = _daemon_group(client, p.group)
        if line is None or line.get("state") == "CONFIGURED":
            log("INFO", f"group {p.group} is halted already")
            return OCF_SUCCESS
        log("INFO", f"halting group {p.group} (waiting up to {wait:.0f} s)")
        client.timeout = wait + 10.0
        answer = _daemon_halt_wait(client, p.group, wait)
        if answer.get("state") == "CONFIGURED" and not answer.get("timed_out"):
            log("INFO", f"group {p.group} halted")
            return OCF_SUCCESS
        client.timeout = 10.0
        pids = _daemon_live_pids(client, p.group)
        state = answer.get("state")
    except NoDaemon as err:
        settings = read_settings(p.cltab)
        left = orphans.stop(client.conf("socket"), p.group, settings, deadline,
                            lambda msg: log("INFO", msg))
        if left:
            log("ERROR", f"{err}; processes of group {p.group} survive SIGKILL: "
                         f"{' '.join(map(str, left))}")
            return OCF_ERR_GENERIC
        log("INFO", f"{err}: group {p.group} is not running")
        return OCF_SUCCESS
    except Refused as err:
        log("ERROR", str(err))
        return OCF_ERR_PERM
    except ProtocolError as err:
        log("ERROR", f"halting group {p.group}: {err}")
        return OCF_ERR_GENERIC
    if not pids:
        log("WARNING", f"group {p.group} is {state}, but none of its processes is left: stopped")
        return OCF_SUCCESS
    log("ERROR", f"group {p.group} did not halt in {wait:.0f} s (it is {state}); processes "
                 f"still running: {' '.join(map(str, pids))}")
    return OCF_ERR_GENERIC


# ---------------------------------------------------------------- entry point

USAGE = """usage: clinit-ocf {start|stop|monitor|validate-all|meta-data}
       clinit-ocf --install [--ocf-root DIR] [--python PATH]
The OCF resource agent for clinit groups; parameters in OCF_RESKEY_group,
_level, _cltab, _socket, _timeout (see `clinit-ocf meta-data`)."""


def main(argv: list[str] | None = None, daemon_command: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--install":
        return _main_install(argv[1:])
    action = argv[0] if argv else os.environ.get("__OCF_ACTION", "")
    if action == "meta-data":
        sys.stdout.write(metadata())
        return OCF_SUCCESS
    if action in ("-h", "--help", "usage"):
        print(USAGE)
        return OCF_SUCCESS
    p = Params()
    if action == "validate-all":
        return validate(p)
    if action == "monitor" or action == "status":
        return monitor(p)
    if action == "start":
        return start(p, daemon_command)
    if action == "stop":
        return stop(p)
    print(USAGE, file=sys.stderr)
    return OCF_ERR_UNIMPLEMENTED if action else OCF_ERR_ARGS


def _main_install(args: list[str]) -> int:
    opts = {"--ocf-root": "/usr/lib/ocf", "--python": None}
    while args:
        if args[0] in opts and len(args) > 1:
            opts[args[0]] = args[1]
            args = args[2:]
        else:
            print(USAGE, file=sys.stderr)
            return 2
    from .ocfinstall import install

    print(install(opts["--ocf-root"], opts["--python"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
