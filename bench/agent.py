#!/usr/bin/env python3
"""What the clinit OCF agent adds to a failover, next to Pacemaker's ocf:heartbeat:Dummy.

    python3 bench/agent.py [--n 20] [--reps 20] [--json PATH]

A clinit daemon runs a cltab with one group of N respawn entries. The agent,
installed as `clinit-ocf --install` writes it (and run as Pacemaker runs it:
a new process, OCF_RESKEY_* in the environment), is timed for:

- start (cold): the group halted -> DONE with N children (what a failover runs)
- start (settled): the group DONE already -> returns at once
- monitor: the group DONE, N children
- stop: DONE -> halted, every child reaped (SIGINT; `sleep` exits at once)
- the agent's interpreter alone (`python3 -S -c pass`), for scale

and Dummy (which touches or removes a state file) for start, monitor and
stop. Each figure is the median of --reps runs, interleaved; ratios are
clinit/Dummy. Needs resource-agents (Dummy) for the comparison; everything
it starts is killed at the end.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import common  # noqa: E402
from common import wait_until  # noqa: E402

from clinit import ocfinstall  # noqa: E402

DUMMY = "/usr/lib/ocf/resource.d/heartbeat/Dummy"


def agent_env(**params):
    e = common.env(OCF_ROOT="/usr/lib/ocf", OCF_RESKEY_CRM_meta_timeout="60000")
    for k, v in params.items():
        e[f"OCF_RESKEY_{k}" if k != "instance" else "OCF_RESOURCE_INSTANCE"] = v
    return e


def call(agent, action, env, want):
    t = time.perf_counter()
    p = subprocess.run([agent, action], env=env, stdin=subprocess.DEVNULL, capture_output=True)
    dt = time.perf_counter() - t
    if p.returncode != want:
        raise common.BenchError(f"{agent} {action} exited {p.returncode}, not {want}: "
                                f"{p.stderr.decode(errors='replace')[-400:]}")
    return dt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--json")
    cfg = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="clinit-bench-agent-")
    os.chmod(tmp, 0o755)
    cltab = os.path.join(tmp, "cltab")
    with open(cltab, "w") as f:
        f.write(f":::socket:{tmp}/sock\n:::clstat:{tmp}/clstat\n")
        for i in range(cfg.n):
            f.write(f"g:e{i}:run:respawn:{common.SLEEP_CMD}\n")
    agent = ocfinstall.install(os.path.join(tmp, "ocf"), ocfinstall.agent_python())
    proc = common.start_daemon([sys.executable, os.path.join(common.REPO, "bin", "clinit"), "-d",
                                "-c", cltab], os.path.join(tmp, "daemon.log"))
    cl = agent_env(instance="g", group="g", cltab=cltab)
    dm = agent_env(instance="bench", state=os.path.join(tmp, "dummy.state"))
    have_dummy = os.access(DUMMY, os.X_OK)
    times = {k: [] for k in ("clinit start (cold)", "clinit start (settled)", "clinit monitor",
                             "clinit stop", "Dummy start", "Dummy monitor", "Dummy stop",
                             "interpreter alone")}
    bare = [open(agent).readline()[2:].split()[0], "-S", "-c", "pass"]
    try:
        wait_until(lambda: os.path.exists(f"{tmp}/sock"), 30, "the daemon's socket")
        time.sleep(0.2)
        for _ in range(cfg.reps):
            times["clinit start (cold)"].append(call(agent, "start", cl, 0))
            wait_until(lambda: len(common.workers(proc.pid)) == cfg.n, 30, f"{cfg.n} children")
            times["clinit start (settled)"].append(call(agent, "start", cl, 0))
            times["clinit monitor"].append(call(agent, "monitor", cl, 0))
            times["clinit stop"].append(call(agent, "stop", cl, 0))
            t = time.perf_counter()
            subprocess.run(bare, check=True)
            times["interpreter alone"].append(time.perf_counter() - t)
            if have_dummy:
                times["Dummy start"].append(call(DUMMY, "start", dm, 0))
                times["Dummy monitor"].append(call(DUMMY, "monitor", dm, 0))
                times["Dummy stop"].append(call(DUMMY, "stop", dm, 0))
    finally:
        common.stop_daemon(proc)
        subprocess.run(["rm", "-rf", tmp])
    med = {k: statistics.median(v) for k, v in times.items() if v}
    print(f"agent actions, N={cfg.n} respawn entries, median of {cfg.reps} "
          f"(min..max), agent on {ocfinstall.agent_python()}")
    for k, v in times.items():
        if v:
            print(f"  {k:24s} {med[k] * 1000:7.1f} ms  ({min(v) * 1000:.1f}..{max(v) * 1000:.1f})")
    if have_dummy:
        for ours, theirs in (("clinit start (cold)", "Dummy start"),
                             ("clinit start (settled)", "Dummy start"),
                             ("clinit monitor", "Dummy monitor"), ("clinit stop", "Dummy stop")):
            print(f"  {ours} / {theirs}: {med[ours] / med[theirs]:.2f}x")
    else:
        print("  (no ocf:heartbeat:Dummy: apt-get install -y resource-agents for the comparison)")
    if cfg.json:
        with open(cfg.json, "w") as f:
            json.dump({"n": cfg.n, "reps": cfg.reps, "times": times, "median": med}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
