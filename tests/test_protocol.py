"""The wire protocol (clinit/protocol.py): JSON lines, every refusal, names checked."""

import json

import pytest

from clinit.protocol import (COMMANDS, MAX_REQUEST, ProtocolError, decode_reply, decode_request,
                             decode_response, encode_request, encode_response, holds)


@pytest.mark.parametrize("cmd, fields", [
    ("tell", {"group": "web", "level": "run"}),
    ("tell", {"group": "0", "level": "0"}),
    ("tell", {"group": "a.b-c+d@e=f_g", "level": "x" * 255}),
    ("reread", {}),
    ("shutdown", {}),
    ("ping", {}),
])
def test_an_encoded_request_decodes_to_the_same_command_and_fields(cmd, fields):
    data = encode_request(cmd, **fields)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert decode_request(data) == {"cmd": cmd, **fields}


@pytest.mark.parametrize("ok, answer", [
    (True, "level transition started"),
    (False, "no such group: web"),
    (False, "/etc/cltab:3: unknown mode 'x'\n/etc/cltab:4: empty tag field"),
    (True, ""),
    (True, "unicode \u00e9 and \"quotes\""),
])
def test_an_encoded_response_decodes_to_the_same_answer(ok, answer):
    data = encode_response(ok, answer)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert decode_response(data) == (ok, answer)


def test_every_command_the_daemon_knows_is_listed():
    assert set(COMMANDS) == {"tell", "halt", "status", "processes", "watch", "reread",
                             "shutdown", "ping"}
    assert COMMANDS["tell"] == ("group", "level")
    assert COMMANDS["halt"] == ("group",)


def refusal(data: bytes) -> str:
    with pytest.raises(ProtocolError) as info:
        decode_request(data)
    return str(info.value)


def test_a_request_over_the_size_limit_is_refused():
    big = encode_request("tell", group="g", level="l")[:-2] + b" " * MAX_REQUEST + b"}\n"
    assert "too long" in refusal(big)


def test_a_request_without_a_newline_is_refused():
    assert "newline" in refusal(b'{"cmd": "ping"}')


@pytest.mark.parametrize("data", [b"\x00\xff garbage\n", b"tell web run\n", b"{\"cmd\":\n", b"\n"])
def test_a_request_that_is_not_json_is_refused(data):
    assert "not JSON" in refusal(data)


def test_a_deeply_nested_request_is_refused_without_crashing():
    assert refusal(b"[" * 100000 + b"\n")


@pytest.mark.parametrize("data", [b'["tell", "web", "run"]\n', b'"ping"\n', b"42\n", b"null\n"])
def test_a_request_that_is_not_a_json_object_is_refused(data):
    assert "not a JSON object" in refusal(data)


@pytest.mark.parametrize("data", [b'{"cmd": "reboot"}\n', b'{}\n', b'{"cmd": 1}\n',
                                  b'{"cmd": null}\n', b'{"cmd": ["ping"]}\n'])
def test_an_unknown_or_missing_command_is_refused_naming_the_known_ones(data):
    text = refusal(data)
    assert "unknown command" in text and "tell" in text and "shutdown" in text


@pytest.mark.parametrize("missing", ["group", "level"])
def test_a_tell_missing_a_field_is_refused_naming_it(missing):
    fields = {"group": "web", "level": "run"}
    del fields[missing]
    text = refusal(encode_request("tell", **fields))
    assert "missing field" in text and repr(missing) in text


def test_a_request_with_an_unexpected_field_is_refused_naming_it():
    text = refusal(encode_request("shutdown", force="yes"))
    assert "unexpected" in text and "'force'" in text


@pytest.mark.parametrize("name", ["a;b", "a:b", "a,b", "a b", "", "x" * 256, "a$b", "a'b",
                                  'a"b', "a\nb", "a\x01b", "caf\u00e9", "a/b"])
@pytest.mark.parametrize("field", ["group", "level"])
def test_a_bad_group_or_level_name_is_refused(field, name):
    fields = {"group": "web", "level": "run", field: name}
    text = refusal(encode_request("tell", **fields))
    assert f"bad {field} name" in text


@pytest.mark.parametrize("value", [1, None, ["web"], {"a": "b"}, True])
def test_a_name_that_is_not_a_string_is_refused(value):
    data = (json.dumps({"cmd": "tell", "group": value, "level": "run"}) + "\n").encode()
    assert "not a string" in refusal(data)


@pytest.mark.parametrize("data", [b"not json\n", b"{}\n", b'{"ok": true}\n', b'{"answer": "x"}\n',
                                  b'{"ok": "yes", "answer": "x"}\n', b'{"ok": true, "answer": 3}\n',
                                  b"[1, 2]\n", b""])
def test_a_malformed_response_raises_a_protocol_error(data):
    with pytest.raises(ProtocolError, match="malformed answer"):
        decode_response(data)


def test_a_protocol_error_is_a_value_error():
    assert issubclass(ProtocolError, ValueError)


# -- the operators' commands (issue 9) ------------------------------------------------

@pytest.mark.parametrize("cmd, fields", [
    ("tell", {"group": "web", "level": "run", "wait": True, "timeout": 5}),
    ("tell", {"group": "web", "level": "run", "wait": False}),
    ("tell", {"group": "web", "level": "run", "timeout": 0.5}),
    ("halt", {"group": "web"}),
    ("halt", {"group": "web", "wait": True, "timeout": 604800}),
    ("status", {}),
    ("status", {"group": "web"}),
    ("processes", {}),
    ("processes", {"group": "0"}),
    ("watch", {}),
    ("watch", {"group": "web"}),
])
def test_the_operators_commands_decode_with_their_optional_fields(cmd, fields):
    assert decode_request(encode_request(cmd, **fields)) == {"cmd": cmd, **fields}


@pytest.mark.parametrize("fields, says", [
    ({"wait": "yes"}, "wait must be true or false"),
    ({"wait": 1}, "wait must be true or false"),
    ({"timeout": 0}, "timeout must be a number of seconds"),
    ({"timeout": -1}, "timeout must be a number of seconds"),
    ({"timeout": "5"}, "timeout must be a number of seconds"),
    ({"timeout": True}, "timeout must be a number of seconds"),
    ({"timeout": 1e308 * 10}, "timeout must be a number of seconds"),
    ({"timeout": 604801}, "timeout must be a number of seconds"),
    ({"peer_uid": 0}, "unexpected field"),
])
def test_bad_wait_and_timeout_fields_and_the_daemons_own_fields_are_refused(fields, says):
    assert says in refusal(encode_request("tell", group="web", level="run", **fields))


@pytest.mark.parametrize("cmd", ["status", "processes", "watch"])
def test_a_bad_group_filter_is_refused(cmd):
    assert "bad group name" in refusal(encode_request(cmd, group="a;b"))


def test_only_waits_and_watches_hold_their_connection():
    assert holds({"cmd": "watch"})
    assert holds({"cmd": "tell", "group": "g", "level": "1", "wait": True})
    assert holds({"cmd": "halt", "group": "g", "wait": True})
    assert not holds({"cmd": "tell", "group": "g", "level": "1", "wait": False})
    assert not holds({"cmd": "halt", "group": "g"})
    assert not holds({"cmd": "status"})


def test_a_reply_keeps_every_field_of_the_answer():
    data = encode_response(True, "web run DONE", schema=1, groups=[{"group": "web"}])
    assert decode_reply(data) == {"ok": True, "answer": "web run DONE", "schema": 1,
                                  "groups": [{"group": "web"}]}
    assert decode_response(data) == (True, "web run DONE")


def test_the_dead_response_limit_is_gone():
    import clinit.protocol

    assert not hasattr(clinit.protocol, "MAX_RESPONSE")
