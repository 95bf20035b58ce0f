"""The SIGCHLD bridge: the only place where children are reaped.

SIGCHLD is caught through Python's wakeup pipe: a small thread reads the
caught signal numbers from it and tells the Reaper actor that something
exited (once per burst), so nothing depends on what the main thread is
doing.  Other signals (the daemon's SIGTERM, SIGINT, SIGHUP) are routed
the same way with `on_signal`.  The
Reaper collects every exit status with non-blocking `waitpid` and sends
`("exited", pid, status)` to the actor that registered the pid with
`watch`.  An exit that arrives before its owner registered the pid is
never lost: in reap-all mode (the daemon, which owns every child) the
status is held until the owner registers; in watched mode (a library
user's process, which may have children of its own) the zombie simply
waits until `watch` reaps it.

A message that raises inside the Reaper is logged and dropped, and the
bridge goes on reaping (a dead bridge would leave zombies); if it is
ever found dead anyway, `ensure`/`watch` start a new one in the mode the
last one had.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import threading

import pykka

from .actor import Actor
from .messages import Exited
__all__ = ["Reaper", "ensure", "watch", "on_signal", "EXITED"]

log = logging.getLogger("clinit.reaper")

EXITED = "exited"  # ("exited", pid, wait_status) sent to the owner
_SIGCHLD = ("sigchld",)
HELD_MAX = 4096  # exits of unknown pids kept for a late owner (orphans adopted as subreaper)


class Reaper(Actor):
    use_daemon_thread = True

    def __init__(self, reap_all: bool = False):
        super().__init__()
        self.reap_all = reap_all
        self.owners: dict[int, pykka.ActorRef | None] = {}
        self.held: collections.OrderedDict[int, int] = collections.OrderedDict()

    def on_receive(self, message):
        try:
            self._receive(message)
        except Exception:  # noqa: BLE001 - the bridge must outlive any bad message
            log.exception("SIGCHLD bridge: failed on %r (watching %d pids, holding %d exits); "
                          "carrying on", message, len(self.owners), len(self.held))

    def _receive(self, message):
        kind = message[0]
        if kind == "sigchld":
            self._reap()
        elif kind == "watch":
            _, pid, owner = message
            if pid in self.held:
                self._forward(pid, self.held.pop(pid), owner)
            else:
                self.owners[pid] = owner
                self._reap_one(pid)
        elif kind == "reap_all":
            self.reap_all = message[1]
            self._reap()
        else:
            log.warning("SIGCHLD bridge: unknown message %r", message)

    # -- reaping -------------------------------------------------------

    def _reap(self) -> None:
        if self.reap_all:
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    return
                if pid == 0:
                    return
                self._dispatch(pid, status)
            return
        # Watched mode: reap only pids we own; peek first, so that the common
        # case costs one call per exit instead of one per watched pid.
        while self.owners:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            if info.si_pid not in self.owners:
                break  # someone else's child is first in line: scan ours
            if not self._reap_one(info.si_pid):
                break
        for pid in list(self.owners):
            self._reap_one(pid)

    def _reap_one(self, pid: int) -> bool:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            log.warning("pid %d vanished without an exit status", pid)
            self._forward(pid, 255 << 8, self.owners.pop(pid, None))
            return True
        if done == 0:
            return False
        self._dispatch(pid, status)
        return True

    def _dispatch(self, pid: int, status: int) -> None:
        if pid in self.owners:
            self._forward(pid, status, self.owners.pop(pid))
        else:
            self.held[pid] = status
            while len(self.held) > HELD_MAX:
                self.held.popitem(last=False)

    @staticmethod
    def _forward(pid: int, status: int, owner) -> None:
        if owner is None:
            return
        try:
            owner.tell(Exited(pid, status))
        except pykka.ActorDeadError:
            pass


class _State:
    ref: pykka.ActorRef | None = None
    reap_all = False  # the mode of the running bridge, kept for a restart
    lock = threading.Lock()
    handlers: dict[int, object] = {}  # signum -> callable(signum), run on the signal thread
    thread: threading.Thread | None = None


_state = _State()


def _noop(signum, frame) -> None:
    """The Python-level handler: the work happens on the signal thread."""


def _signal_thread(read_fd: int) -> None:
    # The C-level handler writes each caught signal's number to the wakeup
    # pipe, whichever thread the kernel picked; we hand them to actors here,
    # so no signal waits for the main thread to run Python code.
    while True:
        try:
            data = os.read(read_fd, 4096)
        except InterruptedError:
            continue
        for signum in dict.fromkeys(data):  # once per kind in a burst, in order
            handler = _state.handlers.get(signum)
            if handler is not None:
                try:
                    handler(signum)
                except Exception:  # noqa: BLE001 - a handler must not kill the thread
                    log.exception("signal %d handler failed", signum)


def _install(signum: int, handler) -> None:
    """Route `signum` to `handler(signum)` on the signal thread (main thread only)."""
    if _state.thread is None:
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        _state.thread = threading.Thread(target=_signal_thread, args=(read_fd,),
                                         name="clinit-signals", daemon=True)
        _state.thread.start()
    _state.handlers[signum] = handler
    signal.signal(signum, _noop)


def on_signal(signum: int, handler) -> None:
    """Have `handler(signum)` called (on the signal thread) when `signum` arrives.

    Must be called from the main thread.  The handler should only hand
    the signal to an actor.
    """
    with _state.lock:
        _install(signum, handler)


def _sigchld(signum: int) -> None:
    ref = _state.ref
    if ref is not None:
        try:
            ref.tell(_SIGCHLD)
        except pykka.ActorDeadError:
            pass


def ensure(reap_all: bool | None = None) -> pykka.ActorRef:
    """Start the bridge if it is not running, and return its ref.

    The first call must come from the main thread, since only it may
    install a signal handler.  `reap_all=True` makes the bridge reap
    every child of this process (the daemon does that).
    """
    with _state.lock:
        ref = _state.ref
        if ref is None or not ref.is_alive():
            if _state.handlers.get(signal.SIGCHLD) is None:
                if threading.current_thread() is not threading.main_thread():
                    raise RuntimeError(
                        "clinit's SIGCHLD bridge must first be started from the main "
                        "thread (create a Process, Group or daemon there first)")
                _install(signal.SIGCHLD, _sigchld)
            if reap_all is not None:
                _state.reap_all = bool(reap_all)
            ref = Reaper.start(_state.reap_all)
            _state.ref = ref
            ref.tell(_SIGCHLD)  # collect anything that exited before we listened
        elif reap_all is not None:
            _state.reap_all = bool(reap_all)
            ref.tell(("reap_all", reap_all))  # reaps at once, too
    return ref


def watch(pid: int, owner) -> None:
    """Ask the bridge to send `owner` the exit status of `pid`."""
    ref = _state.ref
    if ref is None or not ref.is_alive():
        ref = ensure()
    ref.tell(("watch", pid, owner))
