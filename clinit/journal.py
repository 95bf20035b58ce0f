"""The journal: what a daemon runs, kept for the daemon after it.

A daemon killed with SIGKILL cannot say what it left running.  So every
daemon keeps a small file next to the status file (`CLSTAT.journal`),
replaced atomically after every burst of changes, that records

- each told group: its level (the one its status line shows), its state,
  and the level it was last told (its target, None after a halt);
- each process the groups hold: group, tag, the mode and command it was
  started for, its state and last exit code, and while it runs its pid
  and start time (`/proc/PID/stat` field 22, clock ticks since boot:
  with the pid, it names one process even if the pid is reused).

The daemon's `journalwriter.py` keeps it; the next daemon reads it
(`load`), and `adoption.py` finds the survivors
and decides what to adopt.  A clean shutdown removes the file: nothing
it named still runs.

The format is JSON lines, one record a line, readable with `jq`:

    {"clinit_journal": 1, "daemon": 812, "daemon_start": 40172, "boot": "5c0f..."}
    {"group": "web", "level": "1", "state": "DONE", "target": "1"}
    {"process": "nginx", "group": "web", "mode": "respawn", "command": "nginx",
     "state": "DONE", "rc": null, "pid": 815, "start": 40190}

(one line per process).  The boot id makes a journal from before a
reboot worthless at once, whatever pids it names.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, NamedTuple

__all__ = ["GroupRecord", "MemberRecord", "Snapshot", "JournalError", "journal_path",
           "proc_start", "start_wall", "boot_id", "dumps", "loads", "load", "member_line",
           "group_line", "head_line", "state_name", "VERSION"]

log = logging.getLogger("clinit.journal")

VERSION = 1


class GroupRecord(NamedTuple):
    name: str
    level: str | None  # the level its status line shows
    state: str  # a GroupState name
    target: str | None = None  # the level last told; None after a halt


class MemberRecord(NamedTuple):
    group: str
    tag: str
    mode: str  # the entry's, as it was started
    command: str
    state: str  # a ProcessState name
    rc: int | None = None
    pid: int | None = None  # while it runs
    start: int | None = None  # /proc/PID/stat field 22 of pid


class Snapshot(NamedTuple):
    daemon: int  # pid of the daemon that wrote it
    daemon_start: int | None
    boot: str | None  # /proc/sys/kernel/random/boot_id when written
    groups: tuple = ()  # GroupRecord, in the order groups were first told
    members: tuple = ()  # MemberRecord


class JournalError(ValueError):
    """A journal that cannot be used (names the line and the problem)."""


def journal_path(clstat: str) -> str:
    """The journal of the daemon whose status file is `clstat`."""
    return f"{clstat}.journal"


def proc_start(pid: int, parent: int | None = None) -> int | None:
    """`pid`'s start time (clock ticks after boot), None if it is not running
    (gone or a zombie) or, with `parent`, is not that process's child."""
    try:  # os-level: three system calls, where open() makes six and a buffer
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, 4096)
        finally:
            os.close(fd)
        fields = data.rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # fields[0] is field 3 (state): field N is fields[N - 3]
    if fields[0] in (b"Z", b"X") or (parent is not None and int(fields[1]) != parent):
        return None
    return int(fields[19])


def start_wall(ticks: int | None) -> float | None:
    """A start time in clock ticks after boot as time.time() (to the second)."""
    if ticks is None:
        return None
    try:
        with open("/proc/stat", "rb") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None


# -- the file format ----------------------------------------------------------

def dumps(snapshot: Snapshot) -> str:
    return "".join([head_line(snapshot.daemon, snapshot.daemon_start, snapshot.boot),
                    *map(group_line, snapshot.groups), *map(member_line, snapshot.members)])


def _line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


def head_line(daemon: int, daemon_start: int | None, boot: str | None) -> str:
    return _line({"clinit_journal": VERSION, "daemon": daemon, "daemon_start": daemon_start,
                  "boot": boot})


def group_line(g: GroupRecord) -> str:
    return _line({"group": g.name, "level": g.level, "state": g.state, "target": g.target})


def member_line(m: MemberRecord) -> str:
    return _line({"process": m.tag, "group": m.group, "mode": m.mode, "command": m.command,
                  "state": m.state, "rc": m.rc, "pid": m.pid, "start": m.start})


def _field(record: dict, name: str, kinds: tuple, number: int, optional: bool = False,
           negative: bool = False) -> Any:
    if name not in record:
        raise JournalError(f"line {number}: no {name!r}")
    value = record[name]
    if value is None and optional:
        return None
    if not isinstance(value, kinds) or isinstance(value, bool):
        raise JournalError(f"line {number}: {name!r} is {value!r}, not a "
                           + " or ".join(k.__name__ for k in kinds))
    if isinstance(value, str) and not value:
        raise JournalError(f"line {number}: {name!r} is empty")
    if isinstance(value, int) and value < 0 and not negative:
        raise JournalError(f"line {number}: {name!r} is negative")
    return value


def loads(text: str) -> Snapshot:
    """Parse a journal; JournalError names the first problem and its line."""
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except ValueError as err:
            raise JournalError(f"line {number}: not JSON ({err})") from None
        if not isinstance(record, dict):
            raise JournalError(f"line {number}: not a JSON object")
        records.append((number, record))
    if not records or records[0][1].get("clinit_journal") != VERSION:
        raise JournalError(f"line 1: not a clinit journal of version {VERSION}")
    _, head = records[0]
    daemon = _field(head, "daemon", (int,), 1)
    daemon_start = _field(head, "daemon_start", (int,), 1, optional=True)
    boot = _field(head, "boot", (str,), 1, optional=True)
    groups, members, seen_groups, seen_tags = [], [], set(), set()
    for number, record in records[1:]:
        if "group" in record and "process" not in record:
            group = GroupRecord(_field(record, "group", (str,), number),
                                _field(record, "level", (str,), number, optional=True),
                                _field(record, "state", (str,), number),
                                _field(record, "target", (str,), number, optional=True))
            if group.name in seen_groups:
                raise JournalError(f"line {number}: group {group.name!r} twice")
            seen_groups.add(group.name)
            groups.append(group)
        elif "process" in record:
            member = MemberRecord(_field(record, "group", (str,), number),
                                  _field(record, "process", (str,), number),
                                  _field(record, "mode", (str,), number),
                                  _field(record, "command", (str,), number),
                                  _field(record, "state", (str,), number),
                                  _field(record, "rc", (int,), number, optional=True,
                                         negative=True),  # -N: killed by signal N
                                  _field(record, "pid", (int,), number, optional=True),
                                  _field(record, "start", (int,), number, optional=True))
            if member.pid is not None and (member.pid < 2 or member.start is None):
                raise JournalError(f"line {number}: pid {member.pid} without a start time"
                                   if member.start is None else f"line {number}: bad pid {member.pid}")
            if member.tag in seen_tags:
                raise JournalError(f"line {number}: process {member.tag!r} twice")
            seen_tags.add(member.tag)
            members.append(member)
        else:
            raise JournalError(f"line {number}: neither a group nor a process")
    return Snapshot(daemon, daemon_start, boot, tuple(groups), tuple(members))


def load(path: str) -> Snapshot | None:
    """The journal at `path` if there is a usable one; every other case is
    logged (one clear line) and gives None: nothing is adopted."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        log.info("no journal %s: the previous daemon, if any, shut down cleanly", path)
        return None
    except (OSError, UnicodeDecodeError) as err:
        log.error("cannot read journal %s: %s; adopting nothing", path, err)
        return None
    try:
        snapshot = loads(text)
    except JournalError as err:
        log.error("journal %s is corrupt (%s); adopting nothing: processes of the previous "
                  "daemon are left alone, unmanaged", path, err)
        return None
    if snapshot.boot != boot_id():
        log.info("journal %s was written before the last reboot: ignored", path)
        return None
    if snapshot.daemon_start is not None and snapshot.daemon != os.getpid() \
            and proc_start(snapshot.daemon) == snapshot.daemon_start:
        log.error("journal %s belongs to daemon %d, which still runs (with another socket?): "
                  "adopting nothing", path, snapshot.daemon)
        return None
    return snapshot


def state_name(state: Any) -> str:
    return getattr(state, "name", None) or str(state)
