"""The daemon's own machine (SPEC §5): STARTING -> SERVING -> HALTING -> EXITED."""

import threading

import pykka
import pytest

from clinit.cltab import load_cltab
from clinit.daemonactor import Daemon, DaemonState as D
from clinit.messages import Listening, Request, ShutdownTimeout
from clinit.statuswriter import StatusWriter
from conftest import wait_for


@pytest.fixture
def actor(tmp_path):
    (tmp_path / "cltab").write_text("web:w1:run:respawn:exec sleep 1000\n")
    table = load_cltab(str(tmp_path / "cltab"))
    writer = StatusWriter.start(str(tmp_path / "clstat"))
    exited = threading.Event()
    ref = Daemon.start(table, {"term_delay": 0.2, "kill_delay": 0.2}, writer, exited.set)
    yield ref.proxy(), ref, exited
    for r in (ref, writer):
        if r.is_alive():
            r.stop()


def test_the_daemon_serves_once_listening_and_exits_after_every_group_halted(actor):
    proxy, ref, exited = actor
    ref.tell(Listening())
    ok, text = ref.ask(Request({"cmd": "tell", "group": "web", "level": "run"}))
    assert ok and text.startswith("level transition started: ")
    assert ref.ask(Request({"cmd": "shutdown"})) == (True, "all groups halting")
    wait_for(exited.is_set)
    assert proxy.state().get() is D.EXITED
    assert proxy.transitions().get() == [(D.STARTING, "listening", D.SERVING),
                                         (D.SERVING, "shutdown", D.HALTING),
                                         (D.HALTING, "halted", D.EXITED)]


def test_a_tell_while_halting_is_refused_and_a_second_shutdown_changes_nothing(actor):
    proxy, ref, exited = actor
    ref.tell(Listening())
    ref.ask(Request({"cmd": "tell", "group": "web", "level": "run"}))
    ref.ask(Request({"cmd": "shutdown"}))
    assert ref.ask(Request({"cmd": "shutdown"})) == (True, "all groups halting")
    ok, answer = ref.ask(Request({"cmd": "tell", "group": "web", "level": "run"}))
    assert not ok and answer == "daemon is shutting down"
    wait_for(exited.is_set)
    assert [t for t in proxy.transitions().get() if t[1] == "shutdown"] == \
        [(D.SERVING, "shutdown", D.HALTING)]


def test_a_late_shutdown_timer_after_exit_changes_nothing(actor):
    proxy, ref, exited = actor
    ref.tell(Listening())
    ref.ask(Request({"cmd": "shutdown"}))
    wait_for(exited.is_set)  # no groups: halted at once
    ref.tell(ShutdownTimeout())  # a late timer: no row from EXITED, nothing happens
    assert proxy.state().get() is D.EXITED and proxy.clean.get() is True
    assert pykka.ActorRegistry.get_by_urn(ref.actor_urn) is not None
