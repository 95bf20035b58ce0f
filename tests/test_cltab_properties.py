"""Property tests for cltab parsing (hypothesis)."""

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from clinit.cltab import MODES, SETTINGS, BadName, CltabError, Entry, check_name, parse_cltab

NAME_RE = re.compile(r"[A-Za-z0-9_.+@=-]{1,255}")
NAME_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.+@=-"

EXAMPLES = settings(max_examples=200, deadline=None)

names = st.text(NAME_ALPHABET, min_size=1, max_size=12)
long_names = st.text(NAME_ALPHABET, min_size=250, max_size=255)
any_name = st.one_of(names, names, names, long_names)

# characters that tend to break a line parser
tricky = st.sampled_from(list(":,#\n\r\t \x00\x0b\x0c\x1c\x85\u2028\ufeff\udcff")
                         + list(MODES) + [":::", ":::socket:", ":::respawn_limit:"])
any_text = st.one_of(
    st.text(),
    st.lists(st.one_of(tricky, st.text(max_size=5), names), max_size=40).map("".join),
)


# (1) any text gives a table or a CltabError, nothing else ---------------------------

@EXAMPLES
@given(any_text)
def test_any_text_gives_a_table_or_a_cltab_error(text):
    try:
        tab = parse_cltab(text, "p")
    except CltabError as err:
        assert err.problems
        assert str(err).startswith("p")
    else:
        for e in tab.entries:
            assert check_name("group", e.group) and check_name("tag", e.tag)
            assert e.mode in MODES


@EXAMPLES
@given(st.lists(st.tuples(st.one_of(any_name, st.text(max_size=4)),
                          st.one_of(any_name, st.text(max_size=4)),
                          st.one_of(names, st.text(max_size=4), st.just("a,,b,")),
                          st.one_of(st.sampled_from(MODES), st.text(max_size=4)),
                          st.text(max_size=10)), max_size=15))
def test_almost_valid_lines_give_a_table_or_a_cltab_error(rows):
    text = "\n".join(":".join(r) for r in rows)
    try:
        parse_cltab(text)
    except CltabError:
        pass


# (2) round trip ---------------------------------------------------------------------

comma_levels = st.lists(names, min_size=1, max_size=4).flatmap(
    lambda ns: st.sampled_from([",".join(ns), ",".join(ns) + ",", "," + ",".join(ns),
                                ",,".join(ns) + ",,"]))
level_fields = st.one_of(names, comma_levels)
commands = st.text(st.characters(blacklist_categories=("Cs",),
                                 blacklist_characters="\n\r\x00"), max_size=30).filter(
    lambda c: c.strip() != "")
setting_names = st.one_of(
    st.sampled_from(sorted(SETTINGS)),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True))


def setting_values(name):
    conv = SETTINGS.get(name, str)
    if conv is int:
        return st.integers(0, 10**6).map(lambda v: (str(v), v))
    if conv is float:
        return st.floats(0, 1e9, allow_nan=False, allow_infinity=False).map(
            lambda v: (repr(v), v))
    text = st.text(st.characters(blacklist_categories=("Cs",),
                                 blacklist_characters="\n\r"),
                   min_size=1 if conv is str and name in SETTINGS else 0, max_size=20)
    return text.map(lambda v: (v, v))


settings_lines = st.lists(
    setting_names.flatmap(lambda n: setting_values(n).map(lambda v: (n, v))), max_size=6)


@st.composite
def tables(draw):
    n = draw(st.integers(0, 25))
    tags = draw(st.lists(any_name, min_size=n, max_size=n, unique=True))
    groups = draw(st.lists(any_name, min_size=1, max_size=5))
    rows = []
    for tag in tags:
        mode = draw(st.sampled_from(MODES))
        command = draw(commands)
        if mode == "off" and draw(st.booleans()):
            command = ""
        rows.append((draw(st.sampled_from(groups)), tag, draw(level_fields), mode, command))
    sets = draw(settings_lines)
    # interleave settings, comments and blank lines between the entries
    items = [("entry", r) for r in rows] + [("setting", s) for s in sets]
    items += [("junk", j) for j in draw(st.lists(
        st.sampled_from(["", "# comment: a:b:c:d:e", "#", "   ", "\t", "#:::socket:/x"]),
        max_size=5))]
    order = draw(st.permutations(range(len(items))))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    final = draw(st.booleans())
    return [items[i] for i in order], newline, final


@EXAMPLES
@given(tables())
def test_a_rendered_valid_table_parses_back_to_the_same_entries_and_settings(table):
    items, newline, final = table
    lines = []
    expected_entries = []
    expected_settings = {}
    for kind, item in items:
        if kind == "entry":
            lines.append(":".join(item))
            expected_entries.append(Entry(*item, line=len(lines)))
        elif kind == "setting":
            name, (text, value) = item
            lines.append(":::%s:%s" % (name, text))
            expected_settings[name] = value
        else:
            lines.append(item)
    text = newline.join(lines) + (newline if final else "")
    tab = parse_cltab(text, "rt")
    assert tab.entries == tuple(expected_entries)
    assert tab.settings == expected_settings
    for name, value in tab.settings.items():
        assert type(value) is SETTINGS.get(name, str)
    for e in expected_entries:
        assert tab.tag(e.tag) == e
        assert e in tab.group(e.group)
    assert list(tab.groups()) == list(dict.fromkeys(e.group for e in expected_entries))


# (3) in_level agrees with a reference implementation ------------------------------

def reference_in_level(field, level):
    if field == level:
        return True
    if "," in field:
        return level in [n for n in field.split(",") if n]
    return len(level) == 1 and level in field


level_chars = st.sampled_from(list("012ab,") + ["ab", "10", "x"])
fields = st.lists(level_chars, min_size=1, max_size=6).map("".join)


@EXAMPLES
@given(fields, st.one_of(fields, st.text("012ab,", max_size=3), st.text(max_size=3)))
def test_in_level_agrees_with_the_reference_rule(field, level):
    e = Entry("g", "t", field, "once", "true", 1)
    assert e.in_level(level) == reference_in_level(field, level)


@EXAMPLES
@given(fields)
def test_every_level_of_a_field_is_found(field):
    e = Entry("g", "t", field, "once", "true", 1)
    assert e.in_level(field)
    for part in (field.split(",") if "," in field else field):
        if part:
            assert e.in_level(part)


# (4) check_name accepts exactly the valid names -------------------------------------

name_like = st.one_of(
    st.text(),
    st.text(NAME_ALPHABET + ":, ;$'\"\t\n\x00\x7f\u00e9\u0663\uff21\u212a", max_size=8),
    names,
    long_names,
    st.text(NAME_ALPHABET, min_size=254, max_size=258),
)


@EXAMPLES
@given(st.sampled_from(["group", "tag", "level"]), name_like)
def test_check_name_accepts_exactly_the_names_of_the_reference_regex(kind, value):
    valid = NAME_RE.fullmatch(value) is not None
    try:
        result = check_name(kind, value)
    except BadName as err:
        assert not valid
        message = str(err)
        assert message.startswith("bad %s name " % kind)
        assert "\n" not in message and "\x00" not in message
    else:
        assert valid
        assert result == value
