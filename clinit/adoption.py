"""Adoption: the processes an earlier daemon left running, and what to do with each.

After a daemon is killed with SIGKILL, its children run on, re-parented
to init.  The next daemon reads the journal it left (`journal.py`) and

1. finds the survivors (`find_survivors`): each recorded pid that still
   runs, with the recorded start time, still leading its own session.
   It is opened as a pidfd first and checked after, so the pidfd names
   the recorded process and no other, even if the pid is reused later;
2. plans (`plan`, pure): each group is recreated at its recorded level
   and state.  A survivor whose entry is unchanged (same group, tag,
   mode and command) is adopted; one whose entry changed or vanished, or
   that was being stopped, or a test whose result would be lost, is a
   stray: it is stopped with the usual ladder, then forgotten.  Entries
   that had run and exited are restored as finished (a re-tell does not
   re-run them); a respawn entry whose process died meanwhile is
   restarted.  A group caught between levels is told its target again.

Signalling an adopted process (`signal_group`) must be as safe against
pid reuse as signalling a child.  The leader's pid is its process group
id (it leads its own session, which it cannot leave), and while the
leader lives nobody else can get that number.  So the group is signalled
with killpg only after the leader's pidfd shows it has not exited (a
pidfd becomes readable when its process exits).  Once the leader is
gone, what is left of its group (`signal_remnant`) is signalled only
while no process has the leader's pid: Linux does not hand out a pid
that is still a live group's id, so a group with members and no process
of that pid is the remnant of ours.
"""

from __future__ import annotations

import logging
import os
import select
from typing import NamedTuple

from .cltab import Entry
from .journal import MemberRecord, Snapshot, load, proc_start
from .messages import Adopt

__all__ = ["Survivor", "GroupPlan", "Plan", "find_survivors", "plan", "take_over",
           "alive", "signal_group", "signal_remnant", "stray_entry", "describe"]

log = logging.getLogger("clinit.adoption")

SETTLED = ("DONE", "PASSED", "FAILED")
_WALKING = ("STOPPING", "DUMPING", "STARTING", "CHECKING")
_ADOPTABLE = {"RUNNING": "adopt", "RUNFG": "adopt", "DONE": "adopt", "RUNBG": "adopt"}
_FINISHED = {"RUNNING": "ran", "RUNFG": "ran", "DONE": "ran", "RUNBG": "ran", "PAUSING": "ran",
             "PASS": "ran_pass", "FAIL": "ran_fail"}


class Survivor(NamedTuple):
    record: MemberRecord
    pidfd: int


class GroupPlan(NamedTuple):
    name: str
    level: str | None
    state: str  # its recorded state: what it shows until told
    resume: str | None  # a level to tell it at once (it was between levels)
    members: tuple  # (Entry, Adopt), in cltab order


class Plan(NamedTuple):
    groups: tuple  # GroupPlan
    adopted: tuple  # MemberRecord of each survivor adopted
    strays: tuple  # (MemberRecord, Adopt, why): survivors to stop, then forget


def alive(pidfd: int) -> bool:
    """The process behind `pidfd` has not exited (its pidfd is not readable)."""
    poll = select.poll()
    poll.register(pidfd, select.POLLIN)
    return not poll.poll(0)


def _leads_session(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return False
    return int(fields[2]) == pid and int(fields[3]) == pid


def find_survivors(snapshot: Snapshot) -> tuple[dict, list]:
    """({tag: Survivor} of recorded processes that still run, [MemberRecord] gone)."""
    found, gone = {}, []
    for record in snapshot.members:
        if record.pid is None:
            continue
        try:
            fd = os.pidfd_open(record.pid)
        except OSError:
            gone.append(record)
            continue
        # checked after opening: if the start time matches now, the pidfd
        # (opened earlier, while the same long-lived process held the pid) is it
        if proc_start(record.pid) == record.start and _leads_session(record.pid) and alive(fd):
            found[record.tag] = Survivor(record, fd)
        else:
            os.close(fd)
            gone.append(record)
    return found, gone


def _unchanged(record: MemberRecord, entry: Entry | None) -> str | None:
    """None if `entry` may keep `record`'s process; else why not."""
    if entry is None:
        return "its entry was deleted from cltab"
    if entry.group != record.group:
        return f"its entry moved to group {entry.group}"
    if entry.mode != record.mode:
        return f"its mode changed from {record.mode} to {entry.mode}"
    if entry.command != record.command:
        return "its command changed"
    return None


def plan(snapshot: Snapshot, survivors: dict, cltab) -> Plan:
    """What to recreate, adopt and stop (see the module doc).  Pure."""
    by_group: dict[str, list[MemberRecord]] = {}
    for record in snapshot.members:
        by_group.setdefault(record.group, []).append(record)
    groups, adopted, strays = [], [], []

    def stray(record: MemberRecord, why: str) -> None:
        s = survivors[record.tag]
        strays.append((record, Adopt("adopt", record.pid, s.pidfd, record.start), why))

    recorded = {g.name: g for g in snapshot.groups}
    for name, records in by_group.items():
        if name not in recorded:
            for record in records:
                if record.tag in survivors:
                    stray(record, f"its group {name} is not in the journal")
    for g in snapshot.groups:
        records = by_group.get(g.name, [])
        if not cltab.has_group(g.name):
            for record in records:
                if record.tag in survivors:
                    stray(record, f"group {g.name} was deleted from cltab")
            continue
        keep = g.state in SETTLED or g.state in _WALKING
        members = []
        for record in records:
            entry = cltab.tag(record.tag)
            why = _unchanged(record, entry) if keep else f"group {g.name} was halting"
            if record.tag in survivors:
                if why is None and record.state not in _ADOPTABLE:
                    why = f"it was {record.state}"  # being stopped, or a test still running
                if why is not None:
                    stray(record, why)
                    continue
                s = survivors[record.tag]
                members.append((entry, Adopt("adopt", record.pid, s.pidfd, record.start, record.rc)))
                adopted.append(record)
            elif why is None and record.state in _FINISHED:
                members.append((entry, Adopt(_FINISHED[record.state], rc=record.rc)))
        order = {e.tag: i for i, e in enumerate(cltab.group(g.name))}
        members.sort(key=lambda m: order[m[0].tag])
        if g.state in _WALKING:
            resume = g.target if g.target is not None else g.level
            state = "CONFIGURED"
        else:
            resume, state = None, g.state if g.state in SETTLED else "CONFIGURED"
        groups.append(GroupPlan(g.name, g.level, state, resume, tuple(members)))
    return Plan(tuple(groups), tuple(adopted), tuple(strays))


def take_over(path: str, cltab) -> tuple[Plan | None, Snapshot | None]:
    """Read the journal at `path` and plan the take-over; logs what it found.

    Returns (plan, seed): the seed is what the new daemon's journal starts
    with (the restored groups and the adopted processes, whose start
    times only the old journal knows).  (None, None) without a usable
    journal: nothing is adopted.
    """
    snapshot = load(path)
    if snapshot is None:
        return None, None
    survivors, gone = find_survivors(snapshot)
    running = [r for r in snapshot.members if r.pid is not None]
    log.warning("journal %s: daemon %d ended without a shutdown (killed?); %d of its %d "
                "running processes still run%s%s", path, snapshot.daemon, len(survivors),
                len(running), ": " + ", ".join(describe(s.record) for s in survivors.values())
                if survivors else "", "; gone: " + ", ".join(map(describe, gone)) if gone else "")
    p = plan(snapshot, survivors, cltab)
    for g in p.groups:
        log.info("group %s: restored at level %s %s with %d processes%s", g.name, g.level,
                 g.state, len(g.members), f", told {g.resume} again" if g.resume else "")
    restored = {g.name for g in p.groups}
    seed = Snapshot(snapshot.daemon, snapshot.daemon_start, snapshot.boot,
                    tuple(g for g in snapshot.groups if g.name in restored), p.adopted)
    return p, seed


def stray_entry(record: MemberRecord) -> Entry:
    """An entry to stop a stray with: `once`, so that it is never restarted."""
    return Entry(record.group, record.tag, "", "once", record.command, 0)


def describe(record: MemberRecord) -> str:
    return f"{record.group}/{record.tag} pid {record.pid}"


def signal_group(pidfd: int, pgid: int, sig: int) -> bool:
    """Signal an adopted leader's whole process group, if the leader still
    runs (see the module doc); True if it was signalled."""
    if not alive(pidfd):
        return False
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def signal_remnant(pgid: int, sig: int) -> bool:
    """Signal what is left of an adopted leader's group after the leader is gone."""
    if proc_start(pgid) is not None:
        return False  # a process runs with that pid again: the id is not ours
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True
