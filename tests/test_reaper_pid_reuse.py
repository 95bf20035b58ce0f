"""An exit held for a pid is never taken for a later child's with the same pid
(found by the chaos run, issue 7).

The daemon's bridge reaps every child, adopted orphans included, and holds
the exits nobody watched for a late owner.  Pids are reused: when a new
leader got the pid of an orphan whose exit was held, its Process was told at
once that it had exited.  It then lost its running leader (`once`: never
stopped again, not even at shutdown; `respawn`: a second copy started).
The test steers the kernel's next pid (root only) to hand a new leader
the pid of an orphan whose exit the daemon holds.
"""

from __future__ import annotations

import os

import pytest

from conftest import gone, wait_for

NS_LAST_PID = "/proc/sys/kernel/ns_last_pid"


def steer_next_pid(pid: int) -> None:
    with open(NS_LAST_PID, "w") as f:
        f.write(str(pid - 1))


@pytest.mark.skipif(not os.access(NS_LAST_PID, os.W_OK), reason="needs root to steer pids")
def test_a_leader_given_an_adopted_orphans_pid_is_still_supervised(make_daemon, tmp_path):
    orphan = tmp_path / "orphan"
    d = make_daemon(f"""
        g:o:1:once:sh -c 'echo $$ > {orphan}; exec sleep 0.2' & exit 0
        g:y:2:once:exec sleep 1000
    """)
    d.cli("g", "1", check=0)
    wait_for(lambda: orphan.exists() and orphan.read_text().strip())
    held = int(orphan.read_text())
    wait_for(lambda: gone(held) and not os.path.exists(f"/proc/{held}"))  # reaped: held
    for attempt in range(60):
        # the daemon starts a thread or two (an actor, a request worker) before the spawn
        steer_next_pid(held - attempt % 4)
        d.tell("g", "2")
        d.wait_state("g", "2", "DONE")
        y = wait_for(lambda: [p for p in d.children() if open(f"/proc/{p}/environ", "rb").read()
                              .find(b"CLINIT_TAG=y\0") >= 0])
        if y == [held]:
            break
        d.tell("g", "3")
        d.wait_state("g", "3", "DONE")
        wait_for(lambda: not d.children())
    else:
        pytest.skip("the leader never got the orphan's pid (other processes took it)")
    d.tell("g", "3")  # y must be stopped: its Process still knows its leader runs
    d.wait_state("g", "3", "DONE")
    wait_for(lambda: gone(held), message=f"y (pid {held}) was never stopped:\n{d.log_text()}")
    d.cli("-k", check=0)
    assert d.proc.wait(timeout=30) == 0
