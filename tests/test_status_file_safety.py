"""The status file is written through an exclusive temporary file in its own
folder and renamed over the old one (clinit/clstat.py): a symlink or a hard
link planted at the final name or at the temporary name never makes the
daemon write into another file, and the status file still comes out right.
"""

from __future__ import annotations

import os

from conftest import wait_for

CLTAB = """
    web:w1:run:respawn:exec sleep 1000
    web:w2:other:respawn:exec sleep 1000
"""

PRECIOUS = "precious: not for clinit to touch\n"


def victim(tmp_path, name="victim"):
    path = tmp_path / name
    path.write_text(PRECIOUS)
    return path


def status_line(level, state="DONE"):
    return f"Cluster::Init::Group web {level} {state}\n"


def settle(d, level):
    assert d.tell("web", level).startswith("level transition started: ")
    d.wait_state("web", level, "DONE")
    wait_for(lambda: d.clstat.read_text() == status_line(level))


def test_a_symlink_at_the_status_files_name_is_replaced_not_followed(make_daemon, tmp_path):
    target = victim(tmp_path)
    d = make_daemon(CLTAB, start=False)
    d.clstat.symlink_to(target)  # planted before the daemon starts
    d.start()
    settle(d, "run")
    assert target.read_text() == PRECIOUS
    assert not d.clstat.is_symlink()
    # planted again while it runs (swapped in atomically, as an attacker would)
    planted = d.folder / "planted"
    planted.symlink_to(target)
    os.replace(planted, d.clstat)
    settle(d, "other")
    assert target.read_text() == PRECIOUS
    assert not d.clstat.is_symlink()


def test_a_hard_link_at_the_status_files_name_is_never_written_into(make_daemon, tmp_path):
    target = victim(tmp_path)
    d = make_daemon(CLTAB)
    settle(d, "run")
    planted = d.folder / "planted"
    os.link(target, planted)
    os.replace(planted, d.clstat)
    settle(d, "other")
    assert target.read_text() == PRECIOUS
    assert d.clstat.stat().st_ino != target.stat().st_ino


def test_symlinks_at_the_temporary_names_are_never_followed(make_daemon, tmp_path):
    target = victim(tmp_path)
    d = make_daemon(CLTAB)
    settle(d, "run")
    pid = d.proc.pid
    # the names the writer tries first: .clstat.PID.N.tmp
    planted = [d.folder / f".clstat.{pid}.{n}.tmp" for n in range(10)]
    for n, link in enumerate(planted):
        if n % 2:
            link.symlink_to(tmp_path / f"created{n}")  # dangling: O_CREAT would make it
        else:
            link.symlink_to(target)
    settle(d, "other")
    settle(d, "run")
    assert target.read_text() == PRECIOUS
    assert not list(tmp_path.glob("created*"))
    assert all(link.is_symlink() for link in planted)
    assert d.clstat.read_text() == status_line("run") and not d.clstat.is_symlink()
    assert "cannot write status file" not in d.log_text()
