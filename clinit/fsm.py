"""The small engine behind the three state machines.

A machine is a transition table, given as data: a tuple of `Row`s.  Each
row says: in one of these states, on this event, if this guard holds,
go to that state and run that action.  The engine looks rows up, keeps
the log of every transition, and renders a table as Graphviz DOT.  It
knows nothing about processes, groups or actors: the owner object
supplies guards and actions as methods, named by the rows.
"""

from __future__ import annotations

import enum
import weakref
from typing import Any, Iterable, NamedTuple

__all__ = ["Row", "row", "Machine", "ANY", "LOG_MAX", "to_dot"]

#: `Row.sources` value meaning "from every state of the machine"
ANY = None

#: transitions kept in a machine's log (at least; at most twice as many)
LOG_MAX = 1000


class Row(NamedTuple):
    """One line of a transition table."""

    sources: frozenset | None  # states the row applies in; ANY for all
    event: str
    target: enum.Enum
    guard: str | None = None  # owner method name: the row applies only if it returns true
    action: str | None = None  # owner method name, called after the state changed
    note: str = ""  # why the row exists, shown in DOT


def row(sources: Iterable[enum.Enum] | enum.Enum | None, event: str, target: enum.Enum,
         guard: str | None = None, action: str | None = None, note: str = "") -> Row:
    """Build a row, accepting one state or several as sources."""
    if sources is ANY:
        src = ANY
    elif isinstance(sources, enum.Enum):
        src = frozenset([sources])
    else:
        src = frozenset(sources)
    return Row(src, event, target, guard, action, note)


class Machine:
    """Runs one transition table for one owner.

    `fire(event, *args)` finds the first row for the current state and the
    event whose guard holds, records `(old, event, new)`, sets the state,
    then calls the row's action with `*args`.  It returns True if a row
    applied; an event with no row changes nothing and returns False, so
    the owner decides whether that is worth a log line.
    """

    __slots__ = ("owner", "_state", "log", "_index")

    def __init__(self, owner: Any, table: tuple[Row, ...], initial: enum.Enum):
        # Weakly: an owner keeps its machine, and a machine that kept its owner
        # would make every ended actor a cycle, freed only by the collector's
        # rare full passes (a daemon ending thousands of Process actors then
        # grew its RSS for minutes; issue 7).  The owner must outlive it.
        self.owner = weakref.proxy(owner)
        self._state = initial
        # At least the newest LOG_MAX transitions: enough to see any state
        # passed through, bounded so a process respawning for months stays
        # small.  (A list trimmed in halves, not a deque: an empty deque is
        # large, times one machine per process; see bench/RESULTS.md.)
        self.log: list[tuple[enum.Enum, str, enum.Enum]] = []
        self._index = _index_of(table, type(initial))

    @property
    def state(self) -> enum.Enum:
        """The current state: read-only, only `fire` changes it."""
        return self._state

    def can(self, event: str) -> bool:
        return self._find(event) is not None

    def _find(self, event: str) -> Row | None:
        for candidate in self._index.get((self._state, event), ()):
            if candidate.guard is None or getattr(self.owner, candidate.guard)():
                return candidate
        return None

    def fire(self, event: str, *args: Any) -> bool:
        found = self._find(event)
        if found is None:
            return False
        old = self._state
        self._state = found.target
        self.log.append((old, event, found.target))
        if len(self.log) >= 2 * LOG_MAX:
            del self.log[:LOG_MAX]
        on_change = getattr(self.owner, "on_transition", None)
        if on_change is not None:
            on_change(old, event, found.target)
        if found.action is not None:
            getattr(self.owner, found.action)(*args)
        return True


_indexes: dict[int, tuple[tuple, dict]] = {}


def _index_of(table: tuple[Row, ...], states: type[enum.Enum]) -> dict:
    """(state, event) -> rows, built once per table and shared by its machines."""
    cached = _indexes.get(id(table))
    if cached is not None and cached[0] is table:
        return cached[1]
    index: dict[tuple[enum.Enum, str], list[Row]] = {}
    for line in table:
        for state in (states if line.sources is ANY else line.sources):
            index.setdefault((state, line.event), []).append(line)
    _indexes[id(table)] = (table, index)
    return index


def to_dot(name: str, table: tuple[Row, ...], states: type[enum.Enum]) -> str:
    """Render a transition table as a Graphviz digraph."""
    out = [f'digraph "{name}" {{', "  rankdir=LR;", "  node [shape=box, style=rounded];"]
    for state in states:
        out.append(f"  {state.name};")
    order = list(states)
    for line in table:
        label = line.event
        if line.guard:
            label += f" [{line.guard}]"
        if line.action:
            label += f" / {line.action}"
        sources = order if line.sources is ANY else sorted(line.sources, key=order.index)
        for src in sources:
            out.append(f'  {src.name} -> {line.target.name} [label="{label}"];')
    out.append("}")
    return "\n".join(out) + "\n"
