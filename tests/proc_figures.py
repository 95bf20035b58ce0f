"""What a live process uses, read from /proc: threads, open files, memory.

Shared by the hostile-client and load tests, which check that the daemon
comes back to where it started.
"""

from __future__ import annotations

import os


def figures(pid: int) -> dict:
    """{'threads', 'fds', 'rss_kb', 'hwm_kb'} of a live process."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == "Threads":
                out["threads"] = int(value)
            elif key == "VmRSS":
                out["rss_kb"] = int(value.split()[0])
            elif key == "VmHWM":
                out["hwm_kb"] = int(value.split()[0])
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out
