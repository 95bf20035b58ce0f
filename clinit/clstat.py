"""The status file (`clstat`): its format, its reader, its atomic write (SPEC §5).

One line per told group, `Cluster::Init::Group NAME LEVEL STATE`.  The
file is replaced atomically (`write_atomically`: a temporary file created
exclusively in the same folder, then renamed over the old one) by the
daemon's writer actor (`statuswriter.py`).

Imports nothing heavy: the client uses it.  (Not `status.py`: a module
of that name would shadow SPEC §7's `clinit.status()`.)
"""

from __future__ import annotations

import os

__all__ = ["read", "status", "write_atomically", "PREFIX"]

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


def write_atomically(path: str, text: str, mode: int = 0o644) -> None:
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
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
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
