"""The status file (`clstat`): its writer actor and its reader (SPEC §5).

One line per told group, `Cluster::Init::Group NAME LEVEL STATE`.  The
writer replaces the file atomically (a temporary file created exclusively
in the same folder, then renamed over the old one) after every burst of
group transitions, and at least every `heartbeat` seconds, so readers can
take its mtime as a sign of life.  A write that fails (folder gone,
read-only, full) is logged once and retried on the next change or beat.

The reader half (`read`, `status`) imports nothing heavy: the client uses it.
"""

from __future__ import annotations

import os

__all__ = ["StatusWriter", "read", "status", "PREFIX"]

PREFIX = "Cluster::Init::Group"


def read(path: str) -> list[tuple[str, str, str]]:
    """(group, level, state) of every group line; [] without a file."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[0] == PREFIX:
            out.append((fields[1], fields[2], fields[3]))
    return out


def status(clstat: str, group: str | None = None, level: str | None = None) -> str:
    """The status file filtered like Cluster::Init's `status()`.

    Both filters given: just the state of that group at that level (or
    ""); one given: the other column and the state, a line each; none:
    `GROUP LEVEL STATE` lines.
    """
    out = []
    for name, stlevel, state in read(clstat):
        if group is not None and name != group:
            continue
        if level is not None and stlevel != level:
            continue
        if group is not None and level is not None:
            return state
        columns = ([] if group is not None else [name]) + ([] if level is not None else [stlevel])
        out.append(" ".join(columns + [state]) + "\n")
    return "".join(out)


def write_atomically(path: str, text: str) -> None:
    """Replace `path` with `text` through an exclusive temp file in its folder.

    O_EXCL|O_NOFOLLOW: a symlink planted at the temporary name makes the
    open fail instead of writing through it; rename() replaces a symlink
    at the final name instead of following it.
    """
    folder = os.path.dirname(path) or "."
    base = os.path.basename(path)
    for attempt in range(100):
        tmp = os.path.join(folder, f".{base}.{os.getpid()}.{attempt}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            continue
        break
    else:
        raise FileExistsError(f"{folder}: no free temporary name for {base}")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _writer_class():
    # pykka is imported only by the daemon, never by the client.
    import logging

    from . import timers
    from .actor import Actor
    from .messages import Beat, DropGroup, Flush, GroupChanged

    log = logging.getLogger("clinit.status")

    class StatusWriter(Actor):
        """Keeps the status file true.  Messages:

        `("group", name, level, state)`, `("drop", name)`, `("flush",)`,
        `("beat",)`.
        """

        use_daemon_thread = True

        def __init__(self, path: str, heartbeat: float = 45.0):
            super().__init__()
            self.path = path
            self.heartbeat = heartbeat
            self.groups: dict[str, tuple[str, str]] = {}
            self._queued = False
            self._error: str | None = None
            self._timer = None
            self._removed = False  # set at shutdown: a late flush or beat must not rewrite it
            self.writes = 0

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
            self.writes += 1

        def remove(self) -> None:
            self._removed = True
            timers.cancel(self._timer)
            try:
                os.unlink(self.path)
            except OSError:
                pass

    return StatusWriter


def __getattr__(name):
    if name == "StatusWriter":
        cls = _writer_class()
        globals()["StatusWriter"] = cls
        return cls
    raise AttributeError(name)
