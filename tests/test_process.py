"""The Process actor (SPEC §3): every row of its table, each mode, stopping, the child.

Actors run in this test process (no daemon).  Every assertion about the
machine goes through `transitions()`, which also shows states that were
only passed through (SETUP, RUNFG, TESTING, ...).
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import shlex
import signal
import sys

import pytest

from clinit import Entry, Process, ProcessState
from clinit.fsm import ANY, Machine
from clinit.process import TABLE, Timings
from clinit.journal import proc_start
from clinit.messages import Adopt, ProcessChanged, Stopped
from clinit.pgroups import proc_table
from conftest import (FAST, Recorder, gone, orphan, proc_state, proc_status, stat_fields,
                      wait_for)

S = ProcessState


def entry(command: str, mode: str = "once", tag: str = "t", group: str = "g",
          levels: str = "1") -> Entry:
    return Entry(group, tag, levels, mode, command, 1)


@pytest.fixture
def run():
    """`run(entry, level=..., listener=..., **timings)` -> a started Process's proxy."""
    refs = []

    def start(e: Entry, level: str = "1", listener=None, **timings):
        ref = Process.start(e, listener=listener, timings={**FAST, **timings}, level=level)
        refs.append(ref)
        return ref.proxy()

    yield start
    for ref in refs:
        ref.stop()


def settle(p, state):
    wait_for(lambda: p.state().get() is state,
             message=f"never reached {state}: {p.transitions().get()}")


def read_when_written(path):
    """The text of a file a child writes (and renames into place), once it is there."""
    return wait_for(lambda: path.exists() and path.read_text())


# ---------------------------------------------------------------------------
# Every row of the table.  Each scenario drives a real Process and names the
# rows (state, event, next) it must take; a row whose source state is only
# passed through inside one message (or whose guard cannot hold there) is
# listed in PASSED_THROUGH and checked on the table itself below.

SCENARIOS: dict[str, tuple] = {}


def scenario(*rows):
    def register(fn):
        SCENARIOS[fn.__name__] = (fn, rows)
        return fn
    return register


@scenario((S.CONFIGURED, "start", S.SETUP), (S.SETUP, "wait", S.RUNFG),
          (S.RUNFG, "started", S.RUNNING), (S.RUNNING, "exited", S.DONE))
def a_wait_entry_runs_in_the_foreground_until_it_exits(run, tmp_path):
    p = run(entry("exit 0", "wait"))
    p.up().get()
    settle(p, S.DONE)
    return p.transitions().get()


@scenario((S.SETUP, "once", S.RUNBG), (S.RUNBG, "started", S.DONE), (S.DONE, "exited", S.DONE))
def a_once_entry_runs_in_the_background_and_is_not_restarted(run, tmp_path):
    p = run(entry("exit 0", "once"))
    p.up().get()
    wait_for(lambda: (S.DONE, "exited", S.DONE) in p.transitions().get())
    assert p.state().get() is S.DONE
    assert p.pid().get() is None
    return p.transitions().get()


@scenario((S.SETUP, "test", S.RUNTEST), (S.RUNTEST, "exited", S.TESTING),
          (S.TESTING, "rc_zero", S.PASS), (S.PASS, "start", S.SETUP))
def a_passing_test_entry_ends_in_pass_and_reruns_on_start(run, tmp_path):
    out = tmp_path / "runs"
    p = run(entry(f"echo run >> {out}", "test"))
    p.up().get()
    settle(p, S.PASS)
    p.up().get()
    wait_for(lambda: p.transitions().get().count((S.TESTING, "rc_zero", S.PASS)) == 2)
    assert out.read_text() == "run\nrun\n"
    return p.transitions().get()


@scenario((S.TESTING, "rc_nonzero", S.FAIL), (S.FAIL, "start", S.SETUP))
def a_failing_test_entry_ends_in_fail_and_reruns_on_start(run, tmp_path):
    p = run(entry("exit 3", "test"))
    p.up().get()
    settle(p, S.FAIL)
    p.up().get()
    wait_for(lambda: p.transitions().get().count((S.TESTING, "rc_nonzero", S.FAIL)) == 2)
    return p.transitions().get()


@scenario((S.SETUP, "off", S.CONFIGURED))
def an_off_entry_never_runs(run, tmp_path):
    out = tmp_path / "ran"
    p = run(entry(f"touch {out}", "off"))
    p.up().get()
    assert p.state().get() is S.CONFIGURED
    assert p.pid().get() is None
    assert not out.exists()
    assert p.transitions().get() == [(S.CONFIGURED, "start", S.SETUP),
                                     (S.SETUP, "off", S.CONFIGURED)]
    return p.transitions().get()


@scenario((S.SETUP, "stop", S.CONFIGURED))
def an_entry_stuck_in_setup_by_an_unknown_mode_can_be_stopped(run, tmp_path):
    # cltab refuses unknown modes; an Entry built by hand can carry one,
    # and the process then waits in SETUP, where a stop still works.
    p = run(entry("true", "bogus"))
    p.up().get()
    assert p.state().get() is S.SETUP
    p.down().get()
    assert p.state().get() is S.CONFIGURED
    return p.transitions().get()


@scenario((S.SETUP, "respawn", S.RUNBG), (S.DONE, "exited", S.PAUSING),
          (S.PAUSING, "continue", S.RUNBG))
def a_respawn_entry_is_restarted_when_it_exits(run, tmp_path):
    p = run(entry("exec sleep 1000", "respawn"))
    p.up().get()
    first = wait_for(lambda: p.pid().get())
    os.kill(first, signal.SIGKILL)
    second = wait_for(lambda: p.pid().get() not in (None, first) and p.pid().get())
    assert p.state().get() is S.DONE
    p.down().get()
    settle(p, S.CONFIGURED)
    assert gone(second)
    return p.transitions().get()


@scenario((S.PAUSING, "too_rapid", S.PAUSING))
def a_respawn_entry_that_exits_at_once_is_throttled(run, tmp_path):
    p = run(entry("exit 0", "respawn"), respawn_limit=0, respawn_pause=60)
    p.up().get()
    settle(p, S.PAUSING)
    assert p.transitions().get()[-1] == (S.PAUSING, "too_rapid", S.PAUSING)
    return p.transitions().get()


@scenario((S.PAUSING, "stop", S.CONFIGURED))
def a_stop_during_a_respawn_pause_ends_it_at_once(run, tmp_path):
    p = run(entry("exit 0", "respawn"), respawn_limit=0, respawn_pause=60)
    p.up().get()
    settle(p, S.PAUSING)
    p.down().get()
    assert p.state().get() is S.CONFIGURED
    return p.transitions().get()


@scenario((S.RUNNING, "stop", S.STOPPING), (S.STOPPING, "exited", S.CONFIGURED))
def a_running_wait_entry_is_stopped(run, tmp_path):
    p = run(entry("exec sleep 1000", "wait"))
    p.up().get()
    assert p.state().get() is S.RUNNING
    p.down().get()
    settle(p, S.CONFIGURED)
    return p.transitions().get()


@scenario((S.RUNTEST, "stop", S.STOPPING))
def a_running_test_entry_is_stopped(run, tmp_path):
    p = run(entry("exec sleep 1000", "test"))
    p.up().get()
    assert p.state().get() is S.RUNTEST
    p.down().get()
    settle(p, S.CONFIGURED)
    return p.transitions().get()


@scenario((S.DONE, "stop", S.STOPPING))
def a_running_once_entry_is_stopped(run, tmp_path):
    p = run(entry("exec sleep 1000", "once"))
    p.up().get()
    p.down().get()
    settle(p, S.CONFIGURED)
    return p.transitions().get()


@scenario((S.DONE, "stop", S.CONFIGURED))
def a_finished_once_entry_stops_at_once(run, tmp_path):
    p = run(entry("exit 0", "once"))
    p.up().get()
    wait_for(lambda: (S.DONE, "exited", S.DONE) in p.transitions().get())
    p.down().get()
    assert p.state().get() is S.CONFIGURED
    return p.transitions().get()


@scenario((S.PASS, "stop", S.CONFIGURED))
def a_passed_test_stops_at_once(run, tmp_path):
    p = run(entry("exit 0", "test"))
    p.up().get()
    settle(p, S.PASS)
    p.down().get()
    assert p.state().get() is S.CONFIGURED
    return p.transitions().get()


@scenario((S.FAIL, "stop", S.CONFIGURED))
def a_failed_test_stops_at_once(run, tmp_path):
    p = run(entry("exit 1", "test"))
    p.up().get()
    settle(p, S.FAIL)
    p.down().get()
    assert p.state().get() is S.CONFIGURED
    return p.transitions().get()


@scenario((S.STOPPING, "term_timeout", S.STOPPING))
def a_process_that_ignores_sigint_gets_the_next_signal(run, tmp_path):
    # ignores SIGINT only: SIGTERM ends it
    ready = tmp_path / "ready"
    code = (f"import signal,time; signal.signal(2,signal.SIG_IGN); "
            f"open({str(ready)!r},'w').close(); time.sleep(1000)")
    p = run(entry(f"exec {shlex.quote(sys.executable)} -c {shlex.quote(code)}", "once"),
            term_delay=0.05, kill_delay=30)
    p.up().get()
    wait_for(ready.exists)
    p.down().get()
    settle(p, S.CONFIGURED)
    assert p.transitions().get().count((S.STOPPING, "term_timeout", S.STOPPING)) == 1
    return p.transitions().get()


def _exec_fails(mode, source):
    def fn(run, tmp_path):
        p = run(entry("true", mode), log=str(tmp_path / "no-such-folder" / "log"))
        p.up().get()
        assert p.state().get() is S.CONFIGURED
        assert p.pid().get() is None
        return p.transitions().get()

    fn.__name__ = f"a_{mode}_entry_whose_exec_fails_goes_back_to_configured"
    scenario((S.SETUP, mode, source), (source, "execfailed", S.CONFIGURED))(fn)


for _mode, _source in (("wait", S.RUNFG), ("once", S.RUNBG), ("test", S.RUNTEST)):
    _exec_fails(_mode, _source)


#: (state, event, next) taken only inside the handling of one message, or
#: behind a guard that cannot hold in that state: not reachable from outside
def _stubborn_command(ready):
    code = ("import signal,time; signal.signal(2,signal.SIG_IGN); signal.signal(15,signal.SIG_IGN); "
            f"open({str(ready)!r},'w').close(); time.sleep(1000)")
    return f"exec {shlex.quote(sys.executable)} -c {shlex.quote(code)}"


@scenario((S.STOPPING, "kill_timeout", S.STOPPING))
def a_process_ignoring_sigint_and_sigterm_is_killed(run, tmp_path):
    p, _ = _kill_a_stubborn_process(run, tmp_path)
    return p.transitions().get()


def _kill_a_stubborn_process(run, tmp_path):
    ready = tmp_path / "ready"
    p = run(entry(_stubborn_command(ready), "once", tag="stubborn"),
            term_delay=0.1, kill_delay=0.1)
    p.up().get()
    pid = p.pid().get()
    wait_for(ready.exists)
    p.down().get()
    assert p.state().get() is S.STOPPING
    settle(p, S.CONFIGURED)
    return p, pid


# -- adoption: processes an earlier daemon left running (not our children) ------

def _adopt(p, pid: int) -> None:
    """Hand `p` the survivor `pid`, as the daemon does after reading its journal."""
    p.actor_ref.tell(Adopt("adopt", pid, os.pidfd_open(pid), proc_start(pid)))


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


@scenario((S.CONFIGURED, "adopt", S.RUNNING), (S.RUNNING, "exited", S.DONE))
def an_adopted_wait_process_runs_until_it_exits(run, tmp_path):
    pid = orphan("exec sleep 1000")
    try:
        p = run(entry("exec sleep 1000", "wait"))
        _adopt(p, pid)
        settle(p, S.RUNNING)
        assert p.pid().get() == pid
        os.kill(pid, signal.SIGTERM)
        settle(p, S.DONE)
        assert p.rc.get() is None  # its status went to init
        return p.transitions().get()
    finally:
        _kill_group(pid)


@scenario((S.CONFIGURED, "adopt", S.DONE), (S.DONE, "stop", S.STOPPING),
          (S.STOPPING, "exited", S.CONFIGURED))
def an_adopted_process_is_stopped_with_the_ladder_group_and_all(run, tmp_path):
    got = tmp_path / "got"
    # the background sleep ignores SIGINT (sh), so only the final SIGKILL of the group ends it
    command = f"trap 'echo INT >> {got}; exit 0' INT; sleep 1000 & wait"
    pid = orphan(command)
    wait_for(lambda: len(_group_members(pid)) == 2)
    p = run(entry(command, "once"))
    _adopt(p, pid)
    settle(p, S.DONE)
    p.down().get()
    settle(p, S.CONFIGURED)
    assert got.read_text() == "INT\n"
    wait_for(lambda: not _group_members(pid))
    return p.transitions().get()


def _group_members(pgid: int) -> list[int]:
    return [pid for pid, (state, _, pgrp, _) in proc_table().items()
            if pgrp == pgid and state != b"Z"]


@scenario((S.CONFIGURED, "adopt", S.DONE), (S.DONE, "exited", S.PAUSING),
          (S.PAUSING, "continue", S.RUNBG))
def an_adopted_respawn_process_that_dies_is_restarted_as_our_child(run, tmp_path):
    pid = orphan("exec sleep 1000")
    p = run(entry("exec sleep 1000", "respawn"))
    _adopt(p, pid)
    settle(p, S.DONE)
    _kill_group(pid)
    wait_for(lambda: p.pid().get() not in (None, pid))
    assert stat_fields(p.pid().get())[1] == str(os.getpid()).encode()
    settle(p, S.DONE)
    return p.transitions().get()


@scenario((S.CONFIGURED, "ran", S.DONE), (S.CONFIGURED, "ran_pass", S.PASS),
          (S.CONFIGURED, "ran_fail", S.FAIL))
def entries_that_ran_under_an_earlier_daemon_come_back_finished(run, tmp_path):
    seen = []
    for mode, event, state in (("once", "ran", S.DONE), ("wait", "ran", S.DONE),
                               ("test", "ran_pass", S.PASS), ("test", "ran_fail", S.FAIL)):
        p = run(entry("exit 0", mode))
        p.actor_ref.tell(Adopt(event, rc=0 if state is S.PASS else 1))
        settle(p, state)
        assert p.pid().get() is None
        seen += p.transitions().get()
    return seen


@scenario((S.CONFIGURED, "ran", S.DONE), (S.DONE, "exited", S.PAUSING))
def a_respawn_entry_whose_process_died_between_two_daemons_is_restarted(run, tmp_path):
    p = run(entry("exec sleep 1000", "respawn"))
    p.actor_ref.tell(Adopt("ran"))
    wait_for(lambda: p.pid().get() is not None)
    settle(p, S.DONE)
    return p.transitions().get()


PASSED_THROUGH = {
    # "started" comes right after exec, in the same message: the exit is a later message
    (S.RUNFG, "exited", S.DONE),
    # RUNFG, RUNBG and TESTING are left in the message that entered them
    (S.RUNFG, "stop", S.STOPPING), (S.RUNFG, "stop", S.CONFIGURED),
    (S.RUNBG, "stop", S.STOPPING), (S.RUNBG, "stop", S.CONFIGURED),
    (S.TESTING, "stop", S.STOPPING), (S.TESTING, "stop", S.CONFIGURED),
    # a test in RUNTEST and a wait in RUNNING always have a live child
    (S.RUNTEST, "stop", S.CONFIGURED), (S.RUNNING, "stop", S.CONFIGURED),
    # PAUSING, PASS and FAIL come after the exit: nothing alive to signal
    (S.PAUSING, "stop", S.STOPPING), (S.PASS, "stop", S.STOPPING), (S.FAIL, "stop", S.STOPPING),
    # a leaderless stop whose leftovers outlive SIGKILL: not our children, or in D state
    (S.STOPPING, "give_up", S.CONFIGURED),
    # leftovers of the last instance are provably ours only in a child subreaper:
    # the daemon's tests (test_faults_children) take these rows end to end
    (S.PAUSING, "leftovers", S.PAUSING), (S.PAUSING, "term_timeout", S.PAUSING),
    (S.PAUSING, "kill_timeout", S.PAUSING), (S.PAUSING, "leftovers_gone", S.PAUSING),
    (S.PAUSING, "give_up", S.PAUSING),
    # an actor fault can strike in any state (test_faults_actors injects some for real)
    *((state, "fault", S.STOPPING) for state in ProcessState),
    *((state, "fault", S.CONFIGURED) for state in ProcessState),
}


def table_rows() -> set:
    rows = set()
    for line in TABLE:
        for src in (ProcessState if line.sources is ANY else line.sources):
            rows.add((src, line.event, line.target))
    return rows


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_each_scenario_takes_its_rows_of_the_process_table(name, run, tmp_path):
    fn, rows = SCENARIOS[name]
    seen = fn(run, tmp_path)
    for r in rows:
        assert r in seen, (r, seen)


def test_every_row_of_the_process_table_is_covered_by_a_scenario_or_passed_through():
    covered = {r for _, rows in SCENARIOS.values() for r in rows}
    assert covered | PASSED_THROUGH == table_rows()
    assert not covered & PASSED_THROUGH


class _Stub:
    """An owner for the bare table: guards answer as told, actions do nothing."""

    def __init__(self, alive):
        self._alive = alive
        self.entry = Entry("g", "t", "1", "once", "true", 1)

    def alive(self):
        return self._alive

    def is_respawn(self):
        return False

    def clearing(self):
        return True

    def __getattr__(self, name):
        return lambda *args: None


@pytest.mark.parametrize("row", sorted(PASSED_THROUGH, key=str), ids=lambda r: "-".join(map(str, r)))
def test_a_row_only_passed_through_still_routes_as_the_table_says(row):
    src, event, target = row
    owner = _Stub(alive=target is S.STOPPING)
    machine = Machine(owner, TABLE, src)
    assert machine.fire(event)
    assert list(machine.log) == [row]


# ---------------------------------------------------------------------------
# Each mode end to end, and the listener


def test_the_listener_hears_every_transition_and_the_acknowledged_stop(run):
    rec = Recorder.start()
    try:
        p = run(entry("exec sleep 1000", "wait"), listener=rec)
        p.up().get()
        p.down("token-1").get()
        settle(p, S.CONFIGURED)
        msgs = wait_for(lambda: (m := rec.proxy().messages().get())
                        and isinstance(m[-1], Stopped) and m)
        urn = msgs[0].urn
        reports = [m for m in msgs if isinstance(m, ProcessChanged)]
        # each report: the states entered since the last one, then where it is
        steps = [state for m in reports for state in (*m.path, m.state)]
        assert steps == [new for _, _, new in p.transitions().get()]
        assert all(m.tag == "t" for m in reports)
        assert msgs[-1] == Stopped(urn, "token-1")
    finally:
        rec.stop()


def test_a_stop_of_a_process_that_runs_nothing_is_acknowledged_at_once(run):
    rec = Recorder.start()
    try:
        p = run(entry("true", "off"), listener=rec)
        p.down(7).get()
        wait_for(lambda: Stopped(p.actor_ref.actor_urn, 7) in rec.proxy().messages().get())
    finally:
        rec.stop()


def test_a_wait_entry_reports_its_pid_while_it_runs(run, tmp_path):
    pidfile = tmp_path / "pid"
    p = run(entry(f"echo $$ > {pidfile}.new; mv {pidfile}.new {pidfile}; exec sleep 1000", "wait"))
    p.up().get()
    pid = int(read_when_written(pidfile))
    assert p.pid().get() == pid
    p.down().get()
    settle(p, S.CONFIGURED)
    assert p.pid().get() is None


def test_an_exit_status_of_a_test_decides_pass_or_fail(run):
    good = run(entry("exit 0", "test", tag="good"))
    bad = run(entry("kill -TERM $$", "test", tag="bad"))  # death by signal is a fail
    good.up().get()
    bad.up().get()
    settle(good, S.PASS)
    settle(bad, S.FAIL)


# ---------------------------------------------------------------------------
# Respawn throttle


def test_a_respawn_entry_restarting_too_fast_pauses_then_goes_on(run, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="clinit.process")
    out = tmp_path / "runs"
    p = run(entry(f"echo x >> {out}", "respawn", tag="spinner"),
            respawn_limit=2, respawn_window=1, respawn_pause=0.3)
    p.up().get()
    pause = (S.PAUSING, "too_rapid", S.PAUSING)
    resume = (S.PAUSING, "continue", S.RUNBG)

    def resumed_after_pause():
        t = p.transitions().get()
        return pause in t and resume in t[t.index(pause):]

    wait_for(resumed_after_pause)
    t = p.transitions().get()
    first_pause = t.index(pause)
    # limit 2: two quick restarts are allowed, the third exit pauses
    assert t[:first_pause].count(resume) == 2
    assert out.read_text().count("x") >= 3
    p.down().get()
    settle(p, S.CONFIGURED)
    messages = [r.getMessage() for r in caplog.records if r.name == "clinit.process"]
    assert "spinner respawning too rapidly: sleeping 0.3 seconds" in messages


def test_a_whole_number_pause_is_logged_without_decimals(run, caplog):
    caplog.set_level(logging.WARNING, logger="clinit.process")
    p = run(entry("exit 0", "respawn", tag="fast"), respawn_limit=0, respawn_pause=60.0)
    p.up().get()
    settle(p, S.PAUSING)
    p.down().get()
    assert "fast respawning too rapidly: sleeping 60 seconds" in caplog.messages


def test_a_respawn_entry_that_runs_long_enough_is_never_throttled(run):
    # a window of 0 s: no restart counts as quick
    p = run(entry("exit 0", "respawn"), respawn_limit=0, respawn_window=0, respawn_pause=60)
    p.up().get()
    wait_for(lambda: p.transitions().get().count((S.PAUSING, "continue", S.RUNBG)) >= 5)
    assert (S.PAUSING, "too_rapid", S.PAUSING) not in p.transitions().get()
    p.down().get()
    settle(p, S.CONFIGURED)


# ---------------------------------------------------------------------------
# Stopping


def test_a_process_ignoring_sigint_and_sigterm_is_killed(run, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="clinit.process")
    p, pid = _kill_a_stubborn_process(run, tmp_path)
    t = p.transitions().get()
    assert t[-4:] == [(S.DONE, "stop", S.STOPPING), (S.STOPPING, "term_timeout", S.STOPPING),
                      (S.STOPPING, "kill_timeout", S.STOPPING), (S.STOPPING, "exited", S.CONFIGURED)]
    assert "g/stubborn did not stop: sending SIGTERM" in caplog.messages
    assert "g/stubborn did not stop: sending SIGKILL" in caplog.messages
    assert gone(pid)


def test_a_process_that_obeys_sigint_stops_without_escalation(run, caplog):
    caplog.set_level(logging.INFO, logger="clinit.process")
    p = run(entry("exec sleep 1000", "once"), term_delay=30, kill_delay=30)
    p.up().get()
    p.down().get()
    settle(p, S.CONFIGURED)
    assert (S.STOPPING, "term_timeout", S.STOPPING) not in p.transitions().get()
    assert not [m for m in caplog.messages if "did not stop" in m]


def test_a_grandchild_is_killed_on_stop(run, tmp_path):
    gpid = tmp_path / "gpid"
    # a non-interactive sh starts background jobs with SIGINT ignored
    p = run(entry(f"sleep 1000 & echo $! > {gpid}.new; mv {gpid}.new {gpid}; wait", "once"))
    p.up().get()
    grandchild = int(read_when_written(gpid))
    assert proc_state(grandchild) not in (None, "Z")
    p.down().get()
    settle(p, S.CONFIGURED)
    wait_for(lambda: gone(grandchild))


def test_without_a_subreaper_a_grandchild_left_by_a_finished_child_is_logged_not_signalled(
        run, tmp_path, caplog):
    # In library use this process is not a child subreaper, so the orphan is
    # not provably ours any more (its pgid could be reused): clinit says so and
    # leaves it alone.  The daemon, a subreaper, stops it (test_faults_children).
    gpid = tmp_path / "gpid"
    p = run(entry(f"sleep 1000 & echo $! > {gpid}.new; mv {gpid}.new {gpid}", "once"))
    p.up().get()
    grandchild = int(read_when_written(gpid))
    try:
        wait_for(lambda: (S.DONE, "exited", S.DONE) in p.transitions().get())
        p.down().get()
        settle(p, S.CONFIGURED)
        assert not gone(grandchild)
        assert "no longer provably ours" in caplog.text
    finally:
        os.kill(grandchild, signal.SIGKILL)
        wait_for(lambda: gone(grandchild))


def test_stopping_the_actor_kills_its_process(run, tmp_path):
    gpid = tmp_path / "gpid"
    p = run(entry(f"sleep 1000 & echo $! > {gpid}.new; mv {gpid}.new {gpid}; wait", "respawn"))
    p.up().get()
    grandchild = int(read_when_written(gpid))
    child = p.pid().get()
    p.actor_ref.stop()
    wait_for(lambda: gone(child) and gone(grandchild))


# ---------------------------------------------------------------------------
# The child's world


def test_the_child_gets_group_tag_and_level_in_its_environment(run, tmp_path):
    out = tmp_path / "env"
    p = run(entry(f"env > {out}.new; mv {out}.new {out}", "wait", group="web", tag="httpd"),
            level="3")
    p.up().get()
    settle(p, S.DONE)
    env = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert env["CLINIT_GROUP"] == "web"
    assert env["CLINIT_TAG"] == "httpd"
    assert env["CLINIT_LEVEL"] == "3"
    assert env["CLINIT_TEST_TOKEN"] == os.environ["CLINIT_TEST_TOKEN"]  # the rest is inherited


def test_a_zero_group_tag_and_level_reach_the_child(run, tmp_path):
    out = tmp_path / "env"
    p = run(entry(f"echo $CLINIT_GROUP$CLINIT_TAG$CLINIT_LEVEL > {out}", "wait",
                  group="0", tag="0", levels="0"), level="0")
    p.up().get()
    settle(p, S.DONE)
    assert out.read_text() == "000\n"


def test_the_child_reads_dev_null_and_leads_a_session_of_its_own(run, tmp_path):
    p = run(entry("exec sleep 1000", "once"))
    p.up().get()
    pid = p.pid().get()
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    assert os.getpgid(pid) == pid
    assert os.getsid(pid) == pid
    assert os.getpgid(pid) != os.getpgid(0)
    p.down().get()
    settle(p, S.CONFIGURED)


def test_the_child_has_no_ignored_or_blocked_signal_even_if_its_parent_has(run):
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2, signal.SIGHUP})
    try:
        # the actor's thread inherits this thread's mask; Python itself ignores SIGPIPE
        p = run(entry("exec sleep 1000", "once"))
        p.up().get()
        pid = p.pid().get()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        signal.signal(signal.SIGINT, previous)
    status = proc_status(pid)
    ignored = int(status["SigIgn"], 16)
    assert not ignored & (1 << (signal.SIGINT - 1))
    # glibc's posix_spawn leaves its two internal signals (32, 33: not valid
    # signals for a program, see signal.valid_signals()) ignored; all others
    # must be at their default disposition
    usable = sum(1 << (s - 1) for s in signal.valid_signals())
    assert ignored & usable == 0, status["SigIgn"]
    assert int(status["SigBlk"], 16) == 0, status["SigBlk"]
    p.down().get()
    settle(p, S.CONFIGURED)


def test_the_log_setting_sends_stdout_and_stderr_to_a_file(run, tmp_path):
    log = tmp_path / "out.log"
    p = run(entry("echo to-out; echo to-err >&2", "wait"), log=str(log))
    p.up().get()
    settle(p, S.DONE)
    assert log.read_text().splitlines() == ["to-out", "to-err"]


def test_an_exec_failure_is_logged_and_leaves_the_process_configured(run, tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="clinit.process")
    p = run(entry("true", "once", tag="broken"), log=str(tmp_path / "missing" / "log"))
    p.up().get()
    assert p.state().get() is S.CONFIGURED
    assert p.transitions().get()[-1] == (S.RUNBG, "execfailed", S.CONFIGURED)
    assert any("/broken: cannot run /bin/sh:" in m for m in caplog.messages)


def test_timings_accept_a_settings_dict_or_a_timings_tuple(run):
    assert Timings.from_settings({"term_delay": 0.2, "socket": "x", "kill_delay": None}) == \
        Timings(term_delay=0.2)
    ref = Process.start(entry("true", "off"), timings=Timings(term_delay=0.1))
    try:
        assert ref.proxy().timings.get().term_delay == 0.1
    finally:
        ref.stop()


def test_a_process_actor_has_few_enough_attributes_to_share_its_dicts_keys():
    # One Process actor a process: CPython (3.11) shares the keys of its
    # instances' dicts only while the class has fewer than 30 attribute
    # names; at 30 each actor carries its own dict, 1.6 KiB more a process
    # (bench/RESULTS.md, memory at N=1000).  Counted from the source, so an
    # attribute set in any method counts, plus pykka's own.
    body = inspect.getsource(Process)
    names = set(re.findall(r"self\.(\w+)(?:\s*:[^=\n]+)?\s*=(?!=)", body))
    made = [Process(entry("true")) for _ in range(3)]  # constructed only: no thread
    names |= set(vars(made[-1]))
    assert len(names) < 30, sorted(names)
    assert sys.getsizeof(vars(made[-1])) < 1024
