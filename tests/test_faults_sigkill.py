"""Faults to survive: a daemon killed with SIGKILL (issue 3 part B, issue 8 part 5).

What is left: its children, running on in their own sessions (re-parented
to init), the socket file nobody listens on, the status file, whose mtime
no longer moves, and its journal.  The next daemon starts cleanly over the
stale socket, names every survivor from the journal (by pid and start
time, whatever they did to their environment), and adopts those whose
entry is unchanged: the groups come back as they were, a re-tell starts
no duplicate, a stop stops them with the ladder.  Survivors whose entry
changed or vanished are stopped.
"""

from __future__ import annotations

import json
import os
import random
import signal
import stat

from conftest import FAST, alive, cmdline, environ, gone, proc_table, stat_fields, wait_for

TABLE = """
    g:a:1:respawn:exec sleep 1000
    g:b:1:once:sleep 1000 & exec sleep 1000
"""


def kill_orphans(pids) -> None:
    for pid in pids:
        try:
            os.killpg(int(stat_fields(pid)[2]), signal.SIGKILL)
        except (OSError, TypeError):
            pass
    wait_for(lambda: not any(alive(pid) for pid in pids))


def sigkilled(make_daemon):
    """A daemon running g, then SIGKILLed: (daemon, its former descendants)."""
    d = make_daemon(TABLE, heartbeat=0.1, **FAST)
    d.tell("g", "1")
    d.wait_state("g", "1", "DONE")

    def family_now():
        """The leaders and everything in their sessions, once each leads its own."""
        leaders = d.children()
        sessions = {pid: int(stat_fields(pid)[3]) for pid in leaders if stat_fields(pid)}
        if len(leaders) != 2 or any(sid != pid for pid, sid in sessions.items()):
            return None
        family = sessions_of(sessions)
        return (leaders, sessions, family) if len(family) == 3 else None

    # two leaders, each in a session of its own, and b's background sleep
    leaders, sessions, family = wait_for(family_now)
    d.journaled(leaders)
    kill_daemon(d)
    return d, leaders, sessions, family


def kill_daemon(d) -> None:
    d.proc.send_signal(signal.SIGKILL)
    assert d.proc.wait(timeout=10) == -signal.SIGKILL


def test_a_sigkilled_daemon_leaves_its_children_running_in_their_own_sessions(make_daemon):
    d, leaders, sessions, family = sigkilled(make_daemon)
    try:
        assert all(alive(pid) for pid in family)
        assert all(sessions[pid] == pid for pid in leaders)  # each leads a session of its own
        wait_for(lambda: all(int(stat_fields(pid)[1]) != d.proc.pid for pid in family))
        assert stat.S_ISSOCK(os.lstat(d.socket).st_mode)  # stale socket left behind
        assert d.status("g", "1") == "DONE"  # stale status: its mtime stops moving
        assert os.path.exists(f"{d.clstat}.journal")  # and the journal of what ran
    finally:
        kill_orphans(family)


def test_a_second_daemon_refuses_the_socket_of_a_live_one(make_daemon):
    d = make_daemon(TABLE, **FAST)
    again = d.cli("-d")
    assert again.returncode == 1
    assert "already listening" in again.stderr
    assert d.client().request("ping")[0]


# -- adoption ------------------------------------------------------------------------

# Each leader's command line names it (U: this run's, so that no other
# process on the machine is mistaken for one of ours).  b records the signals it gets and
# leaves a background sleep that ignores SIGINT (sh does that) in its group;
# e runs with an empty environment (as nginx and redis overwrite theirs, no
# CLINIT_* variable is left to find it by); z is a finished wait entry.
U = random.randrange(10**6)
ADOPT = """
    g:a:1:respawn:exec sleep 1001.{u}
    g:b:1:once:: {u}; trap 'echo INT >> {folder}/signals; exit 0' INT; sleep 1002.{u} & wait
    g:e:1:once:exec env -i sleep 1003.{u}
    g:z:1:wait:echo z >> {folder}/runs
    g:c:1:once:exec sleep 1004.{u}
    w:w:1:wait:exec sleep 1005.{u}
    w:after:1:once:echo after >> {folder}/runs
"""
MARKS = {"a": f"sleep 1001.{U}", "b": f"/bin/sh -c : {U};", "e": f"sleep 1003.{U}",
         "c": f"sleep 1004.{U}", "w": f"sleep 1005.{U}"}


def leaders() -> dict[str, int]:
    """tag -> pid of each live session leader whose command line names it."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        fields = stat_fields(pid)
        if fields is None or int(fields[3]) != pid or fields[0] == b"Z":
            continue
        line = cmdline(pid)
        for tag, mark in MARKS.items():
            if line == mark or (mark.endswith(";") and line.startswith(mark)):
                found[tag] = pid
    return found


def sessions_of(pids) -> list[int]:
    """Every live process in the sessions led by `pids`."""
    wanted = set(pids)
    return [pid for pid, (state, _, _, sid) in proc_table().items()
            if sid in wanted and state != b"Z"]


def adopting(make_daemon, tmp_path, table=ADOPT):
    """A daemon running g and w (w blocked in its wait), then SIGKILLed:
    (daemon, tag -> leader pid, `clinit -v` before the kill)."""
    d = make_daemon(table.format(folder=tmp_path, u=U), heartbeat=0.1, **FAST)
    d.tell("g", "1")
    d.tell("w", "1")
    d.wait_state("g", "1", "DONE")
    d.wait_state("w", "1", "STARTING")
    before = wait_for(lambda: leaders() if len(leaders()) == 5 else None)
    wait_for(lambda: len(sessions_of(before.values())) == 6)  # b's background sleep too
    shown = d.cli("-v", check=0).stdout
    d.journaled(before.values())
    kill_daemon(d)
    return d, before, shown



def test_the_next_daemon_adopts_what_the_killed_one_left(make_daemon, tmp_path):
    d, before, shown = adopting(make_daemon, tmp_path)
    family = sessions_of(before.values())
    try:
        assert environ(before["e"]) == {}  # nothing to find it by but the journal
        d.start()  # the same cltab, socket, status file and journal
        log = d.logged(f"removing stale socket {d.socket}", "still run:")
        found = next(line for line in log.splitlines() if "still run:" in line)
        assert "5 of its 5 running processes still run" in found
        named = {tag: f"{'w' if tag == 'w' else 'g'}/{tag}" for tag in before}
        assert all(f"{named[tag]} pid {pid}" in found for tag, pid in before.items())
        wait_for(lambda: all(f"{named[tag]}: adopted pid {pid}" in d.log_text()
                             for tag, pid in before.items()))
        # the groups as they were, before any tell; the same processes
        wait_for(lambda: d.cli("-v", check=0).stdout == shown)
        assert shown.endswith("cltab unchanged\ng 1 DONE\nw 1 STARTING\n")
        assert leaders() == before and all(alive(pid) for pid in family)
        assert d.children() == []  # adopted, not restarted: still init's children
        # the daemon shows each adopted process with its pid and its real uptime
        def shown():
            return json.loads(d.cli("--status", "--processes", "--json", check=0).stdout)["processes"]

        rows = wait_for(lambda: (lambda r: r if {x["tag"]: x["pid"] for x in r if x["pid"]}
                                 == before else None)(shown()))
        assert all(r["uptime"] > 0 for r in rows if r["pid"] is not None)
        assert {r["tag"]: r["state"] for r in rows} == {
            "a": "DONE", "b": "DONE", "e": "DONE", "z": "DONE", "c": "DONE", "w": "RUNNING",
            "after": "CONFIGURED"}

        # a re-tell of the same level starts no duplicate and re-runs nothing
        assert d.tell("g", "1").startswith("level transition started")
        d.wait_state("g", "1", "DONE")
        assert leaders() == before and d.children() == []
        assert (tmp_path / "runs").read_text() == "z\n"

        # an adopted respawn entry killed is restarted, as the new daemon's child
        os.kill(before["a"], signal.SIGKILL)
        new_a = wait_for(lambda: leaders().get("a") not in (None, before["a"]) and leaders()["a"])
        assert d.children() == [new_a]

        # the adopted wait exits: its group walks on
        os.kill(before["w"], signal.SIGTERM)
        d.wait_state("w", "1", "DONE")
        wait_for(lambda: (tmp_path / "runs").read_text() == "z\nafter\n")  # a once: runs on

        # another level stops them with the ladder: SIGINT first, group and all
        assert d.tell("g", "2").startswith("level transition started")
        d.wait_state("g", "2", "DONE")
        wait_for(lambda: all(gone(pid) for pid in family))
        assert (tmp_path / "signals").read_text() == "INT\n"
        assert gone(new_a)

        assert d.client().shutdown() == "all groups halting"
        assert d.proc.wait(timeout=20) == 0
        assert not os.path.exists(f"{d.clstat}.journal")  # a clean exit: nothing to adopt
    finally:
        kill_orphans(family)


def test_a_survivor_whose_entry_changed_or_vanished_is_stopped(make_daemon, tmp_path):
    d, before, shown = adopting(make_daemon, tmp_path)
    family = sessions_of(before.values())
    try:
        changed = ADOPT.replace("    g:a:1:respawn:exec sleep 1001.{u}\n", "") \
                       .replace("exec sleep 1004.{u}", "exec sleep 1006.{u}")
        d.write(changed.format(folder=tmp_path, u=U))
        d.start()
        d.logged(f"stopping g/c pid {before['c']}, left by an earlier daemon: its command changed",
                 f"stopping g/a pid {before['a']}, left by an earlier daemon: "
                 "its entry was deleted from cltab")
        wait_for(lambda: gone(before["a"]) and gone(before["c"]))
        assert all(alive(before[tag]) for tag in "bew")  # unchanged: adopted
        wait_for(lambda: d.cli("-v", check=0).stdout == shown)
        # a re-tell starts the changed entry anew, as the daemon's child; the rest stays
        d.tell("g", "1")
        d.wait_state("g", "1", "DONE")
        wait_for(lambda: [cmdline(pid) for pid in d.children()] == [f"sleep 1006.{U}"])
        assert all(alive(before[tag]) for tag in "bew")
        assert d.client().shutdown() == "all groups halting"
        assert d.proc.wait(timeout=20) == 0
        assert all(gone(pid) for pid in family)
    finally:
        kill_orphans(family)


def test_a_daemon_killed_again_and_again_keeps_its_processes(make_daemon, tmp_path):
    d = make_daemon(f"g:a:1:respawn:exec sleep 1001.{U}\n", heartbeat=0.1, **FAST)
    d.tell("g", "1")
    pid = wait_for(lambda: leaders().get("a"))
    try:
        for _ in range(3):
            d.journaled([pid])
            kill_daemon(d)
            d.start()
            assert d.status() == "g 1 DONE\n"  # as it was, from the first write on
            wait_for(lambda: f"g/a: adopted pid {pid}" in d.log_text())
            d.log.write_text("")  # the next round's lines only
            assert leaders() == {"a": pid}
        d.tell("g", "0")
        d.wait_state("g", "0", "DONE")
        assert gone(pid)
    finally:
        kill_orphans([pid])


def test_without_a_usable_journal_nothing_is_adopted_and_the_orphans_are_named(make_daemon):
    d, leaders_, sessions, family = sigkilled(make_daemon)
    try:
        with open(f"{d.clstat}.journal", "w") as f:
            f.write("{ not a journal\n")
        d.start()
        log = d.logged(f"journal {d.clstat}.journal is corrupt (line 1: not JSON",
                       "adopting nothing", "started by an earlier daemon")
        warning = next(line for line in log.splitlines() if "started by an earlier daemon" in line)
        assert all(str(pid) in warning for pid in family)  # found by their environment
        wait_for(lambda: d.status() == "")  # the groups are not known
        assert all(alive(pid) for pid in family)  # warned of, not touched
        assert d.client().shutdown() == "all groups halting"
        assert d.proc.wait(timeout=20) == 0
        assert all(alive(pid) for pid in family)  # still not its to stop
    finally:
        kill_orphans(family)


def test_a_daemon_that_cannot_start_leaves_the_journal_for_the_next(make_daemon, tmp_path):
    d = make_daemon(f"g:a:1:respawn:exec sleep 1001.{U}\n", heartbeat=0.1, **FAST)
    d.tell("g", "1")
    pid = wait_for(lambda: leaders().get("a"))
    try:
        d.journaled([pid])
        kill_daemon(d)
        d.write(f":::socket_group:no-such-group-here\ng:a:1:respawn:exec sleep 1001.{U}\n")
        d.start(wait=False)
        assert d.proc.wait(timeout=20) == 1
        assert "cannot listen" in d.log_text()
        assert os.path.exists(f"{d.clstat}.journal") and alive(pid)
        d.write(f"g:a:1:respawn:exec sleep 1001.{U}\n")
        d.start()
        wait_for(lambda: f"g/a: adopted pid {pid}" in d.log_text())
        assert d.client().shutdown() == "all groups halting"
        assert d.proc.wait(timeout=20) == 0
        assert gone(pid)
    finally:
        kill_orphans([pid])
