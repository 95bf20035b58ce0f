"""A tell or a halt arriving in every state of a group's walk (issue 7).

Through a real daemon: the issue's three reproductions, then a matrix of
every state a message can find a group in, each with a tell and with a
halt.  The group holds members that stop at once (finished `wait`,
`once` and `test` entries, an `off` entry) alongside members that ignore
SIGINT, one of which logs every stop signal it gets, so that a member
stopped twice would show.  The latest request must win, and no actor may
fault.

States a message can find a group in, and those it cannot: DUMPING and
CHECKING are transient.  DUMPING is entered when the last stop is
acknowledged and left in the same handler (dump() fires "dumped" and the
walk starts); CHECKING is entered when the walk ends and left in the same
handler (check() fires done/passed/failed).  An actor handles one message
at a time, so no message is ever received in either.  STOPPING and
HALTING last until the slowest member's stop ends; STARTING lasts while a
`wait` or `test` entry runs; CONFIGURED, DONE, PASSED and FAILED are
settled.  A halt reaches a CONFIGURED group only through the actor API
(the daemon drops a halted group once it is CONFIGURED, and makes a group
on its first tell), so that case is tested on a Group actor.
"""

from __future__ import annotations

import re
import time
from collections import Counter

import pytest

from clinit import Group, GroupState
from conftest import environ, wait_for

FAULT = re.compile(r"failed in state|died in state|Traceback|ActorDeadError|actor failed"
                   r"|internal error|did not finish in time|actor is dead")

SLOW = {"term_delay": 0.5, "kill_delay": 0.5}  # long enough to tell while it lasts


def leaders(d, tag: str) -> list[int]:
    """The daemon's children (entry leaders) of `tag`."""
    return sorted(pid for pid in d.children() if environ(pid).get("CLINIT_TAG") == tag)


def one_leader(d, tag: str) -> int:
    return wait_for(lambda: (lambda p: p[0] if len(p) == 1 else None)(leaders(d, tag)),
                    message=f"{tag} never ran exactly once")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def assert_no_fault(d) -> None:
    faults = [line for line in d.log_text().splitlines() if FAULT.search(line)]
    assert not faults, "\n".join(faults)


def shutdown(d) -> float:
    """`clinit -k`: the daemon exits 0 (SPEC §5); the time it took."""
    began = time.monotonic()
    d.cli("-k", check=0)
    assert d.proc.wait(timeout=60) == 0, d.log_text()
    return time.monotonic() - began


# -- the issue's reproductions ------------------------------------------------------------

ISSUE = """
g:x:1:wait:true
g:y:1:respawn:trap "" INT; exec sleep 1002
"""


def stopping_twice(make_daemon):
    """The issue's start: g at 1, then told 2 while y (ignoring SIGINT) is still stopping."""
    d = make_daemon(ISSUE, **SLOW)
    d.cli("g", "1", check=0)
    d.wait_state("g", "1", "DONE")
    y = one_leader(d, "y")
    d.cli("g", "2", check=0)
    d.wait_state("g", "1", "STOPPING")
    return d, y


def test_a_retell_while_stopping_ends_done_at_the_new_level(make_daemon):
    d, y = stopping_twice(make_daemon)
    d.cli("g", "2", check=0)
    assert alive(y)  # the re-tell came while the stop was under way
    d.wait_state("g", "2", "DONE")
    assert d.status() == "g 2 DONE\n"
    assert not leaders(d, "y") and not leaders(d, "x")
    assert_no_fault(d)
    shutdown(d)
    assert_no_fault(d)


def test_a_shutdown_while_stopping_exits_0(make_daemon):
    d, y = stopping_twice(make_daemon)
    d.cli("g", "2", check=0)
    took = shutdown(d)
    print(f"shutdown during a stop took {took:.2f} s")
    assert_no_fault(d)


def test_a_group_deleted_while_stopping_is_gone_after_a_reread(make_daemon):
    d, y = stopping_twice(make_daemon)
    d.write("other:z:1:once:true\n")
    d.cli(check=0)  # re-read
    assert alive(y)
    wait_for(lambda: d.status() == "", message=f"g never went: {d.status()!r}")
    wait_for(lambda: not d.children(), message="g's processes never ended")
    assert_no_fault(d)
    shutdown(d)
    assert_no_fault(d)


# -- every state, a tell and a halt ----------------------------------------------------------

def table(signals: str) -> str:
    """Levels: 1 DONE (y, n run), 2 STARTING for ever (w blocks), 3 DONE (nothing
    runs), 4 PASSED, 5 FAILED (n runs).  x, o, t, f, u, v stop at once (finished
    wait, once and test entries, an off entry); y logs its signals and survives
    SIGINT and SIGTERM; n ignores SIGINT.  Leaving 1 or 2 for 3, 4 or deletion stops
    the quick members and the slow ones together."""
    logger = (f"trap 'echo INT $$ >> {signals}' INT; trap 'echo TERM $$ >> {signals}' TERM; "
              f"echo START $$ >> {signals}; while :; do sleep 1; done")
    return f"""
        g:x:12:wait:true
        g:o:12:once:true
        g:t:1:test:true
        g:f:12:off:exec sleep 1000
        g:y:12:respawn:{logger}
        g:n:125:respawn:trap "" INT; exec sleep 1000
        g:w:2:wait:exec sleep 1000
        g:u:3:once:true
        g:v:3:wait:true
        g:p:4:test:true
        g:q:5:test:false
        other:z:1:once:true
        """


def signal_log(path) -> dict[str, Counter]:
    """pid -> Counter of START/INT/TERM lines the logger wrote."""
    out: dict[str, Counter] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        what, pid = line.split()
        out.setdefault(pid, Counter())[what] += 1
    return out


def to_state(d, state: str) -> dict:
    """Bring group g to `state`; the leaders whose aliveness proves the state lasted."""
    if state == "CONFIGURED":
        return {}  # not told yet: the daemon makes the group on the first tell
    if state == "DONE":
        d.cli("g", "1", check=0)
        d.wait_state("g", "1", "DONE")
        return {"y": one_leader(d, "y"), "n": one_leader(d, "n")}
    if state == "PASSED":
        d.cli("g", "4", check=0)
        d.wait_state("g", "4", "PASSED")
        return {}
    if state == "FAILED":
        d.cli("g", "5", check=0)
        d.wait_state("g", "5", "FAILED")
        return {"n": one_leader(d, "n")}
    if state == "STARTING":
        d.cli("g", "2", check=0)
        d.wait_state("g", "2", "STARTING")
        return {"w": one_leader(d, "w"), "y": one_leader(d, "y"), "n": one_leader(d, "n")}
    if state in ("STOPPING", "HALTING"):
        d.cli("g", "1", check=0)
        d.wait_state("g", "1", "DONE")
        running = {"y": one_leader(d, "y"), "n": one_leader(d, "n")}
        if state == "STOPPING":
            d.cli("g", "3", check=0)
        else:
            d.write("other:z:1:once:true\n")  # g deleted: the re-read halts it
            d.cli(check=0)
        d.wait_state("g", "1", state)
        return running
    raise AssertionError(state)


STATES = ("CONFIGURED", "DONE", "PASSED", "FAILED", "STOPPING", "STARTING", "HALTING")
SETTLED = {"1": "DONE", "3": "DONE", "4": "PASSED"}

# (state the tell finds the group in, level told): STOPPING is a stop from 1
# towards 3, so 3 repeats the tell under way (the issue), 1 goes back, 4 goes on
TELLS = [("CONFIGURED", "3"), ("DONE", "3"), ("PASSED", "1"), ("FAILED", "1"),
         ("STOPPING", "3"), ("STOPPING", "1"), ("STOPPING", "4"),
         ("STARTING", "3"), ("STARTING", "1"), ("HALTING", "3"), ("HALTING", "1")]


@pytest.mark.parametrize("state, level", TELLS)
def test_a_tell_in_each_state_wins(make_daemon, tmp_path, state, level):
    signals = tmp_path / "signals"
    d = make_daemon(table(signals), **SLOW)
    held = to_state(d, state)
    if state == "HALTING":
        d.write(table(signals))  # g is back in the table
    assert d.tell("g", level).startswith("level transition started")
    if state in ("STOPPING", "HALTING"):
        assert alive(held["y"]), "the tell came after the stop ended"
    d.wait_state("g", level, SETTLED[level])
    assert d.status("g") == f"{level} {SETTLED[level]}\n"
    if level == "1":
        y, n = one_leader(d, "y"), one_leader(d, "n")
        if state in ("STOPPING", "HALTING"):
            assert y != held["y"] and n != held["n"]  # stopped, then started again
        if state in ("STARTING", "FAILED"):
            assert n == held["n"]  # wanted and unchanged: never stopped
        if state == "STARTING":
            assert y == held["y"]
        assert not leaders(d, "w")
    else:
        wait_for(lambda: not d.children(), message=f"level {level} runs nothing long")
    assert_no_fault(d)
    shutdown(d)
    assert_no_fault(d)
    stopped_once(signals)


@pytest.mark.parametrize("state", [s for s in STATES if s != "CONFIGURED"])
def test_a_halt_in_each_state_wins(make_daemon, tmp_path, state):
    signals = tmp_path / "signals"
    d = make_daemon(table(signals), **SLOW)
    held = to_state(d, state)
    if state == "HALTING":
        # a second halt while halting: the shutdown's
        took = shutdown(d)
        print(f"shutdown while halting took {took:.2f} s")
    else:
        d.write("other:z:1:once:true\n")  # deleted: the re-read halts g
        d.cli(check=0)
        if "y" in held:
            assert alive(held["y"])
        wait_for(lambda: "g " not in d.status(), message=f"g never went: {d.status()!r}")
        wait_for(lambda: not d.children(), message="g's processes never ended")
        assert_no_fault(d)
        shutdown(d)
    assert_no_fault(d)
    stopped_once(signals)


def stopped_once(signals) -> None:
    """Every instance of y got exactly one SIGINT and one SIGTERM (then SIGKILL)."""
    log = signal_log(signals)
    for pid, seen in log.items():
        assert seen["START"] == 1 and seen["INT"] == 1 and seen["TERM"] == 1, (pid, log)


def test_tells_and_a_halt_back_to_back_all_land(make_daemon, tmp_path):
    """No waiting between requests: each finds the group mid-walk or mid-stop."""
    signals = tmp_path / "signals"
    d = make_daemon(table(signals), **SLOW)
    client = d.client()
    for level in ("1", "3", "1", "2", "1", "5", "3", "1"):
        assert client.tell("g", level).startswith("level transition started")
    d.wait_state("g", "1", "DONE", timeout=30)
    one_leader(d, "y")
    one_leader(d, "n")
    assert_no_fault(d)
    for level in ("3", "2"):
        assert client.tell("g", level).startswith("level transition started")
    took = shutdown(d)  # a halt while stopping and starting
    print(f"shutdown took {took:.2f} s")
    assert_no_fault(d)
    stopped_once(signals)


# -- a halt in CONFIGURED (actor API) -------------------------------------------------------

def test_a_halt_of_a_configured_group_leaves_it_configured_and_a_tell_still_works(tmp_path):
    path = tmp_path / "cltab"
    path.write_text(":::term_delay:1\n:::kill_delay:1\n"
                    "g:x:1:wait:true\ng:n:1:respawn:trap \"\" INT; exec sleep 1000\n")
    ref = Group.start("g", str(path))
    try:
        g = ref.proxy()
        g.halt().get()
        wait_for(lambda: g.state().get() is GroupState.CONFIGURED
                 and len(g.transitions().get()) == 2)
        assert g.transitions().get() == [(GroupState.CONFIGURED, "halt", GroupState.HALTING),
                                         (GroupState.HALTING, "stopped", GroupState.CONFIGURED)]
        g.halt().get()  # again: nothing to stop
        g.tell("1").get()
        wait_for(lambda: g.state().get() is GroupState.DONE)
        g.halt().get()
        wait_for(lambda: g.state().get() is GroupState.CONFIGURED, timeout=10)
        assert g.processes().get() == {}
    finally:
        ref.stop()
