"""The OCF resource agent (conf/ocf/clinit, clinit/ocf.py) against real daemons.

Each test runs the agent as Pacemaker does: a new process, the action as its
argument, the parameters in OCF_RESKEY_* and the operation's timeout in
OCF_RESKEY_CRM_meta_timeout; it checks the exit status, the log lines on
stderr and what really runs.  `ocf-tester` (Debian package resource-agents)
runs its own checks when it is installed and we are root.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

import pytest

from conftest import ROOT, gone, wait_for

from clinit import ocf, ocfinstall

AGENT = ROOT / "conf" / "ocf" / "clinit"

SERVICE = """
web:web-check:run:test:true
web:web-srv:run:respawn:exec sleep 1000
other:other-srv:run:respawn:exec sleep 1000
"""


def agent(action, d=None, group="web", op_timeout_ms=20000, **params):
    """Run the agent's `action`; the CompletedProcess (returncode is the OCF status)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCF_", "HA_"))}
    env.update(OCF_ROOT="/usr/lib/ocf", OCF_RESOURCE_INSTANCE=group or "x")
    if op_timeout_ms:
        env["OCF_RESKEY_CRM_meta_timeout"] = str(op_timeout_ms)
    if group is not None:
        env["OCF_RESKEY_group"] = group
    if d is not None:
        env["OCF_RESKEY_cltab"] = str(d.cltab)
    for name, value in params.items():
        env[f"OCF_RESKEY_{name}"] = str(value)
    return subprocess.run([sys.executable, str(AGENT), action], env=env, capture_output=True,
                          text=True, timeout=120)


def pids_of(d, tag):
    """Live pids of the daemon's children started for `tag`."""
    found = []
    for pid in d.children():
        try:
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if f"CLINIT_TAG={tag}".encode() in env:
            found.append(pid)
    return found


# ---------------------------------------------------------------- without a daemon

def test_meta_data_is_ocf_xml_naming_every_parameter():
    r = agent("meta-data", group=None)
    assert r.returncode == ocf.OCF_SUCCESS
    root = ET.fromstring(r.stdout.split("\n", 2)[2])   # past the XML and DOCTYPE lines
    assert root.tag == "resource-agent" and root.get("name") == "clinit"
    assert root.findtext("version") == "1.1"
    params = {p.get("name"): p for p in root.iter("parameter")}
    assert set(params) == {"group", "level", "cltab", "socket", "timeout"}
    assert params["group"].get("required") == "1" and params["group"].get("unique") == "1"
    assert params["level"].find("content").get("default") == "run"
    actions = {a.get("name") for a in root.iter("action")}
    assert actions == {"start", "stop", "monitor", "validate-all", "meta-data"}


@pytest.mark.skipif(not shutil.which("xmllint") or not os.path.exists(
    "/usr/share/resource-agents/ra-api-1.dtd"), reason="xmllint or ra-api-1.dtd missing "
    "(apt-get install -y resource-agents)")
def test_meta_data_validates_against_the_ocf_dtd():
    xml = agent("meta-data", group=None).stdout
    r = subprocess.run(["xmllint", "--noout", "--valid", "-"], input=xml, text=True,
                       capture_output=True, cwd="/usr/share/resource-agents")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("action, status", [("reload", ocf.OCF_ERR_UNIMPLEMENTED),
                                            ("", ocf.OCF_ERR_ARGS)])
def test_unknown_or_missing_action(action, status):
    args = [sys.executable, str(AGENT)] + ([action] if action else [])
    assert subprocess.run(args, capture_output=True).returncode == status


def test_validate_all(make_daemon, tmp_path):
    d = make_daemon(SERVICE, start=False)
    assert agent("validate-all", d).returncode == ocf.OCF_SUCCESS
    r = agent("validate-all", d, group=None)
    assert r.returncode == ocf.OCF_ERR_CONFIGURED and "'group' is required" in r.stderr
    r = agent("validate-all", d, group="a;b")
    assert r.returncode == ocf.OCF_ERR_CONFIGURED and "bad group name" in r.stderr
    r = agent("validate-all", d, level="$(x)")
    assert r.returncode == ocf.OCF_ERR_CONFIGURED and "bad level name" in r.stderr
    r = agent("validate-all", d, timeout="soon")
    assert r.returncode == ocf.OCF_ERR_CONFIGURED and "'timeout'" in r.stderr
    r = agent("validate-all", d, group="nosuch")
    assert r.returncode == ocf.OCF_ERR_INSTALLED and "no entry for group nosuch" in r.stderr
    r = agent("validate-all", d, level="quiet")
    assert r.returncode == ocf.OCF_SUCCESS and "WARNING: no entry of group web" in r.stderr
    missing = dict(cltab=tmp_path / "none")
    r = agent("validate-all", **missing)
    assert r.returncode == ocf.OCF_ERR_INSTALLED and "cannot read" in r.stderr
    bad = tmp_path / "bad"
    bad.write_text("web:t:run:sometimes:true\n")
    r = agent("validate-all", cltab=bad)
    assert r.returncode == ocf.OCF_ERR_INSTALLED and "does not load" in r.stderr
    assert "bad:1" in r.stderr


def test_no_daemon_monitor_not_running_stop_ok_start_fails_clearly(make_daemon):
    d = make_daemon(SERVICE, start=False)
    assert agent("monitor", d).returncode == ocf.OCF_NOT_RUNNING
    assert agent("stop", d).returncode == ocf.OCF_SUCCESS
    r = agent("start", d)
    assert r.returncode == ocf.OCF_ERR_GENERIC
    assert f"no clinit daemon answers on {d.socket}" in r.stderr
    assert "agent_starts_daemon" in r.stderr and r.stderr.startswith("clinit(web)[")


# ---------------------------------------------------------------- with a daemon


def test_start_monitor_stop_cycle(make_daemon):
    d = make_daemon(SERVICE)
    assert agent("monitor", d).returncode == ocf.OCF_NOT_RUNNING      # never told
    r = agent("start", d)
    assert r.returncode == ocf.OCF_SUCCESS, r.stderr
    assert d.status("web", "run") == "DONE"
    [srv] = pids_of(d, "web-srv")
    assert agent("monitor", d).returncode == ocf.OCF_SUCCESS
    assert agent("monitor", d, group="other").returncode == ocf.OCF_NOT_RUNNING
    # start again: settled already, answered at once, nothing restarted
    r = agent("start", d)
    assert r.returncode == ocf.OCF_SUCCESS and "DONE at level run already" in r.stderr
    assert pids_of(d, "web-srv") == [srv]
    r = agent("stop", d)
    assert r.returncode == ocf.OCF_SUCCESS, r.stderr
    assert gone(srv) and d.status("web", "run") == "CONFIGURED"
    assert agent("monitor", d).returncode == ocf.OCF_NOT_RUNNING      # halted
    r = agent("stop", d)
    assert r.returncode == ocf.OCF_SUCCESS and "halted already" in r.stderr


def test_monitor_is_read_only(make_daemon):
    d = make_daemon(SERVICE)
    assert agent("start", d).returncode == ocf.OCF_SUCCESS
    before = (d.status(), pids_of(d, "web-srv"), d.clstat.stat().st_mtime_ns)
    for _ in range(3):
        assert agent("monitor", d).returncode == ocf.OCF_SUCCESS
    assert (d.status(), pids_of(d, "web-srv"), d.clstat.stat().st_mtime_ns) == before


def test_start_of_a_failing_test_is_an_error_and_monitor_says_failed(make_daemon):
    d = make_daemon("web:web-check:run:test:exit 3\nweb:web-srv:run:respawn:exec sleep 1000\n")
    r = agent("start", d)
    assert r.returncode == ocf.OCF_ERR_GENERIC and "FAILED" in r.stderr
    r = agent("monitor", d)
    assert r.returncode == ocf.OCF_ERR_GENERIC and "group web is FAILED" in r.stderr
    assert agent("stop", d).returncode == ocf.OCF_SUCCESS
    assert agent("monitor", d).returncode == ocf.OCF_NOT_RUNNING


def test_monitor_says_failed_when_a_respawn_entry_is_throttled(make_daemon):
    d = make_daemon("web:web-srv:run:respawn:exit 1\n", respawn_limit=1, respawn_pause=60)
    assert agent("start", d).returncode == ocf.OCF_SUCCESS
    wait_for(lambda: "too rapidly" in d.log_text())
    r = agent("monitor", d)
    assert r.returncode == ocf.OCF_ERR_GENERIC
    assert "respawn entry web-srv restarts too rapidly" in r.stderr
    assert agent("stop", d).returncode == ocf.OCF_SUCCESS


def test_monitor_at_another_level_is_not_running(make_daemon):
    d = make_daemon(SERVICE)
    d.tell("web", "maintenance")
    d.wait_state("web", "maintenance", "DONE")
    r = agent("monitor", d)
    assert r.returncode == ocf.OCF_NOT_RUNNING and "at level maintenance" in r.stderr
    assert agent("monitor", d, level="maintenance").returncode == ocf.OCF_SUCCESS


def test_stop_waits_through_the_escalation_to_sigkill(make_daemon):
    stubborn = "web:web-srv:run:respawn:trap '' INT TERM; while :; do sleep 0.1; done\n"
    d = make_daemon(stubborn, term_delay=0.5, kill_delay=0.5)
    assert agent("start", d).returncode == ocf.OCF_SUCCESS
    [srv] = pids_of(d, "web-srv")
    r = agent("stop", d)
    assert r.returncode == ocf.OCF_SUCCESS, r.stderr
    assert gone(srv)


def test_start_that_does_not_settle_in_time_fails_then_stop_cleans_up(make_daemon):
    d = make_daemon("web:web-slow:run:wait:exec sleep 1000\n")
    r = agent("start", d, timeout=1)
    assert r.returncode == ocf.OCF_ERR_GENERIC and "did not settle" in r.stderr
    [slow] = pids_of(d, "web-slow")
    assert agent("stop", d).returncode == ocf.OCF_SUCCESS
    assert gone(slow)


def test_timeout_parameter_is_capped_by_the_operation_timeout():
    p = ocf.Params({"OCF_RESKEY_timeout": "100", "OCF_RESKEY_CRM_meta_timeout": "20000"})
    assert p.timeout() == 18.0
    assert ocf.Params({"OCF_RESKEY_timeout": "5"}).timeout() == 5.0
    assert ocf.Params({"OCF_RESKEY_CRM_meta_timeout": "30000"}).timeout() == 28.0
    assert ocf.Params({}).timeout() == ocf.DEFAULT_TIMEOUT


def test_daemon_killed_monitor_sees_unmanaged_processes_and_stop_ends_them(make_daemon):
    d = make_daemon(SERVICE)
    assert agent("start", d).returncode == ocf.OCF_SUCCESS
    [srv] = pids_of(d, "web-srv")
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    r = agent("monitor", d)
    assert r.returncode == ocf.OCF_ERR_GENERIC
    assert f"left running unmanaged: {srv}" in r.stderr
    r = agent("stop", d)
    assert r.returncode == ocf.OCF_SUCCESS, r.stderr
    assert "SIGINT" in r.stderr
    wait_for(lambda: gone(srv))
    assert agent("monitor", d).returncode == ocf.OCF_NOT_RUNNING


def test_start_starts_the_daemon_when_the_cltab_allows_it(make_daemon):
    d = make_daemon(SERVICE, start=False, agent_starts_daemon="yes")
    r = agent("start", d)
    try:
        assert r.returncode == ocf.OCF_SUCCESS, r.stderr
        assert "started `" in r.stderr
        assert d.status("web", "run") == "DONE"
        assert agent("monitor", d).returncode == ocf.OCF_SUCCESS
    finally:
        ok, answer = d.client().request("ping")
        daemon_pid = int(answer.split()[2])
        d.client().shutdown()
        wait_for(lambda: gone(daemon_pid), timeout=20)


# ---------------------------------------------------------------- ocf-tester

@pytest.fixture
def installed_agent():
    """The agent as `clinit-ocf --install` writes it, under a world-readable OCF root
    (ocf-tester runs meta-data as user nobody)."""
    root = tempfile.mkdtemp(prefix="clinit-ocf-")
    os.chmod(root, 0o755)
    try:
        yield ocfinstall.install(root, ocfinstall.agent_python())
    finally:
        shutil.rmtree(root)


@pytest.mark.skipif(not shutil.which("ocf-tester"), reason="ocf-tester missing "
                    "(apt-get install -y resource-agents)")
@pytest.mark.skipif(os.getuid() != 0, reason="ocf-tester checks the agent as user nobody: root")
def test_ocf_tester_passes(make_daemon, installed_agent):
    d = make_daemon(SERVICE)
    r = subprocess.run(["ocf-tester", "-n", "web", "-o", "group=web", "-o", f"cltab={d.cltab}",
                        installed_agent], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "passed all tests" in r.stdout
    assert d.status("web", "run") == "CONFIGURED"        # it ends with a stop


def test_install_writes_an_agent_with_an_absolute_interpreter(installed_agent):
    text = open(installed_agent).read()
    interpreter = text.splitlines()[0][2:].split()[0]
    assert os.path.isabs(interpreter) and os.access(interpreter, os.X_OK)
    assert os.stat(installed_agent).st_mode & 0o777 == 0o755
    r = subprocess.run([installed_agent, "meta-data"], capture_output=True, text=True,
                       env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert r.returncode == 0 and "<resource-agent name=\"clinit\"" in r.stdout
