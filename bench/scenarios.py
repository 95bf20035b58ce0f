"""The measurements. Each session starts one daemon, runs some scenarios on
it and always shuts it down; `record(scenario, metric, value)` keeps results.

Timings start just before the client command is started (so they include
one interpreter start, as an operator's command would) and end when the
condition is observed: the system's own "settled" signal first (cheap to
poll), then the process-table condition (a /proc scan).
"""

import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time

import common
from common import (BenchError, alive, cpu_ns, cpu_ticks_s, status_fields, wait_until,
                    workers)

MAIN = ("spawn", "idle", "retell", "roundtrip", "concurrency", "stop")


def spawn_all(drv, n):
    """Tell the system to start all N; seconds until settled and N running."""
    t0 = time.perf_counter()
    drv.spawn()
    wait_until(drv.started, 30 + 0.2 * n, f"{drv.name} to settle after spawn")
    w = wait_until(lambda: (lambda w: len(w) == n and w)(workers(drv.pid)),
                   30 + 0.05 * n, f"{n} running children of {drv.name}")
    return time.perf_counter() - t0, list(w)


def stop_all(drv, pids):
    """Tell the system to stop everything; seconds until settled, all reaped."""
    t0 = time.perf_counter()
    drv.stop()
    wait_until(drv.stopped, 60, f"{drv.name} to settle after stop")
    wait_until(lambda: not alive(pids), 60, f"{drv.name} children to be reaped")
    dt = time.perf_counter() - t0
    left = workers(drv.pid)
    if left:
        raise BenchError(f"{drv.name}: {len(left)} children still running after stop")
    return dt


def idle(drv, seconds, record):
    """CPU over the window: schedstat of the live threads (ns precision), or
    utime+stime of the process (10 ms ticks, exited threads too) if more."""
    c0, k0, t0 = cpu_ns(drv.pid), cpu_ticks_s(drv.pid), time.perf_counter()
    time.sleep(seconds)  # the measuring window itself, not a wait for a condition
    c1, k1, t1 = cpu_ns(drv.pid), cpu_ticks_s(drv.pid), time.perf_counter()
    cpu = max((c1 - c0) / 1e9, k1 - k0)
    record("idle", "cpu_s", cpu)
    record("idle", "cpu_pct", 100 * cpu / (t1 - t0))
    for k, v in status_fields(drv.pid).items():
        record("idle", k, v)


def retell(drv, wire=False):
    """A re-tell as a new client process, or (wire) as one request on the
    socket: the daemon's own time, without an interpreter start."""
    mark = drv.retell_mark()
    t0 = time.perf_counter()
    if wire:
        if not drv.wire_tell():
            raise RuntimeError(f"{drv.name}: wrong answer to a re-tell on the socket")
    else:
        drv.retell()
    wait_until(lambda: drv.retold(mark), 30, f"{drv.name} to settle after a re-tell")
    return time.perf_counter() - t0


def roundtrip(argv, rounds):
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        common.run(argv)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def concurrently(clients, per_client, one):
    """clients threads x per_client calls of one() -> (seconds, errors)."""
    errors = []
    gate = threading.Barrier(clients + 1)

    def worker():
        gate.wait()
        for _ in range(per_client):
            try:
                if not one():
                    errors.append("wrong answer")
            except Exception as e:  # noqa: BLE001 - counted, reported
                errors.append(repr(e))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join(300)
    return time.perf_counter() - t0, errors


def concurrency(drv, cfg, record):
    wc, wr = cfg.wire_clients
    dt, errs = concurrently(wc, wr, drv.wire_tell)
    record("concurrency", "wire_s", dt)
    record("concurrency", "wire_errors", len(errs))
    cc, cr = cfg.cli_clients
    argv = drv.cli_tell_argv()

    def cli():
        p = subprocess.run(argv, cwd=common.REPO, env=common.env(), capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=120, start_new_session=True)
        return p.returncode == 0

    dt, cerrs = concurrently(cc, cr, cli)
    record("concurrency", "cli_s", dt)
    record("concurrency", "cli_errors", len(cerrs))
    if errs or cerrs:
        raise BenchError(f"{drv.name}: {len(errs)} of {wc * wr} socket requests and "
                         f"{len(cerrs)} of {cc * cr} CLI requests failed: "
                         f"{sorted(set(errs + cerrs))[:3]}")
    wait_until(drv.started, 120, f"{drv.name} to settle after the burst")


def respawn(drv, n, kills):
    """Median seconds from kill -9 of a child to a new child running."""
    samples = []
    for _ in range(kills):
        before = workers(drv.pid)
        victim = min(before, key=lambda p: (before[p], p))  # oldest first
        known = set(os.listdir("/proc"))
        t0 = time.perf_counter()
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: _new_worker(drv.pid, known), 30,
                   f"{drv.name} to respawn a child")
        samples.append(time.perf_counter() - t0)
        wait_until(lambda: not alive([victim]) and len(workers(drv.pid)) == n, 30,
                   f"{drv.name} to reap the killed child and have {n} again")
    return statistics.median(samples), samples


def _new_worker(daemon_pid, known):
    """A running `sleep` under daemon_pid among /proc entries not in known."""
    for name in os.listdir("/proc"):
        if name in known or not name.isdigit():
            continue
        s = common._stat(name)
        if s is None or s[0] != common.WORKER or s[1] == b"Z":
            continue
        ppid, hops = s[2], 0
        while ppid > 1 and ppid != daemon_pid and hops < 10:
            p = common._stat(ppid)
            ppid, hops = (p[2] if p else 0), hops + 1
        if ppid == daemon_pid:
            return True
    return False


# ------------------------------------------------------------- sessions

def run_session(kind, sysclass, cfg, record, fail, label=""):
    """One daemon, some scenarios. Failures go to fail(scenario, text)."""
    n = cfg.memory_n if kind == "memory" else cfg.n
    failed = []

    def failing(scenario, text):
        failed.append(scenario)
        fail(scenario, text)

    with tempfile.TemporaryDirectory(prefix=f"bench-{sysclass.name}-") as tmp:
        drv = sysclass(tmp, n, respawn=(kind == "respawn"))
        step = "spawn" if kind == "main" else kind
        try:
            drv.start()
            if kind == "memory":
                record("memory", "rss_empty_kib", status_fields(drv.pid)["rss_kib"])
                dt, pids = spawn_all(drv, n)
                record("memory", "spawn_s", dt)
                for k, v in status_fields(drv.pid).items():
                    record("memory", k, v)
                record("memory", "stop_s", stop_all(drv, pids))
            elif kind == "respawn":
                spawn_all(drv, n)
                med, samples = respawn(drv, n, cfg.kills)
                record("respawn", "time_s", med, samples)
                stop_all(drv, list(workers(drv.pid)))
            else:
                dt, pids = spawn_all(drv, n)
                record("spawn", "time_s", dt)
                _main(drv, cfg, record, failing)
                step = "stop"
                pids = sorted(set(pids) | set(workers(drv.pid)))
                record("stop", "time_s", stop_all(drv, pids))
        except Exception as e:  # noqa: BLE001 - reported, the run goes on
            failing(step, f"{drv.name}: {type(e).__name__}: {e}")
        finally:
            drv.shutdown()
            if failed:
                _keep_logs(tmp, f"{drv.name}-{kind}{label}", cfg.outdir)


def _main(drv, cfg, record, fail):
    steps = [("idle", lambda: idle(drv, cfg.idle_seconds, record)),
             ("retell", lambda: (record("retell", "time_s", retell(drv)),
                                 record("retell", "wire_s", retell(drv, wire=True)))),
             ("roundtrip", lambda: record("roundtrip", "time_s",
                                          roundtrip(drv.status_argv(), cfg.rounds))),
             ("concurrency", lambda: concurrency(drv, cfg, record))]
    for name, fn in steps:
        if name in cfg.scenarios:
            try:
                fn()
            except Exception as e:  # noqa: BLE001
                fail(name, f"{drv.name}: {type(e).__name__}: {e}")


def python_reference(cfg, record):
    record("roundtrip", "time_s", roundtrip([common.PY, "-c", "pass"], cfg.rounds))


def _keep_logs(tmp, name, outdir):
    """Copy the daemon logs of a failed session to OUTDIR/logs/."""
    import shutil
    dest = os.path.join(outdir, "logs")
    os.makedirs(dest, exist_ok=True)
    for f in os.listdir(tmp):
        if f.endswith((".log", ".out")):
            shutil.copy(os.path.join(tmp, f), os.path.join(dest, f"{name}-{f}"))
