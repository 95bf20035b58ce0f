"""The Daemon actor and `run()`, the daemon's whole life (SPEC §5).

start -> read cltab (fatal if bad) -> listen -> serve requests.  The
Daemon actor owns the table and the groups: it re-reads cltab on every
tell, reread request and SIGHUP when the file changed (keeping the last
good table on error), creates a group on its first tell, halts and drops
groups deleted from cltab, and forwards group transitions to the status
writer.  Shutdown (request, SIGTERM or SIGINT) halts every group,
answers at once, and ends `run()` when every group is CONFIGURED, i.e.
every child has been reaped.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
from typing import Any

import pykka

from . import reaper
from .cltab import CltabError, file_stamp, load_cltab
from .group import Group, GroupState
from .paths import resolve
from .server import (ANSWER_TIMEOUT, IDLE_TIMEOUT, MAX_CLIENTS, LiveDaemonError, Server,
                     prepare_socket)
from .status import StatusWriter

__all__ = ["Daemon", "run", "DaemonError"]

log = logging.getLogger("clinit.daemon")


class DaemonError(RuntimeError):
    """The daemon cannot start (bad cltab, live daemon on the socket...)."""


class Daemon(pykka.ThreadingActor):
    """Messages: `("request", dict)` (ask: answers `(ok, text)`),
    `("group", name, level, state)`, `("signal", signum)`."""

    @staticmethod
    def _create_actor_inbox():
        return queue.SimpleQueue()  # signal handlers put into it

    def __init__(self, cltab, settings: dict, writer: pykka.ActorRef, on_exit):
        super().__init__()
        self.cltab = cltab
        self.settings = settings
        self.writer = writer
        self.on_exit = on_exit  # called once, when shutdown is complete
        self.groups: dict[str, pykka.ActorRef] = {}
        self.states: dict[str, GroupState] = {}
        self.dropping: set[str] = set()  # deleted from cltab, halting
        self.shutting_down = False

    def on_receive(self, message: Any) -> Any:
        kind = message[0]
        if kind == "request":
            return self.request(message[1])
        if kind == "group":
            _, name, level, state = message
            self.group_changed(name, level, state)
        elif kind == "signal":
            signum = message[1]
            if signum == signal.SIGHUP:
                ok, text = self.reread()
                (log.info if ok else log.error)("SIGHUP: %s", text)
            else:
                log.info("%s: shutting down", signal.Signals(signum).name)
                self.shutdown()
        return None

    def on_stop(self) -> None:
        for ref in self.groups.values():
            ref.stop()

    def on_failure(self, exc_type, exc_value, tb) -> None:
        log.error("daemon actor: %s: %s (groups keep running)", exc_type.__name__, exc_value)

    # -- requests ------------------------------------------------------

    def request(self, req: dict) -> tuple[bool, str]:
        cmd = req["cmd"]
        try:
            if cmd == "tell":
                return self.tell(req["group"], req["level"])
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

    def tell(self, name: str, level: str) -> tuple[bool, str]:
        if self.shutting_down:
            return False, "daemon is shutting down"
        ok, text = self.reread()
        if not ok:
            return False, text
        if not self.cltab.has_group(name):
            return False, f"no such group: {name}"
        ref = self.groups.get(name)
        if ref is None or name in self.dropping:
            self.dropping.discard(name)
            if ref is None:
                ref = Group.start(name, self.cltab.path, self.actor_ref, self.settings)
                self.groups[name] = ref
        ref.tell(("tell", level, self.cltab))
        return True, "level transition started"

    def reread(self) -> tuple[bool, str]:
        """Load cltab again if the file changed; keep the last good table on error."""
        path = self.cltab.path
        try:
            if file_stamp(path) == self.cltab.stamp:
                return True, f"{path} unchanged"
            cltab = load_cltab(path)
        except CltabError as err:
            return False, str(err)
        except OSError as err:
            return False, f"{path}: cannot read: {err.strerror}"
        self.cltab = cltab
        for name, ref in self.groups.items():
            if not cltab.has_group(name) and name not in self.dropping:
                log.info("group %s deleted from %s: halting it", name, path)
                self.dropping.add(name)
                ref.tell(("halt",))
        return True, f"{path} re-read"

    def shutdown(self) -> tuple[bool, str]:
        if not self.shutting_down:
            self.shutting_down = True
            for ref in self.groups.values():
                ref.tell(("halt",))
            self._maybe_exit()
        return True, "all groups halting"

    # -- group reports ---------------------------------------------------

    def group_changed(self, name: str, level, state: GroupState) -> None:
        if name not in self.groups:
            return
        self.states[name] = state
        self.writer.tell(("group", name, level, state))
        if state is GroupState.CONFIGURED and name in self.dropping:
            self.dropping.discard(name)
            self.groups.pop(name).stop(block=False)
            self.states.pop(name, None)
            self.writer.tell(("drop", name))
        self._maybe_exit()

    def _maybe_exit(self) -> None:
        if self.shutting_down and self.on_exit is not None and all(
                s is GroupState.CONFIGURED for s in self.states.values()):
            on_exit, self.on_exit = self.on_exit, None
            on_exit()


def _become_subreaper() -> None:
    """Orphaned grandchildren of our children get reparented to us (Linux)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
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
    merged = {**settings, **table.settings}
    try:
        prepare_socket(conf["socket"])
    except (LiveDaemonError, OSError) as err:
        raise DaemonError(str(err)) from None
    os.makedirs(os.path.dirname(conf["clstat"]) or ".", mode=0o755, exist_ok=True)

    _become_subreaper()
    reaper.ensure(reap_all=True)
    writer = StatusWriter.start(conf["clstat"], float(merged.get("heartbeat", 45.0)))
    server: Server | None = None
    daemon_ref = None
    previous = {}
    try:
        try:
            server = Server(conf["socket"], None, socket_group=merged.get("socket_group"),
                            idle_timeout=merged.get("idle_timeout", IDLE_TIMEOUT),
                            max_clients=merged.get("max_clients", MAX_CLIENTS))
        except (OSError, KeyError) as err:
            raise DaemonError(f"{conf['socket']}: cannot listen: {err}") from None
        daemon_ref = Daemon.start(table, merged, writer, server.wake)
        server.dispatch = lambda req: daemon_ref.ask(("request", req), timeout=ANSWER_TIMEOUT)

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            previous[sig] = signal.getsignal(sig)
            reaper.on_signal(sig, lambda signum: daemon_ref.tell(("signal", signum)))
        log.info("clinit daemon %d: cltab %s, socket %s, status %s",
                 os.getpid(), conf["cltab"], conf["socket"], conf["clstat"])
        server.serve()
        log.info("all groups halted: exiting")
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if server is not None:
            server.server_close()
        if daemon_ref is not None:
            daemon_ref.stop()
        writer.proxy().remove().get()
        writer.stop()
