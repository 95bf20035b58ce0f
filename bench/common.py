"""Shared helpers of the benchmark: processes, /proc readings, waiting.

Everything the benchmark starts carries the environment marker
BENCH_TOKEN=<uuid> (see `env()`), so `kill_marked()` can find and kill it
by scanning /proc/*/environ, even processes that left their session.
"""

import os
import signal
import subprocess
import sys
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = uuid.uuid4().hex
MARK = f"BENCH_TOKEN={TOKEN}".encode()
PY = sys.executable
SLEEP_CMD = "exec sleep 100000"  # the workload of every system
WORKER = b"sleep"                # its comm once running

_CLK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A system did not do what a scenario asked of it."""


def env(**extra):
    """Environment for every process the benchmark starts."""
    e = dict(os.environ)
    e["BENCH_TOKEN"] = TOKEN
    pp = e.get("PYTHONPATH")
    e["PYTHONPATH"] = REPO + (os.pathsep + pp if pp else "")
    e.update(extra)
    return e


def wait_until(pred, timeout, what, interval=0.002):
    """Poll pred() until it returns a true value; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def start_daemon(argv, logpath, cwd=REPO):
    """Start a daemon in its own session, output to logpath."""
    with open(logpath, "ab") as log:
        return subprocess.Popen(argv, cwd=cwd, env=env(), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def run(argv, timeout=60, check=True):
    """Run a client command to completion; return its stdout as text."""
    p = subprocess.run(argv, cwd=REPO, env=env(), stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout,
                       start_new_session=True)
    if check and p.returncode != 0:
        raise BenchError(f"{' '.join(argv)} exited {p.returncode}: "
                         f"{(p.stdout + p.stderr).decode(errors='replace').strip()[-500:]}")
    return p.stdout.decode(errors="replace")


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def stop_daemon(proc, graceful=None, timeout=15):
    """Ask politely (graceful callable), then kill the daemon's whole group."""
    if proc is None:
        return
    try:
        if graceful is not None and proc.poll() is None:
            try:
                graceful()
                proc.wait(timeout=timeout)
            except Exception as e:  # noqa: BLE001 - cleanup must go on
                print(f"  note: graceful shutdown failed: {e}", file=sys.stderr)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        kill_marked()


def kill_marked():
    """SIGKILL every process carrying our BENCH_TOKEN; wait until gone."""
    me = os.getpid()
    for _ in range(50):
        pids = [p for p in marked_pids() if p != me]
        if not pids:
            return
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # Our own children (daemons) must be reaped by us.
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
        time.sleep(0.01)


def marked_pids():
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                data = f.read()
        except OSError:
            continue
        if MARK in data.split(b"\0"):
            out.append(int(name))
    return out


# ---------------------------------------------------------------- /proc

def _stat(pid):
    """(comm, state, ppid, starttime) of pid, or None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    lp, rp = data.index(b"("), data.rindex(b")")
    rest = data[rp + 2:].split()
    return data[lp + 1:rp], rest[0], int(rest[1]), int(rest[19])


def process_table():
    """{pid: (comm, state, ppid, starttime)} of every process."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            s = _stat(name)
            if s is not None:
                table[int(name)] = s
    return table


def workers(daemon_pid):
    """{pid: starttime} of running workload processes under daemon_pid.

    A worker is any live (not zombie) descendant of the daemon whose
    command is the workload (`sleep`), i.e. it has exec'd and runs.
    """
    table = process_table()
    kids = {}
    for pid, (_, _, ppid, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = {}, list(kids.get(daemon_pid, ()))
    while todo:
        pid = todo.pop()
        comm, state, _, start = table[pid]
        if comm == WORKER and state != b"Z":
            out[pid] = start
        todo.extend(kids.get(pid, ()))
    return out


def alive(pids):
    """The pids of the list that still exist (zombies count: not reaped)."""
    return [p for p in pids if os.path.exists(f"/proc/{p}")]


def cpu_ns(pid):
    """CPU time of all live threads of pid, in ns (from schedstat)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def cpu_ticks_s(pid):
    """utime+stime of the whole process (dead threads too), in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        rest = f.read().rsplit(b")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / _CLK


def status_fields(pid):
    """VmRSS in KiB and thread count of pid."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k == "VmRSS":
                out["rss_kib"] = int(v.split()[0])
            elif k == "Threads":
                out["threads"] = int(v)
    return out
