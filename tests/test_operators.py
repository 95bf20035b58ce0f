"""The operators' interfaces (issue 9), through the real `bin/clinit` against real
daemons: --wait and its exit statuses, --halt, the tell's plan, --status
(groups and processes, plain and JSON), --follow, error messages, --version,
python -m clinit, --dot, and the daemon's logging options.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT, wait_for
from clinit.control import Client, NoDaemon, Refused

CLINIT = [sys.executable, str(ROOT / "bin" / "clinit")]
WEB = """
    web:w1:run:respawn:exec sleep 1000
    web:w2:run:once:exec sleep 1000
    web:w3:run,check:wait:true
"""


@pytest.fixture(autouse=True)
def private_run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))


# -- --wait -----------------------------------------------------------------------------

def test_wait_returns_once_the_group_is_done_and_exits_0(make_daemon):
    d = make_daemon(WEB)
    result = d.cli("web", "run", "--wait", check=0)
    assert re.fullmatch(r"level transition started: web to run: 3 entries to start, 0 to stop\n"
                        r"web run DONE \(settled in [0-9.]+ s\)\n", result.stdout), result
    # no poll needed: the daemon says it is settled (its status file follows a moment later)
    assert d.cli("--status", "web", check=0).stdout == "web run DONE\n"
    assert len(d.children()) == 2


def test_wait_on_a_passing_test_level_exits_0_and_on_a_failing_one_exits_1(make_daemon):
    d = make_daemon("""
        t:ok:good:test:true
        t:bad:bad:test:exit 3
    """)
    assert "t good PASSED" in d.cli("t", "good", "--wait", check=0).stdout
    result = d.cli("t", "bad", "--wait", check=1)
    assert "t bad FAILED" in result.stderr


def test_wait_that_times_out_exits_4_and_the_group_goes_on(make_daemon):
    d = make_daemon("""
        slow:s1:1:wait:exec sleep 1000
        slow:s2:1:once:touch reached
    """)
    result = d.cli("slow", "1", "--wait", "--timeout", "0.5", check=4)
    assert "timed out after 0.5 s" in result.stderr and "goes on" in result.stderr
    assert d.cli("--status", "slow", check=0).stdout == "slow 1 STARTING\n"
    d.cli("slow", "0", check=0)  # stops the wait entry: the walk never reached s2
    d.wait_state("slow", "0", "DONE")
    assert not (d.folder / "reached").exists()


def test_a_tell_refused_by_a_bad_cltab_exits_1_at_once_even_with_wait(make_daemon):
    d = make_daemon(WEB)
    d.write(WEB + "    web:w9:run:sometimes:true\n")
    result = d.cli("web", "run", "--wait", "--timeout", "600", check=1, timeout=60)
    assert "unknown mode 'sometimes'" in result.stderr
    assert d.status() == ""


def test_an_unknown_group_with_wait_exits_1_at_once(make_daemon):
    d = make_daemon(WEB)
    assert d.cli("nosuch", "run", "--wait", check=1).stderr == "no such group: nosuch\n"


def test_a_later_tell_overtakes_a_wait_which_then_fails(make_daemon):
    d = make_daemon("""
        g:block:1:wait:exec sleep 1000
    """)
    waiting = subprocess.Popen(CLINIT + ["-c", str(d.cltab), "g", "1", "--wait"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: d.status("g", "1") == "STARTING")
    wait_for(lambda: len(d.children()) == 1)
    d.cli("g", "2", check=0)
    out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 1, (out, err)
    assert "was told level 2 before it settled at 1" in err


def test_a_waiting_client_that_goes_away_frees_its_waiter(make_daemon):
    d = make_daemon("g:block:1:wait:exec sleep 1000\n", start=False)
    d.start_with("--debug")
    client = Client(cltab=str(d.cltab))
    conn = client.connect()
    conn.sendall(b'{"cmd":"tell","group":"g","level":"1","wait":true,"timeout":600}\n')
    wait_for(lambda: "waiting for g to settle at 1" in d.log_text())
    conn.close()
    wait_for(lambda: "gave up waiting for g" in d.log_text())


def test_progress_of_a_waiting_command_off_a_terminal_is_plain_lines_on_stderr(make_daemon):
    d = make_daemon(WEB)
    result = d.cli("web", "run", "--wait", check=0)
    lines = result.stderr.splitlines()
    assert any(re.search(r" web run STARTING$", line) for line in lines), lines
    assert any(re.search(r" web w1 DONE pid \d+", line) for line in lines), lines
    assert not any("\x1b" in line or "\r" in line for line in lines)


# -- --halt ---------------------------------------------------------------------------------

def test_halt_stops_one_group_gracefully_and_leaves_the_others(make_daemon):
    d = make_daemon(WEB + "    db:d1:1:respawn:exec sleep 1000\n")
    d.cli("web", "run", "--wait", check=0)
    d.cli("db", "1", "--wait", check=0)
    db_pid = [p for p in d.children()]
    result = d.cli("--halt", "web", "--wait", check=0)
    assert result.stdout == "group web halting\ngroup web halted\n"
    assert d.cli("--status", "web", check=0).stdout == "web run CONFIGURED\n"
    wait_for(lambda: d.status(group="web") == "run CONFIGURED\n")  # the file follows
    wait_for(lambda: len(d.children()) == 1)
    assert d.status("db", "1") == "DONE" and set(d.children()) <= set(db_pid)


def test_halt_without_wait_answers_at_once(make_daemon):
    d = make_daemon(WEB)
    d.cli("web", "run", "--wait", check=0)
    assert d.cli("--halt", "web", check=0).stdout.startswith("group web halting")
    d.wait_state("web", "run", "CONFIGURED")
    assert d.cli("--halt", "nosuch", check=1).stderr == "no such group: nosuch\n"


# -- the tell's plan ------------------------------------------------------------------------

def test_a_tell_names_what_it_will_start_and_stop(make_daemon):
    d = make_daemon(WEB + "    web:c1:check:once:exec sleep 1000\n")
    out = d.cli("web", "run", check=0).stdout
    assert out == "level transition started: web to run: 3 entries to start, 0 to stop\n"
    d.wait_state("web", "run", "DONE")
    out = d.cli("web", "check", check=0).stdout
    assert out == "level transition started: web to check: 1 entry to start, 2 to stop, 1 kept\n"


def test_a_level_named_by_no_entry_says_so_and_still_empties_the_group(make_daemon):
    d = make_daemon(WEB)
    d.cli("web", "run", "--wait", check=0)
    result = d.cli("web", "rnu", check=0)
    assert result.stdout.splitlines()[1] == ("level 'rnu' is named by no entry of group 'web': "
                                             "all 3 of its processes will be stopped")
    d.wait_state("web", "rnu", "DONE")
    wait_for(lambda: d.children() == [])


# -- --status -------------------------------------------------------------------------------

def test_status_and_v_come_from_the_daemon_and_agree_with_s(make_daemon, tmp_path):
    d = make_daemon(WEB + "    db:d1:1:respawn:exec sleep 1000\n")
    d.cli("web", "run", "--wait", check=0)
    d.cli("db", "1", "--wait", check=0)
    os.unlink(d.clstat)  # not read: the daemon is asked
    assert d.cli("--status", check=0).stdout == "db 1 DONE\nweb run DONE\n"
    assert d.cli("--status", "web", check=0).stdout == "web run DONE\n"
    assert d.cli("-v", check=0).stdout.splitlines()[1:] == ["db 1 DONE", "web run DONE"]
    result = d.cli("--status", "nosuch", check=1)
    assert "group nosuch has not been told a level" in result.stderr


def test_status_json_follows_schema_1(make_daemon):
    d = make_daemon(WEB)
    d.cli("web", "run", "--wait", check=0)
    data = json.loads(d.cli("--status", "--json", check=0).stdout)
    assert data["schema"] == 1
    (g,) = data["groups"]
    assert set(g) == {"group", "level", "state", "settled", "since"}
    assert (g["group"], g["level"], g["state"], g["settled"]) == ("web", "run", "DONE", True)
    assert abs(g["since"] - time.time()) < 3600


def test_processes_prints_one_line_per_entry_sorted_by_group_then_cltab_order(make_daemon):
    d = make_daemon("""
        zz:z1:1:respawn:exec sleep 1000
        web:w1:run:respawn:exec sleep 1000
        web:w2:run:wait:exit 3
        web:w3:other:once:true
    """)
    d.cli("web", "run", "--wait", check=0)
    d.cli("zz", "1", "--wait", check=0)
    lines = d.cli("--status", "--processes", check=0).stdout.splitlines()
    rows = [line.split() for line in lines]
    assert rows[0] == ["GROUP", "TAG", "LEVELS", "MODE", "STATE", "PID", "UPTIME", "RESTARTS",
                       "LAST-EXIT", "THROTTLED-UNTIL"]
    assert [r[:2] for r in rows[1:]] == [["web", "w1"], ["web", "w2"], ["web", "w3"], ["zz", "z1"]]
    w1, w2, w3, z1 = rows[1:]
    assert w1[2:5] == ["run", "respawn", "DONE"] and int(w1[5]) in d.children()
    assert w2[4] == "DONE" and w2[5] == "-" and w2[8:10] == ["exit", "3"]
    assert w3[4] == "CONFIGURED" and w3[5] == "-"
    assert z1[4] == "DONE"


def test_processes_json_shows_restarts_and_the_signal_of_the_last_exit(make_daemon):
    d = make_daemon("web:w1:run:respawn:exec sleep 1000\n")
    d.cli("web", "run", "--wait", check=0)
    (pid,) = wait_for(lambda: d.children())
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: d.children() and d.children() != [pid])

    def restarted():
        data = json.loads(d.cli("--status", "web", "--processes", "--json", check=0).stdout)
        return data if data["processes"][0]["restarts"] == 1 else None

    data = wait_for(restarted)
    assert data["schema"] == 1
    (p,) = data["processes"]
    assert set(p) == {"group", "tag", "levels", "mode", "state", "pid", "uptime", "restarts",
                      "last_exit", "throttled_until"}
    assert p["last_exit"] == {"signal": "SIGKILL"}
    assert p["pid"] in d.children() and p["uptime"] >= 0 and p["throttled_until"] is None


def test_a_throttled_respawn_shows_when_its_pause_ends(make_daemon):
    d = make_daemon("web:w1:run:respawn:exit 1\n", respawn_limit=2, respawn_window=5,
                    respawn_pause=600)

    def paused():
        data = json.loads(d.cli("--status", "--processes", "--json", check=0).stdout)
        p = data["processes"][0]
        return p if p["state"] == "PAUSING" and p["throttled_until"] else None

    d.cli("web", "run", check=0)
    p = wait_for(paused)
    assert 500 < p["throttled_until"] - time.time() <= 600
    assert p["last_exit"] == {"code": 1}


# -- --follow ---------------------------------------------------------------------------------

class Follower:
    def __init__(self, d, *args):
        self.proc = subprocess.Popen(CLINIT + ["-c", str(d.cltab), "--follow", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=20)
        self.thread.join(timeout=20)
        return self.proc.returncode


def watching(d) -> None:
    wait_for(lambda: "watching" in d.log_text())


def test_follow_json_streams_group_and_process_transitions(make_daemon):
    d = make_daemon(WEB, start=False)
    d.start_with("--debug")
    f = Follower(d, "--json")
    watching(d)
    d.cli("web", "run", "--wait", check=0)
    wait_for(lambda: any(json.loads(line)["event"] == "group" and
                         json.loads(line)["state"] == "DONE" for line in f.lines))
    events = [json.loads(line) for line in f.lines]
    groups = [(e["level"], e["state"]) for e in events if e["event"] == "group"]
    assert ("run", "STARTING") in groups and groups[-1] == ("run", "DONE")
    procs = {e["tag"] for e in events if e["event"] == "process"}
    assert procs == {"w1", "w2", "w3"}
    assert all(isinstance(e["time"], float) for e in events)
    assert f.stop() in (0, 130)


def test_follow_shows_a_stop_as_stopping_then_configured_and_repeats_nothing(make_daemon):
    d = make_daemon("web:w1:run:respawn:exec sleep 1000\nweb:w2:run:once:exec sleep 1000\n",
                    start=False)
    d.start_with("--debug")
    f = Follower(d, "--json")
    watching(d)
    d.cli("web", "run", "--wait", check=0)
    wait_for(lambda: any('"state":"DONE"' in line and '"group"' in line for line in f.lines))
    started = len(f.lines)
    d.cli("web", "stop", "--wait", check=0)
    wait_for(lambda: any('"level":"stop"' in line and '"state":"DONE"' in line
                         for line in f.lines[started:]))
    events = [json.loads(line) for line in f.lines[started:]]
    for tag in ("w1", "w2"):
        states = [e["state"] for e in events if e["event"] == "process" and e["tag"] == tag]
        assert states == ["STOPPING", "CONFIGURED"], (tag, states)
    f.stop()


def test_follow_of_one_group_shows_only_that_group_in_plain_lines(make_daemon):
    d = make_daemon(WEB + "    db:d1:1:once:true\n", start=False)
    d.start_with("--debug")
    f = Follower(d, "db")
    watching(d)
    d.cli("web", "run", "--wait", check=0)
    d.cli("db", "1", "--wait", check=0)
    wait_for(lambda: any(line.endswith(" db 1 DONE") for line in f.lines))
    assert all(" web " not in line for line in f.lines), f.lines
    assert any(re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} db d1 ", line)
               for line in f.lines), f.lines
    f.stop()


def test_a_follower_that_never_reads_costs_the_daemon_nothing_and_is_told_what_it_lost(
        make_daemon):
    d = make_daemon("storm:s1:1:respawn:exit 0\n", respawn_limit=1000000, watch_queue=20)
    slow = Client(cltab=str(d.cltab)).connect()
    slow.sendall(b'{"cmd":"watch"}\n')
    seen = []

    def fast():
        for event in Client(cltab=str(d.cltab)).watch():
            seen.append(event)
            if len(seen) > 5000:
                return

    reader = threading.Thread(target=fast, daemon=True)
    reader.start()
    wait_for(lambda: seen)
    d.cli("storm", "1", check=0)
    reader.join(timeout=120)
    assert len(seen) > 5000
    assert d.client().request("ping")[0]  # the daemon answers while the slow reader sleeps
    d.cli("storm", "0", "--wait", check=0)
    slow.settimeout(20)
    data = b""
    while not any(b'"dropped"' in line for line in data.split(b"\n")[:-1]):  # a whole line
        chunk = slow.recv(65536)
        assert chunk, data[-500:]
        data += chunk
    slow.close()
    dropped = [json.loads(line) for line in data.split(b"\n")[:-1] if b'"dropped"' in line]
    assert dropped[0]["count"] > 0


# -- messages, version, python -m, --dot ------------------------------------------------------

def test_no_daemon_names_the_socket_once_and_exits_3(make_daemon):
    d = make_daemon(WEB, start=False)
    for args in (["web", "run"], ["--status"], ["--follow"], ["web", "run", "--wait"]):
        result = d.cli(*args, check=3)
        assert result.stderr.count(str(d.socket)) == 1, result.stderr
        assert "no clinit daemon answers" in result.stderr and "lost" not in result.stderr
        assert "clinit -d" in result.stderr  # says what to do


def test_a_client_errors_are_distinct_types():
    assert issubclass(Refused, ConnectionError) and not issubclass(Refused, NoDaemon)


def test_version_and_python_m_clinit(make_daemon):
    result = subprocess.run(CLINIT + ["--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and re.fullmatch(r"clinit \d+\.\d+\.\d+\n", result.stdout)
    setup = (ROOT / "setup.py").read_text()
    assert f'version="{result.stdout.split()[1]}"' in setup
    d = make_daemon(WEB)
    via_m = subprocess.run([sys.executable, "-m", "clinit", "-c", str(d.cltab), "web", "run"],
                           capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert via_m.returncode == 0 and via_m.stdout.startswith("level transition started")


@pytest.mark.parametrize("machine", ["process", "group", "daemon"])
def test_dot_prints_the_table_the_code_runs(machine):
    import importlib

    result = subprocess.run(CLINIT + ["--dot", machine], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0
    module = {"daemon": "daemonactor"}.get(machine, machine)
    assert result.stdout == importlib.import_module(f"clinit.{module}").dot()


def test_help_carries_the_exit_status_table():
    out = subprocess.run(CLINIT + ["-h"], capture_output=True, text=True, timeout=30).stdout
    for n in range(5):
        assert re.search(rf"^  {n}  ", out, re.M), n
    assert "--wait" in out and "--follow" in out and "--dot" in out


@pytest.mark.parametrize("args", [["--dot", "fsm"], ["--json"], ["--processes"],
                                  ["web", "run", "--wait", "--timeout", "0"],
                                  ["web", "run", "--wait", "--timeout", "x"], ["-k", "--wait"],
                                  ["--wait"]])
def test_bad_combinations_are_usage_errors(args):
    result = subprocess.run(CLINIT + args, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result


# -- the daemon's logs -------------------------------------------------------------------------

def test_the_daemon_logs_tells_with_the_uid_and_rereads_with_timestamps(make_daemon):
    d = make_daemon(WEB)
    d.cli("web", "run", "--wait", check=0)
    d.write(WEB + "    web:w9:run:sometimes:true\n")
    d.cli(check=1)
    log = d.logged("tell run", "rejected")
    tell = next(line for line in log.splitlines() if "tell run" in line)
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} clinit\[\d+\] INFO ", tell), tell
    assert f"from uid {os.getuid()}" in tell and "web" in tell
    assert re.search(r"ERROR .*cltab .*rejected.*unknown mode 'sometimes'", log), log


def test_log_file_quiet_and_debug(make_daemon, tmp_path):
    d = make_daemon(WEB, start=False)
    logfile = tmp_path / "clinit.log"
    d.start_with("--log-file", logfile)
    d.cli("web", "run", "--wait", check=0)
    wait_for(lambda: "tell run" in logfile.read_text())
    assert "tell run" not in d.log_text()  # not on stderr
    os.rename(logfile, tmp_path / "clinit.log.1")  # logrotate moves it
    d.cli("web", "check", "--wait", check=0)
    wait_for(lambda: logfile.exists() and "tell check" in logfile.read_text())
    assert d.stop() == 0

    q = make_daemon(WEB, start=False)
    q.start_with("-q")
    q.cli("web", "run", "--wait", check=0)
    assert q.stop() == 0
    assert " INFO " not in q.log_text()


@pytest.mark.skipif(os.path.exists("/dev/log") or os.geteuid() != 0,
                    reason="needs root and no syslog daemon on /dev/log (the test plays it)")
def test_syslog_option_sends_records_to_dev_log_as_facility_daemon(make_daemon):
    import socket as _socket

    listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    listener.bind("/dev/log")  # a real datagram socket where syslog(3) looks
    try:
        listener.settimeout(10)
        d = make_daemon(WEB, start=False)
        d.start_with("--syslog")
        d.cli("web", "run", "--wait", check=0)
        records = []
        while not any(b"tell run from uid" in r for r in records):
            records.append(listener.recv(65536))
        assert d.stop() == 0
        tell = next(r for r in records if b"tell run from uid" in r)
        assert tell.startswith(b"<30>")  # facility daemon (3), severity info (6)
        assert b"clinit[" in tell
    finally:
        listener.close()
        os.unlink("/dev/log")


def test_progress_on_a_terminal_is_one_line_redrawn(make_daemon):
    import pty

    d = make_daemon(WEB)
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(CLINIT + ["-c", str(d.cltab), "web", "run", "--wait"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        slave = None
        shown = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        out, _ = proc.communicate(timeout=30)
    finally:
        os.close(master)
        if slave is not None:
            os.close(slave)
    assert proc.returncode == 0
    assert b"web run DONE" in out
    assert b"\r\x1b[K" in shown and b"running" in shown, shown
    assert shown.endswith(b"\r\x1b[K")  # the progress line is cleared at the end
    assert b"\n" not in shown.replace(b"\r\n", b"")


# -- refused by peer credentials (needs root to run a client as another user) ----------------

from test_socket_security import NOBODY, _copy_packages, as_user, needs_root, open_folder, python_for  # noqa: E402,F401


@needs_root
@pytest.mark.parametrize("socket_mode", [0o600, 0o666])
def test_a_refused_user_is_told_the_socket_its_owner_and_its_uid_and_exits_1(
        make_daemon, open_folder, socket_mode):
    sock = open_folder / "clinit.sock"
    d = make_daemon(WEB, socket=sock)
    os.chmod(sock, socket_mode)  # 0600: the file's mode refuses; 0666: SO_PEERCRED does
    python = python_for(NOBODY.pw_uid, NOBODY.pw_gid)
    path = _copy_packages(open_folder / "lib", "docopt")
    result = subprocess.run(as_user(NOBODY.pw_uid, NOBODY.pw_gid)
                            + ["env", f"PYTHONPATH={path}", python, str(ROOT / "bin" / "clinit"),
                               "-c", "/nonexistent/cltab", "-s", str(sock), "web", "run"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result
    assert "permission denied" in result.stderr
    assert str(sock) in result.stderr and "uid 0" in result.stderr
    assert f"uid {NOBODY.pw_uid}" in result.stderr
    assert "no clinit daemon" not in result.stderr
    assert d.status() == ""


def test_a_tells_plan_is_kept_only_while_the_group_and_the_table_stay_as_they_were():
    from clinit import watchers
    from clinit.cltab import parse_cltab
    from clinit.messages import ProcessChanged

    table = parse_cltab("g:a:1:once:sleep 1\ng:b:1:once:sleep 1\n")
    board = watchers.Board()
    first = watchers.plan(table, None, board, "g", "1")
    assert first.endswith("2 entries to start, 0 to stop")
    assert watchers.plan(table, None, board, "g", "1") is first  # kept
    board.member_changed("g", ProcessChanged("urn:a", "a", "DONE", None, 42))
    assert watchers.plan(table, None, board, "g", "1").endswith("1 entry to start, 0 to stop, 1 kept")
    changed = parse_cltab("g:a:1:once:sleep 2\ng:b:1:once:sleep 1\n")  # a re-read: a's command
    assert watchers.plan(changed, table, board, "g", "1").endswith(
        "2 entries to start, 1 to stop")


def test_event_lines_written_by_hand_are_the_json_of_schema_1():
    from clinit import watchers
    from clinit.messages import ProcessChanged

    got = []

    class Reply:  # what the server's Reply does with a watch's lines: sends them
        def lines(self, lines):
            got.extend(lines)
            return True

    board = watchers.Board()
    board.watchers = {1: (None, Reply())}
    board.member_changed("g\u00e9", ProcessChanged("urn:a", 'a"\\b', "RUNNING", None, 42,
                                                   path=("SETUP",)))
    board.member_changed("g\u00e9", ProcessChanged("urn:a", "a", "PASS", -9, None))
    board.group_changed("g\u00e9", "run", "DONE", 1, path=(("run", "STARTING"),))
    board.group_changed("g\u00e9", None, "CONFIGURED", 2)
    board.send()
    events = [json.loads(line) for line in got]
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in got)
    assert all(isinstance(e.pop("time"), float) for e in events)
    assert events == [
        {"event": "process", "group": "g\u00e9", "tag": 'a"\\b', "state": "SETUP", "pid": 42, "rc": None},
        {"event": "process", "group": "g\u00e9", "tag": 'a"\\b', "state": "RUNNING", "pid": 42,
         "rc": None},
        {"event": "process", "group": "g\u00e9", "tag": "a", "state": "PASS", "pid": None, "rc": -9},
        {"event": "group", "group": "g\u00e9", "level": "run", "state": "STARTING"},
        {"event": "group", "group": "g\u00e9", "level": "run", "state": "DONE"},
        {"event": "group", "group": "g\u00e9", "level": None, "state": "CONFIGURED"},
    ]
