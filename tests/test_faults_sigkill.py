"""Faults to survive: a daemon killed with SIGKILL (issue 3, part B).

What is left: its children, running on in their own sessions (re-parented
to init), the socket file nobody listens on, and the status file, whose
mtime no longer moves.  The next daemon starts cleanly over the stale
socket, rewrites the status file, and warns of the old children it does
not manage.  The tests kill those orphans themselves.
"""

from __future__ import annotations

import os
import signal
import stat

from conftest import FAST, alive, stat_fields, wait_for

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
        family = [int(name) for name in os.listdir("/proc") if name.isdigit()
                  and stat_fields(int(name)) and int(stat_fields(int(name))[3]) in sessions]
        return (leaders, sessions, family) if len(family) == 3 else None

    # two leaders, each in a session of its own, and b's background sleep
    leaders, sessions, family = wait_for(family_now)
    d.proc.send_signal(signal.SIGKILL)
    assert d.proc.wait(timeout=10) == -signal.SIGKILL
    return d, leaders, sessions, family


def test_a_sigkilled_daemon_leaves_its_children_running_in_their_own_sessions(make_daemon):
    d, leaders, sessions, family = sigkilled(make_daemon)
    try:
        assert all(alive(pid) for pid in family)
        assert all(sessions[pid] == pid for pid in leaders)  # each leads a session of its own
        wait_for(lambda: all(int(stat_fields(pid)[1]) != d.proc.pid for pid in family))
        assert stat.S_ISSOCK(os.lstat(d.socket).st_mode)  # stale socket left behind
        assert d.status("g", "1") == "DONE"  # stale status: its mtime stops moving
    finally:
        kill_orphans(family)


def test_the_next_daemon_starts_cleanly_over_the_stale_socket_and_names_the_orphans(make_daemon):
    d, leaders, sessions, family = sigkilled(make_daemon)
    try:
        d.start()  # the same cltab, socket and status file
        assert d.client().request("ping")[0]
        assert f"removing stale socket {d.socket}" in d.log_text()
        wait_for(lambda: d.status() == "")  # rewritten: the old lines are gone
        warning = next(line for line in d.log_text().splitlines()
                       if "started by an earlier daemon" in line)
        assert all(str(pid) in warning for pid in family)
        assert all(alive(pid) for pid in family)  # warned of, not touched
        # the new daemon serves as usual; its own children are its own
        d.tell("g", "1")
        d.wait_state("g", "1", "DONE")
        wait_for(lambda: len(d.children()) == 2)
        assert not set(d.children()) & set(family)
        assert d.client().shutdown() == "all groups halting"
        assert d.proc.wait(timeout=20) == 0
        assert all(alive(pid) for pid in family)  # still not its to stop
    finally:
        kill_orphans(family)


def test_a_second_daemon_refuses_the_socket_of_a_live_one(make_daemon):
    d = make_daemon(TABLE, **FAST)
    again = d.cli("-d")
    assert again.returncode == 1
    assert "already listening" in again.stderr
    assert d.client().request("ping")[0]
