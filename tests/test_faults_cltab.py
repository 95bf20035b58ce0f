"""Faults to survive: cltab changed under a running daemon (issue 3, part B).

Edited in place, replaced by a rename, made invalid, deleted, or made
unreadable while groups run: the running groups are untouched (same
pids, same status), the next tell gets a clear error, and the daemon
recovers as soon as the file is fixed.

Root reads a file whatever its mode (chmod 000 stops nobody here), so
"unreadable" is a directory put in the file's place.
"""

from __future__ import annotations

import os
import signal

import pytest

from clinit.control import Client
from conftest import FAST, environ, wait_for

TABLE = """\
a:a1:1:respawn:exec sleep 1000
a:a2:1:once:exec sleep 1000
b:b1:1:respawn:exec sleep 1000
"""


def snapshot(d) -> tuple:
    """What must not change: every child (pid -> tag) and the status lines."""
    return {pid: environ(pid).get("CLINIT_TAG", "") for pid in d.children()}, d.status()


@pytest.fixture
def two_groups(make_daemon):
    d = make_daemon(TABLE, **FAST)
    d.tell("a", "1")
    d.tell("b", "1")
    d.wait_state("a", "1", "DONE")
    d.wait_state("b", "1", "DONE")
    # (a child just spawned may show the daemon's environment until it execs)
    wait_for(lambda: len(d.children()) == 3 and all(snapshot(d)[0].values()))
    return d


def full_text(d, table: str) -> str:
    """The cltab text `d.write(table)` would write (settings included)."""
    head = "".join(f":::{k}:{v}\n" for k, v in d.settings.items())
    return head + table


def client(d) -> Client:
    """A client that does not need cltab to find the socket (cltab may be broken)."""
    return Client(cltab=str(d.cltab), socket=str(d.socket))


def assert_untouched(d, before) -> None:
    assert snapshot(d) == before
    assert d.proc.poll() is None
    assert client(d).request("ping")[0]


def assert_refused_everywhere(d, before, says: str) -> None:
    """The next tell, a reread and SIGHUP all see the error; nothing changes."""
    ok, answer = client(d).request("tell", group="a", level="1")
    assert not ok and says in answer, answer
    ok, answer = client(d).request("reread")
    assert not ok and says in answer, answer
    cli = d.cli("-s", d.socket, "a", "1")
    assert cli.returncode == 1 and says in cli.stderr, cli
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: f"SIGHUP: {str(d.cltab)}" in d.log_text() and says in d.log_text())
    assert_untouched(d, before)


def assert_recovers(d, before) -> None:
    """Fixed with the same entries: tells work again and nothing restarts."""
    assert client(d).tell("a", "1").startswith("level transition started: ")
    assert client(d).tell("b", "1").startswith("level transition started: ")
    # the re-tells pass through STOPPING..CHECKING back to DONE (the status
    # showed DONE before them too): wait until it is all as before again
    wait_for(lambda: snapshot(d) == before, message=f"{snapshot(d)} != {before}")
    assert_untouched(d, before)


# -- edited or replaced while groups run: untouched until told ------------------------------

def test_a_cltab_edited_in_place_changes_nothing_until_the_next_tell(two_groups):
    d = two_groups
    before = snapshot(d)
    inode = os.stat(d.cltab).st_ino
    # same size, same second: only the nanoseconds and the content differ
    text = full_text(d, TABLE.replace("a:a1:1:respawn:exec sleep 1000",
                                      "a:a1:1:respawn:exec sleep 2000"))
    with open(d.cltab, "r+") as f:
        f.write(text)
    assert os.stat(d.cltab).st_ino == inode
    assert_untouched(d, before)
    old_a1 = [pid for pid, tag in before[0].items() if tag == "a1"]
    assert d.tell("a", "1").startswith("level transition started: ")
    # the changed entry is restarted; the others keep their pids
    wait_for(lambda: len(d.children()) == 3 and not set(old_a1) & set(d.children())
             and all(snapshot(d)[0].values()))
    d.wait_state("a", "1", "DONE")
    kept = {pid: tag for pid, tag in before[0].items() if tag != "a1"}
    assert {pid: tag for pid, tag in snapshot(d)[0].items() if tag != "a1"} == kept


def test_a_cltab_replaced_by_a_rename_changes_nothing_until_the_next_tell(two_groups):
    d = two_groups
    before = snapshot(d)
    d.write(TABLE + "a:a3:1:once:exec sleep 1000\n")
    assert_untouched(d, before)
    assert d.tell("a", "1").startswith("level transition started: ")
    wait_for(lambda: len(d.children()) == 4)
    d.wait_state("a", "1", "DONE")
    assert set(before[0]) < set(d.children())  # a1, a2 and b1 kept their pids


# -- broken while groups run: a clear error, nothing changes, recovery when fixed --------------

def test_an_invalid_cltab_is_refused_with_file_and_line_and_changes_nothing(two_groups):
    d = two_groups
    before = snapshot(d)
    d.write(TABLE + "a:a3:1:sometimes:true\n")
    line = len(full_text(d, TABLE + "x\n").splitlines())
    assert_refused_everywhere(d, before, f"{d.cltab}:{line}:")
    d.write(TABLE)
    assert_recovers(d, before)


def test_a_deleted_cltab_is_refused_as_unreadable_and_changes_nothing(two_groups):
    d = two_groups
    before = snapshot(d)
    os.unlink(d.cltab)
    assert_refused_everywhere(d, before, f"{d.cltab}: cannot read: No such file or directory")
    d.write(TABLE)
    assert_recovers(d, before)


def test_an_unreadable_cltab_is_refused_and_changes_nothing(two_groups):
    d = two_groups
    before = snapshot(d)
    os.unlink(d.cltab)
    os.mkdir(d.cltab)  # root reads any file: a directory is what it cannot read
    assert_refused_everywhere(d, before, f"{d.cltab}: cannot read: Is a directory")
    os.rmdir(d.cltab)
    d.write(TABLE)
    assert_recovers(d, before)


def test_an_emptied_cltab_is_valid_and_halts_the_groups_it_no_longer_has(two_groups):
    # Not a fault but the edge of one: a truncated file is a valid, empty table.
    # Its groups were deleted, so they are halted -- write cltab by rename.
    d = two_groups
    d.write("")
    ok, answer = client(d).request("tell", group="a", level="1")
    assert not ok and answer == "no such group: a"
    wait_for(lambda: d.status() == "" and not d.children())


def test_a_fifo_or_a_device_in_cltabs_place_is_refused_without_hanging(make_daemon):
    d = make_daemon("""
        web:w1:run:respawn:exec sleep 1000
    """)
    d.tell("web", "run")
    d.wait_state("web", "run", "DONE")
    pids = d.children()
    for replacement in ("fifo", "/dev/zero"):
        os.unlink(d.cltab)
        if replacement == "fifo":
            os.mkfifo(d.cltab)
        else:
            os.symlink(replacement, d.cltab)
        # the client cannot read the socket setting either: name the socket
        answer = Client(cltab=str(d.cltab), socket=str(d.socket)).tell("web", "run")
        assert "cannot read" in answer and "not a regular file" in answer, answer
        assert d.children() == pids
    os.unlink(d.cltab)
    d.write("web:w1:run:respawn:exec sleep 1000\n")
    assert d.tell("web", "run").startswith("level transition started: ")
