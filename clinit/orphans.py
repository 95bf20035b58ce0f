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

__all__ = ["find", "stop"]


def find(socket_path: str, group: str) -> list[int]:
    """Live pids started for `group` by a daemon on `socket_path` (their environment says so).

    A daemon that was SIGKILLed leaves its children running; they carry
    CLINIT_SOCKET and CLINIT_GROUP in their environment.
    """
    want = {f"CLINIT_SOCKET={socket_path}".encode(), f"CLINIT_GROUP={group}".encode()}
    me, found = os.getpid(), []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = set(f.read().split(b"\0"))
        except OSError:
            continue
        if want <= env and not _zombie(int(name)):
            found.append(int(name))
    return sorted(found)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except (OSError, IndexError):
        return True


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
