"""The status writer actor: keeps the status file (`clstat`) true (SPEC §5).

It replaces the file atomically (`clstat.write_atomically`) after every
burst of group transitions, and at least every `heartbeat` seconds, so
readers can take its mtime as a sign of life.  A write that fails
(folder gone, read-only, full) is logged once and retried on the next
change or beat.  Only the daemon imports this module (it needs pykka);
the reader half, which the client uses, is `clstat.py`.
"""

from __future__ import annotations

import logging
import os

from . import timers
from .actor import Actor
from .messages import Beat, DropGroup, Flush, GroupChanged
from .clstat import PREFIX, write_atomically

__all__ = ["StatusWriter"]

log = logging.getLogger("clinit.status")


class StatusWriter(Actor):
    """Messages: `GroupChanged`, `DropGroup`, `Flush`, `Beat` (clinit/messages.py)."""

    use_daemon_thread = True

    def __init__(self, path: str, heartbeat: float = 45.0, initial=()):
        super().__init__()
        self.path = path
        self.heartbeat = heartbeat
        # `initial`: GroupChanged of groups restored from the journal, so that
        # the first write already shows them as they were (journal.py)
        self.groups: dict[str, tuple[str, str]] = {
            g.name: (str(g.level), str(g.state)) for g in initial}
        self._queued = False
        self._error: str | None = None
        self._timer = None
        self._removed = False  # set at shutdown: a late flush or beat must not rewrite it

    def on_start(self) -> None:
        self._write()

    def on_receive(self, message):
        match message:
            case GroupChanged(name, level, state):
                self.groups[name] = (str(level), str(state))
                self._queue_flush()
            case DropGroup(name):
                self.groups.pop(name, None)
                self._queue_flush()
            case Flush():
                self._queued = False
                self._write()
            case Beat():
                self._write()
            case _:
                log.warning("status writer: unknown message %r", message)

    def _queue_flush(self) -> None:
        # The flush lands behind every update already queued: one write a burst.
        if not self._queued:
            self._queued = True
            self.actor_ref.tell(Flush())

    def _write(self) -> None:
        if self._removed:
            return
        timers.cancel(self._timer)
        self._timer = timers.after(self.heartbeat, self.actor_ref, Beat())
        text = "".join(f"{PREFIX} {name} {level} {state}\n"
                       for name, (level, state) in self.groups.items())
        try:
            write_atomically(self.path, text)
        except OSError as err:
            if str(err) != self._error:
                log.error("cannot write status file %s: %s", self.path, err)
            self._error = str(err)
            return
        if self._error is not None:
            log.warning("status file %s written again", self.path)
            self._error = None

    def remove(self) -> None:
        """At shutdown: delete the file, and write it no more."""
        self._removed = True
        timers.cancel(self._timer)
        try:
            os.unlink(self.path)
        except OSError:
            pass
