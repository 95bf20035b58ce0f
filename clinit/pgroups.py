"""Process groups and /proc: which processes are ours, and signalling them.

Every child runs in a session (and process group) of its own, whose id is
its leader's pid.  While the leader lives, the id is safe to signal.  Once
the leader is reaped the id may be reused, so a group is only signalled
again while it is provably ours: the Process that started it still owns
the id (`claim` / `owner`), no process has that pid, and every member
descends from this process (the daemon is a child subreaper).  The
registry is a plain dict shared by the Process actors: each entry is
written only by the actor that claimed it, and single dict operations are
atomic.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Callable

__all__ = ["claim", "owner", "release", "killpg", "proc_table", "members_of", "Leftovers",
           "kill_children", "find_by_environ"]

log = logging.getLogger("clinit.process")

WATCH_MAX = 256  # orphans of an owner's leftover groups watched at once for wakeups

_owner: dict[int, str] = {}  # pgid -> urn of the Process whose leader created it


def claim(pgid: int, urn: str) -> None:
    """A new leader got `pgid`: it names this new group only, from now on."""
    _owner[pgid] = urn


def owner(pgid: int | None) -> str | None:
    return _owner.get(pgid) if pgid is not None else None


def release(pgid: int, urn: str) -> None:
    """`urn` is done with `pgid` (a newer owner keeps it)."""
    if _owner.get(pgid) == urn:
        _owner.pop(pgid, None)


def killpg(pgid: int | None, sig: int) -> None:
    """Signal a process group; a group that is gone or not ours is ignored."""
    if pgid is None:
        return
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def proc_table() -> dict[int, tuple[bytes, int, int, int]]:
    """pid -> (state, ppid, pgrp, session) of every process, zombies included."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        table[int(name)] = (fields[0], int(fields[1]), int(fields[2]), int(fields[3]))
    return table


def members_of(pgid: int) -> list[tuple[int, int]] | None:
    """(pid, ppid) of the members of `pgid` if it is provably a group this
    process made ([] if it is empty, None if it is not ours any more).

    Ours: the leader `pgid` itself is gone (our leader was reaped; a live
    process with that pid is a newcomer), and every member descends from
    this process.  Cheap when the group is empty (one killpg).
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except OSError:
        return None
    table = proc_table()
    if pgid in table:
        return None
    me = os.getpid()
    members = [(pid, info[1]) for pid, info in table.items() if info[2] == pgid]
    for pid, ppid in members:
        for _ in range(64):  # walk up to us
            if ppid == me:
                break
            if ppid not in table or ppid <= 1:
                return None
            ppid = table[ppid][1]
        else:
            return None
    return members


class Leftovers:
    """The process groups an owner's exited leaders left members in.

    A `once` entry `sleep 1000 & exit 0`, or a SIGKILLed nginx master
    whose workers live on: the group's id is kept while it has members,
    and only while it is provably the owner's (`members_of`).  Orphans
    among the members (re-parented to us, a child subreaper) are handed
    to `watch` once each, so that their exits wake the owner up.
    """

    __slots__ = ("urn", "name", "pgids", "watched")

    def __init__(self, urn: str, name: str):
        self.urn = urn  # the owner, as in claim()
        self.name = name  # for log records
        self.pgids: list[int] = []
        self.watched: set[int] = set()

    def remember(self, pgid: int) -> None:
        """The leader of `pgid` was just reaped: keep the group if it has members."""
        try:
            os.killpg(pgid, 0)
        except OSError:
            release(pgid, self.urn)  # empty: the id is free for anyone
            return
        if pgid not in self.pgids:
            self.pgids.append(pgid)
            log.info("%s: its leader exited, leaving processes in its group %d", self.name, pgid)

    def live(self, watch: Callable[[int], None] | None = None) -> list[int]:
        """The remembered groups that still have members and are provably ours."""
        live = []
        me = os.getpid()
        for pgid in list(self.pgids):
            members = members_of(pgid) if owner(pgid) == self.urn else None
            if not members:
                if members is None:
                    log.warning("%s: process group %d is no longer provably ours "
                                "(pid reused, or we are not a child subreaper): not signalling it",
                                self.name, pgid)
                self.pgids.remove(pgid)
                release(pgid, self.urn)
                continue
            live.append(pgid)
            if watch is not None:
                for pid, ppid in members:
                    if ppid == me and pid not in self.watched and len(self.watched) < WATCH_MAX:
                        self.watched.add(pid)
                        watch(pid)
        return live

    def unwatch(self, pid: int) -> bool:
        """`pid` exited: True if it was one of the watched orphans."""
        if pid in self.watched:
            self.watched.discard(pid)
            return True
        return False

    def forget(self) -> None:
        for pgid in self.pgids:
            release(pgid, self.urn)
        self.pgids.clear()
        self.watched.clear()


def kill_children() -> list[int]:
    """SIGKILL the process group of every live child of this process (never our own group)."""
    me, own = os.getpid(), os.getpgrp()
    killed = []
    for pid, (state, ppid, pgrp, _) in proc_table().items():
        if ppid != me or state == b"Z":
            continue
        try:
            if pgrp not in (own, 0):
                os.killpg(pgrp, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except OSError:
            pass
    return killed


def find_by_environ(*entries: str) -> list[int]:
    """Live pids (other than ours, zombies left out) whose environment holds
    every `NAME=VALUE` given, exactly."""
    needles = {entry.encode() for entry in entries}
    me, found = os.getpid(), []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = set(f.read().split(b"\0"))
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if needles <= env and state not in (b"Z", b"X"):
            found.append(int(name))
    return sorted(found)
