"""Shared fixtures: real daemons in temporary folders, and a guard that fails
any test leaving a process behind.

Every test runs with a fresh `CLINIT_TEST_TOKEN` in its environment; every
process it starts (daemons, their children, grandchildren) inherits it.
After the test, any live process still carrying the token is a leftover:
the guard kills it and fails the test.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pykka
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clinit import status as read_status  # noqa: E402
from clinit.control import Client  # noqa: E402
from clinit.pgroups import proc_table  # noqa: E402

TOKEN_VAR = "CLINIT_TEST_TOKEN"


def wait_for(condition, timeout=10.0, interval=0.005, message=None):
    """Poll `condition()` until it returns something true; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message or f"timed out after {timeout} s waiting for {condition}")
        time.sleep(interval)


def pytest_collection_modifyitems(items):
    """The long tests first (marked `slow`): under pytest-xdist each takes a
    worker at once, and the short ones share the others."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


FAST = {"term_delay": 0.2, "kill_delay": 0.2}  # stop ladder settings that keep tests short


# -- /proc readers ------------------------------------------------------------------

def stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name: [0] state, [1] ppid,
    [2] pgrp, [3] session, [19] start time; None if pid does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None


def proc_state(pid: int) -> str | None:
    """The one-letter state of a process (R, S, Z...), None if it does not exist."""
    fields = stat_fields(pid)
    return None if fields is None else fields[0].decode()


def gone(pid: int) -> bool:
    """Not running any more (an orphan may stay a zombie of whoever adopted it)."""
    return proc_state(pid) in (None, "Z")


def alive(pid: int) -> bool:
    return not gone(pid)


def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict (Threads, SigIgn, VmRSS...)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def ignores(pid: int, *signums: int) -> bool:
    """True when pid ignores every one of `signums` (its SigIgn mask)."""
    mask = int(proc_status(pid)["SigIgn"], 16)
    return all(mask & (1 << (sig - 1)) for sig in signums)


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def environ(pid: int) -> dict[str, str]:
    """The environment of pid ({} if it cannot be read: gone, or not ours)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    return dict(item.decode(errors="replace").partition("=")[::2]
                for item in raw.split(b"\0") if item)


def all_children(ppid: int) -> list[tuple[int, bytes]]:
    """(pid, state) of every child of ppid, zombies included."""
    return [(pid, state) for pid, (state, parent, _, _) in proc_table().items() if parent == ppid]


def zombies_of(ppid: int) -> list[int]:
    return [pid for pid, state in all_children(ppid) if state == b"Z"]


def orphan(command: str, running: bool = True) -> int:
    """Start `sh -c command` in a session of its own as a grandchild whose
    parent exits at once: like a survivor of a SIGKILLed daemon, it is not
    our child (re-parented to init).  Its pid, once it runs."""
    code = ("import os; print(os.posix_spawn('/bin/sh', ['/bin/sh', '-c', %r], dict(os.environ), "
            "setsid=True, file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0), "
            "(os.POSIX_SPAWN_DUP2, 1, 2)]))" % command)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    pid = int(out.stdout)
    if running:
        wait_for(lambda: alive(pid))
    return pid


def raw_request(path, data: bytes, timeout: float = 20.0) -> bytes:
    """Send raw bytes on a daemon's socket, then end our side (so a request
    without its newline is seen as incomplete at once); the answer line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(str(path))
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def fifo_writer(fifo) -> int:
    """A blocking write end on `fifo`, once a reader (a child's `cat`, `read`) has it open."""
    def attempt():
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as err:
            if err.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
            return None
    fd = wait_for(attempt, message=f"nobody reads {fifo}")
    os.set_blocking(fd, True)
    return fd


@pytest.fixture
def refs():
    """A list of actor refs that the test made: the live ones are stopped after it."""
    made = []
    yield made
    for ref in made:
        if ref.is_alive():
            ref.stop()


class Recorder(pykka.ThreadingActor):
    """An actor that keeps every message it gets (a stand-in listener)."""

    def __init__(self):
        super().__init__()
        self.got = []

    def on_receive(self, message):
        self.got.append(message)

    def messages(self):
        return list(self.got)


class Inbox:
    """Anything with `tell` can stand in for an actor that receives messages."""

    def __init__(self):
        self.lock = threading.Lock()
        self.got = []

    def tell(self, message):
        with self.lock:
            self.got.append(message)

    def messages(self):
        with self.lock:
            return list(self.got)


def client_workers() -> int:
    """The socket server's worker threads alive in this process."""
    return sum(t.name.startswith("clinit-client") for t in threading.enumerate())


def processes_with_token(token: str) -> list[int]:
    """Live (non-zombie) pids whose environment carries the token, except ours."""
    me = os.getpid()
    return [int(name) for name in os.listdir("/proc")
            if name.isdigit() and int(name) != me
            and environ(int(name)).get(TOKEN_VAR) == token and alive(int(name))]


def zombie_children() -> list[int]:
    """Our children that exited and were never reaped."""
    me = os.getpid()
    return [pid for pid, (state, ppid, _, _) in proc_table().items() if state == b"Z" and ppid == me]


@pytest.fixture(autouse=True)
def no_leftover_processes(monkeypatch):
    token = uuid.uuid4().hex
    monkeypatch.setenv(TOKEN_VAR, token)
    yield token
    try:
        wait_for(lambda: not processes_with_token(token), timeout=5.0)
    except AssertionError:
        left = processes_with_token(token)
        details = []
        for pid in left:
            try:
                details.append(f"{pid}: " + Path(f"/proc/{pid}/cmdline").read_bytes()
                               .replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                pass
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        pytest.fail("test left processes behind:\n  " + "\n  ".join(details))


@pytest.fixture(autouse=True)
def _stop_actors():
    yield
    import pykka

    from clinit import reaper

    for ref in pykka.ActorRegistry.get_all():
        if ref is not reaper._state.ref:
            ref.stop(block=True, timeout=10)


class Daemon:
    """A real `clinit -d` process on a cltab in a temporary folder."""

    def __init__(self, folder: Path, cltab_text: str, extra_settings: dict | None = None):
        self.folder = folder
        self.cltab = folder / "cltab"
        self.socket = folder / "clinit.sock"
        self.clstat = folder / "clstat"
        self.log = folder / "daemon.log"
        self.settings = {"socket": self.socket, "clstat": self.clstat,
                         "term_delay": 0.5, "kill_delay": 0.5, **(extra_settings or {})}
        self.write(cltab_text)
        self.proc: subprocess.Popen | None = None

    def write(self, cltab_text: str) -> None:
        head = "".join(f":::{k}:{v}\n" for k, v in self.settings.items())
        tmp = self.cltab.with_suffix(".new")
        tmp.write_text(head + textwrap.dedent(cltab_text).lstrip("\n"))
        os.replace(tmp, self.cltab)

    def cli(self, *args, check=None, timeout=30) -> subprocess.CompletedProcess:
        """Run `clinit -c CLTAB ARGS...` as a new process."""
        result = subprocess.run([sys.executable, str(ROOT / "bin" / "clinit"), "-c", str(self.cltab),
                                 *map(str, args)], capture_output=True, text=True, timeout=timeout)
        if check is not None:
            assert result.returncode == check, (result.returncode, result.stdout, result.stderr)
        return result

    def start(self, wait=True, args=()) -> "Daemon":
        self._log = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "bin" / "clinit"), "-d", "-c",
                                      str(self.cltab), *map(str, args)], stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if wait:
            wait_for(self.answers, message=f"daemon did not come up: {self.log_text()}")
        return self

    def start_with(self, *args) -> "Daemon":
        """Start with more options for `clinit -d` (logging...)."""
        return self.start(args=args)

    def answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"daemon exited {self.proc.returncode}: {self.log_text()}")
        try:
            return self.client().request("ping")[0]
        except OSError:
            return False

    def client(self) -> Client:
        return Client(cltab=str(self.cltab))

    def tell(self, group, level) -> str:
        return self.client().tell(group, level)

    def status(self, group=None, level=None) -> str:
        return read_status(str(self.clstat), group, level)

    def wait_state(self, group, level, state, timeout=10.0) -> None:
        wait_for(lambda: self.status(group, level) == state, timeout=timeout,
                 message=f"{group} never reached {level} {state}; status: {self.status()!r}")

    def journaled(self, pids) -> None:
        """Wait until the daemon's journal names `pids` (it is written a moment
        after each change: a process started just before a SIGKILL may be missing)."""
        from clinit.journal import loads

        def named():
            try:
                return {r.pid for r in loads((self.folder / "clstat.journal").read_text()).members}
            except (OSError, ValueError):
                return set()
        wait_for(lambda: set(pids) <= named(), message=f"the journal never named {pids}")

    def log_text(self) -> str:
        try:
            return self.log.read_text()
        except OSError:
            return ""

    def logged(self, *texts: str) -> str:
        """The daemon's log once it holds every one of `texts` (a busy log is
        written in batches, up to 20 ms after its records: clinit/logs.py)."""
        return wait_for(lambda: (lambda log: all(t in log for t in texts) and log)(self.log_text()),
                        message=f"the log never said all of {texts}")

    def children(self) -> list[int]:
        """Pids whose parent is the daemon."""
        return children_of(self.proc.pid)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self._log.close()


def children_of(pid: int) -> list[int]:
    """Live (non-zombie) children of `pid`."""
    return [child for child, (state, ppid, _, _) in proc_table().items()
            if ppid == pid and state != b"Z"]


def pids_of(d: Daemon, group: str, tag: str | None = None) -> list[int]:
    """The daemon's children of `group` (and `tag`), by the environment it gave them."""
    out = []
    for pid in d.children():
        env = environ(pid)
        if env.get("CLINIT_GROUP") == group and (tag is None or env.get("CLINIT_TAG") == tag):
            out.append(pid)
    return sorted(out)


def running(d: Daemon, group: str, count: int, tag: str | None = None) -> list[int]:
    """Wait until `group` (and `tag`) has exactly `count` children; return their pids."""
    return wait_for(lambda: (lambda p: p if len(p) == count else None)(pids_of(d, group, tag)),
                    message=f"{group} never had {count} children")


WEB = """
    web:w1:run:respawn:exec sleep 1000
"""


def web_running(make_daemon, **settings) -> Daemon:
    """A daemon on `WEB` whose group `web` runs level `run` (one sleeping child)."""
    d = make_daemon(WEB, **settings)
    assert d.tell("web", "run").startswith("level transition started: ")
    d.wait_state("web", "run", "DONE")
    wait_for(lambda: len(d.children()) == 1)
    return d


@pytest.fixture
def make_daemon(tmp_path):
    """`make_daemon(cltab_text, **settings)` -> a started Daemon; stopped after the test."""
    made = []

    def make(cltab_text: str, start=True, **settings) -> Daemon:
        folder = tmp_path / f"d{len(made)}"
        folder.mkdir()
        d = Daemon(folder, cltab_text, settings)
        made.append(d)
        if start:
            d.start()
        return d

    yield make
    for d in made:
        d.stop()
