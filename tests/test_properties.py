"""Property tests (hypothesis): the wire protocol's decoders on any bytes, the
process transition table under any sequence of events, and a real Process
actor under any sequence of up and down.
"""

from __future__ import annotations

import json

import pykka
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clinit import Entry, Process, ProcessState
from clinit.cltab import check_name
from clinit.fsm import Machine
from clinit.process import TABLE
from clinit.protocol import (COMMANDS, MAX_REQUEST, OPTIONS, ProtocolError, decode_request,
                             decode_response, encode_request)
from conftest import wait_for

S = ProcessState
NAME_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.+@=-"

# -- the wire protocol ------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20)
names = st.text(NAME_ALPHABET, min_size=1, max_size=12)
near_names = st.one_of(names, names, st.text(max_size=12), json_values,
                       st.text(NAME_ALPHABET, min_size=250, max_size=260))
tells = st.fixed_dictionaries({"cmd": st.just("tell"), "group": near_names,
                               "level": near_names})
requestish = st.fixed_dictionaries(
    {"cmd": st.one_of(st.sampled_from(sorted(COMMANDS)), json_values)},
    optional={"group": near_names, "level": near_names, "extra": json_values})


def as_line(value) -> bytes:
    return json.dumps(value).encode() + b"\n"


any_request_bytes = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda b: b + b"\n"),
    json_values.map(as_line),
    requestish.map(as_line),
    tells.map(as_line),
    requestish.map(lambda r: json.dumps(r).encode()),  # no newline
    st.sampled_from([b"[" * 60000 + b"\n", b"{" * (MAX_REQUEST + 1), b"9" * 5000 + b"\n",
                     b'"\\ud800"\n', b"\xef\xbb\xbf{}\n", b"\xff\xfe{\x00}\x00\n"]),
)


@settings(max_examples=400, deadline=None)
@given(any_request_bytes)
def test_the_request_decoder_raises_nothing_but_protocol_error(data):
    try:
        request = decode_request(data)
    except ProtocolError as err:
        assert str(err)
        return
    # what it lets through is a known command with exactly its fields, all valid names
    assert request["cmd"] in COMMANDS
    cmd = request["cmd"]
    assert {"cmd", *COMMANDS[cmd]} <= set(request) <= {"cmd", *COMMANDS[cmd], *OPTIONS.get(cmd, {})}
    for field in COMMANDS[cmd]:
        check_name(field, request[field])
    if "group" in OPTIONS.get(cmd, {}) and "group" in request:
        check_name("group", request["group"])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), json_values.map(as_line),
                 st.fixed_dictionaries({}, optional={"ok": json_values,
                                                     "answer": json_values}).map(as_line)))
def test_the_answer_decoder_raises_nothing_but_protocol_error(data):
    try:
        ok, answer = decode_response(data)
    except ProtocolError:
        return
    assert isinstance(ok, bool) and isinstance(answer, str)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(COMMANDS)), names, names)
def test_every_valid_request_survives_the_round_trip(cmd, group, level):
    fields = dict(zip(COMMANDS[cmd], (group, level)))
    assert decode_request(encode_request(cmd, **fields)) == {"cmd": cmd, **fields}


# -- the process transition table ---------------------------------------------------------

EVENTS = sorted({line.event for line in TABLE}) + ["bogus", "fault", "signal"]


class Stub:
    """An owner with no OS behind it: guards are flags, actions do nothing."""

    def __init__(self, respawn: bool, alive: bool):
        self.respawn = respawn
        self.running = alive

    def is_respawn(self) -> bool:
        return self.respawn

    def is_wait(self) -> bool:  # adopt: RUNNING for a wait entry, else DONE
        return not self.respawn

    def clearing(self) -> bool:  # PAUSING: stopping the last instance's leftovers
        return self.running

    def alive(self) -> bool:
        return self.running

    def __getattr__(self, name):  # every action of the table
        if any(name == line.action for line in TABLE):
            return lambda *args: None
        raise AttributeError(name)


def expected_row(state, event, owner):
    """The row the table says applies, looked up independently of the engine."""
    for line in TABLE:
        sources = set(S) if line.sources is None else line.sources
        if state in sources and line.event == event and (
                line.guard is None or getattr(owner, line.guard)()):
            return line
    return None


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(EVENTS), st.booleans()), max_size=60), st.booleans())
def test_any_sequence_of_events_follows_the_table_and_nothing_else(steps, respawn):
    owner = Stub(respawn, alive=False)
    machine = Machine(owner, TABLE, S.CONFIGURED)
    for event, alive in steps:
        owner.running = alive
        before, log_size = machine.state, len(machine.log)
        line = expected_row(before, event, owner)
        applied = machine.fire(event)
        assert applied is (line is not None)
        if line is None:  # no row: nothing moves, nothing is logged
            assert machine.state is before and len(machine.log) == log_size
        else:
            assert machine.state is line.target
            assert machine.log[-1] == (before, event, line.target)
        assert isinstance(machine.state, S)
    # a final stop, the timeouts of an unresponsive child, and its exit: CONFIGURED
    owner.running = True
    machine.fire("stop")
    for _ in range(3):
        machine.fire("timeout")
    owner.running = False
    machine.fire("exited")
    assert machine.state is S.CONFIGURED, list(machine.log)[-5:]


def test_every_state_has_a_way_back_to_configured():
    back = {S.CONFIGURED}
    changed = True
    while changed:
        changed = False
        for line in TABLE:
            sources = set(S) if line.sources is None else line.sources
            for state in sources - back:
                if line.target in back:
                    back.add(state)
                    changed = True
    assert back == set(S)


# -- a real Process actor -------------------------------------------------------------------

SHORT = ["exit 0", "exit 3"]
COMMANDS_TO_RUN = SHORT + ["exec sleep 1000", "trap '' INT; exec sleep 1000",
                           "sleep 1000 & exec sleep 1000"]
_PASSING = (S.SETUP, S.RUNFG, S.RUNBG, S.STOPPING)  # states left without waiting for a child


def settle(proxy, short: bool) -> None:
    """Wait until the process rests: a short command has exited, a stop is over."""
    def resting():
        state, pid = proxy.state().get(), proxy.pid().get()
        if short:
            return state not in _PASSING + (S.RUNTEST, S.TESTING) and pid is None
        return state not in _PASSING
    wait_for(resting, message=f"never rested: {proxy.transitions().get()[-6:]}")
TIMINGS = {"term_delay": 0.05, "kill_delay": 0.05, "respawn_pause": 0.05, "respawn_window": 0.05}


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mode=st.sampled_from(["wait", "once", "respawn", "test", "off"]),
       command=st.sampled_from(COMMANDS_TO_RUN),
       moves=st.lists(st.sampled_from(["up", "down", "settle"]), max_size=8))
def test_a_process_driven_up_and_down_at_random_ends_configured_after_a_final_down(
        mode, command, moves):
    ref = Process.start(Entry("g", "t", "1", mode, command, 1), timings=TIMINGS, level="1")
    proxy = ref.proxy()
    try:
        for move in moves:
            if move == "settle":
                settle(proxy, command in SHORT)
            else:
                getattr(proxy, move)().get()
        proxy.down().get()
        wait_for(lambda: proxy.state().get() is S.CONFIGURED and proxy.pid().get() is None,
                 message=f"{mode} {command!r} {moves}: {proxy.transitions().get()[-6:]}")
        log = proxy.transitions().get()
        assert all(isinstance(old, S) and isinstance(new, S) for old, _, new in log)
        assert log == [] or log[-1][2] is S.CONFIGURED
    finally:
        try:
            ref.stop()
        except pykka.ActorDeadError:
            pass
