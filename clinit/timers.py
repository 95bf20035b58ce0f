"""One thread that delivers delayed messages to actors.

Actors never sleep: an actor that wants to hear about something later
(the next stop signal, the end of a respawn pause, the status heartbeat)
calls `after(delay, ref, message)` and returns.  A single daemon thread
keeps the pending messages in a heap and sleeps on a condition until the
earliest one is due, so an idle daemon wakes only when a timer is due.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Any

__all__ = ["after", "cancel", "pending"]

_lock = threading.Condition()
_heap: list[tuple[float, int, Any, Any]] = []
_live: set[int] = set()  # handles still in the heap
_cancelled: set[int] = set()
_counter = itertools.count(1)
_thread: threading.Thread | None = None


def after(delay: float, ref: Any, message: Any) -> int:
    """Send `message` to actor `ref` (anything with `.tell`) in `delay` seconds.

    Returns a handle for `cancel()`.  A message to an actor that has
    stopped meanwhile is dropped.
    """
    global _thread
    handle = next(_counter)
    due = time.monotonic() + max(0.0, delay)
    with _lock:
        heapq.heappush(_heap, (due, handle, ref, message))
        _live.add(handle)
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_run, name="clinit-timers", daemon=True)
            _thread.start()
        elif _heap[0][1] == handle:
            _lock.notify()  # the new timer is the earliest: wake up sooner
    return handle


def cancel(handle: int | None) -> None:
    """Forget a timer; harmless if it already fired or never existed."""
    if handle is None:
        return
    with _lock:
        if handle in _live:
            _cancelled.add(handle)
            if len(_cancelled) > 64 and 2 * len(_cancelled) > len(_heap):
                _compact()


def _compact() -> None:
    """Drop cancelled timers from the heap (lock held).  Without it, a timer
    re-armed on every event (the status heartbeat) leaves one dead entry per
    event in the heap until its due time: memory in proportion to the rate."""
    _heap[:] = [entry for entry in _heap if entry[1] not in _cancelled]
    heapq.heapify(_heap)
    _live.difference_update(_cancelled)
    _cancelled.clear()


def pending() -> int:
    """How many timers are waiting (for tests and diagnostics)."""
    with _lock:
        return len(_live) - len(_cancelled)


def _run() -> None:
    while True:
        with _lock:
            while True:
                if not _heap:
                    _lock.wait()
                    continue
                due = _heap[0][0]
                now = time.monotonic()
                if due <= now:
                    _, handle, ref, message = heapq.heappop(_heap)
                    _live.discard(handle)
                    if handle in _cancelled:
                        _cancelled.discard(handle)
                        continue
                    break
                _lock.wait(due - now)
        try:
            ref.tell(message)
        except Exception:  # the actor stopped meanwhile (pykka.ActorDeadError)
            pass
