"""The journal writer actor: keeps the daemon's journal (`journal.py`) true.

Only the daemon imports this module (it needs pykka); the format and the
reader are `journal.py`.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from . import messages as m
from . import timers
from .actor import Actor
from .clstat import write_atomically
from .journal import (GroupRecord, MemberRecord, Snapshot, boot_id, group_line, head_line, loads,
                      member_line, proc_start, state_name)

__all__ = ["JournalWriter", "MIN_GAP", "MODE"]

log = logging.getLogger("clinit.journal")

MIN_GAP = 0.02  # seconds of quiet before a burst is written, and at least between two writes ...
GAP_FACTOR = 20  # ... and at least 20 times what the last write took (<= 5 % of a core) ...
MAX_GAP = 1.0  # ... but never more than this
MAX_DEFER = 1.0  # seconds a burst that goes on may wait for its write, at most
MODE = 0o600  # commands may carry what only the daemon's user should read


class JournalWriter(Actor):
    """Keeps the journal true: one atomic write per burst of messages, once
    no message came for MIN_GAP seconds (so a burst is written once, after
    it ended, off the critical path of the spawn or stop that made it),
    or MAX_DEFER seconds after its first if it goes on; and (each write is
    the whole file) at most one every MIN_GAP seconds, or 20 times what the
    last one took if more; nothing is written when the burst changed
    nothing.  A process started just before a SIGKILL may be missing (the
    next daemon warns of it by its environment).

    Messages: `GroupChanged`, `DropGroup`, `Told` (a tell or halt: the
    group's target), `MemberChanged` (a process's state, with its entry),
    `Flush`.  `remove()` when the daemon exits (nothing it ran runs on).

    A new process's start time is read when the burst is written, and
    only while the process is still the daemon's child: a pid that died
    and was reused meanwhile is recorded without one (as not running),
    and never adopted.  Each record's line is kept encoded, so a write
    re-encodes only what changed since the last.
    """

    use_daemon_thread = True

    def __init__(self, path: str, seed: Snapshot | None = None):
        super().__init__()
        self.path = path
        self.me = os.getpid()
        self.head = head_line(self.me, proc_start(self.me), boot_id())
        self.groups: dict[str, GroupRecord] = {}
        self.members: dict[tuple[str, str], MemberRecord] = {}
        self._lines: dict[tuple[str, str], str] = {}  # members' encoded lines
        self._unstarted: set[tuple[str, str]] = set()  # running, start time not read yet
        self._dirty: set[tuple[str, str]] = set()  # changed since their line was encoded
        for group in (seed.groups if seed else ()):
            self.groups[group.name] = group
        for member in (seed.members if seed else ()):  # adopted: start times known
            self._set(member)
        self._queued = False
        self._last = 0.0  # monotonic time of the last write
        self._began = self._changed = 0.0  # monotonic times of a burst's first and last message
        self._gap = MIN_GAP  # seconds from one write to the next, at least
        # what the file holds, as a hash: the text is the journal's size (150 KiB
        # at 1,000 processes); were two texts to share a 64-bit hash, one write
        # would wait for the next change
        self._written: int | None = None
        self._error: str | None = None
        self._removed = False

    def on_start(self) -> None:
        self._write()

    def on_receive(self, message: Any) -> None:
        match message:
            case m.GroupChanged(name, level, state):
                old = self.groups.get(name)
                self.groups[name] = GroupRecord(name, None if level is None else str(level),
                                                state_name(state), old.target if old else None)
                if state_name(state) == "CONFIGURED":  # halted: it holds no process
                    self._drop_members(name)
            case m.Told(name, level):
                old = self.groups.get(name) or GroupRecord(name, None, "CONFIGURED")
                self.groups[name] = old._replace(target=level)
            case m.DropGroup(name):
                self.groups.pop(name, None)
                self._drop_members(name)
            case m.MemberChanged(group, change, entry):
                self._note(group, change, entry)
            case m.MembersChanged(_, changes):
                # only the last change of each process in a batch is kept
                # (a spawn reports three), but its entry may be on an earlier one
                last: dict = {}
                for item in changes:
                    key = item.change.tag
                    entry = item.entry if item.entry is not None else last.get(key, (0, 0, None))[2]
                    last[key] = (item.group, item.change, entry)
                for group, change, entry in last.values():
                    self._note(group, change, entry)
            case m.Flush(when_quiet):
                now = time.monotonic()
                quiet = now - self._changed
                if when_quiet and quiet < MIN_GAP and now - self._began < MAX_DEFER:
                    timers.after(MIN_GAP - quiet, self.actor_ref, m.Flush(True))  # it goes on
                    return
                self._queued = False
                self._write()
                return
            case _:
                log.warning("journal: unknown message %r", message)
                return
        self._changed = now = time.monotonic()
        if not self._queued:  # one write a burst, off the burst's critical path
            self._queued = True
            self._began = now
            wait = max(MIN_GAP, self._last + self._gap - now)
            timers.after(wait, self.actor_ref, m.Flush(True))

    def _set(self, record: MemberRecord) -> None:
        key = (record.group, record.tag)
        self.members[key] = record
        self._lines.setdefault(key, "")  # its place in the file: first noted, first written
        self._dirty.add(key)
        if record.pid is not None and record.start is None:
            self._unstarted.add(key)
        else:
            self._unstarted.discard(key)

    def _forget(self, key: tuple[str, str]) -> None:
        self.members.pop(key, None)
        self._lines.pop(key, None)
        self._unstarted.discard(key)
        self._dirty.discard(key)

    def _note(self, group: str, change: m.ProcessChanged, entry) -> None:
        key = (group, change.tag)
        old = self.members.get(key)
        state = state_name(change.state)
        if state == "CONFIGURED" and change.pid is None:  # stopped and forgotten
            self._forget(key)
            return
        if entry is not None:
            mode, command = entry.mode, entry.command
        elif old is not None:
            mode, command = old.mode, old.command
        else:
            return  # nothing to know it by
        start = old.start if old is not None and old.pid == change.pid else None
        self._set(MemberRecord(group, change.tag, mode, command, state, change.rc,
                               change.pid, start))

    def _drop_members(self, group: str) -> None:
        for key in [k for k in self.members if k[0] == group]:
            self._forget(key)

    def snapshot(self) -> Snapshot:
        """What the journal holds now (reading the start times still unknown)."""
        self._read_starts()
        return loads(self._text())

    def _read_starts(self) -> None:
        for key in list(self._unstarted):
            member = self.members[key]
            start = proc_start(member.pid, parent=self.me)
            if start is not None:
                self._set(member._replace(start=start))

    def _text(self) -> str:
        for key in self._dirty:  # encoded once a write, however often it changed
            record = self.members[key]
            if key in self._unstarted:
                record = record._replace(pid=None)  # not known to be running yet
            self._lines[key] = member_line(record)
        self._dirty.clear()
        return "".join([self.head, *map(group_line, self.groups.values()),
                        *self._lines.values()])

    def _write(self) -> None:
        if self._removed:
            return
        self._last = time.monotonic()
        self._read_starts()
        text = self._text()
        digest = hash(text)
        if digest == self._written:
            return  # a burst that ended as it began (a re-tell of the same level)
        try:
            write_atomically(self.path, text, MODE)
            took = time.monotonic() - self._last
            self._gap = min(MAX_GAP, max(MIN_GAP, GAP_FACTOR * took))
        except OSError as err:
            if str(err) != self._error:
                log.error("cannot write journal %s: %s", self.path, err)
            self._error = str(err)
            return
        self._written = digest
        if self._error is not None:
            log.warning("journal %s written again", self.path)
            self._error = None

    def remove(self) -> None:
        """A clean shutdown: nothing named in the journal runs any more."""
        self._removed = True
        try:
            os.unlink(self.path)
        except OSError:
            pass
