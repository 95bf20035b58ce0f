"""The SIGCHLD bridge (clinit.reaper): every exit reaches its owner, no zombie stays."""

from __future__ import annotations

import os
import signal
import threading

import pykka
import pytest

from clinit import reaper
from clinit.messages import Exited
from conftest import Inbox, proc_state, wait_for, zombie_children


def spawn(command: str) -> int:
    return os.posix_spawn("/bin/sh", ["/bin/sh", "-c", command], dict(os.environ))


def exit_codes(inbox: Inbox) -> dict[int, int]:
    return {pid: os.waitstatus_to_exitcode(status)
            for pid, status in inbox.messages()}


def test_the_bridge_starts_on_first_use_and_stays_the_same_actor():
    ref = reaper.ensure()
    assert ref.is_alive()
    assert reaper.ensure() is ref


def test_an_exit_is_delivered_to_the_owner_with_its_status():
    reaper.ensure()
    inbox = Inbox()
    pid = spawn("exit 7")
    reaper.watch(pid, inbox)
    wait_for(lambda: inbox.messages())
    assert exit_codes(inbox) == {pid: 7}
    assert isinstance(inbox.messages()[0], Exited)
    wait_for(lambda: proc_state(pid) is None)


def test_an_exit_that_happens_before_watch_is_still_delivered():
    reaper.ensure()
    inbox = Inbox()
    pid = spawn("exit 3")
    wait_for(lambda: proc_state(pid) == "Z")  # exited, SIGCHLD already came and went
    reaper.watch(pid, inbox)
    wait_for(lambda: inbox.messages())
    assert exit_codes(inbox) == {pid: 3}
    wait_for(lambda: proc_state(pid) is None)


def test_a_death_by_signal_is_reported_as_that_signal():
    reaper.ensure()
    inbox = Inbox()
    pid = spawn("exec sleep 1000")
    reaper.watch(pid, inbox)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: inbox.messages())
    assert exit_codes(inbox) == {pid: -signal.SIGKILL}


def test_many_children_exiting_at_once_are_all_delivered_and_none_stays_a_zombie():
    reaper.ensure()
    inbox = Inbox()
    pids = {spawn(f"exit {i}"): i for i in range(60)}
    for pid in pids:
        reaper.watch(pid, inbox)
    wait_for(lambda: len(inbox.messages()) >= len(pids))
    assert exit_codes(inbox) == pids
    assert len(inbox.messages()) == len(pids)  # each exactly once
    assert not set(zombie_children()) & set(pids)


def test_children_released_together_by_one_event_are_all_reaped():
    reaper.ensure()
    inbox = Inbox()
    read_fd, write_fd = os.pipe()
    try:
        # every child blocks reading the pipe and exits when it closes: all at once
        pids = [os.posix_spawn("/bin/sh", ["/bin/sh", "-c", "read x; exit 5"], dict(os.environ),
                               file_actions=[(os.POSIX_SPAWN_DUP2, read_fd, 0)])
                for _ in range(40)]
    finally:
        os.close(read_fd)
    for pid in pids:
        reaper.watch(pid, inbox)
    os.close(write_fd)
    wait_for(lambda: len(inbox.messages()) >= len(pids))
    assert exit_codes(inbox) == {pid: 5 for pid in pids}
    assert not set(zombie_children()) & set(pids)


def test_a_watched_mode_bridge_leaves_other_children_of_the_process_alone():
    ref = reaper.ensure()
    if ref.proxy().reap_all.get():
        pytest.skip("the bridge reaps every child in this process")
    inbox = Inbox()
    mine = spawn("exit 4")  # a child the library user reaps on their own
    wait_for(lambda: proc_state(mine) == "Z")
    theirs = spawn("exit 0")  # a watched one: its SIGCHLD wakes the bridge
    reaper.watch(theirs, inbox)
    wait_for(lambda: inbox.messages())
    assert proc_state(mine) == "Z"
    pid, status = os.waitpid(mine, 0)
    assert pid == mine and os.waitstatus_to_exitcode(status) == 4


def test_an_exit_for_an_owner_that_is_gone_is_dropped_quietly():
    class Owner(pykka.ThreadingActor):
        pass

    reaper.ensure()
    dead = Owner.start()
    dead.stop()
    pid = spawn("exit 0")
    reaper.watch(pid, dead)
    wait_for(lambda: proc_state(pid) is None)
    # the bridge is still working
    inbox = Inbox()
    other = spawn("exit 1")
    reaper.watch(other, inbox)
    wait_for(lambda: exit_codes(inbox) == {other: 1})


def test_on_signal_hands_a_signal_to_a_handler_on_the_signal_thread():
    seen = []
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        reaper.on_signal(signal.SIGUSR1, lambda signum: seen.append(
            (signum, threading.current_thread().name)))
        os.kill(os.getpid(), signal.SIGUSR1)
        wait_for(lambda: seen)
        assert seen[0] == (signal.SIGUSR1, "clinit-signals")
    finally:
        reaper._state.handlers.pop(signal.SIGUSR1, None)
        signal.signal(signal.SIGUSR1, previous)
