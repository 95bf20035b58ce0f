"""Group and level names in requests (SPEC §4): anything but 1 to 255 letters,
digits and `_ . - + @ =` is refused with a clear error, through the socket
and through the command line, before it reaches any actor, status line or
shell.
"""

from __future__ import annotations

import json

import pytest

from conftest import raw_request, wait_for

CLTAB = """
    web:w1:run:respawn:exec sleep 1000
"""


def bad_names(marker) -> list[str]:
    return [f"run;touch {marker}", f"$(touch {marker})", f"`touch {marker}`",
            f"run\ntouch {marker}", f"run|touch {marker}", f"run&&touch {marker}",
            "run\nCluster::Init::Group db run DONE",  # a forged status line
            "run now", "run\t", " run", "run'", 'run"', "x" * 256, "", "run:1", "a,b",
            "r\u00e9seau", "run\x1b[2J"]


@pytest.fixture
def web(make_daemon, tmp_path):
    d = make_daemon(CLTAB)
    assert d.tell("web", "run").startswith("level transition started: ")
    d.wait_state("web", "run", "DONE")
    wait_for(lambda: len(d.children()) == 1)
    d.marker = tmp_path / "x"
    d.before = (d.clstat.read_text(), sorted(d.children()))
    yield d
    assert not d.marker.exists(), "a name reached a shell"
    assert (d.clstat.read_text(), sorted(d.children())) == d.before
    assert d.status("web", "run") == "DONE"


def raw_tell(d, group, level) -> tuple[bool, str]:
    """A tell sent as JSON, so any string (a NUL too) gets to the daemon."""
    data = json.dumps({"cmd": "tell", "group": group, "level": level}).encode() + b"\n"
    reply = json.loads(raw_request(d.client().conf("socket"), data, timeout=10))
    return reply["ok"], reply["answer"]


def test_bad_level_names_are_refused_through_the_socket_and_never_reach_a_shell(web):
    for name in bad_names(web.marker) + ["run\0touch", "run\0"]:
        ok, text = raw_tell(web, "web", name)
        assert not ok and text.startswith("bad level name"), (name, text)
        assert "letters, digits" in text


def test_bad_group_names_are_refused_through_the_socket(web):
    for name in bad_names(web.marker) + ["web\0", "web;"]:
        ok, text = raw_tell(web, name, "run")
        assert not ok and text.startswith("bad group name"), (name, text)


def test_names_that_are_not_strings_are_refused(web):
    for value in (None, 7, ["run"], {"a": 1}, True):
        ok, text = raw_tell(web, "web", value)
        assert not ok and "not a string" in text, (value, text)


def test_bad_names_are_refused_through_the_command_line(web):
    for name in bad_names(web.marker):
        result = web.cli("web", name)
        assert result.returncode == 1, (name, result)
        assert "bad level name" in result.stderr, (name, result.stderr)
        result = web.cli(name, "run")
        assert result.returncode == 1 and "bad group name" in result.stderr, (name, result)


def test_a_long_error_message_shows_the_start_of_the_name_and_its_length(web):
    ok, text = raw_tell(web, "web", "y" * 10000)
    assert not ok and "10000 characters" in text and len(text) < 300


def test_a_name_of_255_characters_is_a_name(web):
    ok, text = raw_tell(web, "g" * 255, "run")
    assert (ok, text) == (False, "no such group: " + "g" * 255)
