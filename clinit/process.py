"""The Process actor: one cltab entry's process and its state machine (SPEC §3).

A Process runs its entry's command as `/bin/sh -c COMMAND` in a session
of its own, learns of its exit from the SIGCHLD bridge, restarts it
(respawn, with a rate limit), and stops it gracefully: SIGINT to the
whole process group, SIGTERM `term_delay` seconds later, SIGKILL
`kill_delay` seconds after that.  Every transition is reported to the
listener (the Group) as a `messages.ProcessChanged`.  Every change of
state goes through the table: the stop ladder is the rows `stop`,
`term_timeout`, `kill_timeout` (and `give_up` for a leaderless stop),
faults are the `fault` rows.

Leftovers.  A leader that exits may leave processes in its group (`once`
entry `sleep 1000 & exit 0`, a `wait` script that starts a daemon).  The
group's id is remembered while it has members; a later stop signals it
with the same SIGINT/SIGTERM/SIGKILL ladder and ends when the group is
empty (or `kill_delay` after the SIGKILL).  A pgid is only signalled when
it is still provably ours: no Process started a new leader with that id
since, the process with that id does not exist (our leader was reaped),
and every member descends from this process (the daemon is a child
subreaper, so orphans are re-parented to it).  A respawn entry's next
instance starts only once the last one's leftovers are gone (the
PAUSING rows `leftovers` ... `leftovers_gone`, with the same ladder):
workers of a SIGKILLed nginx master would otherwise keep its port and
fail every restart.  A library user that is
not a subreaper fails the last check: the leftovers are then logged and
left alone.  A process that starts a session of its own (setsid) has left
the group and is out of reach, as with any process-group based init.

Adoption.  `Adopt` hands the actor a process an earlier daemon left
running (adoption.py): the `adopt` rows put it in RUNNING (wait) or DONE
with that pid, watched through its pidfd (reaper.watch; its exit status
is unknown, `rc` None) and signalled only while the pidfd shows it alive;
the `ran` rows restore an entry that had run and exited (a respawn entry
is restarted at once).

Faults.  An exception inside the actor (a bug, or an injected fault) is
caught around every message: it is logged with the tag and the state,
the group hears `messages.Fault`, and the actor stops its process with
the ordinary ladder (the `fault` rows: STOPPING, or CONFIGURED at once
when nothing runs).  It never
restarts it: the group turns FAILED and replaces the actor on the next
tell.  `CLINIT_FAULT_INJECT=process:TAG` (or `group:NAME`) in the
daemon's environment makes that actor raise once, when it first reaches
a running state (group: DONE) -- for tests of this policy only.
"""

from __future__ import annotations

import atexit
import enum
import logging
import os
import signal
import time
from typing import Any, NamedTuple

import pykka

from . import output, reaper, timers
from .actor import Actor
from .adoption import signal_group, signal_remnant
from .fsm import ANY, Machine, row, to_dot
from .journal import start_wall
from .messages import Adopt, Down, Exited, Fault, ProcessChanged, Stopped, Tick, Up
from .pgroups import Leftovers, claim, killpg, owner, release

__all__ = ["Process", "ProcessState", "Timings", "TABLE", "dot", "InjectedFault"]

log = logging.getLogger("clinit.process")



class InjectedFault(RuntimeError):
    """Raised by CLINIT_FAULT_INJECT (tests of the actor-fault policy)."""


_inject = {"value": os.environ.get("CLINIT_FAULT_INJECT") or None}


def injected_fault(kind: str, name: str) -> None:
    """Raise InjectedFault once if CLINIT_FAULT_INJECT names `kind:name`."""
    if _inject["value"] is not None and _inject["value"] == f"{kind}:{name}":
        _inject["value"] = None
        raise InjectedFault(f"fault injected by CLINIT_FAULT_INJECT={kind}:{name}")


class ProcessState(enum.Enum):
    CONFIGURED = "CONFIGURED"
    SETUP = "SETUP"
    RUNFG = "RUNFG"
    RUNBG = "RUNBG"
    RUNTEST = "RUNTEST"
    RUNNING = "RUNNING"
    DONE = "DONE"
    PAUSING = "PAUSING"
    TESTING = "TESTING"
    PASS = "PASS"
    FAIL = "FAIL"
    STOPPING = "STOPPING"

    def __str__(self) -> str:
        return self._value_  # the attribute itself: .value goes through enum's descriptor


S = ProcessState
_STOPPABLE = (S.RUNFG, S.RUNBG, S.RUNTEST, S.RUNNING, S.DONE, S.PAUSING, S.TESTING, S.PASS, S.FAIL)

TABLE = (
    row(S.CONFIGURED, "start", S.SETUP, action="check_mode", note="the mode picks the way"),
    # taking over from an earlier daemon killed with SIGKILL (Adopt, adoption.py)
    row(S.CONFIGURED, "adopt", S.RUNNING, guard="is_wait", action="watch_adopted",
        note="a wait entry's process an earlier daemon left running"),
    row(S.CONFIGURED, "adopt", S.DONE, action="watch_adopted",
        note="a background process an earlier daemon left running"),
    row(S.CONFIGURED, "ran", S.DONE, note="it ran and exited under an earlier daemon"),
    row(S.CONFIGURED, "ran_pass", S.PASS, note="a test that passed under an earlier daemon"),
    row(S.CONFIGURED, "ran_fail", S.FAIL, note="a test that failed under an earlier daemon"),
    row(S.SETUP, "wait", S.RUNFG, action="exec"),
    row(S.SETUP, "test", S.RUNTEST, action="exec"),
    row(S.SETUP, "once", S.RUNBG, action="exec"),
    row(S.SETUP, "respawn", S.RUNBG, action="exec"),
    row(S.SETUP, "off", S.CONFIGURED, note="an off entry never runs"),
    row(S.SETUP, "stop", S.CONFIGURED),
    row(S.RUNFG, "started", S.RUNNING),
    row((S.RUNFG, S.RUNNING), "exited", S.DONE, action="record_exit", note="a wait entry finished"),
    row(S.RUNTEST, "exited", S.TESTING, action="check_status"),
    row(S.RUNBG, "started", S.DONE, note="background entries run in DONE"),
    row((S.RUNFG, S.RUNBG, S.RUNTEST), "execfailed", S.CONFIGURED, action="log_exec_error"),
    row(S.DONE, "exited", S.PAUSING, guard="is_respawn", action="before_respawn"),
    row(S.DONE, "exited", S.DONE, action="record_exit", note="once: not restarted"),
    row(S.PAUSING, "continue", S.RUNBG, action="exec"),
    row(S.PAUSING, "too_rapid", S.PAUSING, action="pause", note="a timer sends continue later"),
    row(S.PAUSING, "leftovers", S.PAUSING, action="send_int",
        note="the last instance left processes in its group: the ladder before a restart"),
    row(S.PAUSING, "term_timeout", S.PAUSING, guard="clearing", action="send_term"),
    row(S.PAUSING, "kill_timeout", S.PAUSING, guard="clearing", action="send_kill"),
    row(S.PAUSING, "leftovers_gone", S.PAUSING, guard="clearing", action="check_rate"),
    row(S.PAUSING, "give_up", S.PAUSING, guard="clearing", action="gave_up"),
    row(S.TESTING, "rc_zero", S.PASS),
    row(S.TESTING, "rc_nonzero", S.FAIL),
    row((S.PASS, S.FAIL), "start", S.SETUP, action="check_mode", note="tests re-run"),
    row(_STOPPABLE, "stop", S.STOPPING, guard="alive", action="send_int", note="SIGINT first"),
    row(_STOPPABLE, "stop", S.CONFIGURED, note="nothing runs: stopped at once"),
    row(S.STOPPING, "term_timeout", S.STOPPING, action="send_term", note="term_delay after SIGINT"),
    row(S.STOPPING, "kill_timeout", S.STOPPING, action="send_kill", note="kill_delay after SIGTERM"),
    row(S.STOPPING, "give_up", S.CONFIGURED, action="abandon_stop",
        note="a leaderless stop: leftovers outlived SIGKILL by kill_delay"),
    row(S.STOPPING, "exited", S.CONFIGURED, action="finish_stop", note="the leader (or the last leftover) is gone"),
    row(ANY, "fault", S.STOPPING, guard="alive", action="send_int",
        note="the actor faulted: stop what runs, never restart it"),
    row(ANY, "fault", S.CONFIGURED, action="forget_groups", note="the actor faulted; nothing runs"),
)

_FAILING_WARN = 3  # failed runs in a row of a respawn entry before each warning
# every signal a child gets back at its default disposition, none blocked
_DEFAULT_SIGNALS = frozenset(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}


class Timings(NamedTuple):
    """The process settings (cltab `:::name:value` lines)."""

    respawn_limit: int = 5  # restarts each under respawn_window s before a pause
    respawn_window: float = 1.0
    respawn_pause: float = 60.0
    term_delay: float = 5.0  # SIGINT -> SIGTERM
    kill_delay: float = 10.0  # SIGTERM -> SIGKILL
    log: str | None = None  # stdout/stderr of children; None: inherit the daemon's
    logdir: str | None = None  # each entry's stdout/stderr to LOGDIR/TAG.log (wins over log)

    @classmethod
    def from_settings(cls, settings: dict | None) -> "Timings":
        settings = settings or {}
        return cls(**{k: settings[k] for k in cls._fields if settings.get(k) is not None})


def dot() -> str:
    """The process machine as Graphviz DOT."""
    return to_dot("process", TABLE, ProcessState)


class Process(Actor):
    """One entry's process.  `Process.start(entry, ...)` returns an ActorRef."""

    # A bare thread (clinit/actor.py): a threading.Thread costs 70 us of CPU
    # more an actor, and as a non-daemon one, starting thousands would grow
    # with the square of their number (threading scans every live one's
    # lock).  Like a daemon thread it does not hold up the interpreter's
    # exit; `_stop_left_at_exit` stops the actors instead.
    lean_thread = True

    # Rare: set only when a leader left processes behind, or was adopted.
    # As class defaults they cost a process actor nothing until then: its
    # attributes must stay under 30, or CPython stops sharing the keys of
    # their dict (1.6 KiB more a process; tests/test_process.py checks).
    _leftovers: Leftovers | None = None  # what exited leaders left in their groups
    _pidfd: int | None = None  # the leader is adopted (not our child): its pidfd

    def __init__(self, entry, listener: pykka.ActorRef | None = None,
                 timings: Timings | dict | None = None, level: str | None = None):
        super().__init__()
        reaper.ensure()
        self.entry = entry
        self.listener = listener
        self.timings = timings if isinstance(timings, Timings) else Timings.from_settings(timings)
        self.machine = Machine(self, TABLE, S.CONFIGURED)
        self._pid: int | None = None  # the running child, if any
        self._pgid: int | None = None
        self.rc: int | None = None  # last exit code (negative: killed by that signal)
        self.level = level if level is not None else ""
        self._gen = 0  # bumps on every stop, so stale timer ticks are ignored
        self._timer: int | None = None
        self._last_start = 0.0  # monotonic
        self._started: float | None = None  # wall clock of the last spawn, for operators
        self._restarts = 0  # respawns since the actor started
        self._failing = 0  # failed exits in a row of a respawn entry
        self._throttled_until: float | None = None
        self._quick = 0  # restarts in a row that came under respawn_window
        self._down_token: Any = None  # acknowledge the stop that carried it
        self._final = False  # end the actor once that stop is acknowledged
        self._stopping_leader = False  # the stop under way began with a live leader
        self._clearing = False  # PAUSING: the last instance's leftovers are being stopped
        self._reached: list = []  # states entered and not yet reported
        self._exit_rc: int | None = None  # an exit not yet reported (a respawn clears self.rc)
        self._handling = False  # inside on_receive: transitions are reported at its end

    @property
    def _name(self) -> str:
        """How log records name it."""
        return f"{self.entry.group}/{self.entry.tag}"

    # -- public API (through a proxy): each is the same way in as its message

    def up(self) -> None:
        """The table's `start` event (`Up()`)."""
        self.on_receive(Up())

    def down(self, token: Any = None, final: bool = False) -> None:
        """The table's `stop` event (`Down(token, final)`).

        With a token, the listener hears `Stopped(urn, token)` once the
        process is CONFIGURED (at once if nothing runs).  With `final`,
        the actor then ends itself (its owner has forgotten it), so a
        group dropping a thousand processes does not stop each one.
        """
        self.on_receive(Down(token, final))

    def state(self) -> ProcessState:
        return self.machine.state

    def pid(self) -> int | None:
        return self._pid

    def transitions(self) -> list:
        return list(self.machine.log)

    # -- messages --------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        self._handling = True
        try:
            self._receive(message)
        except Exception as exc:  # noqa: BLE001 - the fault policy is the handler
            self._fault(exc)
        finally:
            self._handling = False
            self._report()

    def _receive(self, message: Any) -> None:
        match message:
            case Exited(pid, status):
                if pid == self._pid:
                    self._leader_exited(status)
                elif self._leftovers is not None and self._leftovers.unwatch(pid):
                    self._check_leftovers()
            case Up():
                self.machine.fire("start")
            case Down(token, final):
                self._down(token, final)
            case Tick(event, gen):
                if gen == self._gen:
                    self._timer = None
                    self.machine.fire(event)
            case Adopt():
                self._adopt(message)
            case _:
                log.warning("%s: unknown message %r", self._name, message)

    def _leader_exited(self, status: int | None) -> None:
        self.rc = self._exit_rc = None if status is None else os.waitstatus_to_exitcode(status)
        self._pid = None
        state = self.machine.state
        expected = state is S.STOPPING or self.entry.mode != "respawn"
        # an exit our own stop caused is the group's to sum up (at INFO, once
        # per stop): a thousand lines would slow a mass stop and bury the rest
        level = logging.DEBUG if state is S.STOPPING else logging.INFO
        if log.isEnabledFor(level):  # the text is not made for nothing
            log.log(level, "%s: pid %s %s%s", self._name, self._pgid, _exit_text(self.rc),
                    "" if expected else " (unexpected: respawning)")
        if self.entry.mode == "respawn" and state is not S.STOPPING:
            self._count_failure()
        if state is not S.STOPPING and self._pidfd is None:  # an adopted group is not provably ours
            self._remember_leftover(self._pgid)
        self.machine.fire("exited")

    def _count_failure(self) -> None:
        """A respawn entry that keeps failing is worth a warning, however slowly it fails."""
        lived = time.monotonic() - self._last_start
        if self.rc == 0 or lived >= max(self.timings.respawn_pause, self.timings.respawn_window):
            self._failing = 0
            return
        self._failing += 1
        if self._failing >= _FAILING_WARN:
            log.warning("%s keeps failing: %d failed runs in a row (last: %s, after %.1f s)",
                        self._name, self._failing, _exit_text(self.rc), lived)

    def _down(self, token: Any, final: bool = False) -> None:
        self._final = self._final or final
        if token is not None:
            self._down_token = token
        if self.machine.state is not S.STOPPING:  # a stop under way keeps its ladder going
            self._void_timer()  # what was under way (a respawn pause) is over
            self.machine.fire("stop")
        self._ack_stop()

    def _ack_stop(self) -> None:
        if self._down_token is not None and self.machine.state is S.CONFIGURED:
            token, self._down_token = self._down_token, None
            self._notify(Stopped(self.actor_urn, token))
            if self._final:
                self.stop()

    def _void_timer(self) -> None:
        self._gen += 1
        timers.cancel(self._timer)
        self._timer = None
        self._throttled_until = None

    def _arm(self, delay: float, event: str) -> None:
        self._timer = timers.after(delay, self.actor_ref, Tick(event, self._gen))

    def on_transition(self, old, event, new) -> None:
        if new in (S.DONE, S.RUNNING) and _inject["value"] is not None:
            injected_fault("process", self.entry.tag)
        if not self._final:  # a final stop is reported once, by its Stopped ack
            self._reached.append(new)
            if not self._handling:
                self._report()

    def _report(self) -> None:
        """The states entered since the last report, as one ProcessChanged: a
        spawn (SETUP, RUNBG, DONE in one handler) is one message, not three."""
        if self._reached:
            reached, self._reached = self._reached, []
            if not self._final:
                self._notify(self.report(tuple(reached[:-1])))
            self._exit_rc = None

    def report(self, path: tuple = ()) -> ProcessChanged:
        """What the process is now, as its listener hears it (with the exit
        that a respawn in the same handler has already cleared)."""
        rc = self.rc if self.rc is not None else self._exit_rc
        return ProcessChanged(self.actor_urn, self.entry.tag, self.machine.state, rc,
                              self._pid, self._started, self._restarts, self._throttled_until,
                              path)

    def _notify(self, message: tuple) -> None:
        if self._reached and not isinstance(message, ProcessChanged):
            self._report()  # the states it reached come before an ack or a fault
        if self.listener is not None:
            try:
                self.listener.tell(message)
            except pykka.ActorDeadError:
                self.listener = None

    # -- faults ----------------------------------------------------------

    def _fault(self, exc: BaseException) -> None:
        log.error("process %s failed in state %s: %s: %s; stopping its process",
                  self._name, self.machine.state, type(exc).__name__, exc, exc_info=exc)
        try:
            self._notify(Fault(self.actor_urn, self.entry.tag, f"{type(exc).__name__}: {exc}"))
            self._void_timer()  # timers of whatever was under way are void
            self.machine.fire("fault")  # STOPPING with the ladder, or CONFIGURED
            self._ack_stop()
        except Exception:  # noqa: BLE001 - last resort: nothing may run unsupervised
            log.exception("process %s: the graceful stop after the fault failed too: "
                          "killing its process group", self._name)
            self._kill_all()

    def on_failure(self, exc_type, exc_value, tb) -> None:
        # Only reached if pykka itself stops the actor on an exception (the
        # handlers are guarded): no ladder is possible any more.
        log.error("process %s died in state %s: %r; killing its process group",
                  self._name, self.machine.state, exc_value)
        self._notify(Fault(self.actor_urn, self.entry.tag, f"{exc_type.__name__}: {exc_value}"))
        self._kill_all()

    def on_stop(self) -> None:
        # The actor ends: its process must not outlive it.
        timers.cancel(self._timer)
        self._kill_all()
        self._close_pidfd()
        if self._pgid is not None:
            release(self._pgid, self.actor_urn)
        if self._leftovers is not None:
            self._leftovers.forget()

    def _kill_all(self) -> None:
        if self._pgid is not None and self._pid is not None:
            self._signal_leader(signal.SIGKILL)
        for pgid in self._live_leftovers(watch=False):
            killpg(pgid, signal.SIGKILL)

    # -- leftovers of exited leaders (kept by pgroups.Leftovers) ------------

    def _remember_leftover(self, pgid: int | None) -> None:
        """The leader of `pgid` was just reaped: keep the group if it has members."""
        if pgid is None:
            return
        if self._leftovers is None:
            self._leftovers = Leftovers(self.actor_urn, self._name)
        self._leftovers.remember(pgid)

    def _live_leftovers(self, watch: bool = True) -> list[int]:
        """The leftover groups that still have members and are provably ours;
        with `watch`, their orphans' exits wake us up."""
        if self._leftovers is None:
            return []
        return self._leftovers.live(self._watch_orphan if watch else None)

    def _watch_orphan(self, pid: int) -> None:
        reaper.watch(pid, self.actor_ref)

    def _check_leftovers(self) -> None:
        """A leftover orphan exited: a stop without a leader ends when none is left."""
        state = self.machine.state
        if state is S.STOPPING and self._pid is None and not self._stopping_leader:
            if not self._live_leftovers():
                self.machine.fire("exited")
        elif state is S.PAUSING and self._clearing and not self._live_leftovers():
            self.machine.fire("leftovers_gone")

    def forget_groups(self) -> None:
        if self._pid is None and self._pgid is not None:
            release(self._pgid, self.actor_urn)
            self._pgid = None
            self._close_pidfd()
        if self._leftovers is not None:
            self._leftovers.forget()
            self._leftovers = None

    # -- guards ----------------------------------------------------------

    def is_respawn(self) -> bool:
        return self.entry.mode == "respawn"

    def is_wait(self) -> bool:
        return self.entry.mode == "wait"

    def clearing(self) -> bool:
        return self._clearing

    def alive(self) -> bool:
        return self._pid is not None or bool(self._live_leftovers(watch=False))

    # -- actions ---------------------------------------------------------

    def check_mode(self) -> None:
        self.machine.fire(self.entry.mode)

    def exec(self) -> None:
        respawn = self.machine.log[-1][0] is S.PAUSING if self.machine.log else False
        if self._throttled_until is not None:
            self._throttled_until = None
            log.info("%s: respawn pause over: resuming", self._name)
        self._last_start = time.monotonic()
        self._close_pidfd()  # an adopted leader's group is behind us
        try:
            env = child_environ(CLINIT_GROUP=self.entry.group, CLINIT_TAG=self.entry.tag,
                                CLINIT_LEVEL=self.level)  # per spawn: idle actors stay small
            logdir = self.timings.logdir
            out = output.pipe_for(logdir, self.entry.tag) if logdir else self._open_log()
            try:
                pid = os.posix_spawn("/bin/sh", ["/bin/sh", "-c", self.entry.command], env,
                                     file_actions=self._file_actions(out), setsid=True,
                                     setsigmask=(), setsigdef=_DEFAULT_SIGNALS)
            finally:
                if out is not None:
                    os.close(out)  # the child has its copy
        except OSError as err:
            self.machine.fire("execfailed", err)
            return
        self._pid = self._pgid = pid
        self._started = time.time()
        claim(pid, self.actor_urn)  # a reused id now names this new group only
        self.rc = None
        if respawn:
            self._restarts += 1
            log.info("%s: respawned as pid %d (restart %d)", self._name, pid, self._restarts)
        else:
            log.info("%s: spawned pid %d (%s, level %s)", self._name, pid, self.entry.mode,
                     self.level)
        reaper.watch(pid, self.actor_ref)
        self.machine.fire("started")

    def _open_log(self) -> int | None:
        """The `log` file, opened here and not in the child: os.posix_spawn keeps the
        GIL until the child execs, so an open that blocks there (a FIFO nobody
        reads) would freeze the whole daemon.  O_NONBLOCK makes such a FIFO fail
        at once (ENXIO); the children then write to it blocking as usual."""
        if not self.timings.log:
            return None
        fd = os.open(self.timings.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                     | os.O_NONBLOCK, 0o640)
        os.set_blocking(fd, True)
        return fd

    def _file_actions(self, out: int | None = None) -> list:
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]
        if out is not None:  # a pipe that output.py copies to LOGDIR/TAG.log, or the log file
            actions += [(os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, out, 2)]
        return actions

    def log_exec_error(self, err: OSError) -> None:
        log.error("%s: cannot run /bin/sh: %s", self._name, err)

    def record_exit(self) -> None:
        """Nothing to do: the exit was logged as it was reaped."""

    def check_status(self) -> None:
        self.machine.fire("rc_zero" if self.rc == 0 else "rc_nonzero")

    def before_respawn(self) -> None:
        """The last instance's leftovers go first (a port they hold would fail every restart)."""
        if self._live_leftovers(watch=False):
            log.info("%s: the last instance left processes in its group: stopping them "
                     "before the respawn", self._name)
            self.machine.fire("leftovers")
        else:
            self.check_rate()

    def check_rate(self) -> None:
        self._clearing = False
        t = self.timings
        if time.monotonic() - self._last_start < t.respawn_window:
            self._quick += 1
        else:
            self._quick = 0
        if self._quick > t.respawn_limit:
            self._quick = 0
            self.machine.fire("too_rapid")
        else:
            self.machine.fire("continue")

    def pause(self) -> None:
        pause = self.timings.respawn_pause
        self._throttled_until = time.time() + pause
        log.warning("%s respawning too rapidly: sleeping %s seconds", self.entry.tag, _num(pause))
        self._arm(pause, "continue")
        if not self._final and not self._handling:  # reported before the pause had an end
            self._notify(self.report())

    def send_int(self) -> None:
        """The stop ladder's first step: SIGINT to the process group and its leftovers."""
        self._stopping_leader = self._pid is not None
        self._clearing = self.machine.state is S.PAUSING
        self._signal_all(signal.SIGINT)
        self._arm(self.timings.term_delay, "term_timeout")
        self._check_leftovers()

    def send_term(self) -> None:
        log.info("%s did not stop: sending SIGTERM", self._name)
        self._signal_all(signal.SIGTERM)
        self._arm(self.timings.kill_delay, "kill_timeout")
        self._check_leftovers()

    def send_kill(self) -> None:
        log.info("%s did not stop: sending SIGKILL", self._name)
        self._signal_all(signal.SIGKILL)
        if not self._stopping_leader:
            # members we cannot see exit (not our children), or that do not
            # die even of SIGKILL: give up on them kill_delay from now
            self._arm(self.timings.kill_delay, "give_up")
        self._check_leftovers()

    def _signal_all(self, sig: int) -> None:
        if self._pid is not None:
            self._signal_leader(sig)
        for pgid in self._live_leftovers():
            killpg(pgid, sig)

    def _warn_outlived(self) -> None:
        log.warning("%s: processes left in its group(s) %s outlived SIGKILL by %s s: "
                    "giving up on them", self._name, self._live_leftovers(watch=False),
                    _num(self.timings.kill_delay))

    def gave_up(self) -> None:
        """PAUSING: the last instance's leftovers will not die; respawn anyway."""
        self._warn_outlived()
        self.forget_groups()
        self.check_rate()

    def abandon_stop(self) -> None:
        """STOPPING without a leader: the leftovers will not die; the stop ends."""
        self._warn_outlived()
        self.finish_stop()

    def finish_stop(self) -> None:
        timers.cancel(self._timer)
        self._timer = None
        # The leader is gone; whatever is left of its process group (a
        # background grandchild that ignored SIGINT) goes with it, and so do
        # the groups of earlier leaders.
        # (The leader was reaped a moment ago: its id cannot have been reused
        # unless every member died and the kernel went round all pids since.)
        if self._stopping_leader and owner(self._pgid) == self.actor_urn:
            killpg(self._pgid, signal.SIGKILL)
        elif self._stopping_leader and self._pidfd is not None:
            signal_remnant(self._pgid, signal.SIGKILL)
        for pgid in self._live_leftovers(watch=False):
            killpg(pgid, signal.SIGKILL)
        self._stopping_leader = False
        self.forget_groups()
        self._ack_stop()

    # -- adoption: a process an earlier daemon left (adoption.py) -----------

    def _adopt(self, adopt: Adopt) -> None:
        """The table's `adopt`, `ran`, `ran_pass` or `ran_fail` row."""
        if self.machine.state is not S.CONFIGURED:
            log.warning("%s: cannot adopt in state %s", self._name, self.machine.state)
            if adopt.pidfd is not None:
                os.close(adopt.pidfd)
            return
        self.rc = adopt.rc
        if adopt.event == "adopt":
            self._pid = self._pgid = adopt.pid
            self._pidfd = adopt.pidfd
            self._started = start_wall(adopt.start)
        self.machine.fire(adopt.event)
        if adopt.event == "ran" and self.is_respawn():
            self.machine.fire("exited")  # it died while no daemon watched: respawn it

    def watch_adopted(self) -> None:
        log.info("%s: adopted pid %d, left running by an earlier daemon (%s, level %s)",
                 self._name, self._pid, self.entry.mode, self.level)
        reaper.watch(self._pid, self.actor_ref, pidfd=self._pidfd)

    def _signal_leader(self, sig: int) -> None:
        """Signal the leader's process group: ours with killpg, an adopted
        one only while its pidfd shows the leader alive (adoption.py)."""
        if self._pidfd is not None:
            signal_group(self._pidfd, self._pgid, sig)
        else:
            killpg(self._pgid, sig)

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


@atexit.register
def _stop_left_at_exit() -> None:
    """At interpreter exit, Process actors still running stop (killing their
    process groups) instead of vanishing with their daemon threads."""
    for ref in pykka.ActorRegistry.get_by_class(Process):
        try:
            ref.stop(block=True, timeout=5)
        except Exception:  # noqa: BLE001 - exiting anyway
            pass


def child_environ(**extra: str) -> dict:
    """A child's environment: os.environ as it is now, plus `extra`.

    CPython keeps os.environ on POSIX as a mapping of bytes (`_data`),
    which is copied in one C call (0.1 us); going through os.environ's
    mapping interface decodes every name and value (15 us for 40
    variables: about a third of a spawn's own Python time, at N=200).
    posix_spawn takes bytes names and values as they are."""
    data = getattr(os.environ, "_data", None)
    if not isinstance(data, dict) or not isinstance(next(iter(data), b""), bytes):
        return dict(os.environ, **extra)
    env = data.copy()
    for name, value in extra.items():
        env[name.encode()] = os.fsencode(value)
    return env


def _exit_text(rc: int | None) -> str:
    if rc is None:
        return "ended (not our child: status unknown)"
    if rc < 0:
        try:
            return f"was killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"was killed by signal {-rc}"
    return f"exited with code {rc}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
