"""Faults to survive: children that misbehave (issue 3, part B).

Each test runs a real daemon.  The daemon must keep serving, its status
must stay true, and no process may be lost, left behind or left a zombie.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

from clinit.pgroups import members_of as _members_of
from conftest import (FAST, ROOT, all_children, cmdline, gone, ignores, stat_fields, wait_for,
                      zombies_of)


# -- /proc helpers ---------------------------------------------------------------------

def sleepers(d) -> list[int]:
    """The daemon's children running `sleep 1000` (leaders that exec'd, or adopted orphans)."""
    return [pid for pid in d.children() if cmdline(pid) == "sleep 1000"]


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of pid so far (schedstat: nanoseconds on a CPU)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass  # a thread that just ended
    return total / 1e9


# -- children that ignore SIGINT and SIGTERM --------------------------------------------

def test_a_child_ignoring_sigint_and_sigterm_is_ended_by_sigkill(make_daemon):
    d = make_daemon("""
        g:stubborn:1:respawn:trap "" INT TERM; exec sleep 1000
    """, **FAST)
    d.tell("g", "1")
    d.wait_state("g", "1", "DONE")
    [pid] = wait_for(lambda: sleepers(d))
    assert ignores(pid, signal.SIGINT, signal.SIGTERM)
    assert d.tell("g", "2").startswith("level transition started: ")
    d.wait_state("g", "2", "DONE")
    assert gone(pid)
    d.logged("stubborn did not stop: sending SIGTERM", "stubborn did not stop: sending SIGKILL")
    assert not zombies_of(d.proc.pid)


def test_a_second_tell_during_a_stop_keeps_the_stop_escalating(make_daemon):
    # A re-tell while a stubborn child is being stopped sends it another stop;
    # that must not cancel the SIGTERM/SIGKILL still to come.
    d = make_daemon("""
        g:stubborn:1:respawn:trap "" INT TERM; exec sleep 1000
    """, term_delay=0.5, kill_delay=0.2)
    d.tell("g", "1")
    d.wait_state("g", "1", "DONE")
    [pid] = wait_for(lambda: sleepers(d))
    d.tell("g", "2")
    d.wait_state("g", "1", "STOPPING")
    d.tell("g", "3")
    d.wait_state("g", "3", "DONE")
    assert gone(pid)


def test_a_shutdown_ends_children_that_ignore_sigint_and_sigterm(make_daemon):
    d = make_daemon("""
        g:stubborn:1:respawn:trap "" INT TERM; exec sleep 1000
        g:meek:1:respawn:exec sleep 1000
    """, **FAST)
    d.tell("g", "1")
    d.wait_state("g", "1", "DONE")
    pids = wait_for(lambda: len(sleepers(d)) == 2 and sleepers(d))
    assert d.client().shutdown() == "all groups halting"
    assert d.proc.wait(timeout=20) == 0
    assert all(gone(pid) for pid in pids)


# -- children that fork grandchildren and exit ---------------------------------------

def test_a_grandchild_left_by_an_exited_once_leader_is_stopped_with_its_entry(make_daemon):
    d = make_daemon("""
        g:bg:1:once:sleep 1000 & exit 0
    """, **FAST)
    d.tell("g", "1")
    d.wait_state("g", "1", "DONE")
    # the leader (sh) is gone; its background sleep was adopted by the daemon
    [orphan] = wait_for(lambda: sleepers(d))
    wait_for(lambda: len(d.children()) == 1)
    d.tell("g", "2")
    d.wait_state("g", "2", "DONE")
    assert gone(orphan)
    # sh starts background jobs with SIGINT ignored: the ladder went on to SIGTERM
    d.logged("bg did not stop: sending SIGTERM")
    assert not zombies_of(d.proc.pid)


def test_a_grandchild_ignoring_every_stop_signal_but_sigkill_is_killed(make_daemon):
    d = make_daemon("""
        g:bg:1:once:(trap "" INT TERM; exec sleep 1000) & exit 0
    """, **FAST)
    d.tell("g", "1")
    d.wait_state("g", "1", "DONE")
    [orphan] = wait_for(lambda: sleepers(d))
    d.tell("g", "2")
    d.wait_state("g", "2", "DONE")
    assert gone(orphan)
    d.logged("bg did not stop: sending SIGKILL")


def test_a_shutdown_stops_what_exited_leaders_left_behind(make_daemon):
    d = make_daemon("""
        g:bg:1:once:sleep 1000 & exit 0
        g:script:1:wait:sleep 1000 & echo started
        g:t:1:test:sleep 1000 & exit 0
    """, **FAST)
    d.tell("g", "1")
    d.wait_state("g", "1", "DONE")
    orphans = wait_for(lambda: len(sleepers(d)) == 3 and sleepers(d))
    assert d.client().shutdown() == "all groups halting"
    assert d.proc.wait(timeout=20) == 0
    assert all(gone(pid) for pid in orphans)


def test_a_respawn_stops_what_the_last_instance_left_before_it_starts_again(make_daemon, tmp_path):
    runs = tmp_path / "runs"
    d = make_daemon(f"""
        g:leaky:1:respawn:echo run >> {runs}; sleep 1000 & exec sleep 0.05
    """, respawn_limit=100, **FAST)
    d.tell("g", "1")
    d.wait_state("g", "1", "DONE")
    most = 0

    def three_runs():
        nonlocal most
        most = max(most, len(sleepers(d)))
        return runs.exists() and len(runs.read_text().split()) >= 3

    wait_for(three_runs)
    assert most <= 1  # each instance's leftover was gone before the next one started
    d.tell("g", "2")
    d.wait_state("g", "2", "DONE")
    wait_for(lambda: not sleepers(d))


def test_a_respawn_waits_for_the_leftover_holding_a_resource(make_daemon, tmp_path):
    # nginx's case: the master is SIGKILLed, its workers keep the port (here:
    # a lock), so every new master would fail at once, for ever.
    lock, runs = tmp_path / "lock", tmp_path / "runs"
    d = make_daemon(f"""
        g:holder:1:respawn:flock -n {lock} sh -c 'echo ok >> {runs}; exec sleep 1000' || {{ echo fail >> {runs}; exit 1; }}
    """, **FAST)
    d.tell("g", "1")
    wait_for(lambda: runs.exists() and runs.read_text() == "ok\n")
    leader, = d.children()  # the shell; flock and its sleep are below it
    os.kill(leader, signal.SIGKILL)
    wait_for(lambda: runs.read_text().count("ok") == 2)
    assert "fail" not in runs.read_text()
    assert "keeps failing" not in d.log_text()


# -- children that exit at once, or cannot even start their command --------------------

def test_children_that_exit_at_once_are_all_noticed(make_daemon):
    # Each exits before (or while) the daemon registers its pid: the exit must
    # be held for it, or a wait entry would block the walk forever.
    waits = "\n".join(f"g:w{i}:1:wait:exit {i % 3}" for i in range(30))
    onces = "\n".join(f"g:o{i}:1:once:true" for i in range(60))  # a burst, all at once
    d = make_daemon(waits + "\n" + onces + "\n", **FAST)
    d.tell("g", "1")
    d.wait_state("g", "1", "DONE")
    wait_for(lambda: not all_children(d.proc.pid))  # every one reaped: no zombie
    d.tell("g", "1")  # a re-tell re-runs nothing and settles again
    d.wait_state("g", "1", "DONE")


def test_a_missing_command_exits_127_and_the_group_still_settles(make_daemon, tmp_path):
    marker = tmp_path / "walked-on"
    d = make_daemon(f"""
        g:w:1:wait:/nonexistent/clinit-no-such-command
        g:o:1:once:/nonexistent/clinit-no-such-command
        g:after:1:wait:touch {marker}
        g:t:2:test:/nonexistent/clinit-no-such-command
    """, **FAST)
    d.tell("g", "1")
    d.wait_state("g", "1", "DONE")
    assert marker.exists()  # the walk went on past the failed wait entry
    d.tell("g", "2")
    d.wait_state("g", "2", "FAILED")
    assert d.client().request("ping")[0]
    wait_for(lambda: not all_children(d.proc.pid))


# -- children that close stdout and stderr ----------------------------------------------

def test_children_that_close_stdout_and_stderr_are_still_supervised(make_daemon, tmp_path):
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    marker = tmp_path / "walked-on"
    log = tmp_path / "children.log"
    d = make_daemon(f"""
        g:quiet:1:respawn:exec >&- 2>&-; exec sleep 1000
        g:blocker:1:wait:exec >&- 2>&-; read x < {gate}; echo lost; echo lost >&2
        g:after:1:wait:touch {marker}
    """, log=log, **FAST)
    d.tell("g", "1")

    def blocker():
        for pid in d.children():
            if "read x" in cmdline(pid) or cmdline(pid).startswith("/bin/sh -c exec >&-"):
                fds = os.listdir(f"/proc/{pid}/fd")
                if "1" not in fds and "2" not in fds and stat_fields(pid)[0] == b"S":
                    return pid
        return None

    wait_for(blocker)
    # a closed stdout is not an exit: the wait entry still blocks the walk (the
    # status file is written a moment after the tell; the child may run first)
    d.wait_state("g", "1", "STARTING")
    assert not marker.exists()
    [quiet] = wait_for(lambda: sleepers(d))
    fd = os.open(gate, os.O_WRONLY)
    os.write(fd, b"go\n")
    os.close(fd)
    d.wait_state("g", "1", "DONE")
    assert marker.exists()
    assert not gone(quiet)
    d.tell("g", "2")
    d.wait_state("g", "2", "DONE")
    assert gone(quiet)
    assert d.client().request("ping")[0]


# -- a respawn entry that exits at once, forever ------------------------------------------

def test_a_respawn_entry_exiting_at_once_forever_is_throttled_without_burning_cpu(make_daemon,
                                                                                  tmp_path):
    runs = tmp_path / "runs"
    d = make_daemon(f"""
        g:flap:1:respawn:echo x >> {runs}; exit 1
    """, respawn_limit=5, respawn_window=1, respawn_pause=1, **FAST)
    d.tell("g", "1")
    line = "flap respawning too rapidly: sleeping 1 seconds"
    wait_for(lambda: line in d.log_text())
    cpu_before, count = cpu_seconds(d.proc.pid), len(runs.read_text().split())
    assert count == 6  # the first start and 5 quick restarts, then the pause
    # the pause ends when the daemon starts it again
    wait_for(lambda: len(runs.read_text().split()) > count)
    cpu_used = cpu_seconds(d.proc.pid) - cpu_before
    print(f"\ndaemon CPU over a 1 s respawn pause (and the restart after it): {cpu_used * 1000:.1f} ms")
    assert cpu_used < 0.1
    # it goes on flapping and is throttled again, and the daemon serves all along
    wait_for(lambda: d.log_text().count(line) >= 2)
    assert d.client().request("ping")[0]
    d.wait_state("g", "1", "DONE")
    assert len(re.findall(r"respawning too rapidly", d.log_text())) >= 2


# -- the guard against signalling a group that is not ours any more ----------------------------

SUBREAPER_PROBE = r"""
import ctypes, os, subprocess, sys
sys.path.insert(0, sys.argv[1])
from clinit.pgroups import members_of as _members_of
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER, like the daemon
leader = subprocess.Popen(["/bin/sh", "-c", "sleep 1000 & exit 0"], start_new_session=True)
leader.wait()
members = _members_of(leader.pid)
print(len(members), all(ppid == os.getpid() for _, ppid in members))
os.killpg(leader.pid, 9)
for pid, _ in members:
    os.waitpid(pid, 0)
print(_members_of(leader.pid))
"""


def test_a_leftover_group_is_signalled_only_while_it_is_provably_ours():
    # ours: a subreaper (the daemon) adopted the orphan of a leader it reaped
    probe = subprocess.run([sys.executable, "-c", SUBREAPER_PROBE, str(ROOT)],
                           capture_output=True, text=True, timeout=30)
    assert probe.stdout.split("\n")[:2] == ["1 True", "[]"], probe
    # not ours: the orphan went to init (this process is no subreaper)
    leader = subprocess.Popen(["/bin/sh", "-c", "sleep 1000 & exit 0"], start_new_session=True)
    leader.wait()
    try:
        assert _members_of(leader.pid) is None
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
    # not ours: a live process holds the id (it was reused)
    live = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        assert _members_of(live.pid) is None
    finally:
        live.kill()
        live.wait()
    assert _members_of(live.pid) == []  # an empty group: nothing to signal
