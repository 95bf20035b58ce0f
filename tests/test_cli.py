"""The command line (SPEC §6), run as the real `bin/clinit` against real daemons.

Exit status: 0 done, 1 error answer (or, with -d, cannot start), 2 bad usage,
3 no daemon answers.
"""

import os
import re
import signal
import socket
import subprocess
import sys

import pytest

from conftest import ROOT, alive, wait_for
from clinit.control import Client, NoDaemon

CLINIT = [sys.executable, str(ROOT / "bin" / "clinit")]
SERVICE = "web:w1:run:respawn:exec sleep 1000\n"


@pytest.fixture(autouse=True)
def private_run_dir(tmp_path, monkeypatch):
    """Default socket and status paths fall in this test's folder, never a real daemon's."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))


def test_group_and_level_switch_the_group_and_print_the_answer(make_daemon):
    d = make_daemon(SERVICE)
    result = d.cli("web", "run", check=0)
    assert result.stdout.startswith("level transition started: ")
    d.wait_state("web", "run", "DONE")
    wait_for(lambda: len(d.children()) == 1)


def test_a_lone_level_switches_the_group_named_after_the_host(make_daemon):
    host = socket.gethostname()
    d = make_daemon(f"""
        {host}:h1:up:respawn:exec sleep 1000
        other:o1:up:respawn:exec sleep 1000
    """)
    assert d.cli("up", check=0).stdout.startswith("level transition started: ")
    d.wait_state(host, "up", "DONE")
    assert d.status(group="other") == ""


def test_no_arguments_ask_the_daemon_to_reread_its_table(make_daemon):
    d = make_daemon(SERVICE)
    first = d.cli(check=0).stdout
    assert first == f"{d.cltab} unchanged\n"
    d.write(SERVICE + "web:w2:run:once:true\n")
    assert d.cli(check=0).stdout == f"{d.cltab} re-read\n"
    assert d.cli(check=0).stdout == f"{d.cltab} unchanged\n"


def test_verbose_prints_every_group_after_the_answer(make_daemon):
    d = make_daemon(SERVICE + "db:d1:1:respawn:exec sleep 1000\n")
    d.cli("web", "run", check=0)
    d.cli("db", "1", check=0)
    d.wait_state("web", "run", "DONE")
    d.wait_state("db", "1", "DONE")
    lines = d.cli("-v", check=0).stdout.splitlines()
    assert lines[0] == f"{d.cltab} unchanged"
    assert sorted(lines[1:]) == ["db 1 DONE", "web run DONE"]


def test_verbose_after_a_tell_prints_status_lines_in_three_columns(make_daemon):
    d = make_daemon(SERVICE)
    lines = d.cli("-v", "web", "run", check=0).stdout.splitlines()
    assert lines[0].startswith("level transition started: ")
    assert all(re.fullmatch(r"web run [A-Z]+", line) for line in lines[1:]), lines


def test_k_shuts_the_daemon_down_and_it_cleans_up(make_daemon):
    d = make_daemon(SERVICE)
    d.cli("web", "run", check=0)
    wait_for(lambda: len(d.children()) == 1)
    assert d.cli("-k", check=0).stdout == "all groups halting\n"
    assert d.proc.wait(timeout=20) == 0
    assert not d.socket.exists()
    assert not d.clstat.exists()


def test_k_with_verbose_prints_the_answer_first(make_daemon):
    d = make_daemon(SERVICE)
    lines = d.cli("-k", "-v", check=0).stdout.splitlines()
    assert lines[0] == "all groups halting"
    assert d.proc.wait(timeout=20) == 0


def test_s_names_the_socket_when_the_cltab_has_no_socket_setting(make_daemon, tmp_path):
    d = make_daemon(SERVICE, start=False)
    del d.settings["socket"]
    d.write(SERVICE)
    sock = tmp_path / "elsewhere.sock"
    d._log = open(d.log, "ab")
    d.proc = subprocess.Popen(CLINIT + ["-d", "-c", str(d.cltab), "-s", str(sock)],
                              stdout=d._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wait_for(lambda: _answers(Client(cltab=str(d.cltab), socket=str(sock))))
    assert d.cli("-s", sock, "web", "run", check=0).stdout.startswith("level transition started: ")
    d.wait_state("web", "run", "DONE")
    # another -s names another socket, where no daemon answers
    result = d.cli("-s", tmp_path / "nobody.sock", "web", "run", check=3)
    assert "nobody.sock" in result.stderr
    assert d.cli("-s", sock, "-k", check=0).stdout == "all groups halting\n"
    assert d.proc.wait(timeout=20) == 0
    assert not sock.exists()


def test_the_cltab_socket_setting_wins_over_s(make_daemon, tmp_path):
    d = make_daemon(SERVICE)
    result = d.cli("-s", tmp_path / "nobody-here.sock", "web", "run", check=0)
    assert result.stdout.startswith("level transition started: ")


def test_h_prints_the_usage_and_succeeds():
    result = subprocess.run(CLINIT + ["-h"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "Usage:" in result.stdout and "clinit -d" in result.stdout
    assert "Exit status" in result.stdout


def test_three_positional_arguments_are_a_usage_error(make_daemon):
    d = make_daemon(SERVICE)
    result = d.cli("web", "run", "extra", check=2)
    assert "Usage:" in result.stderr
    assert d.status() == ""  # nothing was told


@pytest.mark.parametrize("args", [["-x"], ["-d", "web"], ["-k", "web", "run"], ["-c"]])
def test_unknown_options_and_bad_combinations_are_usage_errors(args):
    result = subprocess.run(CLINIT + args, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result
    assert "Usage:" in result.stderr


@pytest.mark.parametrize("args", [["web", "run"], [], ["-k"], ["-v", "run"]])
def test_without_a_daemon_the_client_says_so_and_exits_3(make_daemon, args):
    d = make_daemon(SERVICE, start=False)
    result = d.cli(*args, check=3)
    assert "no clinit daemon answers" in result.stderr
    assert str(d.socket) in result.stderr


def test_an_unknown_group_is_an_error_answer(make_daemon):
    d = make_daemon(SERVICE)
    result = d.cli("nosuch", "run", check=1)
    assert result.stderr == "no such group: nosuch\n"
    assert result.stdout == ""


@pytest.mark.parametrize("args, what", [(["a;b", "run"], "group"), (["web", "r$n"], "level"),
                                        (["web", "a b"], "level")])
def test_a_bad_name_is_refused_with_a_clear_error(make_daemon, args, what):
    d = make_daemon(SERVICE)
    result = d.cli(*args, check=1)
    assert f"bad {what} name" in result.stderr
    assert "letters, digits" in result.stderr
    assert d.status() == ""


def test_a_daemon_on_a_bad_cltab_exits_1_naming_file_line_and_problem(make_daemon):
    d = make_daemon("""
        web:w1:run:once:touch started
        web:w2:run:sometimes:true
    """, start=False)
    result = d.cli("-d", check=1)
    bad_line = d.cltab.read_text().splitlines().index("web:w2:run:sometimes:true") + 1
    assert f"{d.cltab}:{bad_line}: unknown mode 'sometimes'" in result.stderr
    assert not d.socket.exists()
    assert not d.clstat.exists()
    assert not (d.folder / "started").exists()


def test_a_daemon_on_a_missing_cltab_exits_1(tmp_path):
    missing = tmp_path / "no-such-cltab"
    result = subprocess.run(CLINIT + ["-d", "-c", str(missing), "-s", str(tmp_path / "s.sock")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"{missing}: cannot read" in result.stderr
    assert not (tmp_path / "s.sock").exists()


def test_a_second_daemon_on_a_live_socket_refuses_and_the_first_keeps_working(make_daemon):
    d = make_daemon(SERVICE)
    result = d.cli("-d", check=1)
    assert "already listening" in result.stderr
    assert d.socket.exists()
    assert d.cli("web", "run", check=0).stdout.startswith("level transition started: ")
    d.wait_state("web", "run", "DONE")
    assert d.stop() == 0


def test_a_stale_socket_left_by_a_killed_daemon_is_replaced(make_daemon):
    d = make_daemon(SERVICE)
    d.tell("web", "run")
    d.wait_state("web", "run", "DONE")
    orphans = wait_for(lambda: d.children())
    d.journaled(orphans)
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(timeout=20)
    d._log.close()
    for pid in orphans:  # a SIGKILLed daemon stops nothing: clean up after it
        os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: not any(alive(pid) for pid in orphans))
    assert d.socket.exists()
    assert d.cli("web", "run", check=3)  # the stale socket answers nobody

    d.start()
    # the group as the journal left it; its respawn entry, found dead, runs again
    assert d.status() == "web run DONE\n"
    wait_for(lambda: d.children())
    assert d.cli("web", "run", check=0).stdout.startswith("level transition started: ")
    d.wait_state("web", "run", "DONE")
    assert len(wait_for(lambda: d.children())) == 1
    assert d.stop() == 0
    assert not d.socket.exists()


def _answers(client: Client) -> bool:
    try:
        return client.request("ping")[0]
    except NoDaemon:
        return False


def test_the_common_forms_parse_as_docopt_parses_them_without_it():
    # clinit.cli skips docopt (1.5 ms a command) for the forms scripts run
    # most; whatever it parses itself must be exactly what docopt gives.
    import itertools

    from docopt import DocoptExit, docopt

    from clinit import cli

    parts = [["-c", "/x/cltab"], ["-s", "/x/sock"], ["-v"], ["-k"], ["--wait"],
             ["--timeout", "5"], ["-c", "-v"], ["-v", "-v"], ["-c"], ["--timeout"], ["-cX"],
             ["--status"], ["--", "g"], ["-1"]]
    words = [[], ["run"], ["web", "run"], ["web", "run", "x"]]
    fast = 0
    for n in range(4):
        for chosen in itertools.permutations(parts, n):
            for positional in words:
                for at in ({0, len(chosen)} if positional else {0}):
                    argv = [w for p in chosen[:at] for w in p] + positional + \
                           [w for p in chosen[at:] for w in p]
                    ours = cli._parse_common(argv)
                    if ours is None:
                        continue
                    fast += 1
                    try:
                        theirs = dict(docopt(cli.__doc__, argv=argv, default_help=False))
                    except DocoptExit:
                        theirs = None
                    assert ours == theirs, argv
    assert fast > 500
    for argv in (["web", "run"], ["-c", "t", "web", "run", "--wait"], [], ["-k", "-v"], ["-v"]):
        assert cli._parse_common(argv) is not None, argv
