"""The wire protocol between client and daemon, shared by both sides.

One request per connection.  The client sends one JSON object on one
line; the daemon answers one JSON object on one line and closes:

    -> {"cmd": "tell", "group": "web", "level": "run"}
    <- {"ok": true, "answer": "level transition started"}

Commands: `tell` (group, level), `reread`, `shutdown`, `ping`.  An error
answer has `"ok": false` and says what was wrong in `answer`.  Requests
over MAX_REQUEST bytes are refused.  Group and level names are checked
here (SPEC §4), so no bad name ever reaches the daemon's actors.
"""

from __future__ import annotations

import json

from .cltab import BadName, check_name

__all__ = ["ProtocolError", "COMMANDS", "MAX_REQUEST", "encode_request", "decode_request",
           "encode_response", "decode_response"]

MAX_REQUEST = 64 * 1024  # bytes, newline included
MAX_RESPONSE = 1024 * 1024

#: command -> the name fields it needs
COMMANDS = {"tell": ("group", "level"), "reread": (), "shutdown": (), "ping": ()}


class ProtocolError(ValueError):
    """A request or response that does not follow the protocol."""


def encode_request(cmd: str, **fields: str) -> bytes:
    return (json.dumps({"cmd": cmd, **fields}, separators=(",", ":")) + "\n").encode()


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
    extra = set(request) - {"cmd", *needed}
    if extra:
        raise ProtocolError(f"{cmd}: unexpected field(s): {', '.join(sorted(map(repr, extra)))}")
    for field in needed:
        if field not in request:
            raise ProtocolError(f"{cmd}: missing field {field!r}")
        try:
            check_name(field, request[field])
        except BadName as err:
            raise ProtocolError(str(err)) from None
    return request


def encode_response(ok: bool, answer: str) -> bytes:
    return (json.dumps({"ok": bool(ok), "answer": str(answer)}) + "\n").encode()


def decode_response(data: bytes) -> tuple[bool, str]:
    try:
        response = json.loads(data)
        ok, answer = response["ok"], response["answer"]
    except (ValueError, TypeError, KeyError, RecursionError):
        raise ProtocolError(f"malformed answer from the daemon: {data[:200]!r}") from None
    if not isinstance(ok, bool) or not isinstance(answer, str):
        raise ProtocolError(f"malformed answer from the daemon: {data[:200]!r}")
    return ok, answer
