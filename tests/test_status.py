"""The status file (SPEC §5): its lines, the level it shows while a group
changes, its heartbeat, atomic rewrites, and the reader's filters."""

import os
import subprocess
import sys
import threading

import pytest

import clinit
from conftest import ROOT, fifo_writer, wait_for

SLEEPER = "exec sleep 1000"


def lines(d) -> list[str]:
    try:
        return d.clstat.read_text().splitlines()
    except FileNotFoundError:
        return []


# -- what the daemon writes ------------------------------------------------------


def test_each_told_group_has_one_line_naming_group_level_and_state(make_daemon):
    d = make_daemon(f"""
        web:w1:run:respawn:{SLEEPER}
        db:d1:1:once:true
        idle:i1:1:once:true
    """)
    assert lines(d) == []
    d.tell("web", "run")
    d.tell("db", "1")
    d.wait_state("web", "run", "DONE")
    d.wait_state("db", "1", "DONE")
    assert sorted(lines(d)) == ["Cluster::Init::Group db 1 DONE",
                                "Cluster::Init::Group web run DONE"]


def test_while_a_group_stops_its_line_shows_the_old_level_and_from_starting_the_new(make_daemon):
    d = make_daemon("", start=False, term_delay=5, kill_delay=5)
    leave, enter = d.folder / "leave", d.folder / "enter"
    os.mkfifo(leave)
    os.mkfifo(enter)
    # `old` holds on to its SIGINT until the test lets it go; `new` blocks its
    # walk (a wait entry) until the test lets it finish
    d.write(f"""
        web:slow:old:respawn:trap 'read x < {leave}; exit 0' INT; sleep 1000 & wait
        web:gate:new:wait:read x < {enter}
    """)
    d.start()
    d.tell("web", "old")
    d.wait_state("web", "old", "DONE")

    d.tell("web", "new")
    d.wait_state("web", "old", "STOPPING")
    assert lines(d) == ["Cluster::Init::Group web old STOPPING"]
    release(leave)
    d.wait_state("web", "new", "STARTING")
    assert lines(d) == ["Cluster::Init::Group web new STARTING"]
    release(enter)
    d.wait_state("web", "new", "DONE")


def release(fifo) -> None:
    """Write a line to `fifo` once its reader has it open."""
    fd = fifo_writer(fifo)
    try:
        os.write(fd, b"go\n")
    finally:
        os.close(fd)


def test_the_file_is_rewritten_every_heartbeat_even_when_nothing_changes(make_daemon):
    d = make_daemon(f"web:w1:run:respawn:{SLEEPER}\n", heartbeat=0.2)
    d.tell("web", "run")
    d.wait_state("web", "run", "DONE")
    wait_for(lambda: len(d.children()) == 1)
    seen = [d.clstat.stat().st_mtime_ns]

    def advanced():
        mtime = d.clstat.stat().st_mtime_ns
        if mtime != seen[-1]:
            seen.append(mtime)
        return len(seen) >= 4

    wait_for(advanced)
    assert seen == sorted(seen)
    assert lines(d) == ["Cluster::Init::Group web run DONE"]


def test_the_file_is_replaced_atomically_and_leaves_no_temporary_files(make_daemon):
    d = make_daemon(f"""
        web:w1:a:respawn:{SLEEPER}
        web:w2:b:once:true
        db:d1:1:once:true
    """, heartbeat=0.05)
    d.tell("db", "1")
    d.wait_state("db", "1", "DONE")
    old = open(d.clstat)  # held open, its inode cannot be reused
    old_text = old.read()
    torn = []
    stop = threading.Event()

    def reader():
        # every read sees a whole file: the db line is always there, every line complete
        while not stop.is_set():
            try:
                text = d.clstat.read_text()
            except FileNotFoundError:
                torn.append("missing")
                continue
            if "Cluster::Init::Group db 1 DONE\n" not in text or not text.endswith("\n"):
                torn.append(text)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for level in ("a", "b", "a", "b"):
            d.tell("web", level)
            d.wait_state("web", level, "DONE")
    finally:
        stop.set()
        thread.join()
    assert torn == []
    # replaced by rename, never rewritten in place: the old file is untouched
    assert d.clstat.stat().st_ino != os.fstat(old.fileno()).st_ino
    old.seek(0)
    assert old.read() == old_text
    old.close()
    assert sorted(os.listdir(d.folder)) == ["clinit.sock", "clstat", "clstat.journal", "cltab",
                                            "daemon.log"]


# -- the writer actor ---------------------------------------------------------------


def test_the_writer_keeps_a_line_per_group_from_typed_messages_and_drops_one(tmp_path):
    from clinit.group import GroupState
    from clinit.messages import DropGroup, GroupChanged
    from clinit.statuswriter import StatusWriter

    path = tmp_path / "clstat"
    writer = StatusWriter.start(str(path), 45.0)
    try:
        wait_for(path.exists)  # written at start, empty
        writer.tell(GroupChanged("web", "run", GroupState.STARTING, 1))
        writer.tell(GroupChanged("db", "1", GroupState.DONE))
        writer.tell(GroupChanged("web", "run", GroupState.DONE, 2))
        wait_for(lambda: path.read_text() == "Cluster::Init::Group web run DONE\n"
                                              "Cluster::Init::Group db 1 DONE\n")
        writer.tell(DropGroup("web"))
        wait_for(lambda: path.read_text() == "Cluster::Init::Group db 1 DONE\n")
        writer.proxy().remove().get()
        assert not path.exists()
    finally:
        writer.stop()


def test_the_reader_imports_neither_pykka_nor_the_writer():
    code = ("import sys, clinit; clinit.status(clstat='/nonexistent'); "
            "print(sorted(m for m in sys.modules if m == 'pykka' or m.startswith('clinit.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert "pykka" not in out and "statuswriter" not in out, out


# -- the reader ------------------------------------------------------------------

STATUS = """\
Cluster::Init::Group web run DONE
Cluster::Init::Group db 1 STARTING
Cluster::Init::Group 0 0 PASSED
Cluster::Init::Group web2 run FAILED
Cluster::Init::Group mail 0 DONE
"""


@pytest.fixture
def clstat(tmp_path):
    path = tmp_path / "clstat"
    path.write_text(STATUS)
    return str(path)


def test_without_filters_the_reader_gives_group_level_state_lines(clstat):
    assert clinit.status(clstat=clstat) == ("web run DONE\ndb 1 STARTING\n0 0 PASSED\n"
                                            "web2 run FAILED\nmail 0 DONE\n")


def test_group_and_level_give_just_the_state(clstat):
    assert clinit.status(clstat=clstat, group="web", level="run") == "DONE"
    assert clinit.status(clstat=clstat, group="db", level="1") == "STARTING"


def test_group_and_level_that_do_not_match_give_nothing(clstat):
    assert clinit.status(clstat=clstat, group="web", level="1") == ""
    assert clinit.status(clstat=clstat, group="nosuch", level="run") == ""


def test_a_group_alone_gives_level_and_state(clstat):
    assert clinit.status(clstat=clstat, group="web") == "run DONE\n"
    assert clinit.status(clstat=clstat, group="nosuch") == ""


def test_a_level_alone_gives_group_and_state_lines(clstat):
    assert clinit.status(clstat=clstat, level="run") == "web DONE\nweb2 FAILED\n"


def test_a_group_and_a_level_named_0_are_filters_like_any_other(clstat):
    assert clinit.status(clstat=clstat, group="0", level="0") == "PASSED"
    assert clinit.status(clstat=clstat, group="0") == "0 PASSED\n"
    assert clinit.status(clstat=clstat, level="0") == "0 PASSED\nmail DONE\n"


def test_a_missing_status_file_reads_as_empty(tmp_path):
    missing = str(tmp_path / "nothing-here")
    assert clinit.status(clstat=missing) == ""
    assert clinit.status(clstat=missing, group="web") == ""
    assert clinit.status(clstat=missing, group="web", level="run") == ""
    assert clinit.status(clstat=str(tmp_path / "not-a-dir" / "x")) == ""


def test_lines_of_other_kinds_are_skipped(tmp_path):
    path = tmp_path / "clstat"
    path.write_text("# written by clinit\n"
                    "\n"
                    "Cluster::Init::Process web w1 DONE 1234\n"
                    "Cluster::Init::Group web run DONE\n"
                    "Cluster::Init::Group short RUN\n"
                    "Cluster::Init::Group long run DONE extra\n"
                    "Cluster::Init::Groupie fan run DONE\n"
                    "some other tool's line\n")
    assert clinit.status(clstat=str(path)) == "web run DONE\n"
    assert clinit.status(clstat=str(path), group="web", level="run") == "DONE"
    assert clinit.status(clstat=str(path), level="run") == "web DONE\n"
