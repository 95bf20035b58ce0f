"""clinit: a per-node init daemon for resource groups (the public API, SPEC §7).

    import clinit
    clinit.daemon(cltab=..., socket=..., clstat=...)   # runs until shutdown
    c = clinit.client(cltab=..., socket=..., clstat=...)
    c.tell(group, level); c.status(); c.shutdown(); c.conf('socket')
    clinit.status(clstat=PATH, group=None, level=None)

The actor classes (`Process`, `Group`) load pykka on first use, so that a
script that only uses the client starts fast.
"""

from .control import Client, NoDaemon, Refused
from .cltab import BadName, Cltab, CltabError, Entry, load_cltab
from .clstat import status as _status

__all__ = ["daemon", "client", "status", "Client", "NoDaemon", "Refused", "Cltab", "CltabError", "Entry",
           "BadName", "load_cltab", "Process", "ProcessState", "Group", "GroupState",
           "DaemonError"]

_LAZY = {"Process": "process", "ProcessState": "process", "Group": "group",
         "GroupState": "group", "DaemonError": "daemonactor"}


def daemon(cltab=None, socket=None, clstat=None, **settings) -> int:
    """Run the daemon in this process (main thread) until shutdown; returns 0."""
    from .daemonactor import run

    return run(cltab=cltab, socket=socket, clstat=clstat, **settings)


def client(cltab=None, socket=None, clstat=None) -> Client:
    return Client(cltab=cltab, socket=socket, clstat=clstat)


def status(clstat=None, group=None, level=None) -> str:
    """The status file filtered by group and/or level; "" without a file."""
    if clstat is None:
        clstat = Client().conf("clstat")
    return _status(clstat, group, level)


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'clinit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
