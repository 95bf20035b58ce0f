"""The SIGCHLD bridge: the one place that reaps, forwarding each exit to its owner.

What wakes it.  Every watched pid gets a pidfd (`os.pidfd_open`, Linux
5.3+), which the Reaper actor adds to an epoll set.  One thread
("clinit-wait", see `_Waiter`) waits on that set and tells the Reaper
`Wake()` when some pidfds became readable (a pidfd is readable once its
process has exited).  The Reaper collects each such child with
`waitid(P_PIDFD, fd, WEXITED|WNOHANG)`, closes its pidfd and sends the
owner `messages.Exited(pid, status)`, `status` a wait status as
`os.waitpid` gives it (owners call `os.waitstatus_to_exitcode`).  A
pidfd names one process, so a reused pid never gets an old status, and
an exit that happened before `watch` is not lost: the pidfd of a zombie
is readable at once.  Library use therefore needs no signal handler at
all and never touches SIGCHLD or the signal wakeup fd: an asyncio loop,
a test harness that puts back the handlers it found, or any other owner
of SIGCHLD may do what it likes with them.  (Raw epoll, not `selectors`:
epoll_ctl is safe while another thread waits, so the Reaper registers
and closes pidfds itself, at once.)

Not our child.  `watch` also takes a pid that is not a child of this
process (a survivor of an earlier daemon, adopted): pidfd_open works for
any process, but its status cannot be collected, so its owner gets
`Exited(pid, None)`.  The same goes for a child that someone else reaped
first (a `waitpid(-1)` elsewhere in the process, or SIGCHLD set to
SIG_IGN, which makes the kernel reap it): logged, and `Exited(pid, None)`.
A pid that no longer exists when `watch` comes gives `Exited(pid, None)`
at once (with a warning), unless the daemon's sweep holds its status.

The daemon (`ensure(reap_all=True)`).  It is a child subreaper, so
orphaned grandchildren are re-parented to it and nobody watches them.  It
keeps a SIGCHLD route (the signal wakeup pipe, read by the same waiting
thread, which also carries its SIGTERM, SIGINT and SIGHUP to their
handlers, see `on_signal`; a burst of exits seen through both pidfds
and SIGCHLD wakes the Reaper once), and every wake begins with a
sweep, `waitpid(-1, WNOHANG)` until none is left: it reaps every exited
child, watched or not (one system call a child; the pidfd reports of
those it reaped are then skipped).  A watched pid's status goes to its
owner (its pidfd is then closed; a late readiness report for that fd number is
checked and found stale: the pid it names now has not exited, or no
pid is watched through it).  Any other status is held
(at most HELD_MAX): a child that exits between its spawn and its `watch`
is swept like an orphan, and its status must reach the owner once the
watch comes.  A held status is trusted only if the pid names no live
child of ours when the watch comes (pidfd_open fails, or names a process
that is not our child): a held status of an orphan whose pid was reused
by a new child is dropped, since the new child is still there to be
watched.  Reaping everything in one place (rather than peeking with
WNOWAIT and reaping only unknown pids) is correct because the same actor
does both: no status is ever collected twice or by anyone else.

A replaced handler.  Library use has none to lose.  The daemon owns its
process; if its SIGCHLD handler is replaced anyway, its own children are
still seen through their pidfds.  The Reaper checks the handler on every
wake in reap-all mode (each watched exit is one); once it finds it
replaced, it logs an error and from then on sweeps every ORPHAN_SWEEP
seconds as well, so orphans are still reaped: it repairs itself rather
than hang.  (It cannot put the handler back: only the main thread may.)

Sending.  The exits a wake collects are sent to their owners after the
last is collected: every collecting system call gives up the GIL, and an
owner already told would take it each time (a stop of 200 processes cost
the bridge twice the CPU that way).

Faults.  A message that raises inside the Reaper is logged and dropped,
and the bridge goes on reaping (a dead bridge would leave zombies); if it
is ever found dead anyway, `ensure`/`watch` start a new one in the mode
the last one had.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import resource
import select
import signal
import threading

import pykka

from .actor import Actor
from .messages import Exited, ReapAll, Wake, Watch

__all__ = ["Reaper", "ensure", "watch", "on_signal", "wait_status"]

log = logging.getLogger("clinit.reaper")

HELD_MAX = 4096  # swept exits of unknown pids kept for a late owner (daemon only)
ORPHAN_SWEEP = 5.0  # s between sweeps in reap-all mode once the SIGCHLD route is lost
POLL_INTERVAL = 0.2  # s between polls of pids watched without a pidfd (out of fds)


def wait_status(info) -> int:
    """The wait status (as os.waitpid gives it) of an os.waitid result."""
    if info.si_code == os.CLD_EXITED:
        return (info.si_status & 0xFF) << 8
    if info.si_code == os.CLD_DUMPED:
        return info.si_status | 0x80
    return info.si_status  # CLD_KILLED


class _Watched:
    __slots__ = ("owner", "fd", "child", "shared")

    def __init__(self, owner, fd: int, child: bool, shared: bool):
        self.owner, self.fd, self.child = owner, fd, child
        self.shared = shared  # a copy of the caller's pidfd: closing it leaves it in the epoll set


class _Waiter:
    """The one thread ("clinit-wait") that waits for whatever wakes the Reaper.

    It waits, with epoll, on every pidfd, on the signal wakeup pipe once
    the daemon routes signals (`on_signal`), and on a pipe of its own
    (`poke`: a new timeout).  The Reaper itself adds each pidfd
    (one-shot: once reported, it stays quiet until re-armed) and removes
    and closes it when done; epoll_ctl is safe while another thread
    waits, so no registration costs a trip through this thread.  The
    thread appends readable pidfds to `ready`, runs the handlers of
    caught signals, and tells the Reaper `Wake()` once per batch,
    SIGCHLD included: a burst of exits seen both ways wakes it once.  A
    report can be stale (the fd was closed meanwhile and its number
    reused), so the Reaper checks each before it believes it.  There is
    one waiter per process; it outlives a Reaper that is restarted.
    """

    MASK = select.EPOLLIN | select.EPOLLONESHOT

    def __init__(self):
        self.timeout: float | None = None  # None: wait for events only; else wake this often
        self.ready: collections.deque[int] = collections.deque()
        self.pending = False  # a Wake is on its way: the Reaper clears it as it drains `ready`
        self.signal_fd: int | None = None
        self._epoll = select.epoll()
        self._read, self._write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._epoll.register(self._read, select.EPOLLIN)
        self._thread: threading.Thread | None = None
        self._alive = False  # its thread runs (cleared by the thread as it ends)
        self.running()

    def running(self) -> _Waiter:
        """Self, with its thread started again if it died (a bug: it logged why)."""
        if not self._alive:  # a flag, not Thread.is_alive(): this runs on every watch
            if self._thread is not None:
                log.error("SIGCHLD bridge: the waiting thread is dead: starting a new one")
            self._alive = True
            self._thread = threading.Thread(target=self._run, name="clinit-wait", daemon=True)
            self._thread.start()
        return self

    def add(self, fd: int) -> None:
        self._epoll.register(fd, self.MASK)

    def rearm(self, fd: int) -> None:
        try:
            self._epoll.modify(fd, self.MASK)
        except OSError:  # not registered (any more): nothing to re-arm
            pass

    def drop(self, fd: int) -> None:
        try:
            self._epoll.unregister(fd)
        except OSError:
            pass

    def listen_to_signals(self, fd: int) -> None:
        self.signal_fd = fd
        self._epoll.register(fd, select.EPOLLIN)

    def poke(self) -> None:
        """Wake the thread, so that a new timeout takes effect."""
        try:
            os.write(self._write, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: the thread will wake anyway

    def _run(self) -> None:
        try:
            while True:
                self._step()
        except Exception:  # noqa: BLE001 - log; `running()` starts a new thread
            log.exception("SIGCHLD bridge: the waiting thread failed")
        finally:
            self._alive = False

    def _step(self) -> None:
        events = self._epoll.poll(-1 if self.timeout is None else self.timeout)
        woke = not events  # a timeout: a sweep or a poll is due
        for fd, _ in events:
            if fd == self._read:
                while True:
                    try:
                        if not os.read(self._read, 4096):
                            break
                    except BlockingIOError:
                        break
            elif fd == self.signal_fd:
                try:
                    caught = os.read(fd, 4096)
                except BlockingIOError:
                    caught = b""
                woke = _dispatch_signals(caught) or woke
            else:
                self.ready.append(fd)
                woke = True
        if woke and not self.pending:
            ref = _state.ref
            if ref is not None:
                self.pending = True
                try:
                    ref.tell(Wake())
                except pykka.ActorDeadError:
                    self.pending = False


def _waiter() -> _Waiter:
    """The process's waiter, made on first use."""
    with _state.waiter_lock:
        if _state.waiter is None:
            _state.waiter = _Waiter()
        return _state.waiter.running()


class Reaper(Actor):
    """Messages: `Watch(pid, owner)`, `Wake()`, `ReapAll(on)`."""

    use_daemon_thread = True

    def __init__(self, reap_all: bool = False):
        super().__init__()
        self.reap_all = reap_all
        self.watched: dict[int, _Watched] = {}  # pid -> its owner and pidfd
        self.pids: dict[int, int] = {}  # pidfd -> pid
        self.held: collections.OrderedDict[int, int] = collections.OrderedDict()
        self.polled: dict[int, object] = {}  # pid -> owner, watched without a pidfd
        self._route_lost = False
        self.waiter: _Waiter | None = None
        self._exits: list = []  # (pid, status, owner) collected in this wake, not yet sent

    def on_start(self) -> None:
        self.waiter = _waiter()
        self.waiter.pending = False  # a Wake meant for a dead predecessor is lost: re-arm
        self._set_timeout()
        self.actor_ref.tell(Wake())  # reports and exits that came while no Reaper ran

    def on_stop(self) -> None:
        for entry in self.watched.values():
            self.waiter.drop(entry.fd)
            os.close(entry.fd)
        self.watched, self.pids = {}, {}

    def on_failure(self, *exc_info) -> None:
        self.on_stop()

    def on_receive(self, message):
        try:
            self._receive(message)
        except Exception:  # noqa: BLE001 - the bridge must outlive any bad message
            log.exception("SIGCHLD bridge: failed on %r (watching %d pids, holding %d exits); "
                          "carrying on", message, len(self.watched), len(self.held))
        finally:
            self._send_exits()

    def _send_exits(self) -> None:
        """Send the exits this message collected (why after the last: "Sending"
        in the module's text)."""
        exits, self._exits = self._exits, []
        for pid, status, owner in exits:
            _forward(pid, status, owner)

    def _receive(self, message) -> None:
        match message:
            case Wake():
                self._collect()
            case Watch(pid, owner, pidfd):
                self._watch(pid, owner, pidfd)
            case ReapAll(on):
                self.reap_all = bool(on)
                self._set_timeout()
                self._collect()
            case _:
                log.warning("SIGCHLD bridge: unknown message %r", message)

    def _timeout(self) -> float | None:
        if self.polled:
            return POLL_INTERVAL
        return ORPHAN_SWEEP if self.reap_all and self._route_lost else None

    def _set_timeout(self) -> None:
        timeout = self._timeout()
        if timeout != self.waiter.timeout:
            self.waiter.timeout = timeout
            self.waiter.poke()  # takes effect now

    # -- registering -------------------------------------------------------

    def _watch(self, pid: int, owner, pidfd: int | None = None) -> None:
        known = self.watched.get(pid)
        if known is not None:  # watched already: the newest owner gets the exit
            known.owner = owner
            if pidfd is not None:
                os.close(pidfd)
            return
        try:
            fd = pidfd if pidfd is not None else _pidfd_open(pid)
        except ProcessLookupError:
            if pid in self.held:
                _forward(pid, self.held.pop(pid), owner)
            else:
                log.warning("pid %d is gone and its exit status with it (reaped elsewhere "
                            "in this process, or never ours)", pid)
                _forward(pid, None, owner)
            return
        except OSError as err:  # out of file descriptors: poll it
            log.error("SIGCHLD bridge: cannot open a pidfd for %d (%s): polling it every %s s",
                      pid, err, POLL_INTERVAL)
            self.polled[pid] = owner
            self._set_timeout()
            return
        # A pid given without a pidfd is a child of ours (a spawn, an orphan
        # found among our children) and, unless the sweep holds its status,
        # not yet reaped: no one else's.  If someone did reap it (SIG_IGN, a
        # foreign waitpid) and its pid was reused, waitid says so at its exit.
        child = (pidfd is None and pid not in self.held) or _is_child(fd)
        if pid in self.held:
            status = self.held.pop(pid)
            if not child:  # our child, swept before its watch came; its pid now names a stranger
                os.close(fd)
                _forward(pid, status, owner)
                return
            # else a new child has the pid of a swept orphan: that status is not its own
        self.watched[pid] = _Watched(owner, fd, child, pidfd is not None)
        self.pids[fd] = pid
        self._living_waiter().add(fd)

    def _living_waiter(self) -> _Waiter:
        return self.waiter.running()

    # -- collecting ---------------------------------------------------------

    def _collect(self) -> None:
        waiter = self._living_waiter()
        waiter.pending = False
        if self.reap_all:  # first: one waitpid a child, and the pidfds it ends are skipped
            self._sweep()
        ready = waiter.ready
        while ready:
            fd = ready.popleft()
            pid = self.pids.get(fd)
            if pid is not None:
                self._ready(pid, self.watched[pid])
        if self.polled:
            self._poll()
        if self.reap_all:
            self._check_route()

    def _ready(self, pid: int, entry: _Watched) -> None:
        """`pid`'s pidfd was reported readable: collect its exit."""
        status = None
        if entry.child:
            try:
                info = os.waitid(os.P_PIDFD, entry.fd, os.WEXITED | os.WNOHANG)
            except ChildProcessError:
                log.warning("child %d was reaped by someone else (SIGCHLD set to SIG_IGN, or a "
                            "waitpid elsewhere in this process): its exit status is unknown", pid)
            else:
                if info is None:  # a stale report: it runs on
                    self.waiter.rearm(entry.fd)
                    return
                status = wait_status(info)
        elif not _readable(entry.fd):  # a stale report: it runs on
            self.waiter.rearm(entry.fd)
            return
        self._done(pid, status)

    def _done(self, pid: int, status: int | None) -> None:
        entry = self.watched.pop(pid)
        del self.pids[entry.fd]
        if entry.shared:  # else closing its only descriptor takes it out of the epoll set
            self.waiter.drop(entry.fd)
        os.close(entry.fd)
        self._exits.append((pid, status, entry.owner))

    def _sweep(self) -> None:
        """Reap every exited child (daemon): forward watched ones, hold the rest."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.watched:
                self._done(pid, status)
            elif pid in self.polled:
                self._exits.append((pid, status, self.polled.pop(pid)))
            else:
                self.held[pid] = status
                self.held.move_to_end(pid)
                while len(self.held) > HELD_MAX:
                    self.held.popitem(last=False)

    def _poll(self) -> None:
        for pid, owner in list(self.polled.items()):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not our child (or reaped elsewhere): is it gone?
                try:
                    os.kill(pid, 0)
                    continue
                except ProcessLookupError:
                    done, status = pid, None
                except PermissionError:
                    continue
            if done:
                del self.polled[pid]
                self._exits.append((pid, status, owner))
        self._set_timeout()

    def _check_route(self) -> None:
        if not self._route_lost and signal.getsignal(signal.SIGCHLD) is not _noop:
            self._route_lost = True
            log.error("SIGCHLD bridge: the daemon's SIGCHLD handler was replaced (now %r): "
                      "watched children are still seen through their pidfds; orphans are "
                      "reaped every %s s from now on", signal.getsignal(signal.SIGCHLD),
                      ORPHAN_SWEEP)
            self._set_timeout()


def _pidfd_open(pid: int) -> int:
    try:
        return os.pidfd_open(pid)
    except OSError as err:
        if err.errno not in (errno.EMFILE, errno.ENFILE) or not _raise_fd_limit():
            raise
    return os.pidfd_open(pid)


def _raise_fd_limit() -> bool:
    """Raise the soft limit on open files (one pidfd a watched process); True if raised."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft >= hard:
        return False
    new = hard if hard != resource.RLIM_INFINITY else max(soft * 2, 65536)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    except (ValueError, OSError):
        return False
    log.info("SIGCHLD bridge: raised the open-file limit from %d to %d for pidfds", soft, new)
    return True


def _readable(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def _is_child(fd: int) -> bool:
    try:
        os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def _forward(pid: int, status: int | None, owner) -> None:
    if owner is None:
        return
    try:
        owner.tell(Exited(pid, status))
    except pykka.ActorDeadError:
        pass


# -- signals (the daemon) ------------------------------------------------------


class _State:
    ref: pykka.ActorRef | None = None
    reap_all = False  # the mode of the running bridge, kept for a restart
    lock = threading.Lock()
    handlers: dict[int, object] = {}  # signum -> callable(signum), run on the waiting thread
    waiter: _Waiter | None = None
    waiter_lock = threading.Lock()


_state = _State()


def _noop(signum, frame) -> None:
    """The Python-level handler: the work happens on the waiting thread."""


def _dispatch_signals(data: bytes) -> bool:
    """Run the handlers of the signals caught (their numbers, as the wakeup
    pipe gives them); True if SIGCHLD was among them (the Reaper's Wake)."""
    # The C-level handler writes each caught signal's number to the wakeup
    # pipe, whichever thread the kernel picked; we hand them to actors here,
    # so no signal waits for the main thread to run Python code.
    sigchld = False
    for signum in dict.fromkeys(data):  # once per kind in a burst, in order
        handler = _state.handlers.get(signum)
        if handler is _sigchld:
            sigchld = True
        elif handler is not None:
            try:
                handler(signum)
            except Exception:  # noqa: BLE001 - a handler must not kill the thread
                log.exception("signal %d handler failed", signum)
    return sigchld


def _install(signum: int, handler) -> None:
    """Route `signum` to `handler(signum)` on the waiting thread (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(f"clinit routes {signal.Signals(signum).name} only from the main "
                           "thread (start the daemon there)")
    waiter = _waiter()
    if waiter.signal_fd is None:
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        waiter.listen_to_signals(read_fd)
    _state.handlers[signum] = handler
    signal.signal(signum, _noop)


def on_signal(signum: int, handler) -> None:
    """Have `handler(signum)` called (on the waiting thread) when `signum` arrives.

    For the daemon, which owns its process: this takes over the signal's
    handler and the signal wakeup fd.  Must be called from the main
    thread.  The handler should only hand the signal to an actor.
    """
    with _state.lock:
        _install(signum, handler)


def _sigchld(signum: int) -> None:
    """SIGCHLD's route: the waiting thread wakes the Reaper (see _dispatch_signals)."""


def ensure(reap_all: bool | None = None) -> pykka.ActorRef:
    """Start the bridge if it is not running, and return its ref.

    Library use (the default) installs no signal handler and may start
    from any thread.  `reap_all=True` (the daemon, a child subreaper)
    also reaps every other child of this process, woken by SIGCHLD: that
    first call must come from the main thread.
    """
    ref = _state.ref
    if reap_all is None and ref is not None and ref.is_alive():
        return ref  # running, and no mode asked for: no lock (every process actor asks)
    with _state.lock:
        if reap_all and _state.handlers.get(signal.SIGCHLD) is None:
            _install(signal.SIGCHLD, _sigchld)
        ref = _state.ref
        if ref is None or not ref.is_alive():
            if reap_all is not None:
                _state.reap_all = bool(reap_all)
            ref = Reaper.start(_state.reap_all)  # it wakes itself: sweeps what exited before
            _state.ref = ref
        elif reap_all is not None and bool(reap_all) != _state.reap_all:
            _state.reap_all = bool(reap_all)
            ref.tell(ReapAll(_state.reap_all))  # sweeps at once, too
    return ref


def watch(pid: int, owner, pidfd: int | None = None) -> None:
    """Send `owner` `Exited(pid, status)` when `pid` ends.

    With `pidfd` (the caller's, which it keeps), the process it names is
    watched, not whatever has the pid by the time the bridge opens one:
    adoption checks a survivor through its pidfd, then hands it over.

    `status` is a wait status, or None when it cannot be known: `pid` is
    not a child of this process (an adopted survivor), or someone else
    reaped it.  The exit may already have happened: a zombie is still
    reported.  A pid given without a pidfd is taken to be a child (one
    that is not is still reported, with None and a warning); give a
    pidfd for any other process.
    """
    ref = _state.ref
    if ref is None or not ref.is_alive():
        ref = ensure()
    ref.tell(Watch(pid, owner, None if pidfd is None else os.dup(pidfd)))
