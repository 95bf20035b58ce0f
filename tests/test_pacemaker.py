"""clinit groups under a real Pacemaker + Corosync cluster (tests/cluster/*.sh).

single.sh: one node; the agent starts a group, its monitor notices a failed
test entry, a throttled respawn entry and a killed daemon, Pacemaker recovers
each, and target-role=Stopped halts the group gracefully.
two.sh: two nodes in network namespaces joined over 127.0.1.1/127.0.1.2;
planned moves (SIGINT on the old node), failover after node1 is killed
(timed), node1 rejoins.

They need root (namespaces, mounts) and the Debian packages pacemaker,
corosync and resource-agents; they are skipped, with the reason, without
them.  Each script tears down by pid and by the names it created, and fails
when anything is left.  They run one after the other, on one pytest-xdist
worker (the machine is small).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.xdist_group("pacemaker")]

HARNESS = ROOT / "tests" / "cluster"
BASE = "/tmp/clinit-cluster"          # world-searchable: Pacemaker reads as user hacluster
TOOLS = ("corosync", "pacemakerd", "crm_mon", "cibadmin", "crm_resource", "crm_failcount",
         "crmadmin", "corosync-quorumtool", "ip", "nsenter", "unshare", "mountpoint")


def _why_not() -> str | None:
    if os.getuid() != 0:
        return "needs root (network and mount namespaces)"
    missing = [t for t in TOOLS if not shutil.which(t, path="/usr/sbin:/usr/bin:/sbin:/bin")]
    if missing:
        return ("missing " + " ".join(missing) +
                " (apt-get install -y pacemaker corosync resource-agents)")
    return None


def run_harness(name: str, timeout: float = 240.0) -> str:
    """Run tests/cluster/NAME.sh; its output (it prints phases, METRIC lines, ALL OK)."""
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    os.makedirs(BASE, mode=0o755, exist_ok=True)
    os.chmod(BASE, 0o755)
    env = dict(os.environ, CLINIT_ROOT=str(ROOT), PYTHON=sys.executable)
    proc = subprocess.Popen(["bash", str(HARNESS / f"{name}.sh"), f"{BASE}/{name}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)         # the script's trap tears everything down
        out, _ = proc.communicate(timeout=150)
        pytest.fail(f"{name}.sh did not finish in {timeout:g} s:\n{out}")
    print(out)
    try:
        os.rmdir(BASE)                           # the script removed its folder after a clean run
    except OSError:
        pass
    assert proc.returncode == 0 and "ALL OK" in out, out
    assert "teardown clean" in out
    return out


def test_single_node_cluster_runs_and_recovers_a_group():
    out = run_harness("single")
    for step in ("group web DONE at run", "fail-count 1", "fail-count 2", "a new daemon",
                 "group web CONFIGURED (halted)"):
        assert f"ok: {step}" in out


def test_two_node_cluster_moves_and_fails_over_groups():
    out = run_harness("two")
    assert "METRIC crash node1 -> web DONE on node2" in out
    assert "planned move node1 -> node2" in out and "node1 rejoins done" in out
