"""sd_notify: tell a service manager (systemd, Type=notify) how the daemon is doing.

The manager names a datagram socket in `$NOTIFY_SOCKET`: a path, or an
abstract name written with a leading `@`.  Each state is one datagram
of `NAME=value` lines.  Without the variable, every call does nothing.
No dependency: a plain AF_UNIX datagram, sent without blocking; a failed
send is logged once and never stops the daemon.

    notify.ready()      READY=1 once the socket listens
    notify.reloading()  RELOADING=1 (with MONOTONIC_USEC) before a SIGHUP re-read
    notify.stopping()   STOPPING=1 at shutdown
"""

from __future__ import annotations

import logging
import os
import socket
import time

__all__ = ["send", "ready", "reloading", "stopping", "status", "ENV"]

ENV = "NOTIFY_SOCKET"

log = logging.getLogger("clinit.notify")
_warned = [False]


def _address(name: str) -> str | bytes:
    if name.startswith("@"):
        return b"\0" + name[1:].encode()  # abstract namespace
    return name


def send(*fields: str) -> bool:
    """Send `NAME=value` fields as one datagram; False without a manager or on error."""
    name = os.environ.get(ENV)
    if not name or not (name.startswith("/") or name.startswith("@")):
        return False
    message = "\n".join(fields).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.sendto(message, _address(name))
    except OSError as err:
        if not _warned[0]:
            _warned[0] = True
            log.warning("cannot notify the service manager on %s: %s", name, err)
        return False
    return True


def ready(text: str = "") -> bool:
    return send("READY=1", *([f"STATUS={text}"] if text else []))


def reloading() -> bool:
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return send("RELOADING=1", f"MONOTONIC_USEC={usec}")


def stopping() -> bool:
    return send("STOPPING=1")


def status(text: str) -> bool:
    return send(f"STATUS={text}")
