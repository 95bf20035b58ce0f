"""The daemon's log (clinit/logs.py): records handed to one thread, written
in batches, in order; a sink that blocks holds up nobody, and what could
not be queued is counted and said."""

import logging
import os
import threading

import pytest

from clinit import logs


@pytest.fixture
def root_logging():
    """Put the root logger back as it was after logs.setup() took it over."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    logs.stop()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_burst_of_records_is_written_whole_and_in_order(tmp_path, root_logging):
    path = tmp_path / "clinit.log"
    logs.setup(log_file=str(path))
    log = logging.getLogger("clinit.process")
    for i in range(2000):
        log.info("g:p%04d: spawned pid %d", i, 1000 + i)
    log.debug("not written at INFO")
    logs.stop()
    lines = path.read_text().splitlines()
    assert len(lines) == 2000
    assert all(f"INFO clinit.process: g:p{i:04d}: spawned pid {1000 + i}" in line
               for i, line in enumerate(lines))
    assert f"clinit[{os.getpid()}]" in lines[0]


def test_a_blocked_sink_holds_up_no_caller_and_the_records_it_lost_are_counted(
        monkeypatch, root_logging):
    read_fd, write_fd = os.pipe()  # nobody reads it until the burst is over
    monkeypatch.setattr(logs, "QUEUE_RECORDS", 100)
    with os.fdopen(write_fd, "w") as stream:
        monkeypatch.setattr("sys.stderr", stream)
        logs.setup()
        log = logging.getLogger("clinit.process")
        for i in range(20000):  # far more than the pipe and the queue hold
            log.info("g:p%05d: spawned pid %d", i, i)
        chunks: list[bytes] = []
        reader = threading.Thread(target=lambda: chunks.extend(iter(
            lambda: os.read(read_fd, 65536), b"")))
        reader.start()
        logs.stop()  # writes what is queued, and the last count
    reader.join()
    os.close(read_fd)
    text = b"".join(chunks).decode()
    assert "log records were dropped: the log could not keep up" in text
    dropped = sum(int(line.split(" log records were dropped")[0].rsplit(" ", 1)[1])
                  for line in text.splitlines() if " log records were dropped" in line)
    written = text.count("spawned pid")
    assert dropped > 0 and written + dropped == 20000
