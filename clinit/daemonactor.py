"""The Daemon actor and `run()`, the daemon's whole life (SPEC §5).

(Not `daemon.py`: a module of that name would shadow SPEC §7's
`clinit.daemon()` once imported.)

start -> read cltab (fatal if bad) -> listen -> serve requests.  The
Daemon actor owns the table and the groups: it re-reads cltab on every
tell, reread request and SIGHUP when the file changed (keeping the last
good table on error), creates a group on its first tell, halts and drops
groups deleted from cltab, and forwards group transitions to the status
writer.  Shutdown (request, SIGTERM or SIGINT) halts every group,
answers at once, and ends `run()` when every group is CONFIGURED, i.e.
every child has been reaped.

Operators.  The daemon keeps a view of every group and process
(`watchers.Board`, fed by GroupChanged and MemberChanged) to answer
`status` and `processes`, to say what a tell will do, to answer a
waiting tell or halt when its group settles, and to feed watch streams.
A service manager hears READY=1 once the socket listens, RELOADING=1 /
READY=1 around a SIGHUP re-read, and STOPPING=1 at shutdown (`notify`).

Faults.  A request that raises answers `internal error: ...` and changes
nothing more; any other message that raises is logged with the daemon's
state and dropped: the Daemon actor carries on (it is the root: nobody
else could take over).  A group actor found dead is forgotten (a new one
is made on the next tell; its processes were killed as it died).  A
shutdown that has not finished `term_delay + 2 * kill_delay + 5` seconds
after it began (a fault, or a process the kernel will not let die)
SIGKILLs the process groups of every child left, logs what it did, and
exits with status 1 instead of 0.

After SIGKILL.  A daemon killed with SIGKILL cannot clean up: its
children keep running in their own sessions, re-parented to init (or the
nearest subreaper); the socket file stays (nobody listens on it), and so
do the status file and the journal (`journal.py`).  The next daemon
replaces the stale socket (`prepare_socket`: a socket nobody answers on),
reads the journal, and takes over (`adoption.py`): groups come back at
their recorded level and state with their unchanged survivors adopted,
and the other survivors (entry changed or deleted) are stopped as
strays.  Without a usable journal it only warns of the old children it
finds by CLINIT_SOCKET in their environment.
"""

from __future__ import annotations

import enum
import logging
import os
import signal
import sys
from typing import Any

import pykka

from . import notify, output, reaper, timers
from .actor import Actor
from .adoption import describe, stray_entry, take_over
from .cltab import CltabError, file_stamp, load_cltab
from .fsm import Machine, row, to_dot
from .group import Group, GroupState
from .journal import journal_path
from .journalwriter import JournalWriter
from .messages import (Down, DropGroup, GroupChanged, Halt, Hangup, Listening, MembersChanged,
                       ProcessChanged, Request, Restore, ShutdownTimeout, Signal, Stopped, Tell,
                       Told, WaitExpired)
from .process import Process, Timings
from .paths import UnsafeFolder, resolve, secure_folder
from .pgroups import find_by_environ, kill_children, proc_table
from .server import (ANSWER_TIMEOUT, IDLE_TIMEOUT, MAX_CLIENTS, MAX_HELD, QUEUE_LINES,
                     LiveDaemonError, Server, prepare_socket)
from .statuswriter import StatusWriter
from .watchers import Board, plan

__all__ = ["Daemon", "DaemonState", "TABLE", "dot", "run", "DaemonError"]

log = logging.getLogger("clinit.daemon")


SHUTDOWN_GRACE = 5.0  # seconds a shutdown may take beyond the stop ladder
SWITCH_INTERVAL = 0.05  # seconds; Python's default is 0.005
OUTPUT_FLUSH = 2.0  # seconds at most, at exit, to copy what children left in their pipes
WAIT_TIMEOUT = 60.0  # seconds a waiting request waits when it names no timeout


class DaemonError(RuntimeError):
    """The daemon cannot start (bad cltab, live daemon on the socket...)."""


class DaemonState(enum.Enum):
    STARTING = "STARTING"
    SERVING = "SERVING"
    HALTING = "HALTING"
    EXITED = "EXITED"

    def __str__(self) -> str:
        return self._value_  # the attribute itself: .value goes through enum's descriptor


D = DaemonState

# The daemon's life (SPEC §5: start -> read cltab -> listen -> serve).
# Requests (tell, reread, ping) are served in SERVING and change no state.
TABLE = (
    row(D.STARTING, "listening", D.SERVING, note="run() read cltab and bound the socket"),
    row((D.STARTING, D.SERVING), "shutdown", D.HALTING, action="halt_all", note="answered at once"),
    row(D.HALTING, "halted", D.EXITED, action="exit", note="every group CONFIGURED: all reaped"),
    row(D.HALTING, "shutdown_timeout", D.EXITED, action="kill_and_exit",
        note="a shutdown that took too long"),
)


def dot() -> str:
    """The daemon machine as Graphviz DOT."""
    return to_dot("daemon", TABLE, DaemonState)


class Daemon(Actor):
    """Messages: `Request(dict, reply)` (ask: answers `(ok, text)`, a dict, or
    None when `reply` will answer later), `GroupChanged`, `MemberChanged`,
    `Signal(signum)`, `Listening()`, `ShutdownTimeout()`, and from the
    listener and the timers `Hangup(token)`, `WaitExpired(token)`."""

    def __init__(self, cltab, settings: dict, writer: pykka.ActorRef, on_exit,
                 journal: pykka.ActorRef | None = None, restore=None):
        super().__init__()
        reaper.ensure()  # in the caller's thread: groups are made from the actor's
        self.cltab = cltab
        self.settings = settings
        self.writer = writer
        self.on_exit = on_exit  # called once, when shutdown is complete
        self.groups: dict[str, pykka.ActorRef] = {}
        self.states: dict[str, GroupState] = {}
        self.dropping: set[str] = set()  # deleted from cltab, halting
        self.machine = Machine(self, TABLE, D.STARTING)
        self.clean = True  # False once a shutdown had to kill what did not stop
        self.seq = 0  # numbers every tell and halt sent to a group
        self.board = Board()  # what operators see: status, processes, waits, watches
        self.told: dict = {}  # group -> the table of its last tell
        self.journal = journal  # the JournalWriter, if any
        self._takeover = restore  # adoption.Plan: what an earlier daemon left, taken over at start
        self.strays: dict[str, tuple[int, pykka.ActorRef]] = {}  # urn -> (token, ref) being stopped

    def on_receive(self, message: Any) -> Any:
        try:
            if isinstance(message, Request):
                return self.request(message.request, message.reply)
            try:
                self._receive(message)
            except Exception as exc:  # noqa: BLE001 - the root actor logs and carries on
                log.error("daemon actor failed on %r (groups %s, shutting down: %s): %s: %s; "
                          "carrying on", message, {n: str(s) for n, s in self.states.items()},
                          self.machine.state in (D.HALTING, D.EXITED), type(exc).__name__, exc,
                          exc_info=exc)
            return None
        finally:
            self.board.send()  # the events this message made, to every watch at once

    def _receive(self, message: Any) -> None:
        match message:
            case GroupChanged():
                self.group_changed(message)
            case MembersChanged(group, changes):
                for item in changes:
                    self.board.member_changed(group, item.change)
                self._to_journal(message)
            case Hangup(token):
                log.debug("client %d went away: gave up waiting for %s", token,
                          self.board.hangup(token) or "nothing")
            case WaitExpired(token):
                self.board.expire(token)
            case Stopped(urn, token) if self.strays.get(urn, (None,))[0] == token:
                del self.strays[urn]
                self._maybe_exit()
            case ProcessChanged():
                pass  # a stray's stop under way
            case Signal(signal.SIGHUP):
                notify.reloading()
                ok, text = self.reread()
                (log.info if ok else log.error)("SIGHUP: %s", text)
                notify.ready()
            case Signal(signum):
                log.info("%s: shutting down", signal.Signals(signum).name)
                self.shutdown()
            case Listening():
                self.machine.fire("listening")
            case ShutdownTimeout():
                self.machine.fire("shutdown_timeout")
            case _:
                log.warning("daemon: unknown message %r", message)

    def on_start(self) -> None:
        if self._takeover is not None:
            takeover, self._takeover = self._takeover, None
            try:
                self._take_over(takeover)
            except Exception as exc:  # noqa: BLE001 - serve anyway: the groups can be told
                log.error("taking over from the earlier daemon failed: %s: %s", type(exc).__name__,
                          exc, exc_info=exc)

    def on_stop(self) -> None:
        for ref in self.groups.values():
            ref.stop()
        for _, ref in self.strays.values():
            ref.stop()

    def state(self) -> DaemonState:
        return self.machine.state

    def transitions(self) -> list:
        return list(self.machine.log)

    def on_failure(self, exc_type, exc_value, tb) -> None:
        # Only reached if pykka itself stops the actor (messages are guarded):
        # nothing can be served any more, so end the daemon; run() stops the
        # groups, which kill their processes.
        log.error("daemon actor died: %s: %s; exiting", exc_type.__name__, exc_value)
        self.clean = False
        self.exit()

    def _send(self, name: str, message: tuple) -> bool:
        """Tell a group; a dead group actor is forgotten (its processes died with it)."""
        ref = self.groups.get(name)
        if ref is None:
            return False
        try:
            ref.tell(message)
            if isinstance(message, (Tell, Halt)):
                self._to_journal(Told(name, message.level if isinstance(message, Tell) else None))
            return True
        except pykka.ActorDeadError:
            self._forget(name)
            return False

    def _forget(self, name: str) -> None:
        log.error("group %s: its actor is dead; forgetting it (a tell makes a new one)", name)
        self.groups.pop(name, None)
        self.states.pop(name, None)
        self.dropping.discard(name)
        self._maybe_exit()

    # -- requests ------------------------------------------------------

    def request(self, req: dict, reply=None):
        cmd = req["cmd"]
        try:
            if cmd == "tell":
                log.info("group %s: tell %s from uid %s", req["group"], req["level"],
                         req.get("peer_uid", "(in process)"))
                ok, text = self.tell(req["group"], req["level"])
                return self._maybe_wait(req, reply, ok, text, req["level"])
            if cmd == "halt":
                log.info("group %s: halt from uid %s", req["group"],
                         req.get("peer_uid", "(in process)"))
                ok, text = self.halt_one(req["group"])
                return self._maybe_wait(req, reply, ok, text, None)
            if cmd == "status":
                return self.board.status(req.get("group"))
            if cmd == "processes":
                return self.board.processes(self.cltab, req.get("group"))
            if cmd == "watch":
                return self._watch(req.get("group"), reply)
            if cmd == "reread":
                return self.reread()
            if cmd == "shutdown":
                return self.shutdown()
            if cmd == "ping":
                return True, f"clinit daemon {os.getpid()} serving {self.cltab.path}"
        except Exception as err:  # never leave a client without an answer
            log.exception("request %r failed", req)
            return False, f"internal error: {type(err).__name__}: {err}"
        return False, f"unknown command {cmd!r}"

    def _maybe_wait(self, req: dict, reply, ok: bool, text: str, level):
        """The answer to a tell or halt; None when `reply` answers once the group settles."""
        if not req.get("wait") or not ok:
            return ok, text
        name = req["group"]
        if reply is None:
            return False, "wait needs a connection that stays open (the socket)"
        if level is None and name not in self.groups:  # a halt of a group never told
            return {"ok": True, "answer": text, "group": name, "level": None,
                    "state": "CONFIGURED", "timed_out": False}
        self.board.wait(reply, name, level, self.seq, float(req.get("timeout", WAIT_TIMEOUT)),
                        self.actor_ref, plan=text)
        log.debug("client %d: waiting for %s to settle at %s", reply.token, name,
                  level if level is not None else "its halt")
        return None

    def _watch(self, group, reply):
        if reply is None:
            return False, "watch needs a connection that stays open (the socket)"
        reply({"ok": True, "answer": f"watching group {group}" if group else
               "watching every group"})
        self.board.watch(reply, group)
        log.debug("client %d: watching %s", reply.token, group or "every group")
        return None

    def halt_one(self, name: str) -> tuple[bool, str]:
        """Halt one group gracefully: HALTING, then CONFIGURED."""
        if self.machine.state in (D.HALTING, D.EXITED):
            return False, "daemon is shutting down"
        if name not in self.groups:
            if not self.cltab.has_group(name):
                return False, f"no such group: {name}"
            return True, f"group {name} has never been told a level: nothing to halt"
        if not self._send(name, self._halt()):
            return False, f"group {name} had died: nothing left to halt"
        return True, f"group {name} halting"

    def tell(self, name: str, level: str) -> tuple[bool, str]:
        if self.machine.state in (D.HALTING, D.EXITED):
            return False, "daemon is shutting down"
        ok, text = self.reread()
        if not ok:
            return False, text
        if not self.cltab.has_group(name):
            return False, f"no such group: {name}"
        ref = self.groups.get(name)
        if ref is not None and not ref.is_alive():
            self._forget(name)
            ref = None
        self.dropping.discard(name)
        if ref is None:
            ref = Group.start(name, self.cltab.path, self.actor_ref, self.settings)
            self.groups[name] = ref
            # until its first report: a shutdown must wait for it to halt too
            self.states.setdefault(name, GroupState.STOPPING)
        self.seq += 1
        text = plan(self.cltab, self.told.get(name), self.board, name, level)
        if not self._send(name, Tell(level, self.cltab, self.seq)):
            return False, f"internal error: group {name} died; tell it again"
        self.told[name] = self.cltab
        return True, text

    def reread(self) -> tuple[bool, str]:
        """Load cltab again if the file changed; keep the last good table on error."""
        path = self.cltab.path
        try:
            if file_stamp(path) == self.cltab.stamp:
                return True, f"{path} unchanged"
            cltab = load_cltab(path)
        except CltabError as err:
            log.error("cltab %s rejected, the last good table stays: %s", path, err)
            return False, str(err)
        except OSError as err:
            log.error("cltab %s rejected, the last good table stays: cannot read: %s", path,
                      err.strerror)
            return False, f"{path}: cannot read: {err.strerror}"
        log.info("cltab %s re-read", path)
        self.cltab = cltab
        for name in list(self.groups):
            if not cltab.has_group(name) and name not in self.dropping:
                log.info("group %s deleted from %s: halting it", name, path)
                self.dropping.add(name)
                self._send(name, self._halt())
        return True, f"{path} re-read"

    def shutdown(self) -> tuple[bool, str]:
        if self.machine.fire("shutdown"):  # again while halting: nothing new to do
            notify.stopping()
            self.board.cancel_waits("the daemon is shutting down: every group is halting")
        return True, "all groups halting"

    # -- actions ---------------------------------------------------------

    def halt_all(self) -> None:
        t = Timings.from_settings({**self.settings, **self.cltab.settings})
        limit = t.term_delay + 2 * t.kill_delay + SHUTDOWN_GRACE
        timers.after(limit, self.actor_ref, ShutdownTimeout())
        for name in list(self.groups):
            self._send(name, self._halt())
        self._maybe_exit()

    def _halt(self) -> Halt:
        self.seq += 1
        return Halt(self.seq)

    def exit(self) -> None:
        if self.on_exit is not None:
            on_exit, self.on_exit = self.on_exit, None
            on_exit()

    def kill_and_exit(self) -> None:
        late = {n: str(s) for n, s in self.states.items() if s is not GroupState.CONFIGURED}
        killed = kill_children()
        log.error("shutdown did not finish in time (groups %s): killed the process groups "
                  "of children %s; exiting", late, killed)
        self.clean = False
        self.exit()

    # -- group reports ---------------------------------------------------

    def group_changed(self, change: GroupChanged) -> None:
        name, state = change.name, change.state
        if name not in self.groups:
            return
        self.states[name] = state
        self.writer.tell(change)
        self.board.group_changed(name, change.level, state, change.seq, change.path)
        self._to_journal(change)
        if state is GroupState.CONFIGURED and name in self.dropping:
            self.dropping.discard(name)
            self.groups.pop(name).stop(block=False)
            self.states.pop(name, None)
            self.told.pop(name, None)
            self.board.forget_group(name)
            self.writer.tell(DropGroup(name))
            self._to_journal(DropGroup(name))
        self._maybe_exit()

    def _maybe_exit(self) -> None:
        if self.machine.state is D.HALTING and not self.strays and all(
                s is GroupState.CONFIGURED for s in self.states.values()):
            self.machine.fire("halted")

    # -- adoption: what an earlier daemon left running (adoption.py) --------

    def _take_over(self, takeover) -> None:
        """Recreate the groups as the journal recorded them (their processes
        adopted), and stop the strays with the usual ladder."""
        for g in takeover.groups:
            ref = Group.start(g.name, self.cltab.path, self.actor_ref, self.settings)
            self.groups[g.name] = ref
            self.states[g.name] = GroupState[g.state]
            self.told[g.name] = self.cltab  # what it was restored against
            self.board.group_changed(g.name, g.level, g.state, 0)
            ref.tell(Restore(g.level, g.state, g.resume, g.members, self.cltab))
        timings = Timings.from_settings({**self.settings, **self.cltab.settings})
        for record, adopt, why in takeover.strays:
            log.warning("stopping %s, left by an earlier daemon: %s", describe(record), why)
            ref = Process.start(stray_entry(record), self.actor_ref, timings)
            self.seq += 1
            self.strays[ref.actor_urn] = (self.seq, ref)
            ref.tell(adopt)
            ref.tell(Down(self.seq, True))

    def _to_journal(self, message) -> None:
        if self.journal is not None:
            self.journal.tell(message)


SOCKET_VAR = "CLINIT_SOCKET"


def _warn_of_orphans(socket_path: str, takeover=None) -> None:
    """Log the processes a previous daemon on this socket left running (it was
    SIGKILLed) that its journal does not name (no journal, or started just
    before the kill): they carry CLINIT_SOCKET, unless they rewrote their
    environment.  The sessions of the survivors the journal names are its."""
    found = find_by_environ(f"{SOCKET_VAR}={socket_path}")
    if takeover is not None and found:
        named = {r.pid for r in takeover.adopted} | {r.pid for r, _, _ in takeover.strays}
        table = proc_table()
        found = [pid for pid in found if pid in table and table[pid][3] not in named]
    if found:
        log.warning("processes started by an earlier daemon on %s still run, unmanaged%s: %s "
                    "(a tell starts new copies: stop them first)", socket_path,
                    "" if takeover is None else " (not in its journal: started just before it died?)",
                    " ".join(map(str, found)))


def _tune_process() -> None:
    """Settings of the daemon's own process, made before any actor starts.

    - Child subreaper: orphaned grandchildren of our children are
      re-parented to us, so the reaper sees them and a stop can find them.
    - One malloc arena: a thousand actor threads would otherwise spread
      their few allocations over up to 8 arenas a core.
    - A long GIL switch interval: actor handlers are short and give the
      GIL up when they block on their inbox; a long interval spares a
      thousand threads forced hand-offs.

    What each saves is in bench/RESULTS.md ("Choices in the code").
    """
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER (Linux)
        libc.mallopt(-8, 1)  # M_ARENA_MAX (glibc)
    except (OSError, AttributeError):
        pass


def run(cltab: str | None = None, socket: str | None = None, clstat: str | None = None,
        **settings: Any) -> int:
    """Run the daemon in this process until shutdown; returns the exit status (0).

    Must be called from the main thread (it installs signal handlers).
    Raises DaemonError if it cannot start; nothing is started then.
    """
    conf = resolve(cltab, socket, clstat, settings={})
    try:
        table = load_cltab(conf["cltab"])
    except CltabError as err:
        raise DaemonError(str(err)) from None
    conf = resolve(conf["cltab"], socket, clstat, settings=table.settings)
    # Fixed for the daemon's life: the start-up table's values.  The actors
    # get `settings` alone and merge each table they read over it, so a
    # setting deleted from cltab goes back to the caller's value or the default.
    merged = {**settings, **table.settings}
    try:
        # the socket's folder first: when both are the same, it is made 0700
        secure_folder(os.path.dirname(conf["socket"]) or ".", 0o700, "run folder")
        secure_folder(os.path.dirname(conf["clstat"]) or ".", 0o755, "run folder")
        if merged.get("logdir"):
            secure_folder(merged["logdir"], output.FOLDER_MODE, "log folder")
        prepare_socket(conf["socket"])
    except (UnsafeFolder, LiveDaemonError, OSError) as err:
        raise DaemonError(str(err)) from None
    journal = journal_path(conf["clstat"])
    takeover, seed = take_over(journal, table)  # what an earlier daemon, killed, left running
    _warn_of_orphans(conf["socket"], takeover)
    os.environ[SOCKET_VAR] = conf["socket"]  # children inherit it: see _warn_of_orphans

    _tune_process()
    reaper.ensure(reap_all=True)
    # restored groups show as they were from the first write on (never an empty status)
    initial = [GroupChanged(g.name, g.level, g.state) for g in (seed.groups if seed else ())]
    writer = StatusWriter.start(conf["clstat"], float(merged.get("heartbeat", 45.0)), initial)
    journal_writer = None
    server: Server | None = None
    daemon_ref = None
    previous = {}
    try:
        try:
            server = Server(conf["socket"], None, socket_group=merged.get("socket_group"),
                            idle_timeout=merged.get("idle_timeout", IDLE_TIMEOUT),
                            max_clients=merged.get("max_clients", MAX_CLIENTS),
                            max_held=_number(merged.get("max_held"), MAX_HELD),
                            queue_lines=_number(merged.get("watch_queue"), QUEUE_LINES))
        except (OSError, KeyError) as err:
            raise DaemonError(f"{conf['socket']}: cannot listen: {err}") from None
        # from here on the journal is this daemon's (until then, it stays for the next one)
        journal_writer = JournalWriter.start(journal, seed)
        daemon_ref = Daemon.start(table, settings, writer, server.wake, journal_writer,
                                  takeover)
        daemon_ref.tell(Listening())
        server.dispatch = lambda req, reply: daemon_ref.ask(Request(req, reply),
                                                            timeout=ANSWER_TIMEOUT)
        server.on_hangup = lambda token: daemon_ref.tell(Hangup(token))

        def on_signal(signum: int) -> None:
            if signum == signal.SIGHUP:
                output.reopen()  # after logrotate: fresh log files from now on
            daemon_ref.tell(Signal(signum))

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            previous[sig] = signal.getsignal(sig)
            reaper.on_signal(sig, on_signal)
        log.info("clinit daemon %d: cltab %s, socket %s, status %s",
                 os.getpid(), conf["cltab"], conf["socket"], conf["clstat"])
        notify.ready(f"serving {conf['cltab']} on {conf['socket']}")
        server.serve()
        try:
            clean = daemon_ref.proxy().clean.get(timeout=ANSWER_TIMEOUT)
        except Exception:  # noqa: BLE001 - a dead daemon actor: not clean
            clean = False
        log.info("all groups halted: exiting" if clean else "exiting after an unclean shutdown")
        return 0 if clean else 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if server is not None:
            server.server_close()
        if daemon_ref is not None:
            daemon_ref.stop()
        output.flush(OUTPUT_FLUSH)  # children's last words still in their pipes
        writer.proxy().remove().get()
        writer.stop()
        if journal_writer is not None:
            if daemon_ref is not None:  # it stopped its groups: nothing the journal names runs
                journal_writer.proxy().remove().get()
            journal_writer.stop()


def _number(value, default: int) -> int:
    """A whole-number setting the cltab module does not know (kept as text)."""
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        log.warning("setting %r is not a whole number: using %d", value, default)
        return default
