"""Faults to survive: an exception inside an actor (issue 3, part B).

The policy (see clinit/process.py, group.py, daemonactor.py, reaper.py):

- Process: the fault is logged with the tag and the state, the group is
  told, and the actor -- still alive -- stops its process with the usual
  SIGINT/SIGTERM/SIGKILL ladder.  It is never restarted.
- Group: a faulted process makes the group FAILED; a fault of the group
  itself halts all its processes and leaves it FAILED.  The next tell
  starts afresh (new process actors for the faulted ones).
- Daemon and the SIGCHLD bridge: log and carry on; a shutdown that cannot
  finish kills what is left and exits 1.

Faults are injected in-process by sending an actor a message that makes
it raise, or by patching a method of one instance; through a real daemon
by CLINIT_FAULT_INJECT=process:TAG or group:NAME (raises once).
"""

from __future__ import annotations

import logging
import os
import signal
import textwrap

import pytest

from clinit import Entry, Group, GroupState, Process, ProcessState, daemonactor, load_cltab, reaper
from clinit.messages import Exited, Fault, Request, Signal, Watch
from clinit.statuswriter import StatusWriter
from conftest import FAST, Recorder, gone, ignores, wait_for


S = ProcessState
G = GroupState
HEAD = ":::term_delay:0.2\n:::kill_delay:0.2\n"


def instance(ref):
    """The actor object behind a ref (to patch one of its methods)."""
    return ref.proxy()._actor


# -- a Process actor ----------------------------------------------------------------

def test_a_process_actor_fault_is_logged_and_stops_its_process_with_the_ladder(refs, caplog):
    listener = Recorder.start()
    refs.append(listener)
    ref = Process.start(Entry("g", "stubborn", "1", "respawn", 'trap "" INT TERM; exec sleep 1000', 1),
                        listener=listener, timings=FAST, level="1")
    refs.append(ref)
    p = ref.proxy()
    p.up().get()
    wait_for(lambda: p.state().get() is S.DONE and p.pid().get())
    pid = p.pid().get()
    wait_for(lambda: ignores(pid, signal.SIGINT, signal.SIGTERM))  # the trap ran: only SIGKILL will do
    with caplog.at_level(logging.INFO, logger="clinit.process"):
        ref.tell(Exited(pid, "garbage"))  # a status of the wrong type: decoding it raises
        wait_for(lambda: p.state().get() is S.CONFIGURED)
    assert ref.is_alive()  # the actor survived its fault...
    assert gone(pid)  # ...and stopped its process, up to SIGKILL
    assert (S.DONE, "fault", S.STOPPING) in p.transitions().get()
    assert "process g/stubborn failed in state DONE: TypeError" in caplog.text
    assert "g/stubborn did not stop: sending SIGKILL" in caplog.text
    faults = [m for m in listener.proxy().messages().get() if isinstance(m, Fault)]
    assert len(faults) == 1 and faults[0].tag == "stubborn" and "TypeError" in faults[0].text
    # and it is not restarted: a respawn entry stays down
    assert p.pid().get() is None


def test_a_patched_method_that_raises_is_a_fault_and_nothing_is_left_running(refs, caplog):
    ref = Process.start(Entry("g", "flappy", "1", "respawn", "exec sleep 1000", 1),
                        timings=FAST, level="1")
    refs.append(ref)
    p = ref.proxy()
    p.up().get()
    pid = wait_for(lambda: p.pid().get())

    def broken():
        raise RuntimeError("broken check_rate")

    instance(ref).check_rate = broken
    os.kill(pid, 9)  # the exit runs check_rate, which raises
    wait_for(lambda: p.state().get() is S.CONFIGURED)
    assert ("process g/flappy failed in state PAUSING: RuntimeError: broken check_rate"
            in caplog.text)
    assert (S.PAUSING, "fault", S.CONFIGURED) in p.transitions().get()
    assert p.pid().get() is None and ref.is_alive()


# -- a Group actor ------------------------------------------------------------------

def write_cltab(tmp_path, text: str) -> str:
    path = tmp_path / "cltab"
    path.write_text(HEAD + textwrap.dedent(text).lstrip("\n"))
    return str(path)


def settle(g, state):
    wait_for(lambda: g.state().get() is state,
             message=f"never reached {state}: {g.transitions().get()}")


def pids_of(g) -> dict:
    return {tag: instance_pid(m) for tag, m in instance(g.actor_ref)._members.items()}


def instance_pid(member):
    return member.ref.proxy().pid().get()


def test_a_fault_of_one_process_makes_its_group_failed_and_a_retell_replaces_it(tmp_path, refs):
    cltab = write_cltab(tmp_path, """
        g:bad:1:respawn:exec sleep 1000
        g:good:1:respawn:exec sleep 1000
    """)
    ref = Group.start("g", cltab)
    refs.append(ref)
    g = ref.proxy()
    g.tell("1").get()
    settle(g, G.DONE)
    before = wait_for(lambda: all(pids_of(g).values()) and pids_of(g))
    bad = instance(ref)._members["bad"].ref
    bad.tell(Exited(before["bad"], "garbage"))
    settle(g, G.FAILED)
    wait_for(lambda: gone(before["bad"]))
    assert not gone(before["good"])  # the rest of the group runs on
    assert (G.DONE, "member_fault", G.FAILED) in g.transitions().get()
    g.tell("1").get()
    settle(g, G.DONE)
    after = wait_for(lambda: all(pids_of(g).values()) and pids_of(g))
    assert after["good"] == before["good"]
    assert instance(ref)._members["bad"].ref is not bad  # a fresh actor
    assert not bad.is_alive()


def test_a_fault_of_the_group_itself_halts_its_processes_and_leaves_it_failed(tmp_path, refs,
                                                                               caplog):
    cltab = write_cltab(tmp_path, """
        g:a:1:respawn:exec sleep 1000
        g:b:1:respawn:trap "" INT TERM; exec sleep 1000
    """)
    ref = Group.start("g", cltab)
    refs.append(ref)
    g = ref.proxy()
    g.tell("1").get()
    settle(g, G.DONE)
    pids = wait_for(lambda: all(pids_of(g).values()) and pids_of(g))
    def broken(urn, state):
        raise ValueError("broken progress")

    instance(ref)._on_progress = broken
    os.kill(pids["a"], signal.SIGKILL)  # its report reaches the broken handler
    settle(g, G.FAILED)
    del instance(ref)._on_progress  # mended
    assert all(gone(pid) for pid in pids.values())
    assert g.processes().get() == {}
    assert "group g failed in state DONE: ValueError" in caplog.text
    t = g.transitions().get()
    assert (G.DONE, "fault", G.HALTING) in t and t[-1] == (G.HALTING, "stopped", G.FAILED)
    assert instance(ref).level == "1"  # the status line keeps its level
    g.tell("1").get()
    settle(g, G.DONE)
    g.halt().get()
    settle(g, G.CONFIGURED)


# -- the SIGCHLD bridge and the Daemon actor ------------------------------------------

def test_the_sigchld_bridge_survives_a_bad_message_and_goes_on_reaping(refs, caplog):
    bridge = reaper.ensure()
    bridge.tell(Watch("not a pid", None))  # malformed
    ref = Process.start(Entry("g", "w", "1", "wait", "exit 3", 1), timings=FAST, level="1")
    refs.append(ref)
    ref.proxy().up().get()
    wait_for(lambda: ref.proxy().state().get() is S.DONE)
    assert ref.proxy().rc.get() == 3
    assert bridge.is_alive() and reaper.ensure() is bridge
    assert "SIGCHLD bridge: failed on Watch(pid='not a pid'" in caplog.text


@pytest.fixture
def daemon_actor(tmp_path, refs):
    """A Daemon actor in this process (no socket): (ref, exits) -- exits counts on_exit calls."""
    def make(text: str):
        table = load_cltab(write_cltab(tmp_path, text))
        writer = StatusWriter.start(str(tmp_path / "clstat"), 45.0)
        exits = []
        ref = daemonactor.Daemon.start(table, {}, writer, lambda: exits.append(1))
        refs.extend([ref, writer])
        return ref, exits
    return make


def ask(ref, cmd, **fields):
    return ref.ask(Request({"cmd": cmd, **fields}))


def test_the_daemon_actor_logs_a_bad_message_and_goes_on_serving(daemon_actor, caplog):
    ref, _ = daemon_actor("g:a:1:respawn:exec sleep 1000\n")
    ref.tell(("group",))  # not a message type: logged and dropped
    ref.tell(Signal(12345))  # no such signal: the handler raises
    ok, text = ask(ref, "tell", group="g", level="1")
    assert ok and text.startswith("level transition started: ")
    wait_for(lambda: instance(ref).states.get("g") is G.DONE)
    assert caplog.text.count("daemon actor failed on") == 1
    assert caplog.text.count("daemon: unknown message") == 1
    assert ask(ref, "shutdown") == (True, "all groups halting")
    wait_for(lambda: instance(ref).states.get("g") is G.CONFIGURED)


def test_a_shutdown_that_cannot_finish_kills_what_is_left_and_is_not_clean(daemon_actor, refs,
                                                                            monkeypatch, caplog):
    monkeypatch.setattr(daemonactor, "SHUTDOWN_GRACE", 0.1)
    ref, exits = daemon_actor("g:a:1:respawn:exec sleep 1000\n")
    ask(ref, "tell", group="g", level="1")
    wait_for(lambda: instance(ref).states.get("g") is G.DONE)
    group = instance(ref).groups["g"]
    pid = wait_for(lambda: instance(group)._members["a"].ref.proxy().pid().get())
    instance(group).stop_all = lambda: None  # a group that never halts
    assert ask(ref, "shutdown") == (True, "all groups halting")
    wait_for(lambda: exits)
    wait_for(lambda: gone(pid))  # SIGKILLed
    assert instance(ref).clean is False
    assert "shutdown did not finish in time" in caplog.text


# -- through a real daemon: CLINIT_FAULT_INJECT ------------------------------------------

def test_an_injected_process_fault_fails_its_group_and_stops_only_that_process(make_daemon,
                                                                                monkeypatch):
    monkeypatch.setenv("CLINIT_FAULT_INJECT", "process:bad")
    d = make_daemon("""
        g:good:1:respawn:exec sleep 1000
        g:bad:1:respawn:exec sleep 1000
        h:other:1:respawn:exec sleep 1000
    """, **FAST)
    d.tell("h", "1")
    d.wait_state("h", "1", "DONE")
    d.tell("g", "1")
    d.wait_state("g", "1", "FAILED")
    wait_for(lambda: len(d.children()) == 2)  # bad was stopped
    d.logged("process g/bad failed in state DONE: InjectedFault")
    assert d.status("h", "1") == "DONE"
    assert d.client().request("ping")[0]
    kept = set(d.children())
    d.tell("g", "1")  # the fault was injected once: a fresh actor runs bad again
    d.wait_state("g", "1", "DONE")
    wait_for(lambda: len(d.children()) == 3)
    assert kept < set(d.children())
    assert d.client().shutdown() == "all groups halting"
    assert d.proc.wait(timeout=20) == 0


def test_an_injected_group_fault_halts_that_group_only_and_a_retell_recovers(make_daemon,
                                                                             monkeypatch):
    monkeypatch.setenv("CLINIT_FAULT_INJECT", "group:g")
    d = make_daemon("""
        g:a:1:respawn:exec sleep 1000
        g:b:1:once:exec sleep 1000
        h:other:1:respawn:exec sleep 1000
    """, **FAST)
    d.tell("h", "1")
    d.wait_state("h", "1", "DONE")
    [other] = wait_for(lambda: d.children())
    d.tell("g", "1")
    d.wait_state("g", "1", "FAILED")
    wait_for(lambda: d.children() == [other])  # g's processes halted, h's untouched
    d.logged("group g failed in state DONE: InjectedFault")
    d.tell("g", "1")
    d.wait_state("g", "1", "DONE")
    wait_for(lambda: len(d.children()) == 3)
    assert d.client().shutdown() == "all groups halting"
    assert d.proc.wait(timeout=20) == 0
