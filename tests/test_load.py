"""Load and soak: many clients at once against a daemon running 200 processes,
and thousands of respawns, with the daemon's threads, open files and memory
measured before and after (run `pytest -s` to see the figures; they are
also written to $TMPDIR/clinit-figures/*.json for the README).
"""

from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path

import pytest

from conftest import raw_request, wait_for
from proc_figures import figures

from clinit.fsm import LOG_MAX
from clinit.protocol import decode_response, encode_request
from clinit.server import WORKERS

FIGURES = Path(tempfile.gettempdir()) / "clinit-figures"
PROCESSES = 200
CLIENTS, REQUESTS = 50, 100
RESPAWNS = 10_000
RESPAWNERS = 8  # entries respawning side by side
WARM_UP = RESPAWNERS * (2 * LOG_MAX // 3 + 50)  # three transitions a respawn; logs trim at 2x


def report(name: str, data: dict) -> None:
    print(f"\n{name}: " + json.dumps(data, indent=1))
    FIGURES.mkdir(exist_ok=True)
    (FIGURES / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")


class Sampler:
    """Samples a process's figures in the background; keeps the highest of each."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak: dict = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self):
        while True:
            for key, value in figures(self.pid).items():
                self.peak[key] = max(value, self.peak.get(key, 0))
            if self._stop.wait(0.02):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def ask(path: str, data: bytes) -> tuple[bool, str]:
    return decode_response(raw_request(path, data, timeout=60))


def requests_and_answers(daemon_pid: int, cltab: str):
    """Five kinds of request and a check of each answer."""
    return [
        (encode_request("ping"),
         lambda ok, text: ok and text.startswith(f"clinit daemon {daemon_pid} ")),
        (encode_request("tell", group="farm", level="run"),
         lambda ok, text: ok and text.startswith("level transition started: ")),
        (encode_request("tell", group="nosuch", level="run"),
         lambda ok, text: not ok and text == "no such group: nosuch"),
        (b'{"cmd": "tell", "group": "farm", "level": "run;reboot"}\n',
         lambda ok, text: not ok and text.startswith("bad level name 'run;reboot'")),
        (encode_request("reread"),
         lambda ok, text: ok and text == f"{cltab} unchanged"),
    ]


def test_fifty_clients_of_a_hundred_requests_each_are_all_answered_right(make_daemon):
    farm = "".join(f"farm:p{i}:run:respawn:exec sleep 1000\n" for i in range(PROCESSES))
    d = make_daemon(farm)
    assert d.tell("farm", "run").startswith("level transition started: ")
    d.wait_state("farm", "run", "DONE", timeout=60)
    wait_for(lambda: len(d.children()) == PROCESSES, timeout=60)
    children = sorted(d.children())
    path = d.client().conf("socket")
    kinds = requests_and_answers(d.proc.pid, str(d.cltab))
    for data, right in kinds * 4:  # warm up: every code path once
        assert right(*ask(path, data))
    wait_for(lambda: d.status("farm", "run") == "DONE")
    start = figures(d.proc.pid)

    wrong, errors, answered = [], [], [0]
    lock = threading.Lock()

    def client(n: int):
        for i in range(REQUESTS):
            data, right = kinds[(n + i) % len(kinds)]
            try:
                ok, text = ask(path, data)
            except Exception as err:  # noqa: BLE001 - counted and shown below
                with lock:
                    errors.append(repr(err))
                continue
            with lock:
                answered[0] += 1
                if not right(ok, text):
                    wrong.append((data, ok, text))

    with Sampler(d.proc.pid) as sampler:
        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    d.wait_state("farm", "run", "DONE", timeout=60)
    wait_for(lambda: figures(d.proc.pid)["threads"] <= start["threads"])
    wait_for(lambda: figures(d.proc.pid)["fds"] <= start["fds"])
    end = figures(d.proc.pid)
    report("load", {"processes": PROCESSES, "clients": CLIENTS, "requests_each": REQUESTS,
                    "answered": answered[0], "wrong": len(wrong), "errors": len(errors),
                    "start": start, "peak": sampler.peak, "end": end})
    assert not errors, errors[:5]
    assert not wrong, wrong[:5]
    assert answered[0] == CLIENTS * REQUESTS
    assert sorted(d.children()) == children  # no process lost, restarted or added
    assert end["threads"] <= start["threads"] and end["fds"] <= start["fds"]
    assert sampler.peak["threads"] <= start["threads"] + WORKERS
    assert sampler.peak["fds"] <= start["fds"] + CLIENTS + 2
    assert end["rss_kb"] - start["rss_kb"] < 2 * 1024, (start, end)


@pytest.mark.slow
def test_ten_thousand_respawns_leave_no_growth_in_memory_threads_or_files(make_daemon, tmp_path):
    count = tmp_path / "count"
    entries = "".join(f"soak:r{i}:run:respawn:printf . >> {count}; exit 0\n"
                      for i in range(RESPAWNERS))
    d = make_daemon(entries, respawn_limit=1_000_000_000)

    def respawns() -> int:
        try:
            return count.stat().st_size
        except FileNotFoundError:
            return 0

    assert d.tell("soak", "run").startswith("level transition started: ")
    # warm up: every process actor's transition log (fsm.LOG_MAX) gets full
    wait_for(lambda: respawns() >= WARM_UP, timeout=60)
    start = figures(d.proc.pid)
    counted_at_start = respawns()
    with Sampler(d.proc.pid) as sampler:
        wait_for(lambda: respawns() >= counted_at_start + RESPAWNS, timeout=120)
    running = figures(d.proc.pid)
    done = respawns()
    assert d.tell("soak", "off").startswith("level transition started: ")
    d.wait_state("soak", "off", "DONE", timeout=30)
    wait_for(lambda: not d.children())
    wait_for(lambda: figures(d.proc.pid)["fds"] <= start["fds"])  # pidfds close on the next wake
    wait_for(lambda: figures(d.proc.pid)["threads"] <= start["threads"])  # the pool lingers
    end = figures(d.proc.pid)
    report("soak", {"respawns_measured": done - counted_at_start, "respawns_total": done,
                    "entries": RESPAWNERS, "start": start, "peak": sampler.peak,
                    "running_at_end": running, "after_stop": end})
    assert "respawning too rapidly" not in d.log_text()
    assert running["threads"] == start["threads"] and end["threads"] <= start["threads"]
    # one pidfd per watched child: never more than one a respawner, none once stopped
    assert running["fds"] <= start["fds"] + RESPAWNERS and end["fds"] <= start["fds"]
    assert sampler.peak["fds"] <= start["fds"] + 2 * RESPAWNERS
    assert running["rss_kb"] - start["rss_kb"] < 1024, (start, running)


def test_a_timer_re_armed_twenty_thousand_times_leaves_no_pile_of_cancelled_ones():
    # The status heartbeat is cancelled and set again on every write; a
    # busy daemon does that thousands of times within one heartbeat.
    from clinit import timers

    class Sink:
        def tell(self, message):
            pass

    handle = None
    for _ in range(20_000):
        timers.cancel(handle)
        handle = timers.after(3600, Sink(), ("beat",))
    timers.cancel(handle)
    assert len(timers._heap) < 1_000  # not 20,000 dead entries waiting an hour
