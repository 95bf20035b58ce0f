"""The `log` setting never freezes the daemon (found by the chaos run, issue 7).

os.posix_spawn keeps the GIL until the child execs.  The log file used to
be opened in the child, between its clone and its exec: a FIFO nobody
reads made that open wait for ever, and with it every thread of the
daemon (no answer, no signal handled, no shutdown).  It is opened by the
daemon now, without blocking.
"""

from __future__ import annotations

import os

from conftest import wait_for


def test_a_log_fifo_nobody_reads_fails_the_entry_and_the_daemon_goes_on(make_daemon, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    d = make_daemon("""
        g:x:1:once:exec sleep 1000
        h:y:1:once:exec sleep 1000
    """, log=fifo)
    d.cli("g", "1", check=0)
    wait_for(lambda: f"g/x: cannot run /bin/sh: [Errno 6] No such device or address: '{fifo}'"
             in d.log_text(), message=d.log_text())
    d.cli("h", "1", check=0)  # still answering
    d.wait_state("h", "1", "DONE")
    assert not d.children()
    d.cli("-k", check=0)
    assert d.proc.wait(timeout=30) == 0


def test_a_log_fifo_with_a_reader_gets_the_childrens_output(make_daemon, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        d = make_daemon("""
            g:x:1:wait:echo "out $CLINIT_TAG"; sleep 0.1; echo "err $CLINIT_TAG" >&2
        """, log=fifo)
        d.cli("g", "1", check=0)
        d.wait_state("g", "1", "DONE")
        got = b""

        def read_all():
            nonlocal got
            try:
                got += os.read(reader, 4096)
            except BlockingIOError:
                pass
            return b"err x\n" in got

        wait_for(read_all)
        assert got == b"out x\nerr x\n"  # the child wrote blocking, in order
    finally:
        os.close(reader)
