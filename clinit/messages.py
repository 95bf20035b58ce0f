"""The messages clinit's actors exchange, as small immutable types.

Every message is a NamedTuple, so a wrong shape fails where it is built,
not in the receiver, and each actor dispatches on the type with `match`.
Grouped by the actor that receives them; data flows one way (SPEC §1):
daemon -> group -> process -> OS, and exits come back reaper -> process
-> group -> daemon -> status writer.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = [
    # to a Process
    "Up", "Down", "Tick", "Exited", "Adopt",
    # to a Group
    "Tell", "Halt", "ProcessChanged", "Stopped", "Fault", "Restore",
    # to the Daemon
    "Request", "GroupChanged", "MemberChanged", "MembersChanged", "FlushMembers", "Signal", "Hangup", "WaitExpired", "Listening",
    "ShutdownTimeout",
    # to the status writer
    "DropGroup", "Flush", "Beat",
    # to the reaper
    "Wake", "Watch", "ReapAll",
    # to the journal
    "Told",
]


# -- to a Process --------------------------------------------------------------

class Up(NamedTuple):
    """The table's `start` event."""


class Down(NamedTuple):
    """The table's `stop` event.  With a token, the listener hears
    `Stopped(urn, token)` once the process is CONFIGURED; with `final`,
    the actor then ends itself."""

    token: Any = None
    final: bool = False


class Tick(NamedTuple):
    """A timer fired: `event` is the table event it stands for; `gen`
    voids ticks of what is no longer under way."""

    event: str
    gen: int


class Exited(NamedTuple):
    """`pid` ended; `status` is its wait status (None: not our child, so
    its status is unknown)."""

    pid: int
    status: int | None


class Adopt(NamedTuple):
    """Take over from an earlier daemon (adoption.py).  `event` is the
    table's: `adopt` (the process `pid` still runs; `pidfd` checked
    against its recorded start time), or `ran`, `ran_pass`, `ran_fail`
    (it had run and exited)."""

    event: str
    pid: int | None = None
    pidfd: int | None = None
    start: int | None = None  # /proc/PID/stat field 22
    rc: int | None = None


# -- to a Group -----------------------------------------------------------------

class Tell(NamedTuple):
    level: str
    cltab: Any = None  # a Cltab; None: the group reads its cltab_path
    seq: int = 0  # the teller's request number, echoed in GroupChanged


class Restore(NamedTuple):
    """Come back as an earlier daemon left the group (journal.py): at
    `level` in `state` (DONE, PASSED, FAILED or CONFIGURED) with `members`
    ((Entry, Adopt) pairs), or, if it was between levels, told `resume`."""

    level: str | None
    state: str
    resume: str | None
    members: tuple
    cltab: Any


class Halt(NamedTuple):
    seq: int = 0


class ProcessChanged(NamedTuple):
    """A process's transition, with what an operator wants to see of it."""

    urn: str
    tag: str
    state: Any  # ProcessState
    rc: int | None  # last exit: code, or -signal
    pid: int | None = None
    started: float | None = None  # time.time() of the last spawn
    restarts: int = 0
    throttled_until: float | None = None  # time.time() the respawn pause ends
    path: tuple = ()  # the states entered before `state` since the last report, in order


class Stopped(NamedTuple):
    """The stop that carried `token` is complete."""

    urn: str
    token: Any


class Fault(NamedTuple):
    """The process actor `urn` faulted; it is stopping its process."""

    urn: str
    tag: str
    text: str


# -- to the Daemon --------------------------------------------------------------

class Request(NamedTuple):
    """A client's request (a dict checked by protocol.decode_request);
    `ask` it: the answer is `(ok, text)` or a dict."""

    request: dict
    reply: Any = None  # a callable for answers given later (wait, watch)


class GroupChanged(NamedTuple):
    """A group's transitions, ending in `state` at `level`; also what the
    status writer keeps."""

    name: str
    level: str | None
    state: Any  # GroupState
    seq: int = 0  # the newest tell or halt the group has taken
    path: tuple = ()  # (level, state) of the states passed through before `state`, in order


class MemberChanged(NamedTuple):
    """A process of group `group` changed (forwarded by the group)."""

    group: str
    change: ProcessChanged
    entry: Any = None  # the Entry it runs (the journal keeps its mode and command)


class MembersChanged(NamedTuple):
    """The `MemberChanged`s of one group, in order, sent in batches: before
    the group's own next `GroupChanged`, or FLUSH_AFTER seconds after the
    first of them, whichever comes first (a mass stop is one message, not
    a thousand)."""

    group: str
    changes: tuple  # of MemberChanged


class FlushMembers(NamedTuple):
    """A group's timer: send the batch of member changes."""


class Signal(NamedTuple):
    signum: int


class Hangup(NamedTuple):
    """The client of a held connection went away (from the server's loop)."""

    token: int


class WaitExpired(NamedTuple):
    """A waiting request's timeout ran out (from clinit.timers)."""

    token: int


class Listening(NamedTuple):
    """run() bound the socket: the daemon serves."""


class ShutdownTimeout(NamedTuple):
    """A shutdown took too long."""


# -- to the status writer ------------------------------------------------------

class DropGroup(NamedTuple):
    name: str


class Flush(NamedTuple):
    """Write the file now (status and journal writers); `when_quiet`: the
    journal writer's own timer, which waits while a burst goes on."""

    when_quiet: bool = False


class Beat(NamedTuple):
    pass


# -- to the reaper ----------------------------------------------------------------

class Wake(NamedTuple):
    """Something may have exited: collect it."""


class Watch(NamedTuple):
    """Send `owner` an `Exited` when `pid` ends (`pidfd`: the reaper's own
    pidfd for it, opened by a caller that checked whom it names)."""

    pid: int
    owner: Any
    pidfd: int | None = None


class ReapAll(NamedTuple):
    on: bool


# -- to the journal ---------------------------------------------------------------

class Told(NamedTuple):
    """Group `group` was told `level` (None: halted): the level it heads for."""

    group: str
    level: str | None
