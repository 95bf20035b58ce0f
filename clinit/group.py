"""The Group actor: one resource group and its state machine (SPEC §4).

`tell(level)` stops, gracefully, every process the new level does not
want (not in the level, deleted from cltab, or with a changed mode or
command), forgets them, then walks the level's entries in cltab order:
new or changed entries start, `wait` and `test` entries block the walk
until they finish, entries that already ran unchanged are skipped.
Every transition goes to the listener in a `messages.GroupChanged` (with
the number of the newest tell or halt, so a waiter knows which request a
report answers), and every member's change as `messages.MemberChanged`.
The transitions of one message's handling go out as one report, the
states passed through in its `path` (a re-tell passes through four
states before DONE: one report instead of five, for the daemon and for
the status and journal writers it feeds).

`Restore` brings the group back as an earlier daemon, killed with
SIGKILL, left it (the `restore_*` rows; journal.py): at its level, with
its processes adopted or restored as finished, or told its target again
if it was between levels.

A tell or halt may arrive at any moment of the walk: the newest wins.
A member already being stopped finishes that stop (it is never stopped
twice), and a member whose actor has ended counts as stopped.

Faults.  A process actor that faults stops its own process and tells the
group: the group turns FAILED (at once when settled, at CHECKING while
it starts), and the next tell replaces that actor with a fresh one.  An
exception inside the group actor itself is logged with the group's name
and state, and the group halts every process it holds and ends FAILED
(the level it was at stays on its status line); the next tell starts
afresh.  A fault while halting is logged and the halt goes on.  These
are rows of the table too (`member_fault`, `fault`, `killed`), on top of
the walk of SPEC §4.
"""

from __future__ import annotations

import enum
import logging
from typing import Any

import pykka

import time

from . import reaper, timers
from .actor import Actor
from .cltab import load_cltab
from .fsm import ANY, Machine, row, to_dot
from .messages import (Down, Fault, FlushMembers, GroupChanged, Halt, MemberChanged, MembersChanged,
                       ProcessChanged,
                       Restore, Stopped, Tell, Up)
from .process import Process, ProcessState, Timings, injected_fault

__all__ = ["Group", "GroupState", "TABLE", "dot"]

log = logging.getLogger("clinit.group")


class GroupState(enum.Enum):
    CONFIGURED = "CONFIGURED"
    STARTING = "STARTING"
    CHECKING = "CHECKING"
    DONE = "DONE"
    PASSED = "PASSED"
    FAILED = "FAILED"
    STOPPING = "STOPPING"
    DUMPING = "DUMPING"
    HALTING = "HALTING"

    def __str__(self) -> str:
        return self._value_  # the attribute itself: .value goes through enum's descriptor


G = GroupState
P = ProcessState
_NOT_HALTING = frozenset(GroupState) - {G.HALTING}  # a fault while halting: the halt goes on

TABLE = (
    row(ANY, "tell", G.STOPPING, action="stop_unwanted", note="stop what the new level does not want"),
    row(G.STOPPING, "stopped", G.DUMPING, action="dump", note="all of it is stopped"),
    row(G.DUMPING, "dumped", G.STARTING, action="walk"),
    row(G.STARTING, "unblocked", G.STARTING, action="walk", note="a wait or test entry finished: walk on"),
    row(G.STARTING, "walked", G.CHECKING, action="check"),
    row(G.CHECKING, "failed", G.FAILED, note="a test failed, or a process faulted"),
    row(G.CHECKING, "passed", G.PASSED, note="every entry is a test and all passed"),
    row(G.CHECKING, "done", G.DONE),
    row((G.DONE, G.PASSED), "member_fault", G.FAILED, note="a process actor faulted: replaced on the next tell"),
    row(ANY, "halt", G.HALTING, action="stop_all"),
    row(G.HALTING, "stopped", G.FAILED, guard="halting_after_fault", action="dump",
        note="the group actor faulted: its level stays on the status line"),
    row(G.HALTING, "stopped", G.CONFIGURED, action="dump"),
    row(_NOT_HALTING, "fault", G.HALTING, action="stop_all",
        note="the group actor faulted: halt every process, end FAILED"),
    row(ANY, "killed", G.FAILED, action="drop_all",
        note="last resort: the halt after a fault failed too; processes killed"),
    # as an earlier daemon, killed with SIGKILL, left it (Restore, journal.py)
    row(G.CONFIGURED, "restore_done", G.DONE, note="restored from the journal"),
    row(G.CONFIGURED, "restore_passed", G.PASSED, note="restored from the journal"),
    row(G.CONFIGURED, "restore_failed", G.FAILED, note="restored from the journal"),
)

# a blocking entry's process has finished when it reports one of these
_FINISHED = frozenset({P.DONE, P.PASS, P.FAIL, P.CONFIGURED})
_BLOCKING_MODES = ("wait", "test")
_SETTLED = frozenset({G.DONE, G.PASSED, G.FAILED})
FLUSH_AFTER = 0.02  # seconds a member's change may wait to go out with others
_SPAWNING = frozenset({P.SETUP, P.RUNBG})  # told to start, not yet reported running
# the state a restored member reaches on its Adopt event (process.py's adoption rows)
_ADOPTED_STATE = {"adopt": lambda e: P.RUNNING if e.mode == "wait" else P.DONE,
                  "ran": lambda e: P.DONE, "ran_pass": lambda e: P.PASS,
                  "ran_fail": lambda e: P.FAIL}


def dot() -> str:
    """The group machine as Graphviz DOT."""
    return to_dot("group", TABLE, GroupState)


def _now_in(info: ProcessChanged, state: ProcessState, pid: int | None) -> ProcessChanged:
    """A member's last report, moved on to `state` (with `pid`) by the group
    itself: the states its process passed through before that report
    (`path`) were reported with it, and must not be shown again."""
    return ProcessChanged(info.urn, info.tag, state, info.rc, pid, info.started,
                          info.restarts, info.throttled_until)


class _Member:
    """What the group knows of one of its processes."""

    __slots__ = ("entry", "ref", "info", "faulted", "doomed")

    def __init__(self, entry, ref):
        self.entry = entry
        self.ref = ref
        self.info = ProcessChanged(ref.actor_urn, entry.tag, P.CONFIGURED, None)  # its last report
        self.faulted = False  # its actor faulted: replaced on the next tell
        self.doomed = False  # told to end itself once stopped: never reused

    @property
    def state(self) -> ProcessState:
        return self.info.state


class Group(Actor):
    """One resource group.  `Group.start(name, cltab_path)` returns an ActorRef."""

    def __init__(self, name: str, cltab_path: str | None = None,
                 listener: pykka.ActorRef | None = None, settings: dict | None = None):
        super().__init__()
        reaper.ensure()
        self.name = name
        self.cltab_path = cltab_path
        self.listener = listener
        self.settings = dict(settings or {})
        self.machine = Machine(self, TABLE, G.CONFIGURED)
        self.level: str | None = None  # the level the status line shows
        self.seq = 0  # the newest Tell/Halt taken, echoed in every GroupChanged
        self._target: str | None = None  # the level being told
        self._cltab = None
        self._members: dict[str, _Member] = {}  # tag -> member
        self._by_urn: dict[str, _Member] = {}
        self._stopping: dict[str, int] = {}  # urn -> token of the stop we wait for
        self._token = 0
        self._walk: list = []  # entries still to walk
        self._blocked: tuple[str, bool] | None = None  # (urn, seen it start) of a wait/test
        self._faults: list[str] = []
        self._fault_halt = False  # halting because the group itself faulted: end FAILED
        self._since = time.monotonic()  # when the request under way arrived
        self._stopped_count = 0  # members stopped since the last "stopped"
        self._outbox: list = []  # member changes not yet sent (MembersChanged)
        self._reached: list = []  # (level, state) of transitions not yet reported
        self._handling = False  # inside on_receive: transitions are reported at its end
        self._spawning: set[str] = set()  # CHECKING waits for these members' first reports

    # -- public API (through a proxy): each is the same way in as its message

    def tell(self, level: str, cltab=None, seq: int = 0) -> str:
        """Switch the group to `level`; re-reads cltab_path unless given a table.

        A bad table raises CltabError here and changes nothing."""
        if cltab is None:
            cltab = load_cltab(self.cltab_path)
        self.on_receive(Tell(level, cltab, seq))
        return "level transition started"

    def halt(self, seq: int = 0) -> str:
        self.on_receive(Halt(seq))
        return "group halting"

    def state(self) -> GroupState:
        return self.machine.state

    def transitions(self) -> list:
        return list(self.machine.log)

    def processes(self) -> dict:
        """tag -> (ProcessState, last exit code) of every process the group holds."""
        return {tag: (m.state, m.info.rc) for tag, m in self._members.items()}

    # -- messages --------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        self._handling = True
        try:
            self._receive(message)
        except Exception as exc:  # noqa: BLE001 - the fault policy is the handler
            self._fault(exc)
        finally:
            self._handling = False
            self._report()

    def _receive(self, message: Any) -> None:
        match message:
            case ProcessChanged(urn=urn, state=state):
                member = self._by_urn.get(urn)
                if member is not None:
                    member.info = message
                    self._forward(message, member.entry)
                    for step in message.path:
                        self._on_progress(urn, step)
                    self._on_progress(urn, state)
                    if urn in self._spawning and state not in _SPAWNING:
                        self._spawning.discard(urn)
                        if not self._spawning and self.machine.state is G.CHECKING:
                            self.check()  # the last background entry it waited for started
            case Stopped(urn, token):
                if self._stopping.get(urn) == token:
                    del self._stopping[urn]
                    self._forget_member(urn)  # its stop was final: the actor has ended
                    if not self._stopping:
                        self._all_stopped()
            case Fault(urn, tag, text):
                member = self._by_urn.get(urn)
                if member is not None:
                    member.faulted = True
                    self._faults.append(f"{tag}: {text}")
                    self.machine.fire("member_fault")  # settled: FAILED; else CHECKING sees it
            case Tell(level, cltab, seq):
                self._tell(level, cltab, seq)
            case FlushMembers():
                self._flush_members()
            case Halt(seq):
                self.seq = max(self.seq, seq)
                self._fault_halt = False
                self._halt()
            case Restore():
                self._restore(message)
            case _:
                log.warning("group %s: unknown message %r", self.name, message)

    def _tell(self, level: str, cltab, seq: int) -> None:
        if cltab is None:
            cltab = load_cltab(self.cltab_path)
        self.seq = max(self.seq, seq)
        if level != self._target:
            log.info("group %s: told level %s (was %s)", self.name, level,
                     self._target if self._target is not None else "none")
        self._cltab = cltab
        self._target = level
        self._walk = []
        self._blocked = None
        self._spawning = set()
        self._faults = []
        self._fault_halt = False
        self._since = time.monotonic()
        self.machine.fire("tell")

    def _halt(self) -> None:
        self._target = None
        self._walk = []
        self._blocked = None
        self._spawning = set()
        self._since = time.monotonic()
        self.machine.fire("halt")

    def on_transition(self, old, event, new) -> None:
        if new is G.DONE:
            injected_fault("group", self.name)
        if new in _SETTLED:
            log.info("group %s settled %s at level %s in %.3f s", self.name, new, self.level,
                     time.monotonic() - self._since)
        if self.listener is not None and new is not old:  # a self-loop shows nothing new
            self._reached.append((self.level, new))
            if not self._handling:
                self._report()

    def _report(self) -> None:
        """The transitions not yet reported, as one GroupChanged."""
        if not self._reached or self.listener is None:
            return
        self._flush_members()  # what its members did comes first
        reached, self._reached = self._reached, []
        level, state = reached[-1]
        try:
            self.listener.tell(GroupChanged(self.name, level, state, self.seq, tuple(reached[:-1])))
        except pykka.ActorDeadError:
            self.listener = None

    def _forward(self, change: ProcessChanged, entry) -> None:
        """Pass a member's change on, so the daemon can show every process:
        in a batch, sent before the group's own next report or FLUSH_AFTER
        seconds after the batch began."""
        if self.listener is None:
            return
        if not self._outbox:
            timers.after(FLUSH_AFTER, self.actor_ref, FlushMembers())
        self._outbox.append(MemberChanged(self.name, change, entry))

    def _flush_members(self) -> None:
        if self._outbox and self.listener is not None:
            batch, self._outbox = tuple(self._outbox), []
            try:
                self.listener.tell(MembersChanged(self.name, batch))
            except pykka.ActorDeadError:
                self.listener = None

    def _fault(self, exc: BaseException) -> None:
        state = self.machine.state
        log.error("group %s failed in state %s: %s: %s; halting its processes",
                  self.name, state, type(exc).__name__, exc, exc_info=exc)
        self._faults.append(f"group: {type(exc).__name__}: {exc}")
        try:
            self._fault_halt = state is not G.HALTING or self._fault_halt
            self._target = None
            self._walk = []
            self._blocked = None
            self.machine.fire("fault")  # a halt under way goes on
        except Exception:  # noqa: BLE001 - last resort: nothing may run unsupervised
            log.exception("group %s: halting after the fault failed too: killing its processes",
                          self.name)
            self.machine.fire("killed")

    def drop_all(self) -> None:
        for member in list(self._members.values()):
            try:
                member.ref.stop(block=False)  # a Process kills its process group as it ends
            except pykka.ActorDeadError:
                pass
        self._members.clear()
        self._by_urn.clear()
        self._stopping.clear()

    def on_failure(self, exc_type, exc_value, tb) -> None:
        # Only reached if pykka itself stops the actor (the handlers are guarded).
        log.error("group %s died in state %s: %r; killing its processes",
                  self.name, self.machine.state, exc_value)
        self.machine.fire("killed")

    def on_stop(self) -> None:
        for member in list(self._members.values()):
            member.ref.stop()

    # -- guards ----------------------------------------------------------

    def halting_after_fault(self) -> bool:
        return self._fault_halt

    # -- actions ---------------------------------------------------------

    def _all_stopped(self) -> None:
        if self._stopped_count:
            log.info("group %s: %d processes stopped in %.3f s", self.name, self._stopped_count,
                     time.monotonic() - self._since)
            self._stopped_count = 0
        self.machine.fire("stopped")

    @staticmethod
    def _unwanted(member: _Member, entry) -> bool:
        return entry is None or member.faulted or not member.entry.same_run(entry)

    def _stop_member(self, member: _Member) -> None:
        # Every stop the group makes is final: the member's actor ends itself
        # once it acknowledges, off the group's critical path, and the group
        # forgets it then.  A member already being stopped is left to finish
        # that stop (a re-tell or halt never stops it twice), and one whose
        # actor has already ended counts as stopped.
        if member.doomed:
            return
        urn = member.ref.actor_urn
        self._token += 1
        member.doomed = True
        try:
            member.ref.tell(Down(self._token, True))
        except pykka.ActorDeadError:
            self._forget_member(urn)
            return
        self._stopping[urn] = self._token
        self._stopped_count += 1
        if member.info.pid is not None:
            self._forward(_now_in(member.info, P.STOPPING, member.info.pid), member.entry)

    def _forget_member(self, urn: str) -> None:
        member = self._by_urn.pop(urn, None)
        if member is not None:
            if self._members.get(member.entry.tag) is member:
                del self._members[member.entry.tag]
            # its last report, as it is now: stopped, no pid
            self._forward(_now_in(member.info, P.CONFIGURED, None), member.entry)

    def stop_unwanted(self) -> None:
        wanted = {e.tag: e for e in self._cltab.level(self.name, self._target)}
        for tag, member in self._members.items():
            if self._unwanted(member, wanted.get(tag)):
                self._stop_member(member)
        if not self._stopping:
            self._all_stopped()

    def stop_all(self) -> None:
        for member in self._members.values():
            self._stop_member(member)
        if not self._stopping:
            self._all_stopped()

    def dump(self) -> None:
        """Forget the stopped processes the target level does not keep."""
        wanted = {}
        if self._target is not None:
            wanted = {e.tag: e for e in self._cltab.level(self.name, self._target)}
        for tag, member in list(self._members.items()):
            if member.doomed or self._unwanted(member, wanted.get(tag)):
                del self._members[tag]
                del self._by_urn[member.ref.actor_urn]
                if not member.doomed:
                    try:
                        member.ref.stop(block=False)
                    except pykka.ActorDeadError:
                        pass
        if self._target is not None:
            self.level = self._target
            self._walk = list(reversed(wanted.values()))
            self.machine.fire("dumped")

    def walk(self) -> None:
        """Start entries in order until one blocks or none is left."""
        timings = self._timings()
        while self._walk:
            entry = self._walk.pop()
            member = self._members.get(entry.tag)
            if member is None:
                member = self._new_member(entry, timings)
                self._up(member)
            elif member.state is P.CONFIGURED:
                member.entry = entry
                self._up(member)
            elif entry.mode in _BLOCKING_MODES and member.state not in _FINISHED:
                self._blocked = (member.ref.actor_urn, True)  # still running from before
            if self._blocked is not None:
                return
        self.machine.fire("walked")

    def _timings(self) -> Timings:
        return Timings.from_settings({**self.settings, **self._cltab.settings})

    def _new_member(self, entry, timings: Timings) -> _Member:
        ref = Process.start(entry, self.actor_ref, timings, self.level)
        member = _Member(entry, ref)
        self._members[entry.tag] = member
        self._by_urn[ref.actor_urn] = member
        return member

    def _restore(self, restore: Restore) -> None:
        """Come back as an earlier daemon left the group (see Restore)."""
        if self.machine.state is not G.CONFIGURED or self._members:
            log.warning("group %s: cannot be restored in state %s", self.name, self.machine.state)
            return
        self._cltab = restore.cltab
        self.level = restore.level
        self._target = restore.level if restore.state != "CONFIGURED" else None
        timings = self._timings()
        for entry, adopt in restore.members:
            member = self._new_member(entry, timings)
            member.info = member.info._replace(state=_ADOPTED_STATE[adopt.event](entry),
                                               pid=adopt.pid, rc=adopt.rc)
            member.ref.tell(adopt)
        if restore.resume is not None:
            log.info("group %s: restored between levels: told %s again", self.name, restore.resume)
            self._tell(restore.resume, restore.cltab, self.seq)
        elif restore.state != "CONFIGURED":
            self.machine.fire(f"restore_{restore.state.lower()}")

    def _up(self, member: _Member) -> None:
        member.info = _now_in(member.info, P.SETUP, member.info.pid)  # reports follow
        member.ref.tell(Up())
        if member.entry.mode in _BLOCKING_MODES:
            self._blocked = (member.ref.actor_urn, False)

    def _on_progress(self, urn: str, state: ProcessState) -> None:
        if self._blocked is None or self._blocked[0] != urn:
            return
        if state is P.SETUP:
            self._blocked = (urn, True)
        elif self._blocked[1] and state in _FINISHED:
            self._blocked = None
            self.machine.fire("unblocked")  # walks on while STARTING

    def check(self) -> None:
        """Settle once every background entry has started (or failed to):
        DONE means their processes run, so a waiting operator finds them."""
        entries = self._cltab.level(self.name, self.level)
        members = [self._members[e.tag] for e in entries if e.tag in self._members]
        self._spawning = {m.ref.actor_urn for m in members if m.state in _SPAWNING}
        if self._spawning:
            return  # CHECKING until their reports (a message away) come
        tests = [m for m in members if m.entry.mode == "test"]
        if self._faults or any(m.state is not P.PASS for m in tests):
            self.machine.fire("failed")
        elif entries and len(tests) == len(entries):
            self.machine.fire("passed")
        else:
            self.machine.fire("done")
