"""Exits of processes that are not our children (adopted survivors).

A survivor of a daemon killed with SIGKILL was re-parented to init: no
wait call of ours will ever see it.  Its pidfd becomes readable when it
exits, so one thread waits on all of them with a selector and sends the
owner `Exited(pid, None)` (None: the status went to its parent, not to
us).  The pidfd is the one that was checked against the journal's start
time, duplicated: a pid reused meanwhile can never be watched instead.

(A stand-in for the reaper's own pidfd watching of non-children: when
`reaper.watch` takes a pidfd for a pid that is not our child, this
module goes and `watch` becomes `reaper.watch`.)
"""

from __future__ import annotations

import logging
import os
import selectors
import threading

import pykka

from .messages import Exited

__all__ = ["watch", "watched"]

log = logging.getLogger("clinit.pidwatch")


class _State:
    lock = threading.Lock()
    selector: selectors.BaseSelector | None = None
    wake: tuple[int, int] | None = None
    thread: threading.Thread | None = None


_state = _State()


def watch(pidfd: int, pid: int, owner) -> None:
    """Send `owner` `Exited(pid, None)` when the process behind `pidfd` exits
    (at once if it has).  The caller keeps its own `pidfd`."""
    fd = os.dup(pidfd)
    with _state.lock:
        if _state.thread is None:
            _state.selector = selectors.DefaultSelector()
            _state.wake = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
            _state.selector.register(_state.wake[0], selectors.EVENT_READ, None)
            _state.thread = threading.Thread(target=_loop, name="clinit-pidwatch", daemon=True)
            _state.thread.start()
        _state.selector.register(fd, selectors.EVENT_READ, (pid, owner))
        os.write(_state.wake[1], b"w")


def watched() -> int:
    """How many processes are watched now."""
    with _state.lock:
        return 0 if _state.selector is None else len(_state.selector.get_map()) - 1


def _loop() -> None:
    selector = _state.selector
    while True:
        for key, _ in selector.select():
            if key.data is None:
                try:
                    os.read(key.fd, 4096)
                except BlockingIOError:
                    pass
                continue
            pid, owner = key.data
            with _state.lock:
                selector.unregister(key.fd)
            os.close(key.fd)
            try:
                owner.tell(Exited(pid, None))
            except pykka.ActorDeadError:
                pass
            except Exception:  # noqa: BLE001 - the watcher must outlive a bad owner
                log.exception("pid %d exited; telling its owner failed", pid)
