"""Processes a dead daemon left running: found by their environment, stopped like a daemon would.

A clinit daemon that was SIGKILLed leaves its children running in their own
sessions; each carries CLINIT_SOCKET (the daemon's socket) and CLINIT_GROUP
in its environment.  The OCF agent reports them (monitor) and ends them
(stop) so that Pacemaker's recovery never runs a group twice.
"""

from __future__ import annotations

import os
import signal
import time

from .pgroups import find_by_environ

__all__ = ["find", "stop"]


def find(socket_path: str, group: str) -> list[int]:
    """Live pids started for `group` by a daemon on `socket_path` (their environment says so)."""
    return find_by_environ(f"CLINIT_SOCKET={socket_path}", f"CLINIT_GROUP={group}")


def stop(socket_path: str, group: str, settings: dict, deadline: float, log) -> list[int]:
    """Stop the group's unmanaged processes as the daemon would (SIGINT, SIGTERM after
    term_delay, SIGKILL after kill_delay, each to the process group); the survivors."""
    steps = [(signal.SIGINT, float(settings.get("term_delay", 5))),
             (signal.SIGTERM, float(settings.get("kill_delay", 10))),
             (signal.SIGKILL, 2.0)]
    left = find(socket_path, group)
    for sig, delay in steps:
        if not left:
            break
        log(f"sending {sig.name} to the processes of group {group} that a dead daemon "
            f"left running: {' '.join(map(str, left))}")
        for pid in left:
            try:
                target = -pid if os.getpgid(pid) == pid else pid   # clinit children lead a group
                os.kill(target, sig)
            except OSError:
                pass
        until = min(time.monotonic() + delay, deadline) if sig != signal.SIGKILL else \
            time.monotonic() + delay
        while left and time.monotonic() < until:
            time.sleep(0.05)
            left = find(socket_path, group)
    return left
