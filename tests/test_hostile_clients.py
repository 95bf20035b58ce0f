"""Broken and hostile clients on the control socket (clinit/server.py limits).

Each test runs a real daemon with a group running one respawn process,
plays a bad client against it with raw sockets, and checks that other
clients are still served, that the daemon's memory, threads and files
stay bounded, and that nothing changed: same status file, same child.
"""

from __future__ import annotations

import json
import random
import resource
import signal
import socket
import subprocess
import sys
import threading

import pytest

from conftest import ROOT, WEB as CLTAB, client_workers, wait_for, web_running
from proc_figures import figures

from clinit.protocol import MAX_REQUEST, encode_request
from clinit.server import WORKERS


def snapshot(d) -> tuple:
    """What a client must not be able to change without a valid request."""
    return d.clstat.read_text(), sorted(d.children())


def connect(d, timeout=10.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(d.client().conf("socket"))
    return sock


def answer_of(sock) -> tuple[bool, str] | None:
    """The daemon's answer on `sock` (read to the end), or None if it closed silently."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    if not data:
        return None
    reply = json.loads(data)
    return reply["ok"], reply["answer"]


def others_are_served(d) -> None:
    ok, text = d.client().request("ping")
    assert ok and text.startswith("clinit daemon"), text


# -- clients that send nothing, or not enough ------------------------------------------

def test_a_client_that_sends_nothing_is_told_it_timed_out_and_changes_nothing(make_daemon):
    d = web_running(make_daemon, idle_timeout=0.3)
    before = snapshot(d)
    with connect(d) as silent:
        ok, text = answer_of(silent)
    assert not ok and "timed out waiting for a request" in text
    others_are_served(d)
    assert snapshot(d) == before


def test_a_client_that_sends_half_a_request_and_stalls_is_told_it_timed_out(make_daemon):
    d = web_running(make_daemon, idle_timeout=0.3)
    before = snapshot(d)
    with connect(d) as stalled:
        stalled.sendall(b'{"cmd": "tell", "group": "web", "level": "')
        ok, text = answer_of(stalled)
    assert not ok and "timed out" in text
    others_are_served(d)
    assert snapshot(d) == before


def test_a_client_that_trickles_a_byte_at_a_time_gets_no_more_than_the_idle_timeout(make_daemon):
    # The idle timeout counts from connect to a whole request, not between bytes.
    d = web_running(make_daemon, idle_timeout=0.5)
    before = snapshot(d)
    stop = threading.Event()
    sock = connect(d)

    def trickle():
        try:
            sock.sendall(b'{"cmd": "ping", "x": "')
            while not stop.wait(0.02):  # the hostile client's own pace
                sock.sendall(b"a")
        except OSError:
            pass  # the daemon closed on it

    sender = threading.Thread(target=trickle)
    sender.start()
    try:
        ok, text = answer_of(sock)
    finally:
        stop.set()
        sender.join()
        sock.close()
    assert not ok and "timed out" in text
    others_are_served(d)
    assert snapshot(d) == before


def test_silent_clients_past_the_limit_do_not_lock_out_a_client_that_sends_its_request(
        make_daemon):
    # Idle connections hold no thread; at the limit the oldest of them
    # makes room for the newcomer, so a real request always gets through.
    d = web_running(make_daemon, max_clients=4, idle_timeout=60)
    silent = [connect(d) for _ in range(10)]
    try:
        others_are_served(d)
        assert d.tell("web", "run").startswith("level transition started: ")
        result = d.cli("web", "run")
        assert result.returncode == 0, result.stderr
    finally:
        for sock in silent:
            sock.close()


# -- clients that send garbage ------------------------------------------------------------

def garbage() -> list[bytes]:
    rnd = random.Random(3)
    blobs = [rnd.randbytes(rnd.randint(1, 5000)) for _ in range(150)]
    blobs += [b"\n", b"\x00" * 100 + b"\n", b"\xff\xfe{\x00}\x00\n", b"\xef\xbb\xbf{}\n",
              b"[" * 60000 + b"\n", b"{" * (MAX_REQUEST + 10), b"1" * 50000 + b"\n",
              b'{"cmd": "tell", "group": "web", "level": "run"}' * 2000,
              b'{"cmd": "tell", "group": "web", "level": "run", "cmd": "shutdown"', b"\r\n",
              b'{"cmd": "shutdown", "please": 1}\n', b'{"cmd": ["shutdown"]}\n',
              b'{"cmd": "tell", "group": "web", "level": "run\\u0000"}\n']
    return blobs


def test_random_bytes_get_an_error_answer_and_change_nothing(make_daemon):
    d = web_running(make_daemon, idle_timeout=2)
    before = snapshot(d)
    for blob in garbage():
        with connect(d) as sock:
            try:
                sock.sendall(blob)
                sock.shutdown(socket.SHUT_WR)  # an end without a newline is an answer too
            except OSError:
                pass  # refused by size before we finished: the answer says so
            reply = answer_of(sock)
        assert reply is not None and reply[0] is False, (blob[:60], reply)
    others_are_served(d)
    assert snapshot(d) == before
    assert d.proc.poll() is None


def test_a_100_megabyte_line_is_refused_after_the_limit_without_being_buffered(make_daemon):
    d = web_running(make_daemon)
    before = snapshot(d)
    start = figures(d.proc.pid)
    sock = connect(d, timeout=30)
    chunk = b"a" * (1 << 16)
    sent = [0]

    def stream():
        try:
            while sent[0] < 1600 * len(chunk):
                sock.sendall(chunk)
                sent[0] += len(chunk)
        except OSError:
            pass  # the daemon closed on us once it had seen enough

    sender = threading.Thread(target=stream)
    sender.start()
    try:
        ok, text = answer_of(sock)
    finally:
        sender.join()
        sock.close()
    end = figures(d.proc.pid)
    print(f"\n100 MB line: client got {sent[0] >> 10} KiB out before the daemon closed; "
          f"daemon peak RSS {start['hwm_kb']} -> {end['hwm_kb']} KiB")
    assert not ok and "too long" in text
    assert sent[0] < 1600 * len(chunk)
    assert end["hwm_kb"] - start["hwm_kb"] < 16 * 1024  # never near the 100 MB it was sent
    others_are_served(d)
    assert snapshot(d) == before


# -- too many clients -----------------------------------------------------------------------

def test_a_thousand_connections_at_once_are_told_busy_while_others_are_still_served(
        make_daemon):
    limit = 64
    d = web_running(make_daemon, max_clients=limit, idle_timeout=60)
    before = snapshot(d)
    others_are_served(d)
    start = figures(d.proc.pid)
    flood = [connect(d) for _ in range(1000)]
    try:
        for sock in flood:
            sock.setblocking(False)
        during = figures(d.proc.pid)
        # a client that sends its request is served while the flood holds on
        others_are_served(d)
        assert d.tell("web", "run").startswith("level transition started: ")
        assert d.cli("web", "run").returncode == 0

        told_busy = set()

        def count_busy():
            for i, sock in enumerate(flood):
                if i in told_busy:
                    continue
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue
                assert b"daemon busy" in data, data
                told_busy.add(i)
            return len(told_busy) >= len(flood) - limit

        wait_for(count_busy, timeout=20)
        during = max(during, figures(d.proc.pid), key=lambda f: f["fds"])
        assert during["threads"] <= start["threads"] + WORKERS
        assert during["fds"] <= start["fds"] + limit + 2
    finally:
        for sock in flood:
            sock.close()
    # everything recovers: the held connections are gone, nothing changed
    wait_for(lambda: figures(d.proc.pid)["fds"] <= start["fds"])
    wait_for(lambda: figures(d.proc.pid)["threads"] <= start["threads"])
    print(f"\n1000 connections, max_clients {limit}: {len(told_busy)} told busy; daemon "
          f"start {start}, during {during}, after {figures(d.proc.pid)}")
    others_are_served(d)
    assert snapshot(d) == before


def test_a_daemon_out_of_file_descriptors_says_so_and_still_serves_a_client(make_daemon):
    d = web_running(make_daemon, idle_timeout=60)
    in_use = figures(d.proc.pid)["fds"]
    resource.prlimit(d.proc.pid, resource.RLIMIT_NOFILE, (in_use + 4, in_use + 4))
    flood = [connect(d) for _ in range(30)]  # more than it has descriptors for
    try:
        wait_for(lambda: "cannot accept a client: " in d.log_text())
        others_are_served(d)  # the oldest silent connection made room
        assert d.proc.poll() is None
    finally:
        for sock in flood:
            sock.close()
    others_are_served(d)


# -- clients that go away before the answer -------------------------------------------------

def start_with_sigpipe_at_default(d) -> None:
    """Start `d` in a Python that leaves SIGPIPE at its default (death), as an
    embedding program might: only the server's own care keeps it alive."""
    code = ("import signal, sys; signal.signal(signal.SIGPIPE, signal.SIG_DFL); "
            f"sys.path.insert(0, {str(ROOT)!r}); from clinit.cli import main; "
            f"sys.exit(main(['-d', '-c', {str(d.cltab)!r}]))")
    d._log = open(d.log, "ab")
    d.proc = subprocess.Popen([sys.executable, "-c", code], stdout=d._log,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wait_for(d.answers, message=f"daemon did not come up: {d.log_text()}")


@pytest.mark.parametrize("request_bytes", [encode_request("ping"),
                                           encode_request("tell", group="web", level="run")])
def test_clients_that_hang_up_before_the_answer_do_not_hurt_the_daemon(make_daemon,
                                                                        request_bytes):
    d = make_daemon(CLTAB, start=False)
    start_with_sigpipe_at_default(d)
    assert d.tell("web", "run").startswith("level transition started: ")
    d.wait_state("web", "run", "DONE")
    wait_for(lambda: len(d.children()) == 1)
    child = d.children()
    for _ in range(200):
        with connect(d) as sock:
            sock.sendall(request_bytes)
        # closed without reading: the answer meets a closed socket (EPIPE)
    others_are_served(d)
    assert d.proc.poll() is None, d.log_text()
    assert d.children() == child
    d.wait_state("web", "run", "DONE")  # (the last re-tells may still be walking)
    assert d.stop() == 0 and d.proc.returncode != -signal.SIGPIPE


# -- many whole requests while the daemon is slow to answer ----------------------------------

@pytest.mark.parametrize("max_clients", [64, 8])
def test_requests_waiting_on_a_slow_daemon_hold_no_more_than_the_worker_threads(tmp_path,
                                                                                max_clients):
    # The listener alone, in this process, with a daemon that answers only when let.
    # Past max_clients, whole requests wait in the listen backlog: none is refused.
    from clinit.server import Server

    let_go, inside, lock = threading.Event(), [0], threading.Lock()
    most = [0]

    def slow_dispatch(request, reply=None):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        let_go.wait(30)
        with lock:
            inside[0] -= 1
        return True, "pong"

    server = Server(str(tmp_path / "s.sock"), slow_dispatch, max_clients=max_clients)
    loop = threading.Thread(target=server.serve)
    loop.start()
    replies = []
    try:
        def client():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(30)
            with sock:
                sock.connect(server.path)
                sock.sendall(encode_request("ping"))
                replies.append(answer_of(sock))

        clients = [threading.Thread(target=client) for _ in range(40)]
        for t in clients:
            t.start()
        wait_for(lambda: inside[0] == WORKERS)
        assert client_workers() == WORKERS
        let_go.set()
        for t in clients:
            t.join()
    finally:
        let_go.set()
        server.wake()
        loop.join()
        server.server_close()
    assert replies == [(True, "pong")] * 40
    assert most[0] == WORKERS
    wait_for(lambda: client_workers() == 0)


def test_requests_one_after_another_are_served_by_the_same_few_worker_threads_which_then_end(
        tmp_path):
    # A lull between requests used to end the pool, and the next request made
    # a new one while the old threads were still ending.
    from clinit.server import Server

    threads = []

    def dispatch(request, reply=None):
        threads.append(threading.current_thread())
        return True, "pong"

    server = Server(str(tmp_path / "s.sock"), dispatch, pool_linger=0.5)
    loop = threading.Thread(target=server.serve)
    loop.start()
    try:
        for _ in range(30):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(30)
            with sock:
                sock.connect(server.path)
                sock.sendall(encode_request("ping"))
                assert answer_of(sock) == (True, "pong")
        wait_for(lambda: client_workers() == 0)  # the idle pool ends on its own
    finally:
        server.wake()
        loop.join()
        server.server_close()
    assert len(set(threads)) <= WORKERS  # was one new pool, and thread, a request
