"""The wire protocol between client and daemon, shared by both sides.

The client sends one JSON object on one line; the daemon answers one
JSON object on one line, at least `{"ok": bool, "answer": str}` plus the
fields of that command, and closes:

    -> {"cmd": "tell", "group": "web", "level": "run"}
    <- {"ok": true, "answer": "level transition started: ..."}

Commands (fields in brackets are optional):

- `tell` group level [wait timeout]; `halt` group [wait timeout].  With
  `wait` the answer comes when the group settles (or `timeout` seconds
  pass) and carries `group`, `level`, `state`, `timed_out`.
- `status` [group] -> `schema`, `groups`; `processes` [group] ->
  `schema`, `processes` (SCHEMA is their version).
- `watch` [group]: the one request that keeps its connection: a first
  answer line, then one JSON event per line until the client hangs up.
- `reread`, `shutdown`, `ping`.

An error answer has `"ok": false` and says what was wrong in `answer`.
Requests over MAX_REQUEST bytes are refused.  Group and level names are
checked here (SPEC §4), so no bad name ever reaches the daemon's actors.
Fields the daemon adds itself (the peer's uid) are refused from clients.
"""

from __future__ import annotations

import json
import math

from .cltab import BadName, check_name

__all__ = ["ProtocolError", "COMMANDS", "OPTIONS", "MAX_REQUEST", "MAX_WAIT", "SCHEMA",
           "encode_request", "decode_request", "encode_response", "decode_response",
           "decode_reply", "holds", "encode_line"]

MAX_REQUEST = 64 * 1024  # bytes, newline included
MAX_WAIT = 7 * 86400.0  # seconds: the longest `timeout` a waiting request may give
SCHEMA = 1  # version of the `status` / `processes` / `watch` JSON shapes

#: command -> the name fields it needs
COMMANDS = {"tell": ("group", "level"), "halt": ("group",), "status": (), "processes": (),
            "watch": (), "reread": (), "shutdown": (), "ping": ()}

#: command -> optional field -> its kind ("name", "bool" or "seconds")
OPTIONS = {"tell": {"wait": "bool", "timeout": "seconds"},
           "halt": {"wait": "bool", "timeout": "seconds"},
           "status": {"group": "name"}, "processes": {"group": "name"},
           "watch": {"group": "name"}}


class ProtocolError(ValueError):
    """A request or response that does not follow the protocol."""


def encode_request(cmd: str, **fields) -> bytes:
    return encode_line({"cmd": cmd, **fields})


def encode_line(obj: dict) -> bytes:
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


def decode_request(data: bytes) -> dict:
    """Parse and check one request line; raises ProtocolError only."""
    if len(data) > MAX_REQUEST:
        raise ProtocolError(f"request too long (over {MAX_REQUEST} bytes)")
    if not data.endswith(b"\n"):
        raise ProtocolError("incomplete request (no newline)")
    try:
        request = json.loads(data)
    except (ValueError, RecursionError):
        raise ProtocolError("malformed request: not JSON") from None
    if not isinstance(request, dict):
        raise ProtocolError("malformed request: not a JSON object")
    cmd = request.get("cmd")
    if not isinstance(cmd, str) or cmd not in COMMANDS:
        known = ", ".join(sorted(COMMANDS))
        raise ProtocolError(f"unknown command {cmd!r} (known: {known})")
    needed = COMMANDS[cmd]
    optional = OPTIONS.get(cmd, {})
    extra = set(request) - {"cmd", *needed, *optional}
    if extra:
        raise ProtocolError(f"{cmd}: unexpected field(s): {', '.join(sorted(map(repr, extra)))}")
    for field in needed:
        if field not in request:
            raise ProtocolError(f"{cmd}: missing field {field!r}")
        _check(cmd, field, "name", request[field])
    for field, kind in optional.items():
        if field in request:
            _check(cmd, field, kind, request[field])
    return request


def _check(cmd: str, field: str, kind: str, value) -> None:
    if kind == "name":
        try:
            check_name(field, value)
        except BadName as err:
            raise ProtocolError(str(err)) from None
    elif kind == "bool":
        if not isinstance(value, bool):
            raise ProtocolError(f"{cmd}: {field} must be true or false, not {value!r}")
    elif kind == "seconds":
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or not 0 < value <= MAX_WAIT):
            raise ProtocolError(f"{cmd}: {field} must be a number of seconds above 0 "
                                f"and at most {MAX_WAIT:g}, not {value!r}")


def holds(request: dict) -> bool:
    """True for a request whose answer comes later (wait) or never ends (watch)."""
    return request["cmd"] == "watch" or request.get("wait") is True


def encode_response(ok: bool, answer: str, **extra) -> bytes:
    return (json.dumps({"ok": bool(ok), "answer": str(answer), **extra}) + "\n").encode()


def decode_reply(data: bytes) -> dict:
    """The whole answer object; raises ProtocolError if it lacks `ok` or `answer`."""
    try:
        response = json.loads(data)
        ok, answer = response["ok"], response["answer"]
    except (ValueError, TypeError, KeyError, RecursionError):
        raise ProtocolError(f"malformed answer from the daemon: {data[:200]!r}") from None
    if not isinstance(ok, bool) or not isinstance(answer, str):
        raise ProtocolError(f"malformed answer from the daemon: {data[:200]!r}")
    return response


def decode_response(data: bytes) -> tuple[bool, str]:
    response = decode_reply(data)
    return response["ok"], response["answer"]
