"""Where things live: the default paths of SPEC §5 and their resolution.

Settings in cltab (`:::socket:...`, `:::clstat:...`) win over values
given to the constructor or on the command line, which win over the
defaults.  Light on purpose: the client imports it.
"""

from __future__ import annotations

import os

from .cltab import read_settings

__all__ = ["DEFAULT_CLTAB", "run_dir", "resolve"]

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
