"""The listener's held connections (waits and watches), in this process with a
stand-in dispatch: lines handed over later, slow readers, hangups, limits."""

import json
import socket
import threading

import pytest

from conftest import client_workers, wait_for
from clinit.protocol import encode_request
from clinit.server import Server


class Held:
    """A listener whose dispatch keeps the Reply of every holding request."""

    def __init__(self, tmp_path, **kwargs):
        self.replies = []
        self.hangups = []
        self.server = Server(str(tmp_path / "s.sock"), self.dispatch, **kwargs)
        self.server.on_hangup = self.hangups.append
        self.loop = threading.Thread(target=self.server.serve)
        self.loop.start()

    def dispatch(self, request, reply):
        if reply is None:
            return True, "pong"
        self.replies.append(reply)
        return None

    def connect(self, cmd="watch", **fields) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(20)
        sock.connect(self.server.path)
        sock.sendall(encode_request(cmd, **fields))
        return sock

    def close(self):
        self.server.wake()
        self.loop.join()
        self.server.server_close()


@pytest.fixture
def held(tmp_path):
    h = Held(tmp_path)
    yield h
    h.close()


def lines_of(sock, count):
    buf = b""
    while buf.count(b"\n") < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return [json.loads(line) for line in buf.splitlines()]


def test_a_watch_gets_lines_handed_over_later_and_holds_no_thread(held):
    sock = held.connect()
    wait_for(lambda: held.server.held() == 1)
    wait_for(lambda: client_workers() == 0)
    reply = held.replies[0]
    assert reply({"ok": True, "answer": "watching"})
    assert reply({"event": "group", "n": 1})
    assert lines_of(sock, 2) == [{"ok": True, "answer": "watching"}, {"event": "group", "n": 1}]
    assert reply((True, "done"), last=True)
    assert lines_of(sock, 1) == [{"ok": True, "answer": "done"}]
    assert sock.recv(10) == b""  # closed after the last line
    assert not reply({"event": "late"})  # the reply is spent
    wait_for(lambda: held.server.held() == 0)
    assert held.hangups == []  # the daemon closed it: no hangup to report


def test_a_reply_given_before_the_worker_hands_the_connection_back_is_sent(tmp_path):
    class Early(Held):
        def dispatch(self, request, reply):
            reply({"ok": True, "answer": "at once"}, last=True)
            return None

    h = Early(tmp_path)
    try:
        sock = h.connect("tell", group="g", level="1", wait=True)
        assert lines_of(sock, 1) == [{"ok": True, "answer": "at once"}]
        assert sock.recv(10) == b""
    finally:
        h.close()


def test_a_slow_reader_never_blocks_the_sender_it_loses_lines_and_is_told_how_many(tmp_path):
    h = Held(tmp_path, queue_lines=50)
    try:
        sock = h.connect()
        wait_for(lambda: h.server.held() == 1)
        reply = h.replies[0]
        big = {"event": "process", "pad": "x" * 2000}
        sent = 5000
        for i in range(sent):  # nobody reads: the socket buffer fills, then the queue
            assert reply({**big, "n": i})
        got, buf = [], b""

        def accounted():
            return (sum(1 for e in got if "n" in e)
                    + sum(e["count"] for e in got if e.get("event") == "dropped"))

        while accounted() < sent:
            buf += sock.recv(65536)
            *lines, buf = buf.split(b"\n")
            got += [json.loads(line) for line in lines]
        assert accounted() == sent
        numbers = [e["n"] for e in got if "n" in e]
        assert numbers == sorted(numbers) and numbers[0] == 0  # in order
        drops = [e for e in got if e.get("event") == "dropped"]
        assert drops and all(e["count"] > 0 for e in drops)
        # each notice comes where the lines went missing
        for i, e in enumerate(got):
            if e.get("event") == "dropped" and 0 < i < len(got) - 1:
                assert got[i + 1]["n"] - got[i - 1]["n"] - 1 == e["count"]
        assert reply({"event": "after", "n": -1})
        assert lines_of(sock, 1) == [{"event": "after", "n": -1}]
    finally:
        h.close()


def test_a_client_that_hangs_up_is_reported_once_and_its_reply_is_spent(held):
    sock = held.connect("tell", group="g", level="1", wait=True)
    wait_for(lambda: held.server.held() == 1)
    reply = held.replies[0]
    sock.close()
    wait_for(lambda: held.hangups == [reply.token])
    assert not reply({"ok": True, "answer": "too late"}, last=True)
    assert held.server.held() == 0


def test_past_max_held_a_holding_request_is_told_the_daemon_is_busy(tmp_path):
    h = Held(tmp_path, max_held=2)
    try:
        socks = [h.connect() for _ in range(2)]
        wait_for(lambda: h.server.held() == 2)
        extra = h.connect()
        assert "daemon busy" in lines_of(extra, 1)[0]["answer"]
        assert len(h.replies) == 2
        # ordinary requests are still served
        assert lines_of(h.connect("ping"), 1) == [{"ok": True, "answer": "pong"}]
        socks[0].close()
        wait_for(lambda: h.server.held() == 1)
        socks.append(h.connect())
        wait_for(lambda: h.server.held() == 2)
    finally:
        h.close()


def test_at_close_held_connections_get_what_was_queued(held):
    sock = held.connect()
    wait_for(lambda: held.server.held() == 1)
    held.replies[0]({"event": "bye"})
    held.close()
    assert lines_of(sock, 1) == [{"event": "bye"}]
    held.close = lambda: None
