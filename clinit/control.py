"""The client: talks to a daemon over its socket, reads the status file.

(Not `client.py`: a module of that name would shadow SPEC §7's
`clinit.client()`.)

Imports neither pykka nor the daemon's modules, so `clinit GROUP LEVEL`
starts about as fast as the interpreter does.
"""

from __future__ import annotations

import os

# The C module itself: the `socket` wrapper would pull in enum and
# selectors for nothing it needs here (what that costs: bench/RESULTS.md).
import _socket

from . import protocol
from .paths import resolve
from .clstat import status as _status

__all__ = ["Client", "NoDaemon", "Refused", "WAIT_MARGIN"]

TIMEOUT = 35.0  # seconds to wait for an answer (the daemon gives up at 30)
WAIT_MARGIN = 10.0  # seconds a waiting client allows beyond the daemon's own timeout


class NoDaemon(ConnectionError):
    """No daemon answers on the socket (the message names it)."""


class Refused(ConnectionError):
    """The daemon refused our uid (the message names the socket, its owner and our uid)."""


class Client:
    """`clinit.client(cltab=..., socket=..., clstat=...)` returns one of these."""

    def __init__(self, cltab: str | None = None, socket: str | None = None,
                 clstat: str | None = None, timeout: float = TIMEOUT):
        self._conf = resolve(cltab, socket, clstat)
        self.timeout = timeout

    def conf(self, name: str) -> str:
        """'cltab', 'socket', 'clstat', or any setting of the cltab."""
        value = self._conf.get(name)
        return "" if value is None else str(value)

    # -- the wire -------------------------------------------------------

    def connect(self, timeout: float | None = None):
        """A socket connected to the daemon.  Raises NoDaemon, Refused."""
        path = self._conf["socket"]
        conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        conn.settimeout(self.timeout if timeout is None else timeout)
        try:
            conn.connect(path)
        except PermissionError:
            conn.close()
            raise Refused(_refused_text(path)) from None
        except OSError as err:
            conn.close()
            raise NoDaemon(f"no clinit daemon answers on {path}: {err.strerror or err}; "
                           "start one with `clinit -d`, or name its socket with -s") from None
        return conn

    def call(self, cmd: str, _timeout: float | None = None, **fields) -> dict:
        """Send one request; the whole answer object.  Raises NoDaemon,
        Refused, ProtocolError."""
        path = self._conf["socket"]
        timeout = self.timeout if _timeout is None else _timeout
        conn = self.connect(timeout)
        try:
            conn.sendall(protocol.encode_request(cmd, **fields))
            data = _read_line(conn)
        except TimeoutError:
            raise NoDaemon(f"the clinit daemon on {path} did not answer in {timeout:g} s") from None
        except OSError as err:
            raise NoDaemon(f"the clinit daemon on {path} went away before answering: "
                           f"{err.strerror or err}") from None
        finally:
            conn.close()
        return self.reply(data)

    def reply(self, data: bytes) -> dict:
        """The answer object in `data` (one line from the daemon).  Raises
        NoDaemon (nothing came), Refused, ProtocolError."""
        if not data:
            raise NoDaemon(f"the clinit daemon on {self._conf['socket']} closed without answering")
        reply = protocol.decode_reply(data)
        if not reply["ok"] and reply.get("refused"):
            raise Refused(reply["answer"])
        return reply

    def request(self, cmd: str, **fields) -> tuple[bool, str]:
        """Send one request; `(ok, answer)`.  Raises NoDaemon, Refused, ProtocolError."""
        reply = self.call(cmd, **fields)
        return reply["ok"], reply["answer"]

    # -- commands -------------------------------------------------------

    def tell(self, group: str, level: str) -> str:
        """Switch `group` to `level`; the daemon's answer."""
        return self.request("tell", group=group, level=level)[1]

    def tell_wait(self, group: str, level: str, timeout: float = 60.0) -> dict:
        """Switch `group` to `level` and wait until it settles (or `timeout`
        s pass): the answer, with `group`, `level`, `state`, `timed_out`."""
        return self.call("tell", _timeout=timeout + WAIT_MARGIN, group=group, level=level,
                         wait=True, timeout=timeout)

    def halt(self, group: str, wait: bool = False, timeout: float = 60.0) -> dict:
        """Halt one group (HALTING, then CONFIGURED); with `wait`, answer once CONFIGURED."""
        if not wait:
            return self.call("halt", group=group)
        return self.call("halt", _timeout=timeout + WAIT_MARGIN, group=group, wait=True,
                         timeout=timeout)

    def group_status(self, group: str | None = None) -> list[dict]:
        """Every told group (or one) as the daemon sees it: dicts with
        group, level, state, settled, since."""
        fields = {} if group is None else {"group": group}
        return self._listing("status", "groups", fields)

    def processes(self, group: str | None = None) -> list[dict]:
        """One dict per process entry in use, sorted by group then cltab order."""
        fields = {} if group is None else {"group": group}
        return self._listing("processes", "processes", fields)

    def _listing(self, cmd: str, key: str, fields: dict) -> list[dict]:
        reply = self.call(cmd, **fields)
        if not reply["ok"]:
            raise protocol.ProtocolError(reply["answer"])
        return reply[key]

    def watch(self, group: str | None = None):
        """Iterate over the events of the daemon (of one group) as dicts,
        until the daemon goes away (NoDaemon).  The first item is the answer."""
        for batch in self.watch_batches(group):
            for line in batch:
                yield line if isinstance(line, dict) else _decode_event(line)

    def watch_batches(self, group: str | None = None):
        """Like `watch`, as lists of what each read brought: the answer (a
        dict) first, then event lines as raw JSON bytes."""
        path = self._conf["socket"]
        conn = self.connect()
        fields = {} if group is None else {"group": group}
        try:
            conn.sendall(protocol.encode_request("watch", **fields))
            conn.settimeout(None)
            buf, first = b"", True
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    raise NoDaemon(f"the clinit daemon on {path} closed the stream")
                *lines, buf = (buf + chunk).split(b"\n")
                if first and lines:
                    first = False
                    reply = protocol.decode_reply(lines[0])
                    if not reply["ok"] and reply.get("refused"):
                        raise Refused(reply["answer"])
                    lines[0] = reply
                if lines:
                    yield lines
        finally:
            conn.close()

    def reread(self) -> str:
        return self.request("reread")[1]

    def shutdown(self) -> str:
        return self.request("shutdown")[1]

    def status(self, group: str | None = None, level: str | None = None) -> str:
        return _status(self._conf["clstat"], group, level)


def _read_line(conn) -> bytes:
    chunks = []
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        if chunk.endswith(b"\n"):
            break
    return b"".join(chunks)


def _decode_event(line: bytes) -> dict:
    import json

    try:
        event = json.loads(line)
    except ValueError:
        raise protocol.ProtocolError(f"malformed event from the daemon: {line[:200]!r}") from None
    if not isinstance(event, dict):
        raise protocol.ProtocolError(f"malformed event from the daemon: {line[:200]!r}")
    return event


def _refused_text(path: str) -> str:
    try:
        owner = f"uid {os.stat(path).st_uid}"
    except OSError:
        owner = "an unknown uid"
    return (f"permission denied: the clinit daemon socket {path} (owned by {owner}) refused "
            f"uid {os.getuid()}: run clinit as root or as its owner, or ask for a "
            "socket_group")
