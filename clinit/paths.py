"""Where things live: the default paths of SPEC §5 and their resolution.

Settings in cltab (`:::socket:...`, `:::clstat:...`) win over values
given to the constructor or on the command line, which win over the
defaults.  Light on purpose: the client imports it.

The daemon trusts the folders it writes in (the socket's, the status
file's, the log folder) only when no other user could have planted or
could replace what is in them: see `secure_folder`.
"""

from __future__ import annotations

import os

from .cltab import read_settings

__all__ = ["DEFAULT_CLTAB", "run_dir", "resolve", "secure_folder", "UnsafeFolder"]

DEFAULT_CLTAB = "/etc/cltab"


def run_dir() -> str:
    """`/run/clinit` for root; `$XDG_RUNTIME_DIR/clinit` or `/tmp/clinit-UID` otherwise."""
    uid = os.getuid()
    if uid == 0:
        return "/run/clinit"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "clinit")
    return f"/tmp/clinit-{uid}"


def resolve(cltab: str | None = None, socket: str | None = None, clstat: str | None = None,
            settings: dict | None = None) -> dict:
    """The effective configuration: {'cltab', 'socket', 'clstat', ...settings}.

    `settings` are the cltab's settings when the caller parsed the table
    already; otherwise the table is read leniently for its settings only.
    """
    cltab = cltab or DEFAULT_CLTAB
    if settings is None:
        settings = read_settings(cltab)
    conf = dict(settings)
    conf["cltab"] = cltab
    rundir = run_dir()
    conf["socket"] = settings.get("socket") or socket or os.path.join(rundir, "clinit.sock")
    conf["clstat"] = settings.get("clstat") or clstat or os.path.join(rundir, "clstat")
    return conf


class UnsafeFolder(Exception):
    """A folder the daemon must not use; the text names it and says why."""


def secure_folder(folder: str, mode: int, what: str) -> None:
    """Make `folder` (with `mode`) if it is missing, then check that it can be trusted.

    Trusted: a directory owned by this process's user or by root, that
    neither its group nor others may write to (so nobody else can plant,
    replace or remove a file in it).  If `folder` is a symlink, the link
    itself must be ours or root's as well.  Checked after the creation,
    so a folder someone else made first in the meantime is caught.
    Raises UnsafeFolder: `WHAT FOLDER ...: why, and what to do`.
    """
    try:
        os.makedirs(folder, mode=mode, exist_ok=True)
        link = os.lstat(folder)
        st = os.stat(folder)
    except OSError as err:
        raise UnsafeFolder(f"{what} {folder}: cannot use it: {err.strerror or err}") from None
    me = os.geteuid()
    owners = [(st.st_uid, "folder")]
    if (link.st_mode & 0o170000) == 0o120000:
        owners.append((link.st_uid, "symlink"))
    for owner, kind in owners:
        if owner not in (me, 0):
            raise UnsafeFolder(f"{what} {folder}: the {kind} is owned by uid {owner}, not by uid "
                               f"{me} or root: refusing to trust it (remove it, or give a "
                               f"folder of your own)")
    if (st.st_mode & 0o170000) != 0o040000:
        raise UnsafeFolder(f"{what} {folder}: not a folder")
    if st.st_mode & 0o022:
        raise UnsafeFolder(f"{what} {folder}: writable by {_writers(st.st_mode)} (mode "
                           f"{st.st_mode & 0o7777:04o}): refusing to trust it (chmod go-w it, "
                           f"or give a folder of your own)")


def _writers(mode: int) -> str:
    return " and ".join(who for who, bit in (("its group", 0o020), ("others", 0o002)) if mode & bit)
