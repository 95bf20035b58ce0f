"""What the Daemon actor keeps for operators: the groups' and processes'
current view, the waiting requests, and the watch streams.

The daemon feeds it every `GroupChanged` and `MemberChanged`; it answers
`status` and `processes` from that view, and says what a tell will do.
A waiting tell (or halt) registered for request number `seq` is answered
at the first settled report of its group with a seq of at least `seq`
(DONE, PASSED or FAILED; CONFIGURED for a halt), or when its timeout,
a `WaitExpired` from clinit.timers, comes first.  A watch gets one JSON
line per transition.  Lines go through the server's `Reply`, which never
blocks: a slow reader loses lines (counted, and told), never the daemon's
time.  A client that hangs up is a `Hangup`: what it had is freed.
Nothing here blocks or does I/O beyond handing a line over.
"""

from __future__ import annotations

import signal
import time
from json.encoder import encode_basestring_ascii
from typing import Any

from . import timers
from .messages import WaitExpired
from .protocol import SCHEMA

__all__ = ["Board", "SETTLED", "plan"]

SETTLED = frozenset({"DONE", "PASSED", "FAILED"})
_GOOD = frozenset({"DONE", "PASSED"})


def _q(value) -> bytes:
    """A JSON string (or null), as bytes: events are written by hand, at a
    third of json.dumps's cost, because a watched daemon makes one for every
    transition of every process (tests/test_operators.py parses them back)."""
    return b"null" if value is None else encode_basestring_ascii(value).encode()


def _int(value) -> bytes:
    return b"null" if value is None else b"%d" % value


class _GroupView:
    __slots__ = ("level", "state", "seq", "since")

    def __init__(self, level, state, seq, since):
        self.level, self.state, self.seq, self.since = level, state, seq, since


class _ProcView:
    __slots__ = ("state", "rc", "pid", "started", "restarts", "throttled_until")

    def __init__(self, change):
        self.update(change)

    def update(self, change) -> None:
        self.state = str(change.state)
        if change.rc is not None or not hasattr(self, "rc"):
            self.rc = change.rc  # the last exit stays shown while the next run goes on
        self.pid = change.pid
        self.started = change.started
        self.restarts = change.restarts
        self.throttled_until = change.throttled_until


class _Waiter:
    __slots__ = ("group", "level", "seq", "reply", "timer", "since", "timeout", "plan")

    def __init__(self, group, level, seq, reply, timer, timeout, plan):
        self.group, self.level, self.seq, self.reply = group, level, seq, reply
        self.timer, self.timeout, self.plan = timer, timeout, plan
        self.since = time.monotonic()


class Board:
    """The daemon's view for operators.  Used only from the Daemon actor's thread."""

    def __init__(self):
        self.groups: dict[str, _GroupView] = {}
        self.procs: dict[str, dict[str, _ProcView]] = {}  # group -> tag -> view
        self.waiters: dict[int, _Waiter] = {}
        self.watchers: dict[int, tuple[str | None, Any]] = {}  # token -> (group filter, reply)
        self.versions: dict[str, int] = {}  # group -> count of its members' changes (plan's cache)
        self.plans: dict[tuple, tuple] = {}  # plan()'s answers, while nothing they read changed
        self.plans_for: Any = None  # the table those answers are from
        self._outbox: dict[int, list[bytes]] = {}  # token -> events not yet sent (see send)

    # -- reports ---------------------------------------------------------------

    def group_changed(self, name: str, level, state, seq: int, path: tuple = ()) -> None:
        """`name` is now `state` at `level`, having passed through `path`
        ((level, state) pairs, in order) since its last report."""
        now = time.time()
        view = self.groups.get(name)
        if view is None:
            self.groups[name] = _GroupView(level, str(state), seq, now)
        else:
            view.level, view.state, view.seq, view.since = level, str(state), seq, now
        if self.watchers or self.waiters:
            for step_level, step in (*path, (level, state)):
                if self.watchers:
                    self._emit(name, b'{"event":"group","time":%r,"group":%s,"level":%s,'
                               b'"state":%s}\n' % (now, _q(name), _q(step_level), _q(str(step))))
                if self.waiters:
                    self._answer_waiters(name, step_level, str(step), seq)

    def member_changed(self, group: str, change) -> None:
        self.versions[group] = self.versions.get(group, 0) + 1
        views = self.procs.setdefault(group, {})
        view = views.get(change.tag)
        if view is None:
            views[change.tag] = _ProcView(change)
        else:
            view.update(change)
        if self.watchers:
            now = time.time()
            head = b'{"event":"process","time":%r,"group":%s,"tag":%s,"state":' % (
                now, _q(group), _q(change.tag))
            tail = b',"pid":%s,"rc":%s}\n' % (_int(change.pid), _int(change.rc))
            for state in (*change.path, change.state):  # the states it went through, in order
                self._emit(group, head + _q(str(state)) + tail)

    def forget_group(self, name: str) -> None:
        """A group deleted from cltab has been halted and dropped."""
        self.groups.pop(name, None)
        self.procs.pop(name, None)
        self.versions[name] = self.versions.get(name, 0) + 1

    def _emit(self, group: str, line: bytes) -> None:
        """Hold one event line (see `_q`) for every watch of `group`."""
        for token, (only, _) in self.watchers.items():
            if only is None or only == group:
                self._outbox.setdefault(token, []).append(line)

    def send(self) -> None:
        """Send the events of the message just handled: one post a watch.
        (Posted one by one, each handed the listener thread the GIL, and a
        follower was sent, and woken for, about one event at a time.)"""
        if not self._outbox:
            return
        outbox, self._outbox = self._outbox, {}
        for token, lines in outbox.items():
            watcher = self.watchers.get(token)
            if watcher is not None and not watcher[1].lines(lines):
                del self.watchers[token]

    # -- waiting requests ------------------------------------------------------

    def wait(self, reply, group: str, level: str | None, seq: int, timeout: float,
             actor_ref, plan: str = "") -> None:
        """Answer `reply` once `group` settles after request `seq` (level None: a
        halt); the answer carries `plan`, what the request was answered at once."""
        timer = timers.after(timeout, actor_ref, WaitExpired(reply.token))
        self.waiters[reply.token] = _Waiter(group, level, seq, reply, timer, timeout, plan)

    def _answer_waiters(self, name: str, level, state: str, seq: int) -> None:
        for token, w in list(self.waiters.items()):
            if w.group != name or seq < w.seq:
                continue
            if w.level is None:  # a halt
                if state == "CONFIGURED":
                    self._answer(token, True, f"group {name} halted", state, level)
                elif state == "FAILED":
                    self._answer(token, False, f"group {name} FAILED while halting", state, level)
                elif seq > w.seq and state in SETTLED:
                    self._answer(token, False, f"group {name} was told level {level} before "
                                 "its halt finished", state, level)
            elif state in SETTLED:
                took = time.monotonic() - w.since
                if seq > w.seq or level != w.level:
                    self._answer(token, False, f"group {name} was told level {level} before it "
                                 f"settled at {w.level}: now {level} {state}", state, level)
                else:
                    self._answer(token, state in _GOOD,
                                 f"{name} {level} {state} (settled in {took:.2f} s)", state, level)
            elif state == "CONFIGURED" and seq > w.seq:
                self._answer(token, False, f"group {name} was halted before it settled at "
                             f"{w.level}", state, level)

    def _answer(self, token: int, ok: bool, text: str, state, level, timed_out=False) -> None:
        w = self.waiters.pop(token, None)
        if w is None:
            return
        timers.cancel(w.timer)
        w.reply({"ok": ok, "answer": text, "group": w.group,
                 "level": level if level is not None else w.level,
                 "state": None if state is None else str(state), "timed_out": timed_out,
                 "plan": w.plan}, last=True)

    def expire(self, token: int) -> None:
        w = self.waiters.get(token)
        if w is None:
            return
        view = self.groups.get(w.group)
        level, state = (view.level, view.state) if view else (w.level, None)
        what = f"level {w.level}" if w.level is not None else "its halt"
        self._answer(token, False, f"timed out after {w.timeout:g} s: group {w.group} has not "
                     f"settled at {what} (now {level} {state}); it goes on", state, level,
                     timed_out=True)

    def cancel_waits(self, text: str) -> None:
        """Answer every waiting tell now (at shutdown: they would never settle)."""
        for token, w in list(self.waiters.items()):
            if w.level is not None:
                view = self.groups.get(w.group)
                self._answer(token, False, text, view.state if view else None,
                             view.level if view else w.level)

    # -- watches ---------------------------------------------------------------

    def watch(self, reply, group: str | None) -> None:
        self.watchers[reply.token] = (group, reply)

    def hangup(self, token: int) -> str | None:
        """Forget what a client that went away had; what that was, in words."""
        w = self.waiters.pop(token, None)
        if w is not None:
            timers.cancel(w.timer)
            return f"{w.group} to settle" if w.level is None else f"{w.group} at {w.level}"
        if self.watchers.pop(token, None) is not None:
            return "its watch"
        return None

    # -- views -----------------------------------------------------------------

    def status(self, group: str | None) -> dict:
        rows = []
        for name in sorted(self.groups):
            if group is not None and name != group:
                continue
            v = self.groups[name]
            rows.append({"group": name, "level": v.level, "state": v.state,
                         "settled": v.state in SETTLED or v.state == "CONFIGURED",
                         "since": v.since})
        if group is not None and not rows:
            return {"ok": False, "answer": f"group {group} has not been told a level: "
                    "tell it one first (clinit GROUP LEVEL)"}
        text = "\n".join(f"{r['group']} {r['level']} {r['state']}" for r in rows)
        return {"ok": True, "answer": text, "schema": SCHEMA, "groups": rows}

    def processes(self, cltab, group: str | None) -> dict:
        now = time.time()
        rows = []
        for name in sorted(self.groups):
            if group is not None and name != group:
                continue
            views = self.procs.get(name, {})
            seen = set()
            for entry in cltab.group(name):
                seen.add(entry.tag)
                rows.append(_process_row(name, entry.tag, entry.levels, entry.mode,
                                         views.get(entry.tag), now))
            for tag, view in views.items():  # deleted from cltab, still known
                if tag not in seen:
                    rows.append(_process_row(name, tag, None, None, view, now))
        if group is not None and group not in self.groups:
            return {"ok": False, "answer": f"group {group} has not been told a level: "
                    "tell it one first (clinit GROUP LEVEL)"}
        text = "\n".join(f"{r['group']} {r['tag']} {r['state']}" for r in rows)
        return {"ok": True, "answer": text, "schema": SCHEMA, "processes": rows}


def _process_row(group, tag, levels, mode, view, now) -> dict:
    if view is None:
        return {"group": group, "tag": tag, "levels": levels, "mode": mode,
                "state": "CONFIGURED", "pid": None, "uptime": None, "restarts": 0,
                "last_exit": None, "throttled_until": None}
    uptime = None
    if view.pid is not None and view.started is not None:
        uptime = round(max(0.0, now - view.started), 3)
    throttled = view.throttled_until if view.state == "PAUSING" else None
    return {"group": group, "tag": tag, "levels": levels, "mode": mode, "state": view.state,
            "pid": view.pid, "uptime": uptime, "restarts": view.restarts,
            "last_exit": _last_exit(view.rc), "throttled_until": throttled}


def _last_exit(rc) -> dict | None:
    if rc is None:
        return None
    if rc < 0:
        try:
            return {"signal": signal.Signals(-rc).name}
        except ValueError:
            return {"signal": f"SIG{-rc}"}
    return {"code": rc}


def plan(cltab, told, board: Board, group: str, level: str) -> str:
    """What a tell of `group` to `level` will do, in words (the tell's answer).

    `told` is the table the group's processes were started from (None:
    the same as `cltab`).  An entry kept is one whose process is held
    (not CONFIGURED) and which the new level keeps unchanged.  The answer
    is kept until the group's processes change (re-tells of a settled
    group, a script's usual loop, cost a lookup, not a walk of the group).
    """
    if board.plans_for is not cltab or len(board.plans) > 256:
        board.plans.clear()  # a re-read: answers from the old table are void (and not kept)
        board.plans_for = cltab
    key = (id(told), group, level, board.versions.get(group, 0))
    kept = board.plans.get(key)  # (told, text): holding `told` keeps its id its own
    if kept is None or kept[0] is not told:
        kept = board.plans[key] = (told, _plan(cltab, told, board, group, level))
    return kept[1]


def _plan(cltab, told, board: Board, group: str, level: str) -> str:
    entries = cltab.level(group, level)
    wanted = {e.tag: e for e in entries}
    held = {tag for tag, v in board.procs.get(group, {}).items() if v.state != "CONFIGURED"}
    stop = set()
    for tag in held:
        new = wanted.get(tag)
        old = (told or cltab).tag(tag)
        if new is None or old is None or not old.same_run(new) or new.mode == "off":
            stop.add(tag)
    keep = held - stop
    start = [e for e in entries if e.mode != "off" and e.tag not in keep]
    text = (f"level transition started: {group} to {level}: {_count(len(start), 'entry', 'entries')}"
            f" to start, {len(stop)} to stop")
    if keep:
        text += f", {len(keep)} kept"
    if not entries:
        n = len(held)
        if n == 0:
            what = "none of its processes runs"
        elif n == 1:
            what = "its 1 process will be stopped"
        else:
            what = f"all {n} of its processes will be stopped"
        text += f"\nlevel {level!r} is named by no entry of group {group!r}: {what}"
    return text


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"
