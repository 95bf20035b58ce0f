"""Reading and checking cltab, the table of groups, tags, levels and commands.

One entry per line, ``group:tag:levels:mode:command``, split at the first
four colons only (the command keeps any further colons).  Lines whose first
character is ``#`` and blank lines are ignored.  A line ``:::name:value`` is
a setting.  See SPEC.md section 2.

This module is imported by the command-line client, so it uses nothing but
``os`` and builtins at import time.
"""

import os

__all__ = ["Entry", "Cltab", "CltabError", "BadName", "MODES", "SETTINGS",
           "parse_cltab", "load_cltab", "file_stamp", "read_settings", "check_name"]

MODES = ("wait", "once", "respawn", "test", "off")

# Known settings and their converters.  Unknown setting names are allowed and
# kept as str.  Numbers must be >= 0 (and finite).
SETTINGS = {"socket": str, "clstat": str, "log": str, "logdir": str, "socket_group": str,
            "respawn_limit": int, "respawn_window": float, "respawn_pause": float,
            "term_delay": float, "kill_delay": float, "heartbeat": float,
            "max_clients": int, "idle_timeout": float, "max_held": int, "watch_queue": int}

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DIGITS = "0123456789"
_NAME_CHARS = _LETTERS + _DIGITS + "_.+@=-"
_SETTING_CHARS = _LETTERS + _DIGITS + "_"
_FLOAT_CHARS = _DIGITS + ".eE+-"
_NAME_RULE = "use 1 to 255 letters, digits or _ . - + @ ="
_MAX_NAME = 255
_MAX_SHOWN = 40          # longest value quoted whole in an error message
_MAX_PROBLEMS = 20       # problems shown by str(CltabError)


class BadName(ValueError):
    """A group, tag or level name that breaks the naming rule."""


def _show(value):
    """repr() of value for an error message, shortened when very long."""
    if isinstance(value, str) and len(value) > _MAX_SHOWN:
        return "%r... (%d characters)" % (value[:_MAX_SHOWN], len(value))
    return repr(value)


def _name_ok(value):
    return (0 < len(value) <= _MAX_NAME and value.isascii()
            and not value.strip(_NAME_CHARS))


def check_name(kind, value):
    """Return value if it is a valid group, tag or level name, else raise BadName.

    kind is 'group', 'tag' or 'level' (used in the message).  A valid name is
    a str of 1 to 255 ASCII letters, digits or ``_ . - + @ =``; '0' is valid.
    """
    if isinstance(value, str) and _name_ok(value):
        return value
    if isinstance(value, str):
        raise BadName("bad %s name %s: %s" % (kind, _show(value), _NAME_RULE))
    raise BadName("bad %s name %s: not a string; %s" % (kind, _show(value), _NAME_RULE))


class Entry:
    """One cltab entry.  Immutable, hashable, compared by value."""

    __slots__ = ("group", "tag", "levels", "mode", "command", "line", "_in")

    def __init__(self, group, tag, levels, mode, command, line):
        s = object.__setattr__
        s(self, "group", group)
        s(self, "tag", tag)
        s(self, "levels", levels)
        s(self, "mode", mode)
        s(self, "command", command)
        s(self, "line", line)
        # SPEC section 2: the field itself, plus either its non-empty
        # comma-separated names or (without a comma) its single characters.
        if "," in levels:
            names = [n for n in levels.split(",") if n]
        else:
            names = list(levels)
        names.append(levels)
        s(self, "_in", frozenset(names))

    def _key(self):
        return (self.group, self.tag, self.levels, self.mode, self.command, self.line)

    def __setattr__(self, name, value):
        raise AttributeError("Entry is immutable")

    def __delattr__(self, name):
        raise AttributeError("Entry is immutable")

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return ("Entry(group=%r, tag=%r, levels=%r, mode=%r, command=%r, line=%r)"
                % self._key())

    def __reduce__(self):
        return (self.__class__, self._key())

    def in_level(self, level):
        """True when this entry belongs to level (SPEC section 2)."""
        return level in self._in

    def same_run(self, other):
        """True when a process started for other may be kept for self."""
        return self.mode == other.mode and self.command == other.command


class CltabError(Exception):
    """A cltab that cannot be used.

    ``path`` is the file; ``problems`` a list of ``(line_or_None, message)``.
    str() gives one line per problem, ``PATH:LINE: message``.
    """

    def __init__(self, path, problems):
        if isinstance(problems, str):
            problems = [(None, problems)]
        problems = list(problems)
        super().__init__(path, problems)
        self.path = path
        self.problems = problems

    def __str__(self):
        out = []
        for line, message in self.problems[:_MAX_PROBLEMS]:
            if line is None:
                out.append("%s: %s" % (self.path, message))
            else:
                out.append("%s:%d: %s" % (self.path, line, message))
        more = len(self.problems) - _MAX_PROBLEMS
        if more > 0:
            out.append("... and %d more" % more)
        return "\n".join(out)


class Cltab:
    """A parsed cltab: entries in file order, settings and lookup indexes."""

    __slots__ = ("path", "entries", "settings", "stamp", "_groups", "_tags", "_levels")

    def __init__(self, path, entries, settings=None, stamp=None):
        self.path = path
        self.entries = tuple(entries)
        self.settings = dict(settings or {})
        self.stamp = stamp
        groups = {}
        tags = {}
        for e in self.entries:
            groups.setdefault(e.group, []).append(e)
            tags.setdefault(e.tag, e)
        self._groups = {g: tuple(es) for g, es in groups.items()}
        self._tags = tags
        self._levels = {}  # (group, level) -> entries: a table never changes

    def __repr__(self):
        return "<Cltab %r: %d entries, %d groups>" % (
            self.path, len(self.entries), len(self._groups))

    def group(self, name):
        """That group's entries in file order, () if none."""
        return self._groups.get(name, ())

    def groups(self):
        """Group names in order of first appearance."""
        return tuple(self._groups)

    def has_group(self, name):
        return name in self._groups

    def tag(self, tag):
        """The entry with that tag, or None."""
        return self._tags.get(tag)

    def level(self, group, level):
        """The entries of group that belong to level, in file order."""
        key = (group, level)
        found = self._levels.get(key)
        if found is None:
            found = tuple(e for e in self._groups.get(group, ()) if e.in_level(level))
            if len(self._levels) < 4096:  # levels come from clients: keep it bounded
                self._levels[key] = found
        return found


def _convert_setting(name, value):
    """Convert a known setting's value.  Return (value, None) or (None, problem)."""
    conv = SETTINGS.get(name)
    if conv is None:
        return value, None
    if conv is str:
        if value == "":
            return None, "empty value for setting %r" % name
        return value, None
    v = value.strip(" \t")
    if conv is int:
        if v.isascii() and v.isdigit():
            return int(v), None
        return None, ("bad value %s for setting %r: expected a whole number >= 0"
                      % (_show(value), name))
    # float: plain decimal notation only (no inf, nan, underscores, unicode digits)
    if v and v.isascii() and not v.strip(_FLOAT_CHARS) and "_" not in v:
        try:
            f = float(v)
        except ValueError:
            f = None
        if f is not None and 0 <= f < float("inf"):
            return f + 0.0, None        # + 0.0 turns -0.0 into 0.0
    return None, ("bad value %s for setting %r: expected a number >= 0"
                  % (_show(value), name))


def _setting_name_ok(name):
    return (name != "" and name.isascii() and name[0] not in _DIGITS
            and not name.strip(_SETTING_CHARS))


def _setting(text):
    """A setting line without its leading ``:::``: (name, value, None) or (name, None, problem)."""
    name, sep, value = text.partition(":")
    if not sep:
        return name, None, "setting %s has no value: expected :::name:value" % _show(name)
    if not _setting_name_ok(name):
        return name, None, ("bad setting name %s: use letters, digits and _, not starting "
                            "with a digit" % _show(name))
    value, problem = _convert_setting(name, value)
    return name, value, problem


def _has_surrogates(s):
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_levels(field, problems, lineno):
    if field == "":
        problems.append((lineno, "empty levels field"))
        return
    if "," not in field:
        if not _name_ok(field):
            problems.append((lineno, "bad levels field %s: %s (several names "
                             "separated by commas, or single characters)"
                             % (_show(field), _NAME_RULE)))
        return
    names = [n for n in field.split(",") if n]
    if not names:
        problems.append((lineno, "levels field %s names no level" % _show(field)))
    for n in names:
        if not _name_ok(n):
            problems.append((lineno, "bad level name %s in levels field %s: %s"
                             % (_show(n), _show(field), _NAME_RULE)))


def parse_cltab(text, path="<string>"):
    """Parse cltab text.  Return a Cltab, or raise CltabError with every problem."""
    if text.startswith("\ufeff"):
        text = text[1:]                     # a UTF-8 byte order mark
    # Lone surrogates come from undecodable bytes (load_cltab decodes with
    # surrogateescape); only look for them line by line when there are any.
    check_encoding = not text.isascii() and _has_surrogates(text)
    problems = []
    entries = []
    settings = {}
    first_line = {}                          # tag -> line it was first defined on
    modes = MODES
    for lineno, line in enumerate(text.split("\n"), 1):
        if line.endswith("\r"):
            line = line[:-1]
        if not line or line[0] == "#" or line.isspace():
            continue
        if check_encoding and _has_surrogates(line):
            problems.append((lineno, "line is not valid UTF-8"))
            continue
        if line.startswith(":::"):
            name, value, problem = _setting(line[3:])
            if problem:
                problems.append((lineno, problem))
            else:
                settings[name] = value
            continue
        fields = line.split(":", 4)
        if len(fields) < 5:
            problems.append((lineno, "expected group:tag:levels:mode:command, "
                             "found %d field%s" % (len(fields), "" if len(fields) == 1 else "s")))
            continue
        group, tag, levels, mode, command = fields
        n_before = len(problems)
        if group == "":
            problems.append((lineno, "empty group field: %s" % _NAME_RULE))
        elif not _name_ok(group):
            problems.append((lineno, "bad group name %s: %s" % (_show(group), _NAME_RULE)))
        if tag == "":
            problems.append((lineno, "empty tag field: %s" % _NAME_RULE))
        elif not _name_ok(tag):
            problems.append((lineno, "bad tag name %s: %s" % (_show(tag), _NAME_RULE)))
        else:
            first = first_line.get(tag)
            if first is None:
                first_line[tag] = lineno
            else:
                problems.append((lineno, "duplicate tag %r (first defined on line %d)"
                                 % (tag, first)))
        _check_levels(levels, problems, lineno)
        if mode not in modes:
            problems.append((lineno, "unknown mode %s: use one of %s"
                             % (_show(mode), ", ".join(modes))))
        elif mode != "off" and (command == "" or command.isspace()):
            problems.append((lineno, "empty command (only mode off may have none)"))
        elif "\0" in command:
            problems.append((lineno, "command contains a NUL character"))
        if len(problems) == n_before:
            entries.append(Entry(group, tag, levels, mode, command, lineno))
    if problems:
        raise CltabError(path, problems)
    return Cltab(path, entries, settings, None)


MAX_CLTAB = 16 * 1024 * 1024  # bytes; a larger "table" is a mistake, not a table


def file_stamp(path):
    """(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns) of path; raises OSError."""
    return _stamp_of(os.stat(path))


def _stamp_of(st):
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _read_regular(path):
    """(stamp, bytes) of a regular file of at most MAX_CLTAB bytes.

    Opened without blocking, so a FIFO or a device put in cltab's place
    (/dev/zero, a pipe nobody writes) is refused instead of hanging or
    filling memory.  Raises OSError.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        if not (st.st_mode & 0o170000 == 0o100000):  # S_ISREG without importing stat
            raise OSError(0, "not a regular file")
        data = f.read(MAX_CLTAB + 1)
    if len(data) > MAX_CLTAB:
        raise OSError(0, "larger than %d bytes" % MAX_CLTAB)
    return _stamp_of(st), data


def load_cltab(path):
    """Read and parse the cltab file at path.

    Raise CltabError for a bad table, and ``PATH: cannot read: REASON`` when
    the file is missing, unreadable or a directory.  The result's ``stamp`` is
    the file_stamp() of the file that was actually read.
    """
    spath = os.fsdecode(os.fspath(path))
    try:
        stamp, data = _read_regular(path)
    except OSError as err:
        raise CltabError(spath, [(None, "cannot read: %s" % (err.strerror or err))]) from None
    text = data.decode("utf-8", "surrogateescape")
    table = parse_cltab(text, spath)
    table.stamp = stamp
    return table


def read_settings(path):
    """The ``:::name:value`` settings of the file at path, leniently.

    Every other line and every error is ignored (an invalid value leaves an
    earlier valid one in place); {} when the file cannot be read.
    """
    try:
        data = _read_regular(path)[1]
    except (OSError, ValueError):
        return {}
    if b":::" not in data:
        return {}
    text = data.decode("utf-8", "surrogateescape")
    settings = {}
    if text.startswith("\ufeff:::"):
        text = text[1:]
    if text.startswith(":::"):
        starts = [0]
    else:
        starts = []
    i = text.find("\n:::")
    while i >= 0:
        starts.append(i + 1)
        i = text.find("\n:::", i + 1)
    for start in starts:
        end = text.find("\n", start)
        line = text[start + 3:] if end < 0 else text[start + 3:end]
        if line.endswith("\r"):
            line = line[:-1]
        if _has_surrogates(line):
            continue
        name, value, problem = _setting(line)
        if problem is None:
            settings[name] = value
    return settings
