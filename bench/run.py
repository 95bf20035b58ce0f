#!/usr/bin/env python3
"""Benchmark clinit against supervisord and a minimal floor daemon.

    python3 bench/run.py [--n 200] [--reps 5] [--scenarios spawn,stop,...]
                         [--systems clinit,supervisord,floor] [--json OUT]
                         [--idle-seconds 20] [--memory-n 1000] [--smoke]

Systems run interleaved (A B C A B C ...) over the repetitions. Prints
median and min-max per system and the ratios clinit/floor and
clinit/supervisord; writes JSON (default bench/out/results.json). Exits
non-zero when a scenario failed on some system.
"""

import argparse
import compileall
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import scenarios  # noqa: E402
from drv_clinit import Clinit  # noqa: E402
from drv_floor import Floor  # noqa: E402
from drv_supervisord import Supervisord  # noqa: E402

SYSTEMS = {"floor": Floor, "supervisord": Supervisord, "clinit": Clinit}
ORDER = ("spawn", "stop", "roundtrip", "respawn", "idle", "memory", "retell", "concurrency")
ABOUT = {
    "spawn": "tell -> group settled and N children running",
    "stop": "tell -> every child reaped (and the system settled)",
    "roundtrip": "one status command as a new process ('python' = python3 -c pass)",
    "respawn": "kill -9 of a respawning child -> a new child running (median per rep)",
    "idle": "the daemon over the idle window with N sleeping children",
    "memory": "daemon at N = --memory-n children: RSS, spawn and stop times",
    "retell": "tell of the level a settled group is at -> settled again (time_s: as a command; wire_s: one request on the socket)",
    "concurrency": "clients x tells at once, on the socket (wire) and as commands (cli)",
}
HERE = os.path.dirname(os.path.abspath(__file__))


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="children per group (200)")
    ap.add_argument("--reps", type=int, default=5, help="repetitions (5)")
    ap.add_argument("--scenarios", default=",".join(ORDER))
    ap.add_argument("--systems", default="clinit,supervisord,floor")
    ap.add_argument("--json", default=os.path.join(HERE, "out", "results.json"))
    ap.add_argument("--idle-seconds", type=float, default=20)
    ap.add_argument("--memory-n", type=int, default=1000)
    ap.add_argument("--kills", type=int, default=20, help="kills per respawn rep (20)")
    ap.add_argument("--rounds", type=int, default=5, help="status commands per roundtrip rep (5)")
    ap.add_argument("--wire", default="50x20", help="concurrency: CLIENTSxREQUESTS on the socket")
    ap.add_argument("--cli", default="5x4", help="concurrency: CLIENTSxREQUESTS as commands")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny and quick: N=5, 1 rep, 1 s idle, memory N=20 (CI)")
    cfg = ap.parse_args(argv)
    if cfg.smoke:
        cfg.n, cfg.reps, cfg.idle_seconds, cfg.memory_n = 5, 1, 1, 20
        cfg.kills, cfg.rounds, cfg.wire, cfg.cli = 5, 1, "5x4", "2x2"
    cfg.scenarios = [s for s in cfg.scenarios.split(",") if s]
    bad = set(cfg.scenarios) - set(ORDER)
    cfg.systems = [s for s in cfg.systems.split(",") if s]
    bad |= set(cfg.systems) - set(SYSTEMS)
    if bad:
        ap.error(f"unknown: {', '.join(sorted(bad))}")
    cfg.wire_clients = tuple(int(x) for x in cfg.wire.split("x"))
    cfg.cli_clients = tuple(int(x) for x in cfg.cli.split("x"))
    cfg.outdir = os.path.dirname(os.path.abspath(cfg.json))
    return cfg


def machine():
    u = platform.uname()
    return {"uname": f"{u.system} {u.node} {u.release} {u.machine}",
            "nproc": os.cpu_count(), "python": sys.version.split()[0],
            "executable": sys.executable,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


class Results:
    def __init__(self, cfg):
        self.cfg = cfg
        self.data = {}      # scenario -> metric -> system -> [values]
        self.samples = {}   # scenario -> system -> [raw samples]
        self.errors = []    # (scenario, system-prefixed text)

    def recorder(self, system):
        def record(scenario, metric, value, samples=None):
            if scenario not in self.cfg.scenarios:
                return
            m = self.data.setdefault(scenario, {}).setdefault(metric, {})
            m.setdefault(system, []).append(value)
            if samples is not None:
                self.samples.setdefault(scenario, {}).setdefault(system, []).extend(samples)
        return record

    def fail(self, scenario, text):
        print(f"  ERROR in {scenario}: {text}", flush=True)
        self.errors.append((scenario, text))


def sessions(cfg, systems):
    kinds = []
    if set(scenarios.MAIN) & set(cfg.scenarios):
        kinds.append("main")
    kinds += [k for k in ("respawn", "memory") if k in cfg.scenarios]
    for rep in range(cfg.reps):
        for kind in kinds:
            for name in systems:
                yield rep, kind, name
            if kind == "main" and "roundtrip" in cfg.scenarios:
                yield rep, kind, "python"


def fmt(metric, v):
    if metric.endswith("_s"):
        if v < 0.001:
            return f"{v * 1e6:.0f} us"
        return f"{v * 1000:.1f} ms" if v < 10 else f"{v:.2f} s"
    if metric.endswith("_kib"):
        return f"{v / 1024:.1f} MiB"
    if metric.endswith("_pct"):
        return f"{v:.2f} %"
    return f"{v:g}"


def summarize(res):
    out = {}
    for sc in ORDER:
        for metric, per in res.data.get(sc, {}).items():
            row = {}
            for name, vals in per.items():
                row[name] = {"values": vals, "median": statistics.median(vals),
                             "min": min(vals), "max": max(vals)}
            c = row.get("clinit", {}).get("median")
            ratios = {}
            for other in ("floor", "supervisord", "python"):
                if metric == "threads" or metric.endswith("_errors"):
                    break
                o = row.get(other, {}).get("median")
                if c is not None and o:
                    ratios[f"clinit/{other}"] = c / o
            out.setdefault(sc, {})[metric] = {"systems": row, "ratios": ratios}
    return out


def report(cfg, info, summary, res, skipped):
    print()
    print(f"clinit benchmark  {info['date']}")
    print(f"machine: {info['uname']}, {info['nproc']} cpus, Python {info['python']}")
    print(f"N={cfg.n} reps={cfg.reps} idle={cfg.idle_seconds:g}s memory-n={cfg.memory_n} "
          f"kills={cfg.kills} wire={cfg.wire} cli={cfg.cli}")
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    for scenario, text in res.errors:
        if scenario not in ORDER:
            print(f"ERROR {text}")
    for sc in ORDER:
        if sc not in cfg.scenarios:
            continue
        print(f"\n== {sc}: {ABOUT[sc]}")
        for metric, m in summary.get(sc, {}).items():
            print(f"  {metric:<14} {'median':>12} {'min':>12} {'max':>12}")
            for name in list(SYSTEMS) + ["python"]:
                s = m["systems"].get(name)
                if s:
                    print(f"    {name:<12} {fmt(metric, s['median']):>12} "
                          f"{fmt(metric, s['min']):>12} {fmt(metric, s['max']):>12}")
            if m["ratios"]:
                print("    " + "   ".join(f"{k} {v:.2f}x" for k, v in m["ratios"].items()))
        for scenario, text in res.errors:
            if scenario == sc:
                print(f"  ERROR {text}")
        if sc not in summary and not any(s == sc for s, _ in res.errors):
            print("  (no results)")


def main(argv=None):
    cfg = parse(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    # Started from a background job, SIGINT would be ignored here and in
    # every daemon we start; catching it gives them all the default.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    info = machine()
    # An installed clinit has its bytecode compiled at install time (as
    # supervisord's is); a checkout has none when PYTHONDONTWRITEBYTECODE is
    # set, which would charge every command a compile.  Compile it once.
    compileall.compile_dir(os.path.join(common.REPO, "clinit"), quiet=1)
    skipped, systems = {}, []
    for name in cfg.systems:
        why = SYSTEMS[name].available()
        if why:
            skipped[name] = why
            print(f"note: skipping {name}: {why}", flush=True)
        else:
            systems.append(name)
    res = Results(cfg)
    if "clinit" in skipped:  # the product itself: that is a failure, not a note
        res.fail("setup", f"clinit: {skipped['clinit']}")
    order = systems  # interleaved in the order given
    shutil.rmtree(os.path.join(cfg.outdir, "logs"), ignore_errors=True)
    t_start = time.monotonic()
    try:
        for rep, kind, name in sessions(cfg, order):
            t0 = time.monotonic()
            print(f"rep {rep + 1}/{cfg.reps} {kind:<8} {name:<12}", end=" ", flush=True)
            if name == "python":
                try:
                    scenarios.python_reference(cfg, res.recorder("python"))
                except Exception as e:  # noqa: BLE001
                    res.fail("roundtrip", f"python: {e}")
            else:
                n_err = len(res.errors)
                scenarios.run_session(kind, SYSTEMS[name], cfg, res.recorder(name), res.fail,
                                      label=f"-rep{rep + 1}")
                if len(res.errors) > n_err:
                    print(f"rep {rep + 1}/{cfg.reps} {kind:<8} {name:<12}", end=" ")
            print(f"done in {time.monotonic() - t0:.1f}s", flush=True)
    finally:
        common.kill_marked()
    summary = summarize(res)
    report(cfg, info, summary, res, skipped)
    doc = {"machine": info, "config": {k: v for k, v in vars(cfg).items()},
           "skipped": skipped, "results": summary, "samples": res.samples,
           "errors": [{"scenario": s, "error": t} for s, t in res.errors],
           "seconds": time.monotonic() - t_start}
    os.makedirs(os.path.dirname(os.path.abspath(cfg.json)), exist_ok=True)
    with open(cfg.json, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"\nwrote {cfg.json} ({time.monotonic() - t_start:.0f}s in all)")
    if res.errors:
        print(f"{len(res.errors)} scenario error(s)")
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted (every process the benchmark started was killed)")
        sys.exit(130)
