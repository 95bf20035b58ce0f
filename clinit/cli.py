"""clinit -- per-node init for resource groups.

Usage:
  clinit -d [-c CLTAB] [-s SOCKET] [-q | --debug] [--log-file PATH] [--syslog]
  clinit [-c CLTAB] [-s SOCKET] -k [-v]
  clinit [-c CLTAB] [-s SOCKET] --halt GROUP [--wait] [--timeout S] [-v]
  clinit [-c CLTAB] [-s SOCKET] --status [GROUP] [--processes] [--json]
  clinit [-c CLTAB] [-s SOCKET] --follow [GROUP] [--json]
  clinit [-c CLTAB] [-s SOCKET] [-v] [--wait] [--timeout S] [[GROUP] LEVEL]
  clinit --dot MACHINE
  clinit --version
  clinit -h | --help

Forms:
  clinit -d              run the daemon in the foreground
  clinit GROUP LEVEL     switch GROUP to LEVEL (GROUP defaults to the host name)
  clinit                 ask the daemon to re-read cltab
  clinit -k              shut the daemon down (every group is halted first)
  clinit --halt GROUP    halt one group: stop all of it (HALTING, then CONFIGURED)
  clinit --status        every group as the daemon sees it: GROUP LEVEL STATE
  clinit --follow        print group and process transitions as they happen

Options:
  -c CLTAB         the table [default: /etc/cltab]
  -s SOCKET        the daemon's socket (default: from cltab, else the run folder)
  -d               run the daemon
  -k               shut the daemon down
  -v               print every group's status (from the daemon) after the command
  --wait           with a tell or --halt: return once the group has settled
  --timeout S      seconds --wait waits at most [default: 60]
  --halt GROUP     halt one group
  --status         print the groups' status, asked of the daemon
  --processes      with --status: one line per process entry instead
  --json           with --status or --follow: JSON (schema 1, see the README)
  --follow         stream transitions until interrupted (of GROUP only, if given)
  --dot MACHINE    print the transition table of process, group or daemon as
                   Graphviz DOT
  -q               daemon: log warnings and errors only
  --debug          daemon: log everything
  --log-file PATH  daemon: log to this file instead of stderr
  --syslog         daemon: log to syslog (/dev/log) instead of stderr
  --version        print the version
  -h --help        show this text

Exit status:
  0  done: the daemon accepted the request; with --wait, the group settled
     DONE or PASSED (or CONFIGURED after --halt); with -d, clean shutdown
  1  error: the daemon answered with an error or refused us; with --wait,
     the group settled FAILED; with -d, it could not start
  2  bad usage
  3  no daemon answers on the socket
  4  --wait: the timeout ran out before the group settled
"""

from __future__ import annotations

import os
import sys

__all__ = ["main", "VERSION", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_NO_DAEMON",
           "EXIT_TIMEOUT"]

VERSION = "0.1.0"
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NO_DAEMON, EXIT_TIMEOUT = 0, 1, 2, 3, 4
MACHINES = {"process": "process", "group": "group", "daemon": "daemonactor"}  # -> module


def _parse(argv):
    args = _parse_common(argv)
    if args is not None:
        return args
    from docopt import DocoptExit, docopt

    try:
        return docopt(__doc__, argv=argv, default_help=False)
    except DocoptExit as err:
        print(str(err), file=sys.stderr)
        return None


# What docopt gives when no option is given (tests/test_cli.py checks it against docopt).
_DEFAULTS = {"-d": False, "-c": "/etc/cltab", "-s": None, "-q": False, "--debug": False,
             "--log-file": None, "--syslog": False, "-k": False, "-v": False, "--halt": None,
             "--wait": False, "--timeout": "60", "--status": False, "GROUP": None,
             "--processes": False, "--json": False, "--follow": False, "LEVEL": None,
             "--dot": None, "--version": False, "--help": False}
_VALUED = {"-c", "-s", "--timeout"}
_FLAGS = {"-v", "-k", "--wait"}


def _parse_common(argv) -> dict | None:
    """The forms scripts run most (a tell, a re-read, -k, with -c, -s, -v,
    --wait, --timeout as separate words) as docopt parses them, without
    docopt's parse of the usage text (1.5 ms of a 35 ms command); None for
    anything else, which docopt then parses."""
    args = dict(_DEFAULTS)
    given = set()
    words = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word in given:
            return None
        if word in _VALUED and i + 1 < len(argv) and argv[i + 1] != "--":
            args[word] = argv[i + 1]
            given.add(word)
            i += 2
        elif word in _FLAGS:
            args[word] = True
            given.add(word)
            i += 1
        elif word.startswith("-") or len(words) == 2:
            return None
        else:
            words.append(word)
            i += 1
    if args["-k"] and (words or args["--wait"] or "--timeout" in given):
        return None
    if words:  # docopt fills [[GROUP] LEVEL] from the left: a lone word is GROUP
        args["GROUP"] = words[0]
        args["LEVEL"] = words[1] if len(words) == 2 else None
    return args


def _usage(text: str) -> int:
    print(f"clinit: {text} (see clinit -h)", file=sys.stderr)
    return EXIT_USAGE


def main(argv=None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    if args is None:
        return EXIT_USAGE
    if args["--help"]:
        print(__doc__.strip())
        return EXIT_OK
    if args["--version"]:
        print(f"clinit {VERSION}")
        return EXIT_OK
    if args["--dot"] is not None:
        return _dot(args["--dot"])
    if args["-d"]:
        return _run_daemon(args)
    if args["--json"] and not (args["--status"] or args["--follow"]):
        return _usage("--json goes with --status or --follow")
    if args["--processes"] and not args["--status"]:
        return _usage("--processes goes with --status")
    try:
        timeout = float(args["--timeout"])
    except ValueError:
        timeout = -1.0
    if not 0 < timeout <= 7 * 86400:
        return _usage(f"--timeout takes a number of seconds above 0 and at most 604800, "
                      f"not {args['--timeout']!r}")
    args["--timeout"] = timeout
    try:
        return _run_client(args)
    except KeyboardInterrupt:
        return 130


def _dot(machine: str) -> int:
    if machine not in MACHINES:
        return _usage(f"--dot takes one of {', '.join(MACHINES)}, not {machine!r}")
    import importlib

    sys.stdout.write(importlib.import_module(f"clinit.{MACHINES[machine]}").dot())
    return EXIT_OK


def _run_daemon(args) -> int:
    from .daemonactor import DaemonError, run
    from .logs import setup

    try:
        setup(quiet=args["-q"], debug=args["--debug"], log_file=args["--log-file"],
              syslog=args["--syslog"])
    except OSError as err:
        print(f"clinit: cannot start: cannot log to {args['--log-file']}: {err.strerror}",
              file=sys.stderr)
        return EXIT_ERROR
    try:
        return run(cltab=args["-c"], socket=args["-s"])
    except DaemonError as err:
        print(f"clinit: cannot start: {err}", file=sys.stderr)
        return EXIT_ERROR


def _run_client(args) -> int:
    from .control import Client, NoDaemon, Refused
    from .protocol import ProtocolError

    client = Client(cltab=args["-c"], socket=args["-s"])
    try:
        return _command(client, args)
    except NoDaemon as err:
        print(f"clinit: {err}", file=sys.stderr)
        return EXIT_NO_DAEMON
    except (Refused, ProtocolError) as err:
        print(f"clinit: {err}", file=sys.stderr)
        return EXIT_ERROR


def _command(client, args) -> int:
    if args["--status"] or args["--follow"] or args["--wait"] or args["-v"]:
        from . import views
    if args["--status"]:
        return views.status(client, args["GROUP"] or args["LEVEL"], args["--processes"],
                            args["--json"])
    if args["--follow"]:
        return views.follow(client, args["GROUP"] or args["LEVEL"], args["--json"])
    group, level = args["GROUP"], args["LEVEL"]
    if group is not None and level is None:
        group, level = os.uname().nodename, group  # one word is the level: GROUP is the host name
    wait = args["--wait"]
    if args["-k"]:
        if wait:
            return _usage("--wait goes with a tell or --halt")
        reply = client.call("shutdown")
    elif args["--halt"] is not None:
        if wait:
            reply = views.waiting(client, args["--halt"], None, args["--timeout"])
        else:
            reply = client.call("halt", group=args["--halt"])
    elif level is not None:
        if wait:
            reply = views.waiting(client, group, level, args["--timeout"])
        else:
            reply = client.call("tell", group=group, level=level)
    else:
        if wait:
            return _usage("--wait goes with a tell or --halt")
        reply = client.call("reread")
    ok = reply["ok"]
    if reply.get("plan"):  # a waiting request: what it was to do, then how it ended
        print(reply["plan"])
    print(reply["answer"], file=sys.stdout if ok else sys.stderr)
    if args["-v"]:
        views.print_groups(client)
    if wait and reply.get("timed_out"):
        return EXIT_TIMEOUT
    return EXIT_OK if ok else EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
