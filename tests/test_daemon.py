"""The daemon end to end (SPEC §2 re-reads, §5): real `clinit -d` processes,
real sockets, real children and signals."""

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading

import pytest

from clinit import status as read_status
from conftest import (ROOT, alive, pids_of, proc_status, raw_request as send_raw, running,
                      wait_for)

SLEEPER = "exec sleep 1000"


def raw_request(d, data: bytes) -> dict:
    """Send raw bytes on the daemon's socket; the decoded answer line."""
    return json.loads(send_raw(d.socket, data))


# -- tell --------------------------------------------------------------------


def test_a_tell_answers_that_the_transition_started(make_daemon):
    d = make_daemon(f"web:w1:run:respawn:{SLEEPER}\n")
    assert d.tell("web", "run").startswith("level transition started: ")
    d.wait_state("web", "run", "DONE")
    running(d, "web", 1)


def test_a_tell_of_an_unknown_group_answers_no_such_group_and_starts_nothing(make_daemon):
    d = make_daemon(f"web:w1:run:respawn:{SLEEPER}\n")
    assert d.tell("db", "run") == "no such group: db"
    assert d.status() == ""
    assert d.children() == []


def test_a_group_and_level_named_0_work(make_daemon):
    d = make_daemon(f"0:z1:0:respawn:{SLEEPER}\n")
    assert d.tell("0", "0").startswith("level transition started: ")
    d.wait_state("0", "0", "DONE")
    running(d, "0", 1)


# -- re-reads ----------------------------------------------------------------


def test_a_tell_rereads_the_changed_table_and_runs_a_new_entry(make_daemon):
    d = make_daemon(f"web:w1:run:respawn:{SLEEPER}\n")
    d.tell("web", "run")
    d.wait_state("web", "run", "DONE")
    [w1] = running(d, "web", 1)
    d.write(f"web:w1:run:respawn:{SLEEPER}\nweb:w2:run:respawn:{SLEEPER}\n")
    assert d.tell("web", "run").startswith("level transition started: ")
    [w2] = running(d, "web", 1, tag="w2")
    d.wait_state("web", "run", "DONE")
    assert pids_of(d, "web", "w1") == [w1]


def test_a_bad_table_on_reread_is_reported_and_changes_nothing_until_fixed(make_daemon):
    good = f"web:w1:run:respawn:{SLEEPER}\ndb:d1:run:respawn:{SLEEPER}\n"
    d = make_daemon(good)
    d.tell("web", "run")
    d.tell("db", "run")
    d.wait_state("web", "run", "DONE")
    d.wait_state("db", "run", "DONE")
    before = {"web": running(d, "web", 1), "db": running(d, "db", 1)}
    status = d.status()

    d.write(good + "web:w1:other:once:true\n")  # a duplicate tag
    bad_line = d.cltab.read_text().splitlines().index("web:w1:other:once:true") + 1
    for group in ("web", "db"):
        ok, answer = d.client().request("tell", group=group, level="other")
        assert not ok
        assert f"{d.cltab}:{bad_line}: duplicate tag 'w1'" in answer
    ok, answer = d.client().request("reread")
    assert not ok and f"{d.cltab}:{bad_line}:" in answer
    assert d.status() == status
    assert {"web": pids_of(d, "web"), "db": pids_of(d, "db")} == before

    d.write(good + f"web:w2:run:respawn:{SLEEPER}\n")
    assert d.tell("web", "run").startswith("level transition started: ")
    running(d, "web", 1, tag="w2")
    d.wait_state("web", "run", "DONE")
    assert pids_of(d, "web", "w1") == before["web"]
    assert pids_of(d, "db") == before["db"]


def test_a_group_deleted_from_the_table_is_halted_gracefully_and_its_line_goes(make_daemon):
    d = make_daemon("", start=False)
    marker = d.folder / "db.stopped"
    graceful = f"trap 'echo INT >> {marker}; exit 0' INT; sleep 1000 & wait"
    web = f"web:w1:run:respawn:{SLEEPER}\n"
    d.write(web + f"db:d1:run:respawn:{graceful}\n")
    d.start()
    d.tell("web", "run")
    d.tell("db", "run")
    d.wait_state("db", "run", "DONE")
    d.wait_state("web", "run", "DONE")
    [web_pid] = running(d, "web", 1)
    [db_pid] = running(d, "db", 1)

    d.write(web)
    assert d.client().reread() == f"{d.cltab} re-read"
    wait_for(lambda: not alive(db_pid))
    wait_for(lambda: d.status(group="db") == "")
    assert d.status() == "web run DONE\n"
    assert open(marker).read() == "INT\n"  # stopped by SIGINT, not killed
    assert pids_of(d, "web") == [web_pid]

    # back in the table, the group can be told again from scratch
    d.write(web + f"db:d1:run:respawn:{SLEEPER}\n")
    assert d.tell("db", "run").startswith("level transition started: ")
    d.wait_state("db", "run", "DONE")
    running(d, "db", 1)


def test_sighup_rereads_the_table(make_daemon):
    web = f"web:w1:run:respawn:{SLEEPER}\n"
    d = make_daemon(web + f"db:d1:run:respawn:{SLEEPER}\n")
    d.tell("web", "run")
    d.tell("db", "run")
    d.wait_state("web", "run", "DONE")
    d.wait_state("db", "run", "DONE")
    [db_pid] = running(d, "db", 1)
    d.write(web)
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: d.status(group="db") == "" and not alive(db_pid))
    assert d.status() == "web run DONE\n"
    assert d.proc.poll() is None


def test_sighup_with_a_bad_table_logs_the_error_and_keeps_running(make_daemon):
    d = make_daemon(f"web:w1:run:respawn:{SLEEPER}\n")
    d.tell("web", "run")
    d.wait_state("web", "run", "DONE")
    before = running(d, "web", 1)
    d.write("web:w1:run:bogus:true\n")
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "unknown mode 'bogus'" in d.log_text())
    assert d.answers()
    assert pids_of(d, "web") == before
    assert d.status() == "web run DONE\n"


def test_a_rewrite_in_place_keeping_inode_and_size_is_noticed(make_daemon):
    d = make_daemon(f"web:w1:run:respawn:{SLEEPER}\n")
    d.tell("web", "run")
    [w1] = running(d, "web", 1, tag="w1")
    before = d.cltab.stat()
    # let the file system clock tick past the cltab's mtime (a condition, not a sleep)
    probe = d.folder / "probe"
    wait_for(lambda: probe.write_text("x") and probe.stat().st_mtime_ns != before.st_mtime_ns)
    text = d.cltab.read_text()
    with open(d.cltab, "r+") as f:  # same inode, same size, maybe the same second
        f.write(text.replace("web:w1:", "web:w2:"))
    after = d.cltab.stat()
    assert (after.st_ino, after.st_size) == (before.st_ino, before.st_size)
    assert d.tell("web", "run").startswith("level transition started: ")
    running(d, "web", 1, tag="w2")
    wait_for(lambda: not alive(w1))


def test_a_reread_does_not_move_the_socket_or_the_status_file(make_daemon, tmp_path):
    d = make_daemon(f"web:w1:run:respawn:{SLEEPER}\n")
    old_socket, old_clstat = d.socket, d.clstat
    d.settings.update(socket=tmp_path / "moved.sock", clstat=tmp_path / "moved-clstat")
    d.write(f"web:w1:run:respawn:{SLEEPER}\n")
    d.socket = old_socket  # raw_request speaks to the socket the daemon listens on
    answer = raw_request(d, b'{"cmd": "tell", "group": "web", "level": "run"}\n')
    assert answer["ok"] is True and answer["answer"].startswith("level transition started: ")
    wait_for(lambda: read_status(str(old_clstat), "web", "run") == "DONE")
    assert old_socket.exists()
    assert not (tmp_path / "moved.sock").exists()
    assert not (tmp_path / "moved-clstat").exists()
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=20) == 0
    assert not old_socket.exists() and not old_clstat.exists()


# -- shutdown by signal ------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_shut_down_gracefully_and_reap_every_child(make_daemon, signum):
    # children that ignore SIGINT: the daemon must wait for SIGTERM to end them
    stubborn = "trap '' INT; exec sleep 1000"
    d = make_daemon(f"""
        web:w1:run:respawn:{stubborn}
        web:w2:run:respawn:{SLEEPER}
        db:d1:run:respawn:{stubborn}
    """, term_delay=0.2, kill_delay=0.2)
    d.tell("web", "run")
    d.tell("db", "run")
    d.wait_state("web", "run", "DONE")
    d.wait_state("db", "run", "DONE")
    children = running(d, "web", 2) + running(d, "db", 1)
    d.proc.send_signal(signum)
    assert d.proc.wait(timeout=20) == 0
    # the daemon exited only once its children were gone (not orphaned alive)
    assert not [pid for pid in children if alive(pid)]
    assert not d.socket.exists()
    assert not d.clstat.exists()


def test_children_get_sigint_at_default_even_when_the_daemon_ignores_it(make_daemon):
    d = make_daemon(f"web:w1:run:respawn:{SLEEPER}\n", start=False)
    d._log = open(d.log, "ab")
    d.proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bin" / "clinit"), "-d", "-c", str(d.cltab)],
        stdout=d._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # a shell's `&`
    wait_for(d.answers)
    d.tell("web", "run")
    [child] = running(d, "web", 1)
    fields = proc_status(child)
    ignored, blocked = int(fields["SigIgn"], 16), int(fields["SigBlk"], 16)
    assert not ignored & (1 << (signal.SIGINT - 1)), fields["SigIgn"]
    assert blocked == 0, fields["SigBlk"]
    assert d.stop() == 0


# -- independence and concurrency ------------------------------------------


def test_changing_one_group_never_touches_another(make_daemon):
    d = make_daemon(f"""
        web:w1:a:respawn:{SLEEPER}
        web:w2:b:respawn:{SLEEPER}
        db:d1:ab:respawn:{SLEEPER}
        db:d2:a:respawn:{SLEEPER}
    """)
    d.tell("web", "a")
    d.tell("db", "a")
    d.wait_state("web", "a", "DONE")
    d.wait_state("db", "a", "DONE")
    db_before = running(d, "db", 2)
    [w1] = running(d, "web", 1)
    for level in ("b", "a", "b"):
        d.tell("web", level)
        d.wait_state("web", level, "DONE")
        wait_for(lambda: len(pids_of(d, "web")) == 1 and pids_of(d, "web") != [w1])
        w1 = pids_of(d, "web")[0]
    assert pids_of(d, "db") == db_before
    assert d.status(group="db") == "a DONE\n"


def test_many_clients_at_once_are_all_answered(make_daemon):
    d = make_daemon(f"""
        web:w1:run:respawn:{SLEEPER}
        db:d1:run:once:true
    """)
    count = 20
    barrier = threading.Barrier(count)
    answers = [None] * count

    def ask(i):
        barrier.wait(timeout=10)
        group = "web" if i % 2 else "db"
        answers[i] = d.client().tell(group, "run")

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(a.startswith("level transition started: ") for a in answers), answers
    d.wait_state("web", "run", "DONE")
    d.wait_state("db", "run", "DONE")
    running(d, "web", 1)


# -- the socket ----------------------------------------------------------------


@pytest.mark.parametrize("data, says", [
    (b"\x00\xffgarbage\x01\n", "not JSON"),
    (b"tell web stop\n", "not JSON"),
    (b'["tell", "web", "stop"]\n', "not a JSON object"),
    (b'{"cmd": "reboot"}\n', "unknown command"),
    (b'{"cmd": "tell", "group": "web"}\n', "missing field 'level'"),
    (b'{"cmd": "tell", "level": "stop"}\n', "missing field 'group'"),
    (b'{"cmd": "tell", "group": "web", "level": "a;b"}\n', "bad level name"),
    (b'{"cmd": "shutdown", "now": true}\n', "unexpected field"),
    (b'{"cmd": "shutdown"}', "no newline"),
])
def test_a_malformed_request_gets_an_error_answer_and_changes_nothing(make_daemon, data, says):
    d = make_daemon(f"""
        web:w1:run:respawn:{SLEEPER}
        web:w2:stop:respawn:{SLEEPER}
    """)
    d.tell("web", "run")
    d.wait_state("web", "run", "DONE")
    before = running(d, "web", 1)
    answer = raw_request(d, data)
    assert answer["ok"] is False
    assert says in answer["answer"]
    assert d.answers()
    assert d.proc.poll() is None
    assert d.status() == "web run DONE\n"
    assert pids_of(d, "web") == before


def test_a_client_that_connects_and_says_nothing_changes_nothing(make_daemon):
    d = make_daemon(f"web:w1:run:respawn:{SLEEPER}\n")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(str(d.socket))
    assert d.answers()
    assert d.status() == ""


def test_the_socket_is_a_unix_socket_only_its_owner_may_use(make_daemon):
    d = make_daemon(f"web:w1:run:respawn:{SLEEPER}\n")
    st = os.stat(d.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.getuid()


# -- children's output ---------------------------------------------------------


def test_the_log_setting_sends_childrens_output_to_that_file(make_daemon, tmp_path):
    log = tmp_path / "children.log"
    d = make_daemon("""
        web:w1:run:wait:echo "out $CLINIT_GROUP $CLINIT_TAG $CLINIT_LEVEL"; echo "err $CLINIT_TAG" >&2
        web:w2:run:once:echo second
    """, log=log)
    d.tell("web", "run")
    d.wait_state("web", "run", "DONE")
    wait_for(lambda: log.exists() and "second" in log.read_text())
    assert log.read_text().splitlines() == ["out web w1 run", "err w1", "second"]
    assert "out web" not in d.log_text() and "err w1" not in d.log_text()
