"""sd_notify (clinit/notify.py) against a real datagram socket, as systemd binds it,
and the daemon's READY / RELOADING / STOPPING over its life."""

import os
import signal
import socket
import uuid

import pytest

from clinit import notify


@pytest.fixture
def manager(tmp_path, monkeypatch):
    """A datagram socket standing where systemd's would, named in NOTIFY_SOCKET."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(20)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def received(sock) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_reloading_and_stopping_are_datagrams_of_name_value_lines(manager):
    assert notify.ready()
    assert received(manager) == ["READY=1"]
    assert notify.reloading()
    fields = received(manager)
    assert fields[0] == "RELOADING=1" and fields[1].startswith("MONOTONIC_USEC=")
    assert int(fields[1].split("=")[1]) > 0
    assert notify.stopping()
    assert received(manager) == ["STOPPING=1"]
    assert notify.status("serving 3 groups")
    assert received(manager) == ["STATUS=serving 3 groups"]


def test_an_abstract_socket_name_with_an_at_sign_is_reached(monkeypatch):
    name = f"clinit-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(20)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify.ready()
        assert received(sock) == ["READY=1"]


def test_without_a_manager_nothing_is_sent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/path")
    assert notify.ready() is False


def test_a_manager_that_is_gone_costs_a_warning_not_the_daemon(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody.sock"))
    notify._warned[0] = False
    assert notify.ready() is False
    assert notify.stopping() is False
    assert sum("cannot notify the service manager" in r.message for r in caplog.records) == 1


def test_the_daemon_says_ready_once_it_listens_then_reloading_around_sighup_and_stopping(
        manager, make_daemon):
    d = make_daemon("web:w1:run:respawn:exec sleep 1000\n", start=False)
    d.start(wait=False)
    assert received(manager)[0] == "READY=1"
    assert d.answers()  # READY came once the socket listened: it answers now
    d.proc.send_signal(signal.SIGHUP)
    assert received(manager)[0] == "RELOADING=1"
    assert received(manager)[0] == "READY=1"
    assert d.cli("-k", check=0)
    assert received(manager) == ["STOPPING=1"]
    assert d.proc.wait(timeout=20) == 0


def test_the_unit_file_is_type_notify_reloads_with_sighup_and_kills_mixed():
    from conftest import ROOT

    unit = (ROOT / "conf" / "clinit.service").read_text()
    lines = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in unit.splitlines()
             if "=" in line and not line.startswith("#")}
    assert lines["Type"] == "notify"
    assert lines["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert lines["KillMode"] == "mixed"
    assert " -d " in lines["ExecStart"] + " "
    assert os.path.basename(lines["ExecStart"].split()[0]) == "clinit"
