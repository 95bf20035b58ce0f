"""The base of every clinit actor: a pykka.ThreadingActor made lean.

There is one actor (and one thread) per process of the table, so what
each costs is paid a thousand times.  Two things change from pykka's
defaults, neither in behaviour:

- the inbox is a `queue.SimpleQueue`: lighter than `queue.Queue`, and
  its put() is reentrant, so a signal handler may send to an actor;
- `actor_stopped` is a `Flag`, not a `threading.Event`: pykka only sets
  and tests it, and an Event carries a Condition with a waiter deque
  (its size: bench/RESULTS.md, "Choices in the code");
- with `lean_thread` (the process actors: one per process of the
  table), the actor's thread is started bare, with
  `_thread.start_new_thread`, not as a `threading.Thread`.  A Thread
  costs an Event, a name, its registration, and a start() that waits
  until the new thread has run: 70 us of CPU an actor, and the creating
  thread (the group's) waits for each.  A bare thread behaves as a
  daemon Thread; it is not in `threading.enumerate()`, has no name, and
  gets the hooks of `threading.settrace`/`setprofile` (coverage,
  profilers) as a Thread would.
"""

from __future__ import annotations

import _thread
import queue
import sys
import threading

import pykka

__all__ = ["Actor", "Flag"]

_wait_lock = threading.Lock()


class Flag:
    """A one-way threading.Event (set, is_set, wait) that costs a Condition only when waited on."""

    __slots__ = ("_set", "_event")

    def __init__(self) -> None:
        self._set = False
        self._event: threading.Event | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        event = self._event
        if event is not None:
            event.set()

    def wait(self, timeout: float | None = None) -> bool:
        if self._set:
            return True
        with _wait_lock:
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        if self._set:  # set() may have run before it could see the event
            event.set()
        return event.wait(timeout)


class Actor(pykka.ThreadingActor):
    """A pykka ThreadingActor with a SimpleQueue inbox and a light stop flag."""

    lean_thread = False  # start the actor's thread bare (see the module's text)

    @staticmethod
    def _create_actor_inbox():
        return queue.SimpleQueue()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # pykka's ActorRef keeps its own reference to the flag: swap both.
        self.actor_stopped = Flag()  # type: ignore[assignment]
        self.actor_ref.actor_stopped = self.actor_stopped  # type: ignore[assignment]

    def _start_actor_loop(self) -> None:
        if not self.lean_thread:
            super()._start_actor_loop()
            return
        _thread.start_new_thread(self._lean_loop, ())

    def _lean_loop(self) -> None:
        trace, profile = threading.gettrace(), threading.getprofile()
        if trace is not None:
            sys.settrace(trace)
        if profile is not None:
            sys.setprofile(profile)
        try:
            self._actor_loop()
        finally:
            _forget_dummy()


def _forget_dummy() -> None:
    """Drop what `threading.current_thread()` (logging's threadName, in
    library use) registered for this bare thread: a dummy Thread, which
    threading keeps for ever since it cannot see such a thread end."""
    ident = threading.get_ident()
    dummy = threading._active.get(ident)  # noqa: SLF001 - no public way to drop it
    if isinstance(dummy, threading._DummyThread):  # noqa: SLF001
        threading._active.pop(ident, None)  # noqa: SLF001
