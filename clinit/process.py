"""The Process actor: one cltab entry's process and its state machine (SPEC §3).

A Process runs its entry's command as `/bin/sh -c COMMAND` in a session
of its own, learns of its exit from the SIGCHLD bridge, restarts it
(respawn, with a rate limit), and stops it gracefully: SIGINT to the
whole process group, SIGTERM `term_delay` seconds later, SIGKILL
`kill_delay` seconds after that.  Every transition is reported to the
listener (the Group) as `("process", urn, tag, state, rc)`.
"""

from __future__ import annotations

import enum
import logging
import os
import signal
import time
from typing import Any, NamedTuple

import pykka

from . import reaper, timers
from .fsm import Machine, row, to_dot

__all__ = ["Process", "ProcessState", "Timings", "TABLE", "dot"]

log = logging.getLogger("clinit.process")


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
        return self.value


S = ProcessState
_STOPPABLE = (S.RUNFG, S.RUNBG, S.RUNTEST, S.RUNNING, S.DONE, S.PAUSING, S.TESTING, S.PASS, S.FAIL)

TABLE = (
    row(S.CONFIGURED, "start", S.SETUP, action="check_mode", note="the mode picks the way"),
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
    row(S.DONE, "exited", S.PAUSING, guard="is_respawn", action="check_rate"),
    row(S.DONE, "exited", S.DONE, action="record_exit", note="once: not restarted"),
    row(S.PAUSING, "continue", S.RUNBG, action="exec"),
    row(S.PAUSING, "too_rapid", S.PAUSING, action="pause", note="a timer sends continue later"),
    row(S.TESTING, "rc_zero", S.PASS),
    row(S.TESTING, "rc_nonzero", S.FAIL),
    row((S.PASS, S.FAIL), "start", S.SETUP, action="check_mode", note="tests re-run"),
    row(_STOPPABLE, "stop", S.STOPPING, guard="alive", action="signal_group"),
    row(_STOPPABLE, "stop", S.CONFIGURED, note="nothing runs: stopped at once"),
    row(S.STOPPING, "timeout", S.STOPPING, action="escalate"),
    row(S.STOPPING, "exited", S.CONFIGURED, action="finish_stop"),
)

#: signals of a stop, in order; the delay before each after the first is a Timings field
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
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

    @classmethod
    def from_settings(cls, settings: dict | None) -> "Timings":
        settings = settings or {}
        return cls(**{k: settings[k] for k in cls._fields if settings.get(k) is not None})


def dot() -> str:
    """The process machine as Graphviz DOT."""
    return to_dot("process", TABLE, ProcessState)


class Process(pykka.ThreadingActor):
    """One entry's process.  `Process.start(entry, ...)` returns an ActorRef."""

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
        self._env = dict(os.environ, CLINIT_GROUP=entry.group, CLINIT_TAG=entry.tag,
                         CLINIT_LEVEL=level if level is not None else "")
        self._gen = 0  # bumps on every stop, so stale timer messages are ignored
        self._stop_step = 0
        self._timer: int | None = None
        self._last_start = 0.0
        self._quick = 0  # restarts in a row that came under respawn_window
        self._down_token: Any = None  # acknowledge the stop that carried it

    # -- public API (through a proxy) ----------------------------------

    def up(self) -> None:
        """The table's `start` event."""
        self.machine.fire("start")

    def down(self, token: Any = None) -> None:
        """The table's `stop` event.

        With a token, the listener hears `("stopped", urn, token)` once
        the process is CONFIGURED (at once if nothing runs).
        """
        self._gen += 1
        if token is not None:
            self._down_token = token
        self.machine.fire("stop")
        self._ack_stop()

    def _ack_stop(self) -> None:
        if self._down_token is not None and self.machine.state is S.CONFIGURED:
            token, self._down_token = self._down_token, None
            self._notify(("stopped", self.actor_urn, token))

    def state(self) -> ProcessState:
        return self.machine.state

    def pid(self) -> int | None:
        return self._pid

    def transitions(self) -> list:
        return list(self.machine.log)

    # -- messages --------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        kind = message[0]
        if kind == reaper.EXITED:
            _, pid, status = message
            if pid == self._pid:
                self._pid = None
                self.rc = os.waitstatus_to_exitcode(status)
                self.machine.fire("exited")
        elif kind == "up":
            self.up()
        elif kind == "down":
            self.down(*message[1:])
        elif kind in ("timeout", "continue"):
            if message[1] == self._gen:
                self._timer = None
                self.machine.fire(kind)
        else:
            log.warning("%s: unknown message %r", self.entry.tag, message)

    def on_transition(self, old, event, new) -> None:
        self._notify(("process", self.actor_urn, self.entry.tag, new, self.rc))

    def _notify(self, message: tuple) -> None:
        if self.listener is not None:
            try:
                self.listener.tell(message)
            except pykka.ActorDeadError:
                self.listener = None

    def on_failure(self, exc_type, exc_value, tb) -> None:
        log.error("process %s failed in state %s: %r; stopping its process",
                  self.entry.tag, self.machine.state, exc_value)
        self._notify(("fault", self.actor_urn, self.entry.tag, f"{exc_type.__name__}: {exc_value}"))
        old = self.machine.state
        if self._pid is not None and old is not S.STOPPING:
            self.machine.state = S.STOPPING
            self.machine.log.append((old, "fault", S.STOPPING))
            self.on_transition(old, "fault", S.STOPPING)
            self.signal_group()

    def on_stop(self) -> None:
        # The actor ends: its process must not outlive it.
        timers.cancel(self._timer)
        if self._pgid is not None and self._pid is not None:
            _killpg(self._pgid, signal.SIGKILL)

    # -- guards ----------------------------------------------------------

    def is_respawn(self) -> bool:
        return self.entry.mode == "respawn"

    def alive(self) -> bool:
        return self._pid is not None

    # -- actions ---------------------------------------------------------

    def check_mode(self) -> None:
        self.machine.fire(self.entry.mode)

    def exec(self) -> None:
        self._last_start = time.monotonic()
        try:
            pid = os.posix_spawn("/bin/sh", ["/bin/sh", "-c", self.entry.command], self._env,
                                 file_actions=self._file_actions(), setsid=True,
                                 setsigmask=(), setsigdef=_DEFAULT_SIGNALS)
        except OSError as err:
            self.machine.fire("execfailed", err)
            return
        self._pid = self._pgid = pid
        self.rc = None
        reaper.watch(pid, self.actor_ref)
        self.machine.fire("started")

    def _file_actions(self) -> list:
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]
        if self.timings.log:
            actions += [(os.POSIX_SPAWN_OPEN, 1, self.timings.log,
                         os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640),
                        (os.POSIX_SPAWN_DUP2, 1, 2)]
        return actions

    def log_exec_error(self, err: OSError) -> None:
        log.error("%s: cannot run /bin/sh: %s", self.entry.tag, err)

    def record_exit(self) -> None:
        log.debug("%s exited with %s", self.entry.tag, self.rc)

    def check_status(self) -> None:
        self.machine.fire("rc_zero" if self.rc == 0 else "rc_nonzero")

    def check_rate(self) -> None:
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
        log.warning("%s respawning too rapidly: sleeping %s seconds", self.entry.tag, _num(pause))
        self._timer = timers.after(pause, self.actor_ref, ("continue", self._gen))

    def signal_group(self) -> None:
        self._stop_step = 0
        _killpg(self._pgid, _STOP_SIGNALS[0])
        self._timer = timers.after(self.timings.term_delay, self.actor_ref, ("timeout", self._gen))

    def escalate(self) -> None:
        self._stop_step = min(self._stop_step + 1, len(_STOP_SIGNALS) - 1)
        sig = _STOP_SIGNALS[self._stop_step]
        log.info("%s did not stop: sending %s", self.entry.tag, sig.name)
        _killpg(self._pgid, sig)
        if sig is signal.SIGTERM:
            self._timer = timers.after(self.timings.kill_delay, self.actor_ref, ("timeout", self._gen))

    def finish_stop(self) -> None:
        timers.cancel(self._timer)
        self._timer = None
        # The leader is gone; whatever is left of its process group (a
        # background grandchild that ignored SIGINT) goes with it.
        _killpg(self._pgid, signal.SIGKILL)
        self._ack_stop()


def _killpg(pgid: int | None, sig: int) -> None:
    if pgid is None:
        return
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
