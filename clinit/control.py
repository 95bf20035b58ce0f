"""The client: talks to a daemon over its socket, reads the status file.

(Not `client.py`: a module of that name would shadow SPEC §7's
`clinit.client()`.)

Imports neither pykka nor the daemon's modules, so `clinit GROUP LEVEL`
starts about as fast as the interpreter does.
"""

from __future__ import annotations

# The C module itself: the `socket` wrapper would pull in enum and
# selectors for nothing it needs here (what that costs: bench/RESULTS.md).
import _socket

from . import protocol
from .paths import resolve
from .clstat import status as _status

__all__ = ["Client", "NoDaemon"]

TIMEOUT = 35.0  # seconds to wait for an answer (the daemon gives up at 30)


class NoDaemon(ConnectionError):
    """No daemon answers on the socket."""


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

    def request(self, cmd: str, **fields: str) -> tuple[bool, str]:
        """Send one request; `(ok, answer)`.  Raises NoDaemon, ProtocolError."""
        path = self._conf["socket"]
        conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        conn.settimeout(self.timeout)
        try:
            try:
                conn.connect(path)
            except OSError as err:
                raise NoDaemon(f"no clinit daemon answers on {path}: {err.strerror or err}") from None
            conn.sendall(protocol.encode_request(cmd, **fields))
            chunks = []
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if chunk.endswith(b"\n"):
                    break
        except TimeoutError:
            raise NoDaemon(f"the clinit daemon on {path} did not answer in {self.timeout:g} s") from None
        except OSError as err:
            raise NoDaemon(f"lost the clinit daemon on {path}: {err.strerror or err}") from None
        finally:
            conn.close()
        if not chunks:
            raise NoDaemon(f"the clinit daemon on {path} closed without answering")
        return protocol.decode_response(b"".join(chunks))

    def tell(self, group: str, level: str) -> str:
        """Switch `group` to `level`; the daemon's answer."""
        return self.request("tell", group=group, level=level)[1]

    def reread(self) -> str:
        return self.request("reread")[1]

    def shutdown(self) -> str:
        return self.request("shutdown")[1]

    def status(self, group: str | None = None, level: str | None = None) -> str:
        return _status(self._conf["clstat"], group, level)
