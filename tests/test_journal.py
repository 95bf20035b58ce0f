"""The journal file (clinit/journal.py, journalwriter.py): its format, start times, the writer,
and what a missing or corrupt journal gives (a clear log line, no adoption)."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess

import pytest

from conftest import wait_for
from clinit import messages as m
from clinit.cltab import parse_cltab
from clinit.journal import (GroupRecord, JournalError, MemberRecord, Snapshot, boot_id, dumps,
                            journal_path, load, loads, proc_start)
from clinit.journalwriter import JournalWriter


def noted(group, tag, mode, command, state, rc, pid) -> m.MemberChanged:
    """A group's report of a member, as the daemon forwards it."""
    return m.MemberChanged(group, m.ProcessChanged(f"urn:{tag}", tag, state, rc, pid),
                           parse_cltab(f"{group}:{tag}:1:{mode}:{command}").tag(tag))


def snapshot(**kw) -> Snapshot:
    fields = dict(daemon=4242, daemon_start=None, boot=boot_id(),
                  groups=(GroupRecord("web", "1", "DONE", "1"), GroupRecord("0", None, "CONFIGURED")),
                  members=(MemberRecord("web", "nginx", "respawn", "exec nginx -g 'daemon off;'",
                                        "DONE", None, 815, 40190),
                           MemberRecord("web", "init", "wait", "a:b:c ü", "DONE", -9),
                           MemberRecord("web", "check", "test", "true", "PASS", 0)))
    fields.update(kw)
    return Snapshot(**fields)


def test_the_journal_lives_next_to_the_status_file():
    assert journal_path("/run/clinit/clstat") == "/run/clinit/clstat.journal"


def test_a_journal_reads_back_as_written():
    snap = snapshot()
    assert loads(dumps(snap)) == snap


def test_one_json_record_a_line():
    lines = dumps(snapshot()).splitlines()
    assert len(lines) == 1 + 2 + 3
    head = json.loads(lines[0])
    assert head["clinit_journal"] == 1 and head["daemon"] == 4242
    assert json.loads(lines[3])["process"] == "nginx"


@pytest.mark.parametrize("text, problem", [
    ("", "line 1: not a clinit journal"),
    ('{"clinit_journal": 2, "daemon": 1}\n', "line 1: not a clinit journal of version 1"),
    ('{"clinit_journal": 1, "daemon": 1}\n{"group": "g"', "line 2: not JSON"),
    ('{"clinit_journal": 1, "daemon": 1}\n[1, 2]\n', "line 2: not a JSON object"),
    ('{"clinit_journal": 1}\n', "line 1: no 'daemon'"),
    ('{"clinit_journal": 1, "daemon": "x", "daemon_start": null, "boot": null}\n',
     "line 1: 'daemon' is 'x', not a int"),
    ('{"clinit_journal": 1, "daemon": 1, "daemon_start": null, "boot": null}\n{"x": 1}\n',
     "line 2: neither a group nor a process"),
    ('{"clinit_journal": 1, "daemon": 1, "daemon_start": null, "boot": null}\n'
     '{"group": "g", "level": "1", "state": "DONE", "target": null}\n'
     '{"group": "g", "level": "1", "state": "DONE", "target": null}\n', "line 3: group 'g' twice"),
    ('{"clinit_journal": 1, "daemon": 1, "daemon_start": null, "boot": null}\n'
     '{"process": "a", "group": "g", "mode": "once", "command": "x", "state": "DONE",'
     ' "rc": null, "pid": 12, "start": null}\n', "line 2: pid 12 without a start time"),
    ('{"clinit_journal": 1, "daemon": 1, "daemon_start": null, "boot": null}\n'
     '{"process": "a", "group": "g", "mode": "once", "command": "x", "state": "DONE",'
     ' "rc": true, "pid": null, "start": null}\n', "line 2: 'rc' is True"),
    ('{"clinit_journal": 1, "daemon": 1, "daemon_start": null, "boot": null}\n'
     '{"process": "", "group": "g", "mode": "once", "command": "x", "state": "DONE",'
     ' "rc": null, "pid": null, "start": null}\n', "line 2: 'process' is empty"),
])
def test_a_bad_journal_names_the_line_and_the_problem(text, problem):
    with pytest.raises(JournalError) as err:
        loads(text)
    assert str(err.value).startswith(problem)


def test_start_times_name_one_process(tmp_path):
    with open("/proc/self/stat", "rb") as f:
        mine = int(f.read().rsplit(b")", 1)[1].split()[19])
    assert proc_start(os.getpid()) == mine
    child = subprocess.Popen(["sleep", "1000"])
    try:
        start = proc_start(child.pid)
        assert start is not None and start >= mine
        assert proc_start(child.pid, parent=os.getpid()) == start
        assert proc_start(child.pid, parent=1) is None  # not init's child
    finally:
        child.kill()
        wait_for(lambda: proc_start(child.pid) is None)  # a zombie has no start time
        child.wait()
    assert proc_start(child.pid) is None


def test_no_journal_is_a_clean_start(tmp_path, caplog):
    caplog.set_level(logging.INFO, "clinit.journal")
    assert load(str(tmp_path / "clstat.journal")) is None
    assert "no journal" in caplog.text and "shut down cleanly" in caplog.text


@pytest.mark.parametrize("text", ["garbage\n", '{"clinit_journal": 1}\n', "\x00\x01", "{" * 5000])
def test_a_corrupt_journal_is_logged_and_nothing_is_adopted(tmp_path, caplog, text):
    path = tmp_path / "clstat.journal"
    path.write_text(text)
    assert load(str(path)) is None
    assert f"journal {path} is corrupt (line 1: " in caplog.text
    assert "adopting nothing" in caplog.text


def test_an_undecodable_journal_is_logged(tmp_path, caplog):
    path = tmp_path / "clstat.journal"
    path.write_bytes(b"\xff\xfe\n")
    assert load(str(path)) is None
    assert f"cannot read journal {path}" in caplog.text


def test_a_journal_from_before_a_reboot_is_ignored(tmp_path, caplog):
    caplog.set_level(logging.INFO, "clinit.journal")
    path = tmp_path / "clstat.journal"
    path.write_text(dumps(snapshot(boot="00000000-0000-0000-0000-000000000000")))
    assert load(str(path)) is None
    assert "before the last reboot" in caplog.text


def test_the_journal_of_a_daemon_that_still_runs_is_left_alone(tmp_path, caplog):
    other = subprocess.Popen(["sleep", "1000"])
    try:
        path = tmp_path / "clstat.journal"
        path.write_text(dumps(snapshot(daemon=other.pid, daemon_start=proc_start(other.pid))))
        assert load(str(path)) is None
        assert f"belongs to daemon {other.pid}, which still runs" in caplog.text
        path.write_text(dumps(snapshot(daemon=other.pid, daemon_start=1)))  # its pid, reused
        assert load(str(path)) == snapshot(daemon=other.pid, daemon_start=1)
    finally:
        other.kill()
        other.wait()


def test_the_writer_keeps_groups_and_processes_with_start_times(tmp_path):
    path = str(tmp_path / "clstat.journal")
    child = subprocess.Popen(["sleep", "1000"])
    ref = JournalWriter.start(path)
    try:
        ref.tell(m.Told("g", "1"))
        ref.tell(m.GroupChanged("g", "1", "STARTING"))
        ref.tell(noted("g", "a", "respawn", "exec sleep 1000", "DONE", None, child.pid))
        ref.tell(noted("g", "b", "once", "true", "DONE", 0, None))
        ref.tell(noted("g", "c", "once", "true", "DONE", None, 1))  # not our child
        ref.tell(m.GroupChanged("g", "1", "DONE"))

        def written():
            if not os.path.exists(path):
                return None
            snap = loads(open(path).read())
            return snap if snap.groups and snap.groups[0].state == "DONE" else None

        snap = wait_for(written)
        assert snap.daemon == os.getpid() and snap.daemon_start == proc_start(os.getpid())
        assert snap.groups == (GroupRecord("g", "1", "DONE", "1"),)
        assert snap.members == (
            MemberRecord("g", "a", "respawn", "exec sleep 1000", "DONE", None, child.pid,
                         proc_start(child.pid)),
            MemberRecord("g", "b", "once", "true", "DONE", 0, None, None),
            MemberRecord("g", "c", "once", "true", "DONE", None, None, None))  # no start: no pid
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

        ref.tell(m.MemberChanged("g", m.ProcessChanged("urn:b", "b", "CONFIGURED", 0, None)))
        ref.tell(noted("g", "a", "respawn", "exec sleep 1000", "CONFIGURED", -9, None))
        wait_for(lambda: [r.tag for r in loads(open(path).read()).members] == ["c"])
        ref.tell(m.DropGroup("g"))
        wait_for(lambda: loads(open(path).read()) == Snapshot(*snap[:3], (), ()))

        ref.proxy().remove().get()
        assert not os.path.exists(path)
        ref.tell(m.Told("g", "2"))
        ref.ask(m.Flush())
        assert not os.path.exists(path)  # removed at shutdown: stays removed
    finally:
        ref.stop()
        child.kill()
        child.wait()


def test_a_seeded_writer_keeps_the_start_times_of_processes_it_did_not_start(tmp_path):
    path = str(tmp_path / "clstat.journal")
    seed = snapshot()
    ref = JournalWriter.start(path, seed)
    try:
        wait_for(lambda: os.path.exists(path))
        assert loads(open(path).read())[3:] == seed[3:]  # the seed, written at once
        nginx = seed.members[0]
        ref.tell(noted("web", "nginx", "respawn", nginx.command, "DONE", None, nginx.pid))
        ref.ask(m.Flush())
        assert loads(open(path).read()).members[0] == nginx
    finally:
        ref.stop()


def test_a_journal_that_cannot_be_written_is_logged_once(tmp_path, caplog):
    path = str(tmp_path / "gone" / "clstat.journal")
    ref = JournalWriter.start(path)
    try:
        for n in range(3):
            ref.tell(m.Told("g", str(n)))
            ref.ask(m.Flush())
        assert caplog.text.count("cannot write journal") == 1
        os.mkdir(tmp_path / "gone")
        ref.tell(m.Told("g", "x"))
        wait_for(lambda: "written again" in caplog.text)  # logged after the rename
        assert os.path.exists(path)
    finally:
        ref.stop()


def test_a_batch_of_member_changes_is_kept_as_each_members_last_with_its_entry(tmp_path):
    # A spawn reports three changes, only the first with its entry; a batch
    # keeps the last of each, known by the entry the first one carried.
    path = str(tmp_path / "clstat.journal")
    child = subprocess.Popen(["sleep", "1000"])
    ref = JournalWriter.start(path)
    try:
        entry = parse_cltab("g:a:1:respawn:exec sleep 1000").tag("a")
        ref.tell(m.GroupChanged("g", "1", "DONE"))
        ref.tell(m.MembersChanged("g", (
            m.MemberChanged("g", m.ProcessChanged("urn:a", "a", "SETUP", None, None), entry),
            m.MemberChanged("g", m.ProcessChanged("urn:b", "b", "SETUP", None, None)),  # unknown
            m.MemberChanged("g", m.ProcessChanged("urn:a", "a", "RUNBG", None, child.pid)),
            m.MemberChanged("g", m.ProcessChanged("urn:a", "a", "DONE", None, child.pid)))))
        snap = wait_for(lambda: os.path.exists(path) and (s := loads(open(path).read())).members
                        and s)
        assert snap.members == (MemberRecord("g", "a", "respawn", "exec sleep 1000", "DONE", None,
                                             child.pid, proc_start(child.pid)),)
    finally:
        ref.stop()
        child.kill()
        child.wait()
