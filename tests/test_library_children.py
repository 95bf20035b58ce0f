"""clinit as a library next to other code that owns SIGCHLD (issue 8, part 1).

Process and Group actors run in this test process, beside a harness that
puts back the signal handlers it found, asyncio running its own child
watcher, SIGCHLD set to SIG_DFL or SIG_IGN between two lifetimes, and
hundreds of exits at once.  In every case every exit is seen and no
zombie is left: children are watched through pidfds, so library use needs
no signal handler and never touches the signal wakeup fd.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import warnings

import pytest

from clinit import Entry, Group, GroupState, Process, ProcessState, reaper
from clinit.messages import Exited
from conftest import FAST, Inbox, gone, stat_fields, wait_for, zombie_children

S = ProcessState
G = GroupState
HEAD = "".join(f":::{name}:{value}\n" for name, value in FAST.items())


@pytest.fixture
def harness():
    """What a careful test harness does: note SIGCHLD's handler and the
    wakeup fd it finds, and put them back (`restore()`, and at the end)."""
    found_handler = signal.getsignal(signal.SIGCHLD)
    found_fd = wakeup_fd()

    def restore():
        signal.signal(signal.SIGCHLD, found_handler)
        signal.set_wakeup_fd(found_fd)

    yield restore
    restore()


def wakeup_fd() -> int:
    fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(fd)
    return fd


def start(refs, command: str, mode: str = "wait", tag: str = "t"):
    ref = Process.start(Entry("g", tag, "1", mode, command, 1), timings=FAST, level="1")
    refs.append(ref)
    return ref.proxy()


def settle(p, state):
    wait_for(lambda: p.state().get() is state,
             message=f"never reached {state}: {p.transitions().get()}")


def no_zombie_of_ours():
    wait_for(lambda: not zombie_children(), message=f"zombies: {zombie_children()}")


def lifetime(refs, tmp_path, name: str) -> None:
    """A group's whole life: a `wait` entry lets it leave STARTING, a
    respawn entry is restarted when killed, a halt stops a `once` entry."""
    cltab = tmp_path / f"{name}.cltab"
    cltab.write_text(HEAD + f"{name}:w:1:wait:exit 3\n"
                            f"{name}:o:1:once:exec sleep 1000\n"
                            f"{name}:r:1:respawn:exec sleep 1000\n")
    ref = Group.start(name, str(cltab))
    refs.append(ref)
    g = ref.proxy()
    g.tell("1").get()
    wait_for(lambda: g.state().get() is G.DONE, message=f"{name}: {g.transitions().get()}")
    members = ref.proxy()._actor._members
    assert members["w"].ref.proxy().rc.get() == 3
    respawned = members["r"].ref.proxy()
    first = wait_for(lambda: respawned.pid().get())
    os.kill(first, signal.SIGKILL)
    second = wait_for(lambda: respawned.pid().get() not in (None, first) and respawned.pid().get())
    once = wait_for(lambda: members["o"].ref.proxy().pid().get())
    g.halt().get()
    wait_for(lambda: g.state().get() is G.CONFIGURED, message=f"{name}: {g.transitions().get()}")
    assert gone(once) and gone(second)
    no_zombie_of_ours()


# -- handlers put back, replaced, ignored ----------------------------------------

def test_library_use_installs_no_signal_handler_and_leaves_the_wakeup_fd_alone(harness, refs):
    seen = []
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        handler = lambda signum, frame: seen.append(signum)  # noqa: E731 - someone else's
        signal.signal(signal.SIGCHLD, handler)
        signal.set_wakeup_fd(write_fd)
        procs = [start(refs, f"exit {i}", tag=f"t{i}") for i in range(5)]
        for p in procs:
            p.up()
        for i, p in enumerate(procs):
            settle(p, S.DONE)
            assert p.rc.get() == i
        assert signal.getsignal(signal.SIGCHLD) is handler
        assert wakeup_fd() == write_fd
        assert signal.SIGCHLD not in reaper._state.handlers
        wait_for(lambda: seen)  # their handler still hears SIGCHLD
        no_zombie_of_ours()
    finally:
        harness()
        os.close(read_fd)
        os.close(write_fd)


def test_every_exit_is_seen_after_a_harness_puts_back_the_handlers_it_found(
        harness, refs, tmp_path):
    lifetime(refs, tmp_path, "first")
    harness()
    lifetime(refs, tmp_path, "second")


def test_sigchld_set_to_its_default_between_two_lifetimes_loses_no_exit(harness, refs, tmp_path):
    lifetime(refs, tmp_path, "first")
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    lifetime(refs, tmp_path, "second")
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    lifetime(refs, tmp_path, "third")


def test_with_sigchld_ignored_exits_are_still_seen_though_their_status_is_unknown(harness, refs):
    # SIG_IGN makes the kernel reap children itself: the exit is seen
    # through the pidfd, without a status (rc None), and nothing hangs.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    p = start(refs, "exec sleep 1000", mode="wait")
    p.up()
    pid = wait_for(lambda: p.pid().get())
    os.kill(pid, signal.SIGKILL)
    settle(p, S.DONE)
    assert p.rc.get() is None
    stopped = start(refs, "exec sleep 1000", mode="once", tag="o")
    stopped.up()
    pid = wait_for(lambda: stopped.pid().get())
    stopped.down().get()
    settle(stopped, S.CONFIGURED)
    assert gone(pid)


# -- asyncio's own child watcher in the same process ------------------------------

WATCHERS = ["default", "ThreadedChildWatcher", "PidfdChildWatcher", "SafeChildWatcher",
            "MultiLoopChildWatcher"]


@pytest.mark.parametrize("watcher_name", WATCHERS)
def test_asyncio_with_its_own_child_watcher_and_clinit_both_see_all_their_exits(
        harness, refs, watcher_name):
    watcher = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # child watchers: 3.12+
        if watcher_name != "default":
            if not hasattr(asyncio, watcher_name):
                pytest.skip(f"asyncio.{watcher_name} is gone in this Python")
            watcher = getattr(asyncio, watcher_name)()
            asyncio.set_child_watcher(watcher)  # asyncio.run attaches it to its loop
        try:
            before = [start(refs, f"exit {i}", tag=f"b{i}") for i in range(10)]
            for p in before:
                p.up()
            during = [start(refs, f"exit {i + 10}", tag=f"d{i}") for i in range(10)]

            async def main():
                children = [await asyncio.create_subprocess_exec("/bin/sh", "-c", f"exit {i}")
                            for i in range(10)]
                for p in during:  # clinit's children exit while asyncio waits for its own
                    p.up()
                return [await child.wait() for child in children]

            codes = asyncio.run(main())
            if watcher_name == "MultiLoopChildWatcher":
                # its SIGCHLD handler races with itself when other children exit
                # (reproduced without clinit: threads each waiting for their own
                # child), and then reports 255: only count its exits
                assert len(codes) == 10
            else:
                assert codes == list(range(10))
        finally:
            if watcher is not None:
                watcher.close()
                asyncio.set_child_watcher(None)
    for i, p in enumerate(before + during):
        settle(p, S.DONE)
        assert p.rc.get() == i
    no_zombie_of_ours()


# -- many at once, any thread, not our child -----------------------------------------

def test_two_hundred_processes_killed_together_are_all_seen_and_reaped(refs):
    procs = [start(refs, "exec sleep 1000", tag=f"t{i}") for i in range(200)]
    for p in procs:
        p.up()
    pids = [wait_for(lambda p=p: p.pid().get()) for p in procs]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    for p in procs:
        settle(p, S.DONE)
        assert p.rc.get() == -signal.SIGKILL
    no_zombie_of_ours()


def test_a_process_actor_can_be_the_first_to_start_the_bridge_from_any_thread(refs):
    bridge = reaper.ensure()
    bridge.stop()  # the next user starts a new one: here, from a worker thread
    made = []
    thread = threading.Thread(target=lambda: made.append(start(refs, "exit 6")))
    thread.start()
    thread.join()
    [p] = made
    assert reaper._state.ref is not bridge and reaper._state.ref.is_alive()
    p.up()
    settle(p, S.DONE)
    assert p.rc.get() == 6


def test_a_process_that_is_not_our_child_is_watched_and_its_exit_has_no_status():
    # setsid sh ... &: the sleep is re-parented to init (we are no subreaper)
    out = subprocess.run(["setsid", "/bin/sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True).stdout
    pid = int(out)
    try:
        wait_for(lambda: stat_fields(pid) and int(stat_fields(pid)[1]) != os.getpid())
        inbox = Inbox()
        reaper.watch(pid, inbox)
        other = os.posix_spawn("/bin/sh", ["/bin/sh", "-c", "exit 2"], dict(os.environ))
        reaper.watch(other, inbox)  # and our own children go on as before
        wait_for(lambda: Exited(other, 2 << 8) in inbox.messages())
        assert Exited(pid, None) not in inbox.messages()
    finally:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: Exited(pid, None) in inbox.messages())
    assert len(inbox.messages()) == 2
