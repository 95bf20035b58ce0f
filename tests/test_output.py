"""Process output to log files (cltab `:::logdir:PATH`): one PATH/TAG.log per
entry, written by the daemon from a pipe, reopened on SIGHUP (logrotate), and
safe against symlinks planted in the folder.  Real daemons, real children
writing, real renames and signals."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys

from conftest import FAST, ROOT, fifo_writer, wait_for


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def text(path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None



def cat_daemon(make_daemon, tmp_path, logdir):
    """A daemon whose entry `t` copies a FIFO the test writes to its output."""
    fifo = tmp_path / "input"
    os.mkfifo(fifo)
    d = make_daemon(f"g:t:1:once:echo started; exec cat {fifo}\n", logdir=logdir, **FAST)
    assert d.tell("g", "1").startswith("level transition started: ")
    return d, fifo_writer(fifo)


def test_each_entrys_stdout_and_stderr_go_to_its_own_log_in_a_folder_made_0750(make_daemon,
                                                                               tmp_path):
    logdir = tmp_path / "logs"
    d = make_daemon("""
        g:a:1:wait:echo out-a; echo err-a >&2
        g:b:1:respawn:echo out-b; exec sleep 1000
    """, logdir=logdir, **FAST)
    assert d.tell("g", "1").startswith("level transition started: ")
    wait_for(lambda: text(logdir / "a.log") == "out-a\nerr-a\n")
    wait_for(lambda: text(logdir / "b.log") == "out-b\n")
    d.wait_state("g", "1", "DONE")
    assert mode(logdir) == 0o750
    assert mode(logdir / "a.log") == mode(logdir / "b.log") == 0o640
    assert sorted(os.listdir(logdir)) == ["a.log", "b.log"]
    assert "out-a" not in d.log_text() and "err-a" not in d.log_text()
    assert d.stop() == 0


def test_after_a_rename_and_sighup_a_running_process_writes_to_a_fresh_log(make_daemon,
                                                                            tmp_path):
    logdir = tmp_path / "logs"
    d, fifo = cat_daemon(make_daemon, tmp_path, logdir)
    log, rotated = logdir / "t.log", logdir / "t.log.1"
    try:
        os.write(fifo, b"before\n")
        wait_for(lambda: text(log) == "started\nbefore\n")
        os.rename(log, rotated)  # what logrotate does
        d.proc.send_signal(signal.SIGHUP)
        wait_for(log.exists)  # reopened: an empty file at the old name
        os.write(fifo, b"after\n")
        wait_for(lambda: text(log) == "after\n")
        assert text(rotated) == "started\nbefore\n"
    finally:
        os.close(fifo)  # cat ends: the once entry is done
    d.wait_state("g", "1", "DONE")
    assert d.stop() == 0


def test_a_symlink_planted_at_a_log_name_is_never_written_through(make_daemon, tmp_path):
    logdir = tmp_path / "logs"
    logdir.mkdir(mode=0o750)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    log = logdir / "t.log"
    log.symlink_to(victim)
    d, fifo = cat_daemon(make_daemon, tmp_path, logdir)
    try:
        os.write(fifo, b"one\n")
        wait_for(lambda: f"process output to {log} is dropped" in d.log_text())
        # once the symlink is gone, the next reopen writes again
        # (output written before it may land on either side of it)
        os.unlink(log)
        d.proc.send_signal(signal.SIGHUP)
        wait_for(log.exists)
        os.write(fifo, b"two\n")
        wait_for(lambda: (text(log) or "").endswith("two\n"))
        # ...and one planted at a rotation is refused as well
        os.rename(log, logdir / "t.log.1")
        log.symlink_to(victim)
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: d.log_text().count("is dropped") == 2)
        os.write(fifo, b"three\n")
    finally:
        os.close(fifo)
    d.wait_state("g", "1", "DONE")
    assert d.stop() == 0
    assert victim.read_text() == "precious\n" and os.path.islink(log)
    assert text(logdir / "t.log.1").endswith("two\n")
    assert "(a symlink planted there?)" in d.log_text() and "written again" in d.log_text()


def test_a_hard_link_or_fifo_at_a_log_name_is_refused(make_daemon, tmp_path):
    logdir = tmp_path / "logs"
    logdir.mkdir(mode=0o750)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.link(victim, logdir / "a.log")
    os.mkfifo(logdir / "b.log")
    d = make_daemon("""
        g:a:1:wait:echo out-a
        g:b:1:wait:echo out-b
    """, logdir=logdir, **FAST)
    assert d.tell("g", "1").startswith("level transition started: ")
    d.wait_state("g", "1", "DONE")  # the walk went on: both ran, their output dropped
    wait_for(lambda: "a file with 2 hard links" in d.log_text()
             and "b.log is dropped" in d.log_text())
    assert victim.read_text() == "precious\n"
    assert d.stop() == 0


def test_a_log_folder_others_may_write_to_is_refused_at_start(make_daemon, tmp_path):
    logdir = tmp_path / "logs"
    logdir.mkdir()
    os.chmod(logdir, 0o777)
    d = make_daemon("g:a:1:once:echo hi\n", start=False, logdir=logdir)
    result = subprocess.run([sys.executable, str(ROOT / "bin" / "clinit"), "-d", "-c", str(d.cltab)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"log folder {logdir}: writable by its group and others (mode 0777)" in result.stderr
    assert os.listdir(logdir) == []


def test_a_log_folder_made_unsafe_later_stops_new_processes_with_the_reason(make_daemon,
                                                                              tmp_path):
    logdir = tmp_path / "logs"
    d = make_daemon("""
        g:a:1:wait:echo out-a
        g:b:2:wait:echo out-b
    """, logdir=logdir, **FAST)
    d.tell("g", "1")
    d.wait_state("g", "1", "DONE")
    os.chmod(logdir, 0o777)
    d.tell("g", "2")
    d.wait_state("g", "2", "DONE")
    wait_for(lambda: f"log folder {logdir}: writable by its group and others" in d.log_text())
    assert not (logdir / "b.log").exists()
    assert d.stop() == 0


def test_without_logdir_children_write_to_the_daemons_output(make_daemon):
    d = make_daemon("g:a:1:wait:echo to-the-daemon; echo err-to-the-daemon >&2\n", **FAST)
    d.tell("g", "1")
    d.wait_state("g", "1", "DONE")
    wait_for(lambda: "to-the-daemon\n" in d.log_text() and "err-to-the-daemon" in d.log_text())
    assert d.stop() == 0


def test_output_still_in_the_pipe_at_shutdown_reaches_the_log(make_daemon, tmp_path):
    logdir = tmp_path / "logs"
    d = make_daemon("g:a:1:respawn:trap 'echo bye; exit 0' INT; echo hi; exec sleep 1000 & wait\n",
                    logdir=logdir, **FAST)
    d.tell("g", "1")
    wait_for(lambda: text(logdir / "a.log") == "hi\n")
    assert d.stop() == 0
    assert text(logdir / "a.log") == "hi\nbye\n"
