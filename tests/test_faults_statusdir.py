"""Faults to survive: the status file's folder unwritable or full (issue 3, part B).

The status writer logs a failed write once per distinct error, the
daemon keeps serving, and the file comes back -- true -- on the next
change or heartbeat once the folder can be written again.

Root writes anywhere, so "unwritable" is the folder removed, or a plain
file put in its place; "full" is a small tmpfs mounted on the folder and
filled up (skipped where mounting is not allowed).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess

import pytest

from conftest import FAST, environ, wait_for

TABLE = """
    g:a:1:respawn:exec sleep 1000
    g:b:2:respawn:exec sleep 1000
    g:c:3:respawn:exec sleep 1000
"""
FAILED = "cannot write status file"
AGAIN = "written again"


def start(make_daemon, folder, **settings):
    """A daemon whose status file lives in `folder` (made by the daemon)."""
    d = make_daemon(TABLE, start=False, clstat=folder / "clstat", **FAST, **settings)
    d.clstat = folder / "clstat"
    return d.start()


def told(d, level: str) -> None:
    """Tell g a level and wait until its process runs (the status may be unwritable)."""
    assert d.tell("g", level).startswith("level transition started: ")
    wait_for(lambda: any(environ(pid).get("CLINIT_LEVEL") == level for pid in d.children()))


def test_a_removed_status_folder_is_logged_once_and_the_file_returns_on_the_next_change(
        make_daemon, tmp_path):
    folder = tmp_path / "status"
    d = start(make_daemon, folder)
    told(d, "1")
    d.wait_state("g", "1", "DONE")
    shutil.rmtree(folder)
    for level in ("2", "3", "2"):
        told(d, level)
    wait_for(lambda: FAILED in d.log_text())
    assert d.client().request("ping")[0]
    folder.mkdir()
    told(d, "1")
    d.wait_state("g", "1", "DONE")  # written again, and true
    log = d.logged("No such file or directory", AGAIN)
    assert log.count(FAILED) == 1, log
    assert d.proc.poll() is None


def test_a_file_in_place_of_the_status_folder_is_survived_and_the_heartbeat_recovers(
        make_daemon, tmp_path):
    folder = tmp_path / "status"
    d = start(make_daemon, folder, heartbeat=0.05)
    told(d, "1")
    d.wait_state("g", "1", "DONE")
    shutil.rmtree(folder)
    folder.write_text("not a folder\n")
    told(d, "2")
    wait_for(lambda: FAILED in d.log_text())
    d.logged("Not a directory")
    assert d.client().request("ping")[0]
    folder.unlink()
    folder.mkdir()
    # no change needed: the next heartbeat writes the file, with the truth
    d.wait_state("g", "2", "DONE")
    assert d.logged(AGAIN).count(FAILED) == 1


def test_each_distinct_error_is_logged_once(make_daemon, tmp_path):
    folder = tmp_path / "status"
    d = start(make_daemon, folder, heartbeat=0.05)
    told(d, "1")
    d.wait_state("g", "1", "DONE")
    shutil.rmtree(folder)
    told(d, "2")
    wait_for(lambda: "No such file or directory" in d.log_text())
    folder.write_text("not a folder\n")
    told(d, "3")
    wait_for(lambda: "Not a directory" in d.log_text())
    folder.unlink()
    folder.mkdir()
    d.wait_state("g", "3", "DONE")
    log = d.log_text()
    assert log.count(FAILED) == 2, log


# -- full ---------------------------------------------------------------------------------

@pytest.fixture
def small_tmpfs(tmp_path):
    folder = tmp_path / "status"
    folder.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(folder)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder) -> None:
    """Write a filler file until the file system is full."""
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"x" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC


def test_a_full_status_folder_is_logged_and_the_file_returns_when_there_is_room(
        make_daemon, small_tmpfs):
    d = start(make_daemon, small_tmpfs)
    try:
        told(d, "1")
        d.wait_state("g", "1", "DONE")
        fill(small_tmpfs)
        told(d, "2")
        wait_for(lambda: FAILED in d.log_text())
        d.logged("No space left on device")
        assert d.client().request("ping")[0]
        assert d.status("g") == "1 DONE\n"  # the old file is still whole
        assert not [n for n in os.listdir(small_tmpfs) if n.endswith(".tmp")]  # no debris
        os.unlink(small_tmpfs / "filler")
        told(d, "3")
        d.wait_state("g", "3", "DONE")
        assert d.log_text().count(FAILED) == 1
    finally:
        d.stop()  # before the tmpfs goes
