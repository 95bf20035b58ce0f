"""Adoption (clinit/adoption.py, and reaper.watch with a pidfd): finding the survivors a
journal names, the plan for each, and signalling and watching processes
that are not our children."""

from __future__ import annotations

import os
import signal

import pytest

from conftest import Inbox, gone, orphan, wait_for
from clinit import messages as m
from clinit import reaper
from clinit.group import Group, GroupState as G
from clinit.messages import Adopt, Restore
from clinit.process import ProcessState as P
from clinit.adoption import (GroupPlan, Survivor, alive, find_survivors, plan,
                             signal_group, signal_remnant, stray_entry)
from clinit.cltab import load_cltab, parse_cltab
from clinit.journal import GroupRecord, MemberRecord, Snapshot, boot_id, proc_start


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


@pytest.fixture
def orphans():
    made = []

    def make(command="exec sleep 1000", running=True) -> int:
        made.append(orphan(command, running))
        return made[-1]

    yield make
    for pid in made:
        kill_group(pid)
    wait_for(lambda: all(gone(pid) for pid in made))


def record(tag, pid=None, state="DONE", mode="once", command="exec sleep 1000", group="g",
           start=None, rc=None):
    if pid is not None and start is None:
        start = proc_start(pid)
    return MemberRecord(group, tag, mode, command, state, rc, pid, start)


def snap(groups, members) -> Snapshot:
    return Snapshot(1, None, boot_id(), tuple(groups), tuple(members))


def test_survivors_are_found_by_pid_and_start_time(orphans):
    a, b = orphans(), orphans()
    dead = orphans()
    kill_group(dead)
    wait_for(lambda: gone(dead))
    records = [record("a", a), record("b", b, start=proc_start(b) + 1),  # pid reused
               record("c", dead, start=1), record("d")]
    found, lost = find_survivors(snap([], records))
    try:
        assert list(found) == ["a"]
        assert found["a"].record == records[0] and alive(found["a"].pidfd)
        assert lost == records[1:3]
    finally:
        for s in found.values():
            os.close(s.pidfd)


def test_a_survivor_must_still_lead_its_session(orphans):
    leader = orphans("sleep 1000 & echo $! > /dev/null; wait")
    member = wait_for(lambda: [pid for pid in _members(leader) if pid != leader])[0]
    found, lost = find_survivors(snap([], [record("m", member)]))
    assert not found and lost == [record("m", member)]


CLTAB = """
g:a:1:respawn:exec sleep 1000
g:b:1:once:exec sleep 1000
g:w:1:wait:exec sleep 1000
g:t:1:test:true
g:f:1:test:false
g:z:1:once:exit 0
g:changed:1:once:exec sleep 2000
g:moded:1:respawn:exec sleep 1000
g:offed:1:off:exec sleep 1000
g:r:1:respawn:exec sleep 1000
h:h1:2:once:exec sleep 1000
"""


def survivors_for(*records):
    return {r.tag: Survivor(r, 100 + i) for i, r in enumerate(records)}


def test_the_plan_adopts_unchanged_survivors_and_stops_the_rest():
    cltab = parse_cltab(CLTAB)
    running = [record("w", 11, "RUNNING", "wait", start=5), record("b", 12, start=5),
               record("a", 13, mode="respawn", start=5), record("changed", 14, start=5),
               record("moded", 15, start=5), record("offed", 16, mode="respawn", start=5),
               record("ghost", 17, start=5), record("x", 18, group="gone", start=5)]
    finished = [record("t", state="PASS", mode="test", command="true", rc=0),
                record("f", state="FAIL", mode="test", command="false", rc=1),
                record("z", command="exit 0", rc=0),
                record("r", mode="respawn", start=None)]  # its survivor died meanwhile
    journal = snap([GroupRecord("g", "1", "DONE", "1"), GroupRecord("gone", "1", "DONE", "1")],
                   running + finished)
    alive_ = survivors_for(*running)
    p = plan(journal, alive_, cltab)
    assert p.groups == (GroupPlan("g", "1", "DONE", None, (
        (cltab.tag("a"), Adopt("adopt", 13, alive_["a"].pidfd, 5)),
        (cltab.tag("b"), Adopt("adopt", 12, alive_["b"].pidfd, 5)),
        (cltab.tag("w"), Adopt("adopt", 11, alive_["w"].pidfd, 5)),
        (cltab.tag("t"), Adopt("ran_pass", rc=0)),
        (cltab.tag("f"), Adopt("ran_fail", rc=1)),
        (cltab.tag("z"), Adopt("ran", rc=0)),
        (cltab.tag("r"), Adopt("ran")))),)  # in cltab order
    assert [r.tag for r in p.adopted] == ["w", "b", "a"]
    why = {r.tag: (a, text) for r, a, text in p.strays}
    assert {t: w[1] for t, w in why.items()} == {
        "changed": "its command changed",
        "moded": "its mode changed from once to respawn",
        "offed": "its mode changed from respawn to off",
        "ghost": "its entry was deleted from cltab",
        "x": "group gone was deleted from cltab"}
    assert why["changed"][0] == Adopt("adopt", 14, alive_["changed"].pidfd, 5)


def test_a_group_between_levels_is_told_its_target_again():
    cltab = parse_cltab(CLTAB)
    w = record("w", 11, "RUNNING", "wait", start=5)
    p = plan(snap([GroupRecord("g", "0", "STOPPING", "1")], [w]), survivors_for(w), cltab)
    assert p.groups[0][:4] == ("g", "0", "CONFIGURED", "1")
    assert [e.tag for e, _ in p.groups[0].members] == ["w"]


def test_survivors_being_stopped_or_tested_are_stopped():
    cltab = parse_cltab(CLTAB)
    stopping = record("b", 12, "STOPPING", start=5)
    testing = record("t", 13, "RUNTEST", "test", "true", start=5)
    p = plan(snap([GroupRecord("g", "1", "STARTING", "1")], [stopping, testing]),
             survivors_for(stopping, testing), cltab)
    assert p.groups[0].members == () and not p.adopted
    assert [(r.tag, why) for r, _, why in p.strays] == [("b", "it was STOPPING"),
                                                        ("t", "it was RUNTEST")]


def test_a_halting_group_comes_back_halted_and_its_survivors_are_stopped():
    cltab = parse_cltab(CLTAB)
    b = record("b", 12, start=5)
    p = plan(snap([GroupRecord("g", "1", "HALTING", None)], [b]), survivors_for(b), cltab)
    assert p.groups == (GroupPlan("g", "1", "CONFIGURED", None, ()),)
    assert [(r.tag, why) for r, _, why in p.strays] == [("b", "group g was halting")]


def test_a_stray_is_stopped_as_a_once_entry_so_it_is_never_restarted():
    entry = stray_entry(record("a", 12, mode="respawn", start=5))
    assert (entry.group, entry.tag, entry.mode, entry.command) == ("g", "a", "once", "exec sleep 1000")


def test_an_adopted_group_is_signalled_while_its_leader_lives(orphans, tmp_path):
    trap = tmp_path / "trap"
    leader = orphans(f"trap 'echo INT >> {trap}' INT; sleep 1000 & sleep 1000 & wait; wait; wait")
    wait_for(lambda: len(_members(leader)) == 3)
    fd = os.pidfd_open(leader)
    try:
        assert signal_group(fd, leader, signal.SIGINT)
        wait_for(lambda: trap.exists() and trap.read_text() == "INT\n")
        assert signal_group(fd, leader, signal.SIGTERM)  # the sh waits on: SIGTERM ends it
        wait_for(lambda: not alive(fd))
        assert not signal_group(fd, leader, signal.SIGKILL)  # the leader is gone: never by pid
        # its background sleeps ignore SIGINT (sh) and were killed by SIGTERM
        wait_for(lambda: not _members(leader))
    finally:
        os.close(fd)


def test_the_remnant_of_an_adopted_group_is_signalled_only_while_the_id_is_free(orphans):
    leader = orphans("sleep 1000 & exit 0", running=False)
    wait_for(lambda: gone(leader) and len(_members(leader)) == 1)
    assert signal_remnant(leader, signal.SIGKILL)
    wait_for(lambda: not signal_remnant(leader, 0))  # empty (once init reaped it): nothing to signal
    me = os.getpid()
    assert not signal_remnant(me, 0)  # a live process holds that pid: never signalled


def _members(pgid):
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != b"Z":
                out.append(int(name))
    return out


def test_exits_of_processes_that_are_not_our_children_are_watched(orphans):
    pids = [orphans() for _ in range(5)]
    fds = [os.pidfd_open(pid) for pid in pids]
    inbox = Inbox()
    try:
        for fd, pid in zip(fds, pids):
            reaper.watch(pid, inbox, pidfd=fd)
        for pid in pids[:3]:
            kill_group(pid)
        wait_for(lambda: sorted(inbox.messages()) == sorted(m.Exited(p, None) for p in pids[:3]))
        for pid in pids[3:]:
            kill_group(pid)
        wait_for(lambda: len(inbox.messages()) == 5)
        assert set(inbox.messages()) == {m.Exited(p, None) for p in pids}
    finally:
        for fd in fds:
            os.close(fd)


def test_a_watch_of_a_process_already_gone_reports_at_once(orphans):
    pid = orphans()
    fd = os.pidfd_open(pid)
    kill_group(pid)
    wait_for(lambda: not alive(fd))
    inbox = Inbox()
    reaper.watch(pid, inbox, pidfd=fd)
    os.close(fd)  # the bridge keeps its own
    wait_for(lambda: inbox.messages() == [m.Exited(pid, None)])


# -- a Group restored as an earlier daemon left it ---------------------------------

GROUP_TAB = """
g:a:1:respawn:exec sleep 1000
g:b:1:once:echo ran >> {runs}
g:t:1:test:true
g:w:3:wait:exec sleep 1000
g:after:3:once:echo after >> {runs}
p:t1:1:test:true
f:t2:1:test:false
"""


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "cltab"
    runs = tmp_path / "runs"
    path.write_text(GROUP_TAB.format(runs=runs))
    return load_cltab(str(path)), runs


def restored(cltab, name, level, state, resume, *members):
    ref = Group.start(name, cltab.path)
    ref.tell(Restore(level, state, resume, tuple(members), cltab))
    return ref.proxy()


def adopt(pid):
    return Adopt("adopt", pid, os.pidfd_open(pid), proc_start(pid))


def test_a_group_comes_back_at_its_level_with_its_processes(table, orphans):
    cltab, runs = table
    a = orphans()
    g = restored(cltab, "g", "1", "DONE", None, (cltab.tag("a"), adopt(a)),
                 (cltab.tag("b"), Adopt("ran", rc=0)), (cltab.tag("t"), Adopt("ran_pass", rc=0)))
    wait_for(lambda: g.processes().get() == {"a": (P.DONE, None), "b": (P.DONE, 0),
                                             "t": (P.PASS, 0)})
    assert g.state().get() is G.DONE
    assert g.transitions().get() == [(G.CONFIGURED, "restore_done", G.DONE)]
    # a re-tell of the same level starts nothing: a is running, b and t ran
    g.tell("1").get()
    wait_for(lambda: g.state().get() is G.DONE and len(g.transitions().get()) > 1)
    assert g.processes().get()["a"] == (P.DONE, None) and alive_pid(a)
    assert not runs.exists()
    # another level stops the adopted process (the ladder: its sh dies of SIGINT)
    g.tell("2").get()
    wait_for(lambda: g.state().get() is G.DONE and g.processes().get() == {})
    assert gone(a)


def test_restored_test_groups_pass_or_fail_as_they_did(table):
    cltab, _ = table
    p = restored(cltab, "p", "1", "PASSED", None, (cltab.tag("t1"), Adopt("ran_pass", rc=0)))
    f = restored(cltab, "f", "1", "FAILED", None, (cltab.tag("t2"), Adopt("ran_fail", rc=1)))
    wait_for(lambda: p.state().get() is G.PASSED and f.state().get() is G.FAILED)
    assert p.transitions().get() == [(G.CONFIGURED, "restore_passed", G.PASSED)]
    assert f.transitions().get() == [(G.CONFIGURED, "restore_failed", G.FAILED)]


def test_a_group_caught_in_a_wait_walks_on_when_the_adopted_wait_exits(table, orphans):
    cltab, runs = table
    w = orphans()
    g = restored(cltab, "g", "3", "CONFIGURED", "3", (cltab.tag("w"), adopt(w)))
    wait_for(lambda: g.state().get() is G.STARTING)
    assert g.processes().get() == {"w": (P.RUNNING, None)}
    assert not runs.exists()  # blocked behind the wait, as before
    kill_group(w)
    wait_for(lambda: g.state().get() is G.DONE)
    wait_for(lambda: runs.exists() and runs.read_text() == "after\n")  # a once: runs on


def test_a_halted_group_comes_back_halted(table):
    cltab, _ = table
    g = restored(cltab, "g", "1", "CONFIGURED", None)
    assert g.state().get() is G.CONFIGURED and g.transitions().get() == []
    g.tell("2").get()
    wait_for(lambda: g.state().get() is G.DONE)


def alive_pid(pid):
    return not gone(pid)
