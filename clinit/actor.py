"""The base of every clinit actor: a pykka.ThreadingActor made lean.

There is one actor (and one thread) per process of the table, so what
each costs is paid a thousand times.  Two things change from pykka's
defaults, neither in behaviour:

- the inbox is a `queue.SimpleQueue`: lighter than `queue.Queue`, and
  its put() is reentrant, so a signal handler may send to an actor;
- `actor_stopped` is a `Flag`, not a `threading.Event`: pykka only sets
  and tests it, and an Event carries a Condition with a waiter deque
  (its size: bench/RESULTS.md, "Choices in the code").
"""

from __future__ import annotations

import queue
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

    @staticmethod
    def _create_actor_inbox():
        return queue.SimpleQueue()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # pykka's ActorRef keeps its own reference to the flag: swap both.
        self.actor_stopped = Flag()  # type: ignore[assignment]
        self.actor_ref.actor_stopped = self.actor_stopped  # type: ignore[assignment]
