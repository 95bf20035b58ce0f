"""What the command line prints: status views, the event stream, and the
live progress of a waiting command.  Client side only (no pykka).
"""

from __future__ import annotations

import json
import select
import signal
import sys
import time

from . import protocol
from .control import NoDaemon, Refused

__all__ = ["status", "follow", "waiting", "print_groups", "event_line", "process_rows",
           "Progress"]

PROCESS_COLUMNS = ("GROUP", "TAG", "LEVELS", "MODE", "STATE", "PID", "UPTIME", "RESTARTS",
                   "LAST-EXIT", "THROTTLED-UNTIL")


def _out(line: str, stream=None) -> None:
    stream = stream or sys.stdout
    stream.write(line + "\n")
    stream.flush()


# -- status ------------------------------------------------------------------------

def status(client, group, processes: bool, as_json: bool) -> int:
    cmd = "processes" if processes else "status"
    reply = client.call(cmd, **({} if group is None else {"group": group}))
    if not reply["ok"]:
        _out(reply["answer"], sys.stderr)
        return 1
    key = "processes" if processes else "groups"
    if as_json:
        _out(json.dumps({"schema": reply.get("schema", protocol.SCHEMA), key: reply[key]}))
    elif processes:
        rows = process_rows(reply[key])
        widths = [max(len(r[i]) for r in rows) for i in range(len(PROCESS_COLUMNS))]
        for r in rows:
            _out("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    else:
        for g in reply[key]:
            _out(f"{g['group']} {g['level']} {g['state']}")
    return 0


def print_groups(client) -> None:
    """-v: every group, as the daemon sees it (nothing if it has gone)."""
    try:
        reply = client.call("status")
    except (NoDaemon, Refused):
        return
    for g in reply.get("groups", []) if reply["ok"] else []:
        _out(f"{g['group']} {g['level']} {g['state']}")


def process_rows(processes: list[dict]) -> list[tuple[str, ...]]:
    rows = [PROCESS_COLUMNS]
    for p in processes:
        rows.append((str(p["group"]), str(p["tag"]), str(p["levels"]), str(p["mode"]),
                     str(p["state"]), _or_dash(p.get("pid")), _duration(p.get("uptime")),
                     str(p.get("restarts", 0)), _exit_text(p.get("last_exit")),
                     _clock(p.get("throttled_until"))))
    return rows


def _or_dash(value) -> str:
    return "-" if value is None else str(value)


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _exit_text(last) -> str:
    if not last:
        return "-"
    if "signal" in last:
        return str(last["signal"])
    return f"exit {last.get('code')}"


def _clock(epoch) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(epoch))


# -- events ------------------------------------------------------------------------

def event_line(event: dict) -> str:
    """One plain line for an event of the watch stream."""
    when = event.get("time")
    stamp = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)) + f".{int(when * 1000) % 1000:03d}"
             if isinstance(when, (int, float)) else "-")
    kind = event.get("event")
    if kind == "group":
        return f"{stamp} {event['group']} {event.get('level') or '-'} {event['state']}"
    if kind == "process":
        line = f"{stamp} {event['group']} {event['tag']} {event['state']}"
        if event.get("pid") is not None:
            line += f" pid {event['pid']}"
        rc = event.get("rc")
        if rc is not None:
            line += f" ({_rc_text(rc)})"
        return line
    if kind == "dropped":
        return f"{stamp} {event['count']} events dropped: this reader was too slow"
    return f"{stamp} {json.dumps(event)}"


def _rc_text(rc: int) -> str:
    if rc < 0:
        try:
            return f"last exit: {signal.Signals(-rc).name}"
        except ValueError:
            return f"last exit: signal {-rc}"
    return f"last exit: {rc}"


def follow(client, group, as_json: bool) -> int:
    out = sys.stdout
    try:
        for batch in client.watch_batches(group):
            if isinstance(batch[0], dict):
                first = batch.pop(0)
                if not first["ok"]:
                    _out(first["answer"], sys.stderr)
                    return 1
                if not as_json:
                    _out(first["answer"], sys.stderr)
            for line in batch:  # written as they came, flushed once per read
                if as_json:
                    out.write(line.decode() + "\n")
                else:
                    try:
                        out.write(event_line(json.loads(line)) + "\n")
                    except ValueError:
                        out.write(line.decode(errors="replace") + "\n")
            out.flush()
    except NoDaemon as err:
        _out(f"clinit: {err}", sys.stderr)
        return 3
    except BrokenPipeError:  # `clinit --follow | head`
        return 0
    return 0


# -- waiting, with live progress ---------------------------------------------------

_STARTING = {"SETUP", "RUNBG"}
_RUNNING = {"RUNFG", "RUNNING", "RUNTEST", "TESTING"}
_FINISHED = {"PASS", "CONFIGURED"}


class Progress:
    """What a waiting command shows: on a terminal, one line redrawn at each
    event (how many entries are starting, running, finished, failed, and
    the last event); otherwise a plain line per event."""

    def __init__(self, stream, tty: bool):
        self.stream = stream
        self.tty = tty
        self.states: dict[str, tuple[str, object]] = {}  # tag -> (state, pid)
        self.shown = False

    def update(self, event: dict) -> None:
        if event.get("event") == "process":
            self.states[event["tag"]] = (event["state"], event.get("pid"))
        if not self.tty:
            _out(event_line(event), self.stream)
            return
        last = event_line(event).split(" ", 2)[-1]
        self.stream.write(f"\r\x1b[K{self.summary()}  [{last}]"[:200])
        self.stream.flush()
        self.shown = True

    def summary(self) -> str:
        counts = {"starting": 0, "running": 0, "finished": 0, "failed": 0, "stopping": 0}
        for state, pid in self.states.values():
            if state in _STARTING:
                counts["starting"] += 1
            elif state in _RUNNING or (state == "DONE" and pid is not None):
                counts["running"] += 1
            elif state == "FAIL":
                counts["failed"] += 1
            elif state == "STOPPING":
                counts["stopping"] += 1
            elif state in _FINISHED or state == "DONE":
                counts["finished"] += 1
        return ", ".join(f"{n} {what}" for what, n in counts.items() if n) or "waiting"

    def finish(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def waiting(client, group: str, level: str | None, timeout: float) -> dict:
    """Tell (or, with level None, halt) `group` and wait until it settles,
    showing progress on stderr; the daemon's final answer."""
    from .control import WAIT_MARGIN

    progress = Progress(sys.stderr, sys.stderr.isatty())
    watch = client.connect()
    try:
        watch.sendall(protocol.encode_request("watch", group=group))
        watch_buf = b""
        first = True
        fields = {"group": group, "wait": True, "timeout": timeout}
        if level is None:
            cmd = "halt"
        else:
            cmd, fields["level"] = "tell", level
        conn = client.connect(timeout + WAIT_MARGIN)
        try:
            conn.sendall(protocol.encode_request(cmd, **fields))
            answer = b""
            deadline = time.monotonic() + timeout + WAIT_MARGIN
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NoDaemon(f"the clinit daemon on {client.conf('socket')} did not "
                                   f"answer in {timeout + WAIT_MARGIN:g} s")
                readable, _, _ = select.select([conn] + ([watch] if watch else []), [], [], left)
                if watch in readable:
                    watch, watch_buf, first = _read_watch(watch, watch_buf, first, progress)
                if conn in readable:
                    chunk = conn.recv(65536)
                    answer += chunk
                    if not chunk or answer.endswith(b"\n"):
                        # the daemon sent the events before the answer: show
                        # those already here before saying how it ended
                        while watch is not None and select.select([watch], [], [], 0)[0]:
                            watch, watch_buf, first = _read_watch(watch, watch_buf, first,
                                                                  progress)
                        break
        except OSError as err:
            raise NoDaemon(f"the clinit daemon on {client.conf('socket')} went away before "
                           f"answering: {err.strerror or err}") from None
        finally:
            conn.close()
            progress.finish()
    finally:
        if watch is not None:
            watch.close()
    return client.reply(answer)


def _read_watch(watch, buf: bytes, first: bool, progress):
    """Read what the watch connection has and show its events; the watch
    (None once it closed), the partial line left and whether its own
    first answer is still to come."""
    chunk = watch.recv(65536)
    if not chunk:
        watch.close()
        return None, buf, first
    *lines, buf = (buf + chunk).split(b"\n")
    for line in lines:
        if first:
            first = False  # the watch's own answer
            continue
        try:
            progress.update(json.loads(line))
        except ValueError:
            pass
    return watch, buf, first
