"""Where the daemon's log records go (`clinit -d` options).

Every record carries a timestamp, the level name and the logger; clinit's
own records name the group and tag they are about.  By default they go to
stderr at INFO; `-q` keeps WARNING and above, `--debug` everything.
`--log-file PATH` appends to a file, reopened when logrotate moves it
(WatchedFileHandler); `--syslog` sends to the local syslog (/dev/log,
facility daemon).

Actors never write a log line themselves: a record is handed to a bounded
queue and one thread (`clinit-log`) formats and writes it, so a slow or
blocked sink (a full pipe on stderr, a stalled syslog) never holds up an
actor, and a thousand actors logging at once do not fight over the
handlers' lock.  When the queue is full, records are dropped and counted,
and the count is logged once there is room again.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import os
import queue
import sys
import threading

__all__ = ["setup", "stop", "FORMAT", "QUEUE_RECORDS"]

QUEUE_RECORDS = 10_000  # records waiting for the log thread; past that, dropped and counted

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
    # What no format here shows is not collected (the logging HOWTO's
    # "Optimization"): no caller frame walk, thread or process names.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    records: queue.Queue = queue.Queue(QUEUE_RECORDS)
    handler = _Handoff(records)
    logging.basicConfig(level=level, handlers=[handler], force=True)
    stop()
    _listener[0] = _Writer(records, handler, *handlers)
    _listener[0].start()


def stop() -> None:
    """Write what is queued and end the log thread (at exit)."""
    listener, _listener[0] = _listener[0], None
    if listener is not None:
        listener.stop()


_listener: list = [None]
atexit.register(stop)


class _Handoff(logging.handlers.QueueHandler):
    """Queues a record for the log thread without ever waiting."""

    def __init__(self, records: queue.Queue):
        super().__init__(records)
        self.dropped = 0

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock: the queue has its own, and the caller must not
        # wait behind a thousand other actors for a lock it does not need.
        if self.filter(record):
            self.enqueue(record)
            return True
        return False

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record  # formatted by the log thread, in this same process

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1  # a plain int: the count is only ever approximate under races


class _Writer(logging.handlers.QueueListener):
    """The log thread: writes queued records, and says how many were dropped."""

    def __init__(self, records: queue.Queue, handoff: _Handoff, *handlers: logging.Handler):
        super().__init__(records, *handlers, respect_handler_level=True)
        self.handoff = handoff

    def _monitor(self) -> None:
        threading.current_thread().name = "clinit-log"
        super()._monitor()

    def handle(self, record: logging.LogRecord) -> None:
        dropped, self.handoff.dropped = self.handoff.dropped, 0
        if dropped:
            super().handle(logging.makeLogRecord({
                "name": "clinit.logs", "levelno": logging.WARNING, "levelname": "WARNING",
                "msg": "%d log records were dropped: the log could not keep up",
                "args": (dropped,)}))
        super().handle(record)
