"""Where the daemon's log records go (`clinit -d` options).

Every record carries a timestamp, the level name and the logger; clinit's
own records name the group and tag they are about.  By default they go to
stderr at INFO; `-q` keeps WARNING and above, `--debug` everything.
`--log-file PATH` appends to a file, reopened when logrotate moves it
(WatchedFileHandler); `--syslog` sends to the local syslog (/dev/log,
facility daemon).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys

__all__ = ["setup", "FORMAT"]

FORMAT = "%(asctime)s clinit[{pid}] %(levelname)s %(name)s: %(message)s"
SYSLOG_FORMAT = "clinit[{pid}]: %(levelname)s %(name)s: %(message)s"


def setup(quiet: bool = False, debug: bool = False, log_file: str | None = None,
          syslog: bool = False) -> None:
    """Configure the root logger for the daemon (raises OSError if the file cannot be opened)."""
    pid = os.getpid()
    handlers: list[logging.Handler] = []
    if log_file:
        handler: logging.Handler = logging.handlers.WatchedFileHandler(log_file, delay=False)
        handler.setFormatter(logging.Formatter(FORMAT.format(pid=pid)))
        handlers.append(handler)
    if syslog:
        address = "/dev/log" if os.path.exists("/dev/log") else ("localhost", 514)
        handler = logging.handlers.SysLogHandler(
            address=address, facility=logging.handlers.SysLogHandler.LOG_DAEMON)
        handler.setFormatter(logging.Formatter(SYSLOG_FORMAT.format(pid=pid)))
        handlers.append(handler)
    if not handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT.format(pid=pid)))
        handlers.append(handler)
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, handlers=handlers, force=True)
