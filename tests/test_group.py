"""The Group actor (SPEC §4): walking a level, re-tells, changes, halting.

Groups run in this test process (no daemon) on a cltab in tmp_path.  The
commands append to a file, so the order in which they ran is visible;
a command that must wait for the test blocks reading a FIFO ("gate") that
the test opens when it is ready.
"""

from __future__ import annotations

import os
import shlex
import sys
import textwrap

import pykka
import pytest

from clinit import CltabError, Group, GroupState, ProcessState
from clinit.messages import GroupChanged
from conftest import Recorder, gone, wait_for

G = GroupState
P = ProcessState
HEAD = ":::term_delay:0.2\n:::kill_delay:0.2\n"
# what a walk through a level looks like once the old processes are stopped
WALK = [(G.STOPPING, "stopped", G.DUMPING), (G.DUMPING, "dumped", G.STARTING),
        (G.STARTING, "walked", G.CHECKING)]
# the same when a wait or test entry blocked the walk once
WALK_BLOCKED = [*WALK[:2], (G.STARTING, "unblocked", G.STARTING), WALK[2]]


class World:
    """A cltab, an output file, gates, and the groups of one test."""

    def __init__(self, folder):
        self.folder = folder
        self.cltab = folder / "cltab"
        self.out = folder / "out"
        self.refs = []

    def write(self, text: str) -> None:
        text = textwrap.dedent(text).lstrip("\n").replace("OUT", str(self.out))
        tmp = self.cltab.with_suffix(".new")
        tmp.write_text(HEAD + text)
        os.replace(tmp, self.cltab)

    def group(self, name="g", **kw):
        ref = Group.start(name, str(self.cltab), **kw)
        self.refs.append(ref)
        return ref.proxy()

    def lines(self) -> list[str]:
        try:
            return self.out.read_text().splitlines()
        except FileNotFoundError:
            return []

    def gate(self, name: str) -> str:
        path = self.folder / f"gate-{name}"
        os.mkfifo(path)
        return str(path)

    @staticmethod
    def release(gate: str) -> None:
        """Let the command blocked reading `gate` go on (once it reads it)."""
        def attempt():
            try:
                fd = os.open(gate, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # no reader yet
                return False
            os.write(fd, b"go\n")
            os.close(fd)
            return True

        wait_for(attempt)

    def stop(self):
        for ref in self.refs:
            ref.stop()


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.stop()


def settle(g, state, count=1):
    """Wait until the group is in `state`, having entered it `count` times."""
    def done():
        t = g.transitions().get()
        return g.state().get() is state and sum(1 for _, _, new in t if new is state) >= count

    try:
        wait_for(done)
    except AssertionError:  # the transitions as they are at the timeout
        raise AssertionError(f"group never reached {state} x{count}: "
                             f"{g.transitions().get()}") from None


def process_state(g, tag):
    return g.processes().get().get(tag, (None, None))[0]


def trapping(name: str) -> str:
    """A command that says hi, and says bye when asked to stop with SIGINT.

    Its `sleep` runs in the background (SIGINT ignored there), so the stop
    also proves that the group's leftovers are cleaned up.
    """
    return (f"trap 'echo bye-{name} >> OUT; exit 0' INT; echo hi-{name} >> OUT; "
            f"sleep 1000 & wait")


# ---------------------------------------------------------------------------
# Walking a level


def test_entries_run_in_cltab_order_and_a_wait_entry_blocks_the_walk(world):
    gate = world.gate("a")
    world.write(f"""
        g:a:1:wait:read x < {gate}; echo a >> OUT
        g:b:1:wait:echo b >> OUT
        g:c:1:once:echo c >> OUT
    """)
    g = world.group()
    assert g.tell("1").get() == "level transition started"
    wait_for(lambda: process_state(g, "a") is P.RUNNING)
    assert g.state().get() is G.STARTING
    assert "b" not in g.processes().get()
    assert world.lines() == []
    world.release(gate)
    settle(g, G.DONE)
    wait_for(lambda: len(world.lines()) == 3)
    assert world.lines() == ["a", "b", "c"]


def test_a_test_entry_blocks_the_walk_until_it_exits(world):
    gate = world.gate("t")
    world.write(f"""
        g:t:1:test:read x < {gate}; echo t >> OUT
        g:w:1:wait:echo w >> OUT
    """)
    g = world.group()
    g.tell("1").get()
    wait_for(lambda: process_state(g, "t") is P.RUNTEST)
    assert g.state().get() is G.STARTING
    assert "w" not in g.processes().get()
    world.release(gate)
    settle(g, G.DONE)
    assert world.lines() == ["t", "w"]


def test_once_and_respawn_entries_do_not_block_the_walk(world):
    gate = world.gate("o")
    world.write(f"""
        g:o:1:once:read x < {gate}; echo o >> OUT
        g:r:1:respawn:exec sleep 1000
        g:w:1:wait:echo w >> OUT
    """)
    g = world.group()
    g.tell("1").get()
    settle(g, G.DONE)
    assert world.lines() == ["w"]
    assert g.processes().get()["o"] == (P.DONE, None)  # still running
    assert process_state(g, "r") is P.DONE
    world.release(gate)
    wait_for(lambda: world.lines() == ["w", "o"])
    g.halt().get()
    settle(g, G.CONFIGURED)


def test_a_level_with_no_entries_is_done_at_once(world):
    world.write("""
        g:a:1:wait:echo a >> OUT
        other:b:2:wait:echo b >> OUT
    """)
    g = world.group()
    g.tell("2").get()
    settle(g, G.DONE)
    assert g.transitions().get() == [(G.CONFIGURED, "tell", G.STOPPING), *WALK,
                                     (G.CHECKING, "done", G.DONE)]
    assert g.processes().get() == {}
    assert world.lines() == []


def test_a_group_absent_from_cltab_is_done_at_once(world):
    world.write("other:b:1:wait:echo b >> OUT\n")
    g = world.group("nobody")
    g.tell("1").get()
    settle(g, G.DONE)
    assert world.lines() == []


def test_the_walk_passes_through_stopping_dumping_starting_and_checking(world):
    world.write("""
        g:a:1:wait:echo a >> OUT
        g:b:2:wait:echo b >> OUT
    """)
    g = world.group()
    g.tell("1").get()
    settle(g, G.DONE)
    g.tell("2").get()
    settle(g, G.DONE, count=2)
    assert g.transitions().get() == [
        (G.CONFIGURED, "tell", G.STOPPING), *WALK_BLOCKED, (G.CHECKING, "done", G.DONE),
        (G.DONE, "tell", G.STOPPING), *WALK_BLOCKED, (G.CHECKING, "done", G.DONE)]
    assert world.lines() == ["a", "b"]


# ---------------------------------------------------------------------------
# CHECKING: DONE, PASSED, FAILED


def test_a_level_of_tests_that_all_pass_is_passed(world):
    world.write("""
        g:t1:1:test:true
        g:t2:1:test:exit 0
    """)
    g = world.group()
    g.tell("1").get()
    settle(g, G.PASSED)
    assert g.transitions().get()[-2:] == [(G.STARTING, "walked", G.CHECKING),
                                          (G.CHECKING, "passed", G.PASSED)]
    assert g.processes().get() == {"t1": (P.PASS, 0), "t2": (P.PASS, 0)}


def test_a_level_where_a_test_fails_is_failed(world):
    world.write("""
        g:t1:1:test:true
        g:t2:1:test:exit 4
        g:w:1:wait:true
    """)
    g = world.group()
    g.tell("1").get()
    settle(g, G.FAILED)
    assert g.transitions().get()[-1] == (G.CHECKING, "failed", G.FAILED)
    assert g.processes().get()["t2"] == (P.FAIL, 4)


def test_passing_tests_beside_other_entries_make_the_level_done(world):
    world.write("""
        g:t:1:test:true
        g:w:1:wait:true
        g:x:1:off:echo never >> OUT
    """)
    g = world.group()
    g.tell("1").get()
    settle(g, G.DONE)
    assert g.transitions().get()[-1] == (G.CHECKING, "done", G.DONE)
    assert world.lines() == []


def test_an_off_entry_counts_as_finished_and_never_runs(world):
    world.write("g:x:1:off:echo never >> OUT\n")
    g = world.group()
    g.tell("1").get()
    settle(g, G.DONE)  # at once: an off entry counts as finished
    wait_for(lambda: process_state(g, "x") is P.CONFIGURED)  # its actor's report may follow
    assert world.lines() == []


# ---------------------------------------------------------------------------
# Re-telling and changing cltab


def test_a_retell_of_the_same_level_reruns_nothing_but_starts_new_entries(world):
    runs = world.folder / "runs"
    text = f"""
        g:w:1:wait:echo w >> OUT
        g:t:1:test:echo t >> OUT
        g:o:1:once:echo o >> OUT
        g:r:1:respawn:echo r >> {runs}; exec sleep 1000
    """
    world.write(text)
    g = world.group()
    g.tell("1").get()
    settle(g, G.DONE)
    wait_for(lambda: len(world.lines()) == 3 and runs.exists())
    g.tell("1").get()
    settle(g, G.DONE, count=2)
    assert world.lines() == ["w", "t", "o"]
    world.write(textwrap.dedent(text) + "g:n:1:wait:echo n >> OUT\n")
    g.tell("1").get()
    settle(g, G.DONE, count=3)
    assert world.lines() == ["w", "t", "o", "n"]
    assert runs.read_text() == "r\n"  # the respawn entry kept running throughout
    g.halt().get()
    settle(g, G.CONFIGURED)


def test_a_retell_does_not_rerun_a_failed_test(world):
    world.write("g:t:1:test:echo t >> OUT; exit 1\n")
    g = world.group()
    g.tell("1").get()
    settle(g, G.FAILED)
    g.tell("1").get()
    wait_for(lambda: g.transitions().get().count((G.CHECKING, "failed", G.FAILED)) == 2)
    assert world.lines() == ["t"]


def test_a_changed_command_is_stopped_gracefully_and_restarted(world):
    world.write(f"""
        g:s:1:respawn:{trapping("v1")}
        g:k:1:respawn:echo hi-k >> OUT; exec sleep 1000
    """)
    g = world.group()
    g.tell("1").get()
    settle(g, G.DONE)
    wait_for(lambda: {"hi-v1", "hi-k"} <= set(world.lines()))
    world.write(f"""
        g:s:1:respawn:{trapping("v2")}
        g:k:1:respawn:echo hi-k >> OUT; exec sleep 1000
    """)
    g.tell("1").get()
    settle(g, G.DONE, count=2)
    wait_for(lambda: "hi-v2" in world.lines())
    lines = [l for l in world.lines() if l != "hi-k"]
    assert lines == ["hi-v1", "bye-v1", "hi-v2"]
    assert world.lines().count("hi-k") == 1  # the unchanged entry was left alone
    assert g.transitions().get()[-5:] == [(G.DONE, "tell", G.STOPPING), *WALK,
                                          (G.CHECKING, "done", G.DONE)]
    g.halt().get()
    settle(g, G.CONFIGURED)
    assert world.lines()[-1] == "bye-v2"


def test_a_changed_mode_restarts_the_entry(world):
    world.write(f"g:s:1:respawn:{trapping('s')}\n")
    g = world.group()
    g.tell("1").get()
    settle(g, G.DONE)  # (the file says hi a moment before the group hears of the start)
    wait_for(lambda: world.lines() == ["hi-s"])
    world.write(f"g:s:1:once:{trapping('s')}\n")
    g.tell("1").get()
    settle(g, G.DONE, count=2)
    wait_for(lambda: world.lines() == ["hi-s", "bye-s", "hi-s"])
    g.halt().get()
    settle(g, G.CONFIGURED)


def test_an_entry_whose_levels_change_but_still_include_the_level_keeps_running(world):
    world.write(f"g:s:1:respawn:{trapping('s')}\n")
    g = world.group()
    g.tell("1").get()
    settle(g, G.DONE)  # (the file says hi a moment before the group hears of the start)
    wait_for(lambda: world.lines() == ["hi-s"])
    world.write(f"g:s:123:respawn:{trapping('s')}\n")
    g.tell("1").get()
    settle(g, G.DONE, count=2)
    assert world.lines() == ["hi-s"]
    g.halt().get()
    settle(g, G.CONFIGURED)


def test_an_entry_removed_from_cltab_is_stopped(world):
    world.write(f"""
        g:s:1:respawn:{trapping("s")}
        g:k:1:wait:true
    """)
    g = world.group()
    g.tell("1").get()
    settle(g, G.DONE)
    wait_for(lambda: world.lines() == ["hi-s"])
    world.write("g:k:1:wait:true\n")
    g.tell("1").get()
    settle(g, G.DONE, count=2)
    assert world.lines() == ["hi-s", "bye-s"]
    assert set(g.processes().get()) == {"k"}


def test_an_entry_turned_off_is_stopped(world):
    world.write(f"g:s:1:respawn:{trapping('s')}\n")
    g = world.group()
    g.tell("1").get()
    settle(g, G.DONE)  # (the file says hi a moment before the group hears of the start)
    wait_for(lambda: world.lines() == ["hi-s"])
    world.write(f"g:s:1:off:{trapping('s')}\n")
    g.tell("1").get()
    settle(g, G.DONE, count=2)
    assert world.lines() == ["hi-s", "bye-s"]
    assert process_state(g, "s") is P.CONFIGURED


def test_a_tell_of_another_level_stops_the_old_processes_and_starts_the_new(world):
    world.write(f"""
        g:a:1:respawn:{trapping("a")}
        g:k:12:respawn:echo hi-k >> OUT; exec sleep 1000
        g:b:2:respawn:{trapping("b")}
    """)
    g = world.group()
    g.tell("1").get()
    settle(g, G.DONE)
    wait_for(lambda: sorted(world.lines()) == ["hi-a", "hi-k"])
    g.tell("2").get()
    settle(g, G.DONE, count=2)
    wait_for(lambda: "hi-b" in world.lines())
    assert world.lines().index("bye-a") < world.lines().index("hi-b")
    assert world.lines().count("hi-k") == 1  # in both levels: kept running
    assert set(g.processes().get()) == {"k", "b"}
    g.halt().get()
    settle(g, G.CONFIGURED)


def test_a_bad_cltab_on_tell_raises_and_changes_nothing(world):
    world.write(f"g:s:1:respawn:{trapping('s')}\n")
    g = world.group()
    g.tell("1").get()
    settle(g, G.DONE)
    wait_for(lambda: world.lines() == ["hi-s"])
    before = g.transitions().get()
    world.write("g:s:2:respawn:true\ng:s:2:wait:true\n")  # duplicate tag
    with pytest.raises(CltabError):
        g.tell("2").get()
    assert g.transitions().get() == before
    assert process_state(g, "s") is P.DONE
    assert world.lines() == ["hi-s"]


# ---------------------------------------------------------------------------
# Telling while a walk is blocked, halting


def test_a_tell_during_a_running_wait_entry_aborts_the_walk(world):
    world.write(f"""
        g:w:1:wait:{trapping("w")}
        g:after:1:wait:echo after >> OUT
        g:two:2:wait:echo two >> OUT
    """)
    g = world.group()
    g.tell("1").get()
    wait_for(lambda: world.lines() == ["hi-w"])
    assert g.state().get() is G.STARTING
    g.tell("2").get()
    settle(g, G.DONE)
    assert world.lines() == ["hi-w", "bye-w", "two"]
    assert (G.STARTING, "tell", G.STOPPING) in g.transitions().get()
    assert set(g.processes().get()) == {"two"}


def test_a_retell_of_the_same_level_during_a_wait_entry_keeps_waiting_for_it(world):
    gate = world.gate("w")
    world.write(f"""
        g:w:1:wait:read x < {gate}; echo w >> OUT
        g:after:1:wait:echo after >> OUT
    """)
    g = world.group()
    g.tell("1").get()
    wait_for(lambda: process_state(g, "w") is P.RUNNING)
    g.tell("1").get()
    wait_for(lambda: g.transitions().get().count((G.DUMPING, "dumped", G.STARTING)) == 2)
    assert g.state().get() is G.STARTING
    assert process_state(g, "w") is P.RUNNING
    world.release(gate)
    settle(g, G.DONE)
    assert world.lines() == ["w", "after"]


def test_halt_stops_everything_and_ends_configured(world):
    world.write(f"""
        g:a:1:respawn:{trapping("a")}
        g:b:1:once:{trapping("b")}
        g:w:1:wait:true
    """)
    g = world.group()
    g.tell("1").get()
    settle(g, G.DONE)
    wait_for(lambda: sorted(world.lines()) == ["hi-a", "hi-b"])
    assert g.halt().get() == "group halting"
    settle(g, G.CONFIGURED)
    assert g.transitions().get()[-2:] == [(G.DONE, "halt", G.HALTING),
                                          (G.HALTING, "stopped", G.CONFIGURED)]
    assert sorted(world.lines()) == ["bye-a", "bye-b", "hi-a", "hi-b"]
    assert g.processes().get() == {}


def test_halt_of_a_group_never_told_is_configured_at_once(world):
    world.write("g:a:1:wait:true\n")
    g = world.group()
    g.halt().get()
    assert g.transitions().get() == [(G.CONFIGURED, "halt", G.HALTING),
                                     (G.HALTING, "stopped", G.CONFIGURED)]


def test_a_group_can_be_told_again_after_a_halt(world):
    world.write("g:a:1:wait:echo a >> OUT\n")
    g = world.group()
    g.tell("1").get()
    settle(g, G.DONE)
    g.halt().get()
    settle(g, G.CONFIGURED)
    g.tell("1").get()
    settle(g, G.DONE, count=2)
    assert world.lines() == ["a", "a"]  # halted: forgotten, so it runs again


def test_zero_is_a_valid_group_and_level_name(world):
    world.write("""
        0:0:0:wait:echo $CLINIT_GROUP-$CLINIT_TAG-$CLINIT_LEVEL >> OUT
        0:ten:10:wait:echo ten >> OUT
        0:one:1:wait:echo one >> OUT
    """)
    g = world.group("0")
    g.tell("0").get()
    settle(g, G.DONE)
    assert world.lines() == ["0-0-0", "ten"]


def test_stopping_the_group_actor_stops_its_processes(world):
    gpid = world.folder / "gpid"
    world.write(f"""
        g:r:1:respawn:sleep 1000 & echo $! > {gpid}.new; mv {gpid}.new {gpid}; wait
        g:o:1:once:exec sleep 1000
    """)
    g = world.group()
    g.tell("1").get()
    settle(g, G.DONE)
    grandchild = int(wait_for(lambda: gpid.exists() and gpid.read_text()))
    g.actor_ref.stop()
    # the Process actors went with it
    assert not [r for r in pykka.ActorRegistry.get_by_class_name("Process")]

    wait_for(lambda: gone(grandchild))


# ---------------------------------------------------------------------------
# Listener and settings


def test_the_listener_sees_the_level_being_left_until_starting(world):
    world.write("""
        g:a:1:wait:true
        g:b:2:wait:true
    """)
    rec = Recorder.start()
    try:
        g = world.group(listener=rec)
        g.tell("1").get()
        settle(g, G.DONE)
        g.tell("2").get()
        settle(g, G.DONE, count=2)

        def reached():  # each report: the states passed through, then where it ended
            return [step for m in rec.proxy().messages().get() if isinstance(m, GroupChanged)
                    for step in (*m.path, (m.level, m.state))]
        steps = wait_for(lambda: (s := reached()) and len(s) == 10 and s)
        msgs = [m for m in rec.proxy().messages().get() if isinstance(m, GroupChanged)]
        assert steps == [
            (None, G.STOPPING), (None, G.DUMPING), ("1", G.STARTING), ("1", G.CHECKING),
            ("1", G.DONE),
            ("1", G.STOPPING), ("1", G.DUMPING), ("2", G.STARTING), ("2", G.CHECKING),
            ("2", G.DONE)]
        assert {m.name for m in msgs} == {"g"}
    finally:
        rec.stop()


def test_settings_in_cltab_override_the_groups_settings(world):
    ready = world.folder / "ready"
    code = ("import signal,time; signal.signal(2,signal.SIG_IGN); signal.signal(15,signal.SIG_IGN); "
            f"open({str(ready)!r},'w').close(); time.sleep(1000)")
    world.write(f"""
        :::term_delay:0.05
        :::kill_delay:0.05
        g:s:1:once:exec {shlex.quote(sys.executable)} -c {shlex.quote(code)}
    """)
    # without the cltab's values the stop would take a minute
    g = world.group(settings={"term_delay": 30, "kill_delay": 30})
    g.tell("1").get()
    settle(g, G.DONE)
    wait_for(ready.exists)
    g.halt().get()
    settle(g, G.CONFIGURED)
