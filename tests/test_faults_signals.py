"""Faults to survive: signals to the daemon (issue 3, part B).

SIGTERM and SIGINT shut it down gracefully, SIGHUP re-reads cltab,
SIGCHLD storms lose no exit and leave no zombie, and a client that went
away before its answer (SIGPIPE) does not hurt it.
"""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from conftest import FAST, environ, gone, wait_for, zombies_of

STORM = 300


# -- SIGTERM, SIGINT: graceful shutdown -------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_and_sigint_shut_the_daemon_down_gracefully(make_daemon, signum):
    d = make_daemon("""
        a:meek:1:respawn:exec sleep 1000
        a:stubborn:1:respawn:trap "" INT TERM; exec sleep 1000
        b:other:1:once:exec sleep 1000
    """, **FAST)
    d.tell("a", "1")
    d.tell("b", "1")
    d.wait_state("a", "1", "DONE")
    d.wait_state("b", "1", "DONE")
    children = wait_for(lambda: len(d.children()) == 3 and d.children())
    d.proc.send_signal(signum)
    assert d.proc.wait(timeout=20) == 0
    assert all(gone(pid) for pid in children)
    assert not d.socket.exists() and not d.clstat.exists()
    assert f"{signal.Signals(signum).name}: shutting down" in d.log_text()


def test_a_second_sigterm_during_shutdown_changes_nothing(make_daemon):
    d = make_daemon("""
        a:stubborn:1:respawn:trap "" INT TERM; exec sleep 1000
    """, term_delay=0.3, kill_delay=0.3)
    d.tell("a", "1")
    d.wait_state("a", "1", "DONE")
    [pid] = wait_for(lambda: d.children())
    d.proc.send_signal(signal.SIGTERM)
    d.wait_state("a", "1", "HALTING")
    d.proc.send_signal(signal.SIGTERM)
    d.proc.send_signal(signal.SIGINT)
    assert d.proc.wait(timeout=20) == 0
    assert gone(pid)


# -- SIGHUP: re-read ---------------------------------------------------------------------

def test_sighup_rereads_cltab_and_halts_a_deleted_group_only(make_daemon):
    d = make_daemon("""
        a:keep:1:respawn:exec sleep 1000
        b:drop:1:respawn:exec sleep 1000
    """, **FAST)
    d.tell("a", "1")
    d.tell("b", "1")
    d.wait_state("a", "1", "DONE")
    d.wait_state("b", "1", "DONE")
    # (a child just spawned may show the daemon's environment until it execs)
    wait_for(lambda: len(d.children()) == 2
             and all(environ(pid).get("CLINIT_GROUP") for pid in d.children()))
    from_a = [pid for pid in d.children() if environ(pid).get("CLINIT_GROUP") == "a"]
    d.write("""
        a:keep:1:respawn:exec sleep 1000
    """)
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: d.status("b") == "")  # b halted, its line gone
    assert d.children() == from_a  # a untouched
    assert d.proc.poll() is None
    assert d.client().request("ping")[0]


def test_many_sighups_in_a_row_leave_the_daemon_serving(make_daemon):
    d = make_daemon("""
        a:keep:1:respawn:exec sleep 1000
    """, **FAST)
    d.tell("a", "1")
    d.wait_state("a", "1", "DONE")
    [pid] = wait_for(lambda: d.children())
    for _ in range(200):
        d.proc.send_signal(signal.SIGHUP)
    assert d.client().request("ping")[0]
    assert d.children() == [pid]
    assert d.proc.poll() is None


# -- SIGCHLD storms -----------------------------------------------------------------------

def test_hundreds_of_children_killed_at_once_are_all_noticed_and_reaped(make_daemon):
    entries = "\n".join(f"storm:s{i}:1:respawn:exec sleep 1000" for i in range(STORM))
    d = make_daemon(entries + "\n", **FAST)
    d.tell("storm", "1")
    d.wait_state("storm", "1", "DONE", timeout=60)
    first = wait_for(lambda: len(d.children()) == STORM and set(d.children()), timeout=60)
    began = time.monotonic()
    for pid in first:  # every leader leads its own group: killpg each, back to back
        os.killpg(pid, signal.SIGKILL)
    # every exit noticed: each entry is respawned, none with an old pid, no zombie left
    wait_for(lambda: len(d.children()) == STORM and not set(d.children()) & first
             and not zombies_of(d.proc.pid), timeout=60)
    respawned = time.monotonic() - began
    assert d.client().request("ping")[0]
    # and a shutdown stops all of them at once (a second storm) and reaps every one
    second = set(d.children())
    began = time.monotonic()
    assert d.client().shutdown() == "all groups halting"
    assert d.proc.wait(timeout=60) == 0
    print(f"\n{STORM} children SIGKILLed at once: all respawned, no zombie, in {respawned:.2f} s; "
          f"shutdown of {STORM}: {time.monotonic() - began:.2f} s")
    assert all(gone(pid) for pid in second)


def test_hundreds_of_once_entries_exiting_together_leave_no_zombie(make_daemon):
    entries = "\n".join(f"storm:o{i}:1:once:exec sleep 0.3" for i in range(STORM))
    d = make_daemon(entries + "\n", **FAST)
    d.tell("storm", "1")
    d.wait_state("storm", "1", "DONE", timeout=60)

    def all_reaped():
        return not d.children() and not zombies_of(d.proc.pid)

    wait_for(all_reaped, timeout=60)
    # every exit reached its entry: a stop has nothing left to wait for
    d.tell("storm", "2")
    d.wait_state("storm", "2", "DONE", timeout=60)


# -- SIGPIPE: a client that went away ---------------------------------------------------------

def test_clients_that_leave_before_the_answer_do_not_hurt_the_daemon(make_daemon):
    d = make_daemon("""
        a:keep:1:respawn:exec sleep 1000
    """, **FAST)
    d.tell("a", "1")
    d.wait_state("a", "1", "DONE")
    [pid] = wait_for(lambda: d.children())
    path = d.client().conf("socket")
    requests = [b'{"cmd":"tell","group":"a","level":"1"}\n',  # answered after we left
                b'{"cmd":"ping"}\n',
                b'{"cmd":"tell","gro']  # half a request: the error answer meets a closed socket
    for i in range(60):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        sock.sendall(requests[i % len(requests)])
        sock.close()
    assert d.client().request("ping")[0]
    assert d.proc.poll() is None
    assert d.children() == [pid]
    d.wait_state("a", "1", "DONE")  # the last re-tells may still be walking
