#!/usr/bin/env python3
"""Scale check: N entries (default 5,000) in one clinit group start, settle and stop.

    python3 bench/scale.py [--n 5000]

Prints the time from the tell to the group DONE with all N children
running, from the stop tell until every child is gone, the shutdown, and
the daemon's RSS and threads at N.  (To see where the time goes, run
`py-spy record --pid DAEMON_PID` alongside: the actors are threads, which
cProfile would not see.)  Every process it starts is killed at the end,
even on failure.
"""

import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402
from common import status_fields, wait_until, workers  # noqa: E402
from drv_clinit import Clinit  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=5000)
    cfg = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="clinit-scale-") as tmp:
        c = Clinit(tmp, cfg.n)
        try:
            c.start()
            t0 = time.monotonic()
            c.spawn()
            wait_until(lambda: c.started() and len(workers(c.pid)) == cfg.n, 600, "all started")
            t_spawn = time.monotonic() - t0
            fields = status_fields(c.pid)
            t0 = time.monotonic()
            c.stop()
            wait_until(lambda: c.stopped() and not workers(c.pid), 600, "all stopped")
            t_stop = time.monotonic() - t0
            t0 = time.monotonic()
            c.shutdown()
            t_down = time.monotonic() - t0
        finally:
            common.kill_marked()
    print(f"N={cfg.n}: spawn {t_spawn:.2f} s, stop {t_stop:.2f} s, shutdown {t_down:.2f} s; "
          f"daemon RSS at N {fields['rss_kib'] / 1024:.1f} MiB, threads {fields['threads']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
