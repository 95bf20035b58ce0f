"""cltab parsing and checking (SPEC section 2, names from section 4)."""

import os
import pickle

import pytest

from clinit.cltab import (
    MODES, SETTINGS, BadName, Cltab, CltabError, Entry, check_name, file_stamp,
    load_cltab, parse_cltab, read_settings,
)

GOOD = """\
# a comment line
g1:t1:1:wait:echo one

g1:t2:12:once:echo two
g1:t3:long3,:respawn:sleep 100
g2:t4:a,b,c:test:test -e /etc/passwd
   \t
g2:t5:3:off:
g1:t6:0:once:echo zero
"""


def problems_of(text, path="<string>"):
    with pytest.raises(CltabError) as info:
        parse_cltab(text, path)
    return info.value


# --- the basics -------------------------------------------------------------

def test_entries_come_back_in_file_order_with_their_line_numbers():
    tab = parse_cltab(GOOD)
    assert [e.tag for e in tab.entries] == ["t1", "t2", "t3", "t4", "t5", "t6"]
    assert [e.line for e in tab.entries] == [2, 4, 5, 6, 8, 9]
    assert tab.entries[0] == Entry("g1", "t1", "1", "wait", "echo one", 2)


def test_comment_and_whitespace_only_lines_are_ignored():
    tab = parse_cltab("#x:y\n\n   \n\t\n#\ng:t:1:once:true\n")
    assert len(tab.entries) == 1


def test_a_line_with_a_space_before_the_hash_is_not_a_comment():
    err = problems_of(" # not a comment\n")
    assert "<string>:1: expected group:tag:levels:mode:command, found 1 field" in str(err)


def test_crlf_line_endings_are_stripped():
    tab = parse_cltab("g:t:1:once:echo hi\r\n:::socket:/tmp/s\r\n")
    assert tab.entries[0].command == "echo hi"
    assert tab.settings == {"socket": "/tmp/s"}


def test_the_command_keeps_its_colons_and_whitespace_verbatim():
    tab = parse_cltab("g:t:1:once:  echo a:b:c ::  \n")
    assert tab.entries[0].command == "  echo a:b:c ::  "


def test_a_utf8_byte_order_mark_at_the_start_is_ignored():
    tab = parse_cltab("\ufeffg:t:1:once:true\n")
    assert tab.entries[0].group == "g"


def test_the_last_line_needs_no_newline():
    tab = parse_cltab("g:t:1:once:true")
    assert tab.entries[0].command == "true"


def test_an_off_entry_may_have_an_empty_command():
    tab = parse_cltab("g:t:1:off:\n")
    assert tab.entries[0].mode == "off"
    assert tab.entries[0].command == ""


def test_every_mode_is_accepted():
    text = "".join("g:t%d:1:%s:true\n" % (i, m) for i, m in enumerate(MODES))
    assert [e.mode for e in parse_cltab(text).entries] == list(MODES)


def test_parse_cltab_of_a_string_has_no_stamp():
    tab = parse_cltab(GOOD)
    assert tab.stamp is None
    assert tab.path == "<string>"


def test_an_empty_text_gives_an_empty_table():
    tab = parse_cltab("")
    assert tab.entries == ()
    assert tab.settings == {}
    assert tab.groups() == ()


# --- lookups ----------------------------------------------------------------

def test_group_returns_that_groups_entries_in_file_order():
    tab = parse_cltab(GOOD)
    assert [e.tag for e in tab.group("g1")] == ["t1", "t2", "t3", "t6"]
    assert tab.group("nope") == ()
    assert isinstance(tab.group("g1"), tuple)


def test_groups_lists_names_in_order_of_first_appearance():
    tab = parse_cltab("b:t1:1:once:x\na:t2:1:once:x\nb:t3:1:once:x\n")
    assert tab.groups() == ("b", "a")


def test_has_group_and_tag_lookups():
    tab = parse_cltab(GOOD)
    assert tab.has_group("g2")
    assert not tab.has_group("g3")
    assert tab.tag("t4").command == "test -e /etc/passwd"
    assert tab.tag("missing") is None


def test_level_returns_the_groups_entries_for_that_level():
    tab = parse_cltab(GOOD)
    assert [e.tag for e in tab.level("g1", "1")] == ["t1", "t2"]
    assert [e.tag for e in tab.level("g1", "2")] == ["t2"]
    assert [e.tag for e in tab.level("g1", "long3")] == ["t3"]
    assert [e.tag for e in tab.level("g1", "0")] == ["t6"]
    assert tab.level("g1", "9") == ()
    assert tab.level("nope", "1") == ()


def test_level_includes_off_entries():
    tab = parse_cltab(GOOD)
    assert [e.tag for e in tab.level("g2", "3")] == ["t5"]


# --- level rules --------------------------------------------------------------

def entry(levels):
    return Entry("g", "t", levels, "once", "true", 1)


def test_a_level_matches_a_field_equal_to_it():
    assert entry("long3").in_level("long3")
    assert entry("1").in_level("1")


def test_a_field_without_comma_means_its_single_characters():
    e = entry("12")
    assert e.in_level("12")
    assert e.in_level("1")
    assert e.in_level("2")
    assert not e.in_level("3")
    assert not e.in_level("21")


def test_a_multi_character_field_without_comma_also_matches_its_characters():
    e = entry("long3")
    assert e.in_level("l")
    assert e.in_level("3")
    assert not e.in_level("long")


def test_a_field_with_commas_means_its_names():
    e = entry("a,bb,ccc")
    assert e.in_level("a")
    assert e.in_level("bb")
    assert e.in_level("ccc")
    assert not e.in_level("b")
    assert not e.in_level("c")
    assert not e.in_level("")


def test_a_trailing_comma_means_just_the_one_name():
    e = entry("long3,")
    assert e.in_level("long3")
    assert not e.in_level("l")
    assert not e.in_level("3")
    assert not e.in_level("")


def test_empty_names_in_a_comma_list_are_ignored():
    e = entry(",a,,b,")
    assert e.in_level("a") and e.in_level("b")
    assert not e.in_level("")


def test_level_and_group_named_zero_work():
    tab = parse_cltab("0:0:0:once:echo zero\n0:z:10:once:echo ten\n")
    assert tab.has_group("0")
    assert tab.tag("0").group == "0"
    assert [e.tag for e in tab.level("0", "0")] == ["0", "z"]
    assert [e.tag for e in tab.level("0", "10")] == ["z"]


# --- Entry ------------------------------------------------------------------------

def test_entries_are_hashable_and_compared_by_value():
    a = Entry("g", "t", "1", "once", "true", 3)
    b = Entry("g", "t", "1", "once", "true", 3)
    c = Entry("g", "t", "1", "once", "true", 4)
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert len({a, b, c}) == 2


def test_entries_are_immutable():
    e = entry("1")
    with pytest.raises(AttributeError):
        e.mode = "off"


def test_entries_survive_pickling_and_show_their_fields():
    e = Entry("g", "t", "a,b", "once", "x:y", 7)
    again = pickle.loads(pickle.dumps(e))
    assert again == e and again.in_level("b")
    assert "tag='t'" in repr(e)


def test_same_run_compares_mode_and_command_only():
    a = Entry("g", "t", "1", "once", "true", 3)
    assert a.same_run(Entry("g", "t", "2", "once", "true", 9))
    assert not a.same_run(Entry("g", "t", "1", "respawn", "true", 3))
    assert not a.same_run(Entry("g", "t", "1", "once", "true ", 3))


def test_a_cltab_can_be_built_from_entries_directly():
    e = Entry("g", "t", "1", "once", "true", 1)
    tab = Cltab("/x", [e], {"socket": "/s"})
    assert tab.entries == (e,)
    assert tab.tag("t") is e
    assert tab.stamp is None


# --- settings ---------------------------------------------------------------------

def test_settings_are_read_and_converted():
    tab = parse_cltab(
        ":::socket:/run/x/sock\n"
        ":::clstat:/run/x/clstat\n"
        ":::respawn_limit:7\n"
        ":::respawn_window:1.5\n"
        ":::respawn_pause:60\n"
        ":::term_delay:0\n"
        ":::kill_delay: 2.5e1 \n"
        ":::heartbeat:45\n"
        ":::my_thing: any: thing \n"
    )
    assert tab.settings == {
        "socket": "/run/x/sock", "clstat": "/run/x/clstat", "respawn_limit": 7,
        "respawn_window": 1.5, "respawn_pause": 60.0, "term_delay": 0.0,
        "kill_delay": 25.0, "heartbeat": 45.0, "my_thing": " any: thing ",
    }
    assert type(tab.settings["respawn_limit"]) is int
    assert type(tab.settings["respawn_pause"]) is float
    assert tab.entries == ()


def test_a_later_setting_overrides_an_earlier_one():
    tab = parse_cltab(":::socket:/a\ng:t:1:once:true\n:::socket:/b\n")
    assert tab.settings["socket"] == "/b"


def test_a_setting_value_keeps_its_colons():
    tab = parse_cltab(":::log:/var/log/a:b\n")
    assert tab.settings["log"] == "/var/log/a:b"


def test_every_known_setting_has_a_converter():
    assert set(SETTINGS.values()) <= {str, int, float}


@pytest.mark.parametrize("name,value", [
    ("respawn_limit", "-1"), ("respawn_limit", "1.5"), ("respawn_limit", "x"),
    ("respawn_limit", ""), ("respawn_limit", "\u0663"), ("respawn_window", "-0.5"),
    ("respawn_pause", "nan"), ("respawn_pause", "inf"), ("term_delay", "1e999"),
    ("kill_delay", "1_0"), ("heartbeat", "."), ("heartbeat", ""),
])
def test_a_bad_number_is_an_error_naming_the_line_and_setting(name, value):
    err = problems_of("g:t:1:once:true\n:::%s:%s\n" % (name, value), "/etc/cltab")
    assert str(err).startswith("/etc/cltab:2: bad value")
    assert repr(name) in str(err)
    assert ">= 0" in str(err)


def test_an_empty_value_for_a_known_text_setting_is_an_error():
    err = problems_of(":::socket:\n", "f")
    assert str(err) == "f:1: empty value for setting 'socket'"


def test_an_empty_value_for_an_unknown_setting_is_kept():
    assert parse_cltab(":::whatever:\n").settings == {"whatever": ""}


@pytest.mark.parametrize("name", ["", "1abc", "a-b", "a b", " a", "é", "a.b"])
def test_a_bad_setting_name_is_an_error(name):
    err = problems_of(":::%s:1\n" % name, "f")
    assert str(err).startswith("f:1: bad setting name %r" % name)


def test_a_setting_without_a_value_is_an_error():
    err = problems_of(":::socket\n", "f")
    assert str(err) == "f:1: setting 'socket' has no value: expected :::name:value"


def test_a_bad_setting_does_not_undo_an_earlier_good_one_in_read_settings(tmp_path):
    p = tmp_path / "cltab"
    p.write_text(":::respawn_limit:3\n:::respawn_limit:lots\n")
    assert read_settings(p) == {"respawn_limit": 3}


# --- errors -----------------------------------------------------------------------

@pytest.mark.parametrize("line,fields", [
    ("g", 1), ("g:t", 2), ("g:t:1", 3), ("g:t:1:once", 4),
])
def test_too_few_fields_is_an_error_saying_how_many(line, fields):
    err = problems_of("# c\n" + line + "\n", "/etc/cltab")
    plural = "" if fields == 1 else "s"
    assert str(err) == ("/etc/cltab:2: expected group:tag:levels:mode:command, "
                        "found %d field%s" % (fields, plural))
    assert err.path == "/etc/cltab"
    assert err.problems == [(2, str(err).split(": ", 1)[1])]


def test_an_empty_group_is_an_error():
    err = problems_of("g:t0:1:once:x\n:t:1:once:true\n", "f")
    assert "f:2: empty group field" in str(err)


def test_an_empty_tag_is_an_error():
    err = problems_of("g::1:once:true\n", "f")
    assert "f:1: empty tag field" in str(err)


def test_empty_group_and_tag_with_levels_is_an_entry_error_not_a_setting():
    err = problems_of("::1:once:true\n", "f")
    assert "f:1: empty group field" in str(err)
    assert "f:1: empty tag field" in str(err)


@pytest.mark.parametrize("group", [
    "a;b", "a b", "a,b", "a$b", "a'b", 'a"b', "a\tb", "a\x00b", "a\x7fb", "é", "x" * 256,
    " g", "g ", "a/b",
])
def test_a_bad_group_name_is_an_error(group):
    err = problems_of("%s:t:1:once:true\n" % group, "f")
    shown = repr(group) if len(group) <= 40 else repr(group[:40])
    assert str(err).startswith("f:1: bad group name %s" % shown)
    assert "letters, digits or _ . - + @ =" in str(err)
    assert "\n" not in str(err)


@pytest.mark.parametrize("tag", ["a;b", "t ", "\x00", "a\x1bb", "t\u00a0", "y" * 256])
def test_a_bad_tag_name_is_an_error(tag):
    err = problems_of("g:%s:1:once:true\n" % tag, "f")
    assert str(err).startswith("f:1: bad tag name ")


def test_a_name_of_255_characters_is_fine():
    name = "n" * 255
    tab = parse_cltab("%s:%s:%s,:once:true\n" % (name, name, name))
    assert tab.level(name, name) == tab.entries


def test_an_empty_levels_field_is_an_error():
    err = problems_of("g:t::once:true\n", "f")
    assert str(err) == "f:1: empty levels field"


def test_a_levels_field_of_only_commas_is_an_error():
    err = problems_of("g:t:,,:once:true\n", "f")
    assert str(err) == "f:1: levels field ',,' names no level"


@pytest.mark.parametrize("levels", ["1 2", " 1", "1\x00", "a;b", "\u00e9"])
def test_a_levels_field_with_a_bad_character_is_an_error(levels):
    err = problems_of("g:t:%s:once:true\n" % levels, "f")
    assert str(err).startswith("f:1: bad levels field %r" % levels)


@pytest.mark.parametrize("levels,bad", [
    ("a,b c", "b c"), ("a, b", " b"), ("ok,x;y,", "x;y"), ("a,\x00", "\x00"),
])
def test_a_bad_level_name_in_a_comma_list_is_an_error_naming_it(levels, bad):
    err = problems_of("g:t:%s:once:true\n" % levels, "f")
    assert str(err).startswith("f:1: bad level name %r in levels field %r" % (bad, levels))


@pytest.mark.parametrize("mode", ["bogus", "Once", "once ", " wait", "", "ondemand"])
def test_an_unknown_mode_is_an_error_listing_the_valid_ones(mode):
    err = problems_of("g:t:1:%s:true\n" % mode, "f")
    assert str(err) == ("f:1: unknown mode %r: use one of wait, once, respawn, test, off"
                        % mode)


@pytest.mark.parametrize("mode", ["wait", "once", "respawn", "test"])
@pytest.mark.parametrize("command", ["", "   ", "\t"])
def test_an_empty_command_is_an_error_unless_the_mode_is_off(mode, command):
    err = problems_of("g:t:1:%s:%s\n" % (mode, command), "f")
    assert str(err).startswith("f:1: empty command")


def test_a_nul_in_the_command_is_an_error():
    err = problems_of("g:t:1:once:echo \x00 hi\n", "f")
    assert str(err) == "f:1: command contains a NUL character"


def test_duplicate_tag_error_names_both_lines():
    err = problems_of("a:x:1:once:true\n# c\nb:y:1:once:true\nc:x:2:wait:true\n",
                      "/etc/cltab")
    assert str(err) == "/etc/cltab:4: duplicate tag 'x' (first defined on line 1)"


def test_a_tag_is_unique_across_groups_and_each_repeat_is_reported():
    err = problems_of("a:x:1:once:true\nb:x:1:once:true\nc:x:1:once:true\n", "f")
    assert err.problems == [
        (2, "duplicate tag 'x' (first defined on line 1)"),
        (3, "duplicate tag 'x' (first defined on line 1)"),
    ]


def test_multiple_errors_are_reported_together_in_line_order():
    text = ("g:t1:1:once:true\n"
            "g:t2\n"
            ":t3:1:once:true\n"
            "g:t1:1:once:true\n"
            "g:t4:1:bogus:true\n"
            ":::respawn_limit:x\n"
            "g;x:t5:1 2:wait:\n")
    err = problems_of(text, "/etc/cltab")
    lines = str(err).split("\n")
    assert [l.split(":")[1] for l in lines] == ["2", "3", "4", "5", "6", "7", "7", "7"]
    assert all(l.startswith("/etc/cltab:") for l in lines)
    assert "duplicate tag 't1' (first defined on line 1)" in lines[2]
    assert "bad group name 'g;x'" in lines[5]
    assert "bad levels field '1 2'" in lines[6]
    assert "empty command" in lines[7]


def test_a_long_error_list_is_capped_at_twenty_lines_plus_a_count():
    text = "".join("bad line %d\n" % i for i in range(50))
    err = problems_of(text, "f")
    assert len(err.problems) == 50
    lines = str(err).split("\n")
    assert len(lines) == 21
    assert lines[0].startswith("f:1: expected")
    assert lines[19].startswith("f:20: expected")
    assert lines[20] == "... and 30 more"


def test_a_huge_bad_name_is_shortened_in_the_message():
    err = problems_of("%s:t:1:once:true\n" % ("g" * 5000), "f")
    assert len(str(err)) < 200
    assert "(5000 characters)" in str(err)


def test_cltab_error_without_a_line_has_no_line_number():
    err = CltabError("/x", [(None, "cannot read: gone")])
    assert str(err) == "/x: cannot read: gone"
    assert isinstance(err, Exception)


def test_cltab_error_survives_pickling():
    err = CltabError("/x", [(3, "boom")])
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == "/x:3: boom"
    assert again.problems == [(3, "boom")]


# --- check_name -------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["group", "tag", "level"])
@pytest.mark.parametrize("name", ["0", "a", "node-1.example.com", "x_y+z@w=v", "A" * 255])
def test_check_name_returns_a_valid_name(kind, name):
    assert check_name(kind, name) == name


@pytest.mark.parametrize("name", ["", "a:b", "a,b", "a b", "a;b", "$x", "'", '"', "\n",
                                  "a\x00", "\u00e9", "A" * 256, "a/b", "a*b"])
def test_check_name_refuses_a_bad_name(name):
    with pytest.raises(BadName) as info:
        check_name("group", name)
    assert isinstance(info.value, ValueError)


def test_check_name_message_uses_repr_so_control_characters_are_escaped():
    with pytest.raises(BadName) as info:
        check_name("tag", "a;b\n\x00")
    msg = str(info.value)
    assert msg == ("bad tag name 'a;b\\n\\x00': use 1 to 255 letters, digits "
                   "or _ . - + @ =")
    assert "\n" not in msg and "\x00" not in msg


@pytest.mark.parametrize("value", [None, 5, b"abc", ["a"]])
def test_check_name_refuses_a_value_that_is_not_a_string(value):
    with pytest.raises(BadName):
        check_name("level", value)


# --- load_cltab and file_stamp ----------------------------------------------------

def test_load_cltab_reads_a_file_and_records_its_stamp(tmp_path):
    p = tmp_path / "cltab"
    p.write_text(GOOD)
    tab = load_cltab(p)
    assert tab.path == str(p)
    assert len(tab.entries) == 6
    assert tab.stamp == file_stamp(p)
    assert load_cltab(str(p)).entries == tab.entries


def test_load_cltab_errors_name_the_file(tmp_path):
    p = tmp_path / "cltab"
    p.write_text("g:t:1:once:true\ng:t:1:once:true\n")
    with pytest.raises(CltabError) as info:
        load_cltab(p)
    assert str(info.value) == "%s:2: duplicate tag 't' (first defined on line 1)" % p
    assert info.value.path == str(p)


def test_load_cltab_on_a_missing_file_says_it_cannot_read(tmp_path):
    p = tmp_path / "nope"
    with pytest.raises(CltabError) as info:
        load_cltab(p)
    assert str(info.value) == "%s: cannot read: No such file or directory" % p
    assert info.value.problems == [(None, "cannot read: No such file or directory")]


def test_load_cltab_on_a_directory_says_it_cannot_read(tmp_path):
    with pytest.raises(CltabError) as info:
        load_cltab(tmp_path)
    assert str(info.value) == "%s: cannot read: Is a directory" % tmp_path


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_load_cltab_on_an_unreadable_file_says_it_cannot_read(tmp_path):
    p = tmp_path / "cltab"
    p.write_text(GOOD)
    p.chmod(0)
    try:
        with pytest.raises(CltabError) as info:
            load_cltab(p)
        assert str(info.value) == "%s: cannot read: Permission denied" % p
    finally:
        p.chmod(0o600)


def test_load_cltab_reports_invalid_utf8_with_the_line_number(tmp_path):
    p = tmp_path / "cltab"
    p.write_bytes(b"# caf\xe9 comment is fine\ng:t:1:once:echo caf\xe9\n"
                  b"g:u:1:once:echo \xc3\xa9t\xc3\xa9\n")
    with pytest.raises(CltabError) as info:
        load_cltab(p)
    assert str(info.value) == "%s:2: line is not valid UTF-8" % p


def test_load_cltab_keeps_valid_utf8_in_commands(tmp_path):
    p = tmp_path / "cltab"
    p.write_bytes("g:t:1:once:echo \u00e9t\u00e9 \u2603\n".encode("utf-8"))
    assert load_cltab(p).entries[0].command == "echo \u00e9t\u00e9 \u2603"


def test_file_stamp_is_device_inode_size_and_nanosecond_times(tmp_path):
    p = tmp_path / "cltab"
    p.write_text("abc")
    st = os.stat(p)
    assert file_stamp(p) == (st.st_dev, st.st_ino, 3, st.st_mtime_ns, st.st_ctime_ns)


def test_file_stamp_raises_oserror_for_a_missing_file(tmp_path):
    with pytest.raises(OSError):
        file_stamp(tmp_path / "nope")


def test_file_stamp_changes_when_the_file_is_replaced_with_the_same_size(tmp_path):
    # an editor or config tool writes a new file and renames it over the old
    p = tmp_path / "cltab"
    p.write_text("g:t:1:once:aaa\n")
    before = file_stamp(p)
    new = tmp_path / "cltab.new"
    new.write_text("g:t:1:once:bbb\n")
    os.replace(new, p)
    after = file_stamp(p)
    assert after[2] == before[2]                    # same size
    assert after != before                           # new inode at least


def test_file_stamp_changes_when_rewritten_in_place_within_the_same_second(tmp_path):
    # same inode, same size, same whole-second mtime: only nanoseconds differ
    p = tmp_path / "cltab"
    p.write_text("g:t:1:once:aaa\n")
    second = (os.stat(p).st_mtime_ns // 10**9) * 10**9
    os.utime(p, ns=(second + 1000, second + 1000))
    before = file_stamp(p)
    with open(p, "r+") as f:
        f.write("g:t:1:once:bbb\n")
    os.utime(p, ns=(second + 2000, second + 2000))
    after = file_stamp(p)
    assert after[1:3] == before[1:3]                 # same inode and size
    assert after[3] // 10**9 == before[3] // 10**9   # same whole second
    assert after != before


# --- read_settings ----------------------------------------------------------------

def test_read_settings_reads_only_the_setting_lines(tmp_path):
    p = tmp_path / "cltab"
    p.write_text(":::socket:/a\n"
                 "g:t:1:once:true\n"
                 "this line is garbage\n"
                 "g:t:1:once:duplicate tag ignored\n"
                 ":::respawn_limit:9\r\n"
                 "# :::socket:/commented\n"
                 ":::bad-name:1\n"
                 ":::heartbeat:-1\n"
                 ":::kill_delay:2.5\n"
                 ":::socket:/b\n"
                 ":::nocolon\n"
                 ":::other:x:y")
    assert read_settings(p) == {"socket": "/b", "respawn_limit": 9, "kill_delay": 2.5,
                                "other": "x:y"}


def test_read_settings_of_an_unreadable_file_is_empty(tmp_path):
    assert read_settings(tmp_path / "nope") == {}
    assert read_settings(tmp_path) == {}


def test_read_settings_of_a_file_without_settings_is_empty(tmp_path):
    p = tmp_path / "cltab"
    p.write_text(GOOD)
    assert read_settings(p) == {}


def test_read_settings_agrees_with_load_cltab_on_a_good_file(tmp_path):
    p = tmp_path / "cltab"
    p.write_text("\ufeff:::socket:/s\n" + GOOD + ":::clstat:/c\n:::term_delay:3\n")
    assert read_settings(p) == load_cltab(p).settings == {
        "socket": "/s", "clstat": "/c", "term_delay": 3.0}


def test_read_settings_skips_a_value_that_is_not_valid_utf8(tmp_path):
    p = tmp_path / "cltab"
    p.write_bytes(b":::socket:/good\n:::socket:/b\xffd\n")
    assert read_settings(p) == {"socket": "/good"}


# --- size ----------------------------------------------------------------------------

def test_five_thousand_entries_parse(tmp_path):
    lines = [":::heartbeat:45"]
    for i in range(5000):
        lines.append("grp%d:tag%d:%s:%s:echo %d:%d" % (
            i % 50, i, "123" if i % 2 else "a,b,", MODES[i % 4], i, i))
    p = tmp_path / "cltab"
    p.write_text("\n".join(lines) + "\n")
    tab = load_cltab(p)
    assert len(tab.entries) == 5000
    assert len(tab.groups()) == 50
    assert len(tab.group("grp7")) == 100
    assert tab.tag("tag4999").command == "echo 4999:4999"
    assert len(tab.level("grp1", "2")) == 100
    assert read_settings(p) == {"heartbeat": 45.0}
