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
and the count is logged once there is room again.  A record after a quiet
spell is written at once; a busy log is written in batches, at most every
GATHER seconds (so a record may appear up to 0.1 s after it was made),
one write and flush per batch and stream.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import sys
import threading
import time

__all__ = ["setup", "stop", "FORMAT", "QUEUE_RECORDS"]

QUEUE_RECORDS = 10_000  # records waiting for the log thread; past that, dropped and counted
BATCH_RECORDS = 500  # records the log thread writes at once, at most
GATHER = 0.1  # seconds between two writes of a busy log: the most a record waits

FORMAT = "%(asctime)s clinit[{pid}] %(levelname)s %(name)s: %(message)s"
SYSLOG_FORMAT = "clinit[{pid}]: %(levelname)s %(name)s: %(message)s"


def setup(quiet: bool = False, debug: bool = False, log_file: str | None = None,
          syslog: bool = False) -> None:
    """Configure the root logger for the daemon (raises OSError if the file cannot be opened)."""
    pid = os.getpid()
    handlers: list[logging.Handler] = []
    if log_file or syslog:
        # only then: it brings pickle and socket code (0.7 MiB of the daemon's memory)
        import logging.handlers as log_handlers  # noqa: PLC0415
    if log_file:
        handler: logging.Handler = log_handlers.WatchedFileHandler(log_file, delay=False)
        handler.setFormatter(logging.Formatter(FORMAT.format(pid=pid)))
        handlers.append(handler)
    if syslog:
        address = "/dev/log" if os.path.exists("/dev/log") else ("localhost", 514)
        handler = log_handlers.SysLogHandler(
            address=address, facility=log_handlers.SysLogHandler.LOG_DAEMON)
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
    records: queue.SimpleQueue = queue.SimpleQueue()
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


class _Handoff(logging.Handler):
    """Queues a record for the log thread without ever waiting."""

    def __init__(self, records: queue.SimpleQueue):
        super().__init__()
        self.queue = records
        self.dropped = 0

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock and no condition variable: the SimpleQueue's put
        # is one C call, and the caller must not wait behind a thousand
        # other actors for a lock it does not need.  Its size is only
        # approximate under races, as the bound need only be.
        if self.queue.qsize() < QUEUE_RECORDS:
            self.queue.put(record)
        else:
            self.dropped += 1  # a plain int: the count is only ever approximate under races
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)


_END = object()  # queued by stop(): write what came before, then end


class _Writer(threading.Thread):
    """The log thread: writes queued records in batches (each handler's
    share of a batch formatted, then written and flushed once), and says
    how many were dropped."""

    def __init__(self, records: queue.SimpleQueue, handoff: _Handoff, *handlers: logging.Handler):
        super().__init__(name="clinit-log", daemon=True)
        self.records, self.handoff, self.handlers = records, handoff, handlers
        self._ending = threading.Event()  # stop(): write what is queued now

    def stop(self) -> None:
        self.records.put(_END)
        self._ending.set()
        self.join()

    def run(self) -> None:
        last = -GATHER  # monotonic time of the last write
        while True:
            batch = [self.records.get()]
            # A busy log is written at most once every GATHER seconds, so that
            # a record that follows another closely waits for its batch; a
            # record after a quiet spell is written at once.  Each wake of this
            # thread costs the actors a turn of the GIL: woken per record, it
            # took 130 ms of 1,000 concurrent tells (2 records each) and 10 ms
            # of a 200-process spawn (bench/RESULTS.md).
            wait = last + GATHER - time.monotonic()
            if wait > 0 and batch[0] is not _END:
                self._ending.wait(wait)  # stop() cuts it short
            while len(batch) < BATCH_RECORDS:
                try:
                    batch.append(self.records.get_nowait())
                except queue.Empty:
                    break
            ended = any(r is _END for r in batch)
            self._write([r for r in batch if r is not _END] if ended else batch)
            if ended:
                return
            last = time.monotonic()

    def _write(self, batch: list) -> None:
        dropped, self.handoff.dropped = self.handoff.dropped, 0
        if dropped:
            batch.append(logging.makeLogRecord({
                "name": "clinit.logs", "levelno": logging.WARNING, "levelname": "WARNING",
                "msg": "%d log records were dropped: the log could not keep up",
                "args": (dropped,)}))
        for handler in self.handlers:
            records = [r for r in batch if r.levelno >= handler.level]
            if not records:
                continue
            if isinstance(handler, logging.StreamHandler) and len(records) > 1:
                _write_stream(handler, records)
            else:
                for record in records:
                    handler.handle(record)


def _write_stream(handler: logging.StreamHandler, records: list) -> None:
    """Several records to a stream (stderr or a file) in one write and flush."""
    try:
        reopen = getattr(handler, "reopenIfNeeded", None)  # a WatchedFileHandler
        if reopen is not None:
            reopen()  # logrotate moved it: once per batch
        text = "".join(handler.format(r) + handler.terminator for r in records)
    except Exception:  # noqa: BLE001 - as logging does: report, never raise
        handler.handleError(records[0])
        return
    if handler.stream is None:  # closed by a failed reopen: one record at a time
        for record in records:
            handler.handle(record)
        return
    with handler.lock:
        try:
            handler.stream.write(text)
            handler.flush()
        except Exception:  # noqa: BLE001
            handler.handleError(records[0])
