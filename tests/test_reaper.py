"""The SIGCHLD bridge (clinit.reaper): every exit reaches its owner, no zombie stays.

Children are watched through pidfds: library use installs no signal handler."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pykka
import pytest

from clinit import reaper
from clinit.messages import Exited
from conftest import ROOT, Inbox, proc_state, wait_for, zombie_children


def spawn(command: str) -> int:
    return os.posix_spawn("/bin/sh", ["/bin/sh", "-c", command], dict(os.environ))


def exit_codes(inbox: Inbox) -> dict[int, int]:
    return {pid: os.waitstatus_to_exitcode(status)
            for pid, status in inbox.messages() if status is not None}


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
    assert inbox.messages() == [Exited(pid, 7 << 8)]
    wait_for(lambda: proc_state(pid) is None)


def test_a_waiting_thread_that_died_is_started_again_by_the_next_watch(caplog):
    reaper.ensure()
    waiter = reaper._waiter()
    broken = threading.Event()

    def failing_step():
        broken.set()
        raise RuntimeError("injected")

    waiter._step = failing_step  # the instance's method: the next turn of its loop raises
    waiter.poke()
    assert broken.wait(10)
    wait_for(lambda: not waiter._alive)
    del waiter._step
    inbox = Inbox()
    pid = spawn("exit 5")
    reaper.watch(pid, inbox)
    wait_for(lambda: inbox.messages())
    assert exit_codes(inbox) == {pid: 5}
    assert "the waiting thread is dead" in caplog.text


def test_an_exit_that_happens_before_watch_is_still_delivered():
    reaper.ensure()
    inbox = Inbox()
    pid = spawn("exit 3")
    wait_for(lambda: proc_state(pid) == "Z")  # exited before anyone watched it
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
    theirs = spawn("exit 0")  # a watched one: its pidfd wakes the bridge
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


def test_on_signal_hands_a_signal_to_a_handler_on_the_waiting_thread():
    seen = []
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        reaper.on_signal(signal.SIGUSR1, lambda signum: seen.append(
            (signum, threading.current_thread().name)))
        os.kill(os.getpid(), signal.SIGUSR1)
        wait_for(lambda: seen)
        assert seen[0] == (signal.SIGUSR1, "clinit-wait")
    finally:
        reaper._state.handlers.pop(signal.SIGUSR1, None)
        signal.signal(signal.SIGUSR1, previous)


def test_a_dead_bridge_is_started_again_by_watch():
    reaper.ensure().stop()
    inbox = Inbox()
    pid = spawn("exit 8")
    reaper.watch(pid, inbox)
    wait_for(lambda: exit_codes(inbox) == {pid: 8})
    assert reaper._state.ref.is_alive()


def test_a_watched_child_reaped_by_someone_else_is_reported_without_a_status():
    class Blocking:
        """An owner whose tell holds the bridge until released."""

        def __init__(self):
            self.entered, self.release = threading.Event(), threading.Event()

        def tell(self, message):
            self.entered.set()
            self.release.wait()

    bridge = reaper.ensure()
    inbox = Inbox()
    victim = spawn("exec sleep 1000")
    reaper.watch(victim, inbox)
    wait_for(lambda: victim in bridge.proxy().watched.get())
    blocker = Blocking()
    reaper.watch(spawn("exit 0"), blocker)
    try:
        assert blocker.entered.wait(10)  # the bridge is busy: nobody reaps but us
        os.kill(victim, signal.SIGKILL)
        os.waitpid(victim, 0)  # another part of the program takes the status
    finally:
        blocker.release.set()
    wait_for(lambda: inbox.messages())
    assert inbox.messages() == [Exited(victim, None)]


def test_a_watch_for_a_pid_that_is_gone_is_answered_at_once_without_a_status(caplog):
    reaper.ensure()
    inbox = Inbox()
    pid = spawn("exit 0")
    os.waitpid(pid, 0)
    reaper.watch(pid, inbox)
    wait_for(lambda: inbox.messages())
    assert inbox.messages() == [Exited(pid, None)]
    assert f"pid {pid} is gone" in caplog.text


# -- reap-all mode (the daemon), in a process of its own -------------------------------

DAEMON_MODE = r'''
import ctypes, logging, os, signal, sys, time
sys.path.insert(0, sys.argv[1])
from clinit import reaper
from clinit.messages import Exited

logging.basicConfig(level=logging.INFO)
reaper.ORPHAN_SWEEP = 0.05
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER, as the daemon
reaper.ensure(reap_all=True)


class Inbox(list):
    tell = list.append


def until(condition, what):
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def state(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return None


def spawn(command):
    return os.posix_spawn("/bin/sh", ["/bin/sh", "-c", command], dict(os.environ))


def orphan(folder, name):
    """A grandchild whose parent exits first: re-parented to us; returns its pid."""
    path = os.path.join(folder, name)
    spawn(f"sh -c 'sleep 0.1; exit 5' </dev/null >/dev/null 2>&1 & "
          f"echo $! > {path}.new; mv {path}.new {path}")
    until(lambda: os.path.exists(path), "orphan pid written")
    with open(path) as f:
        return int(f.read())


inbox = Inbox()
# a child swept by SIGCHLD before its owner watched it: the held status reaches the owner
early = spawn("exit 3")
until(lambda: state(early) is None, "early child swept")
reaper.watch(early, inbox)
# a watched child: its status reaches its owner once, whoever wakes first
late = spawn("exec sleep 1000")
reaper.watch(late, inbox)
os.kill(late, signal.SIGKILL)
until(lambda: len(inbox) == 2, "two exits")
assert sorted(inbox) == sorted([Exited(early, 3 << 8), Exited(late, signal.SIGKILL)]), inbox
# an orphan nobody watches is reaped
first = orphan(sys.argv[2], "first")
until(lambda: state(first) is None, "orphan reaped")
# the SIGCHLD route replaced: watched children are still seen, the next
# exit shows the bridge the loss, and from then on orphans are swept too
signal.signal(signal.SIGCHLD, signal.SIG_DFL)
watched = spawn("exit 4")
reaper.watch(watched, inbox)
until(lambda: Exited(watched, 4 << 8) in inbox, "watched child without SIGCHLD")
second = orphan(sys.argv[2], "second")
until(lambda: state(second) is None, "orphan reaped without SIGCHLD")
print("ok", len(inbox))
'''


def test_reap_all_mode_holds_early_exits_reaps_orphans_and_survives_a_replaced_handler(
        tmp_path):
    script = tmp_path / "daemon_mode.py"
    script.write_text(DAEMON_MODE)
    result = subprocess.run([sys.executable, str(script), str(ROOT), str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "3"]
    assert "the daemon's SIGCHLD handler was replaced" in result.stderr


OUT_OF_FDS = r'''
import logging, os, resource, sys, time
sys.path.insert(0, sys.argv[1])
from clinit import reaper
from clinit.messages import Exited

logging.basicConfig(level=logging.INFO)
reaper.ensure().proxy().reap_all.get()  # started, its thread and epoll made


class Inbox(list):
    tell = list.append


def until(condition, what):
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def spawn(command):
    return os.posix_spawn("/bin/sh", ["/bin/sh", "-c", command], dict(os.environ))


def use_up_fds():
    while True:
        try:
            os.dup(0)
        except OSError:
            return


inbox = Inbox()
# the soft limit is reached, the hard one is higher: the bridge raises the soft one
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 128))
use_up_fds()
first = spawn("exit 3")
reaper.watch(first, inbox)
until(lambda: Exited(first, 3 << 8) in inbox, "exit seen after raising the limit")
assert resource.getrlimit(resource.RLIMIT_NOFILE) == (128, 128)
# no fd left at all: the bridge polls the pid instead
use_up_fds()
second = spawn("exit 4")
reaper.watch(second, inbox)
until(lambda: Exited(second, 4 << 8) in inbox, "exit seen by polling")
print("ok")
'''


def test_out_of_file_descriptors_the_bridge_raises_the_limit_then_polls(tmp_path):
    script = tmp_path / "out_of_fds.py"
    script.write_text(OUT_OF_FDS)
    result = subprocess.run([sys.executable, str(script), str(ROOT)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok"]
    assert "raised the open-file limit from 64 to 128" in result.stderr
    assert "cannot open a pidfd for" in result.stderr
