"""The transition-table engine (clinit.fsm): rows, guards, the log, DOT."""

from __future__ import annotations

import enum

import pytest

from clinit import group, process
from clinit.fsm import ANY, Machine, row, to_dot


class Light(enum.Enum):
    OFF = "OFF"
    ON = "ON"
    BROKEN = "BROKEN"


L = Light

TABLE = (
    row(L.OFF, "flip", L.BROKEN, guard="worn_out", action="note", note="old bulbs break"),
    row(L.OFF, "flip", L.ON, action="note"),
    row(L.ON, "flip", L.OFF, action="note"),
    row((L.ON, L.OFF), "kick", L.BROKEN),
    row(ANY, "repair", L.OFF, action="note"),
)


class Owner:
    """Supplies the guard and the action the table names, and records calls."""

    def __init__(self, worn=False):
        self.worn = worn
        self.calls = []
        self.seen = []
        self.machine = Machine(self, TABLE, L.OFF)

    def worn_out(self):
        return self.worn

    def note(self, *args):
        # the action runs after the state changed
        self.calls.append((self.machine.state, args))

    def on_transition(self, old, event, new):
        self.seen.append((old, event, new))


def test_an_event_follows_its_row_and_runs_the_action_in_the_new_state():
    owner = Owner()
    assert owner.machine.fire("flip", 1, "x") is True
    assert owner.machine.state is L.ON
    assert owner.calls == [(L.ON, (1, "x"))]


def test_a_guard_that_fails_lets_the_next_row_apply():
    owner = Owner(worn=False)
    owner.machine.fire("flip")
    assert owner.machine.state is L.ON


def test_the_first_matching_row_wins():
    owner = Owner(worn=True)  # both OFF/flip rows would match: the first one is taken
    owner.machine.fire("flip")
    assert owner.machine.state is L.BROKEN
    assert list(owner.machine.log) == [(L.OFF, "flip", L.BROKEN)]


def test_an_undefined_event_returns_false_and_changes_nothing():
    owner = Owner()
    owner.machine.fire("flip")
    assert owner.machine.fire("explode") is False
    assert owner.machine.state is L.ON
    assert list(owner.machine.log) == [(L.OFF, "flip", L.ON)]
    assert owner.calls == [(L.ON, ())]
    assert owner.seen == [(L.OFF, "flip", L.ON)]


def test_an_event_without_a_row_in_the_current_state_changes_nothing():
    owner = Owner()
    owner.machine.fire("kick")
    assert owner.machine.fire("flip") is False  # BROKEN has no flip row
    assert owner.machine.state is L.BROKEN
    assert list(owner.machine.log) == [(L.OFF, "kick", L.BROKEN)]


def test_can_tells_whether_an_event_applies_without_firing_it():
    owner = Owner()
    assert owner.machine.can("flip")
    assert not owner.machine.can("explode")
    assert owner.machine.state is L.OFF and list(owner.machine.log) == []


def test_a_row_from_any_state_applies_in_every_state():
    for start in Light:
        owner = Owner()
        owner.machine = Machine(owner, TABLE, start)
        assert owner.machine.fire("repair")
        assert owner.machine.state is L.OFF


def test_only_the_engine_changes_a_state():
    owner = Owner()
    with pytest.raises(AttributeError):
        owner.machine.state = L.ON
    assert owner.machine.state is L.OFF


def test_no_module_sets_an_actor_state_outside_the_engine():
    import re
    from pathlib import Path

    import clinit

    pattern = re.compile(r"(machine\.(_?state|log)\s*=[^=]|machine\.log\.(append|insert|extend)|\._state\s*=[^=])")
    offenders = []
    for path in Path(clinit.__file__).parent.glob("*.py"):
        if path.name == "fsm.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert offenders == []


def test_the_log_keeps_every_transition_oldest_first_including_self_loops():
    owner = Owner()
    for event in ("flip", "flip", "kick", "repair", "repair"):
        owner.machine.fire(event)
    expected = [(L.OFF, "flip", L.ON), (L.ON, "flip", L.OFF), (L.OFF, "kick", L.BROKEN),
                (L.BROKEN, "repair", L.OFF), (L.OFF, "repair", L.OFF)]
    assert list(owner.machine.log) == expected
    assert owner.seen == expected


def test_the_transition_hook_sees_the_change_before_the_action_runs():
    order = []

    class Hooked(Owner):
        def on_transition(self, old, event, new):
            order.append("hook")

        def note(self, *args):
            order.append("action")

    owner = Hooked()  # a machine refers to its owner weakly: the owner must live
    owner.machine.fire("flip")
    assert order == ["hook", "action"]


def test_an_action_may_fire_the_next_event_itself():
    class Chain(Owner):
        def note(self, *args):
            if self.machine.state is L.ON:
                self.machine.fire("flip")

    owner = Chain()
    owner.machine.fire("flip")
    assert list(owner.machine.log) == [(L.OFF, "flip", L.ON), (L.ON, "flip", L.OFF)]
    assert owner.machine.state is L.OFF


def _edges(table, states):
    order = list(states)
    for line in table:
        sources = order if line.sources is ANY else line.sources
        for src in sources:
            yield src, line


def test_dot_output_names_every_state_and_contains_every_row():
    text = to_dot("light", TABLE, Light)
    assert text.startswith('digraph "light" {')
    assert text.rstrip().endswith("}")
    for state in Light:
        assert f"  {state.name};" in text
    for src, line in _edges(TABLE, Light):
        edge = f"  {src.name} -> {line.target.name} [label=\"{line.event}"
        assert edge in text, edge
    assert 'OFF -> BROKEN [label="flip [worn_out] / note"]' in text
    assert 'BROKEN -> OFF [label="repair / note"]' in text


def dot_lines_of_every_row(text: str, table, states) -> list[str]:
    """Assert each row of `table` has its edge in the DOT `text`; the edge lines."""
    lines = text.splitlines()
    for src, line in _edges(table, states):
        assert any(l.startswith(f"  {src.name} -> {line.target.name} [label=\"{line.event}")
                   for l in lines), (src, line)
    return [l for l in lines if "->" in l]


def test_the_process_table_renders_every_row_as_dot():
    text = process.dot()
    assert text.startswith('digraph "process"')
    edges = dot_lines_of_every_row(text, process.TABLE, process.ProcessState)
    assert len(edges) == len(list(_edges(process.TABLE, process.ProcessState)))


def test_the_group_table_renders_every_row_as_dot():
    text = group.dot()
    assert text.startswith('digraph "group"')
    dot_lines_of_every_row(text, group.TABLE, group.GroupState)
    # `tell` and `halt` apply in every group state
    for state in group.GroupState:
        assert f'  {state.name} -> STOPPING [label="tell' in text
        assert f'  {state.name} -> HALTING [label="halt' in text


def test_the_daemon_table_renders_every_row_as_dot():
    from clinit import daemonactor

    text = daemonactor.dot()
    assert text.startswith('digraph "daemon"')
    dot_lines_of_every_row(text, daemonactor.TABLE, daemonactor.DaemonState)
