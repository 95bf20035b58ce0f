"""clinit -- per-node init for resource groups.

Usage:
  clinit -d [-c CLTAB] [-s SOCKET]
  clinit [-c CLTAB] [-s SOCKET] -k [-v]
  clinit [-c CLTAB] [-s SOCKET] [-v] [[GROUP] LEVEL]
  clinit -h | --help

Forms:
  clinit -d              run the daemon in the foreground
  clinit GROUP LEVEL     switch GROUP to LEVEL (GROUP defaults to the host name)
  clinit                 ask the daemon to re-read cltab
  clinit -k              shut the daemon down (every group is halted first)

Options:
  -c CLTAB      the table [default: /etc/cltab]
  -s SOCKET     the daemon's socket (default: from cltab, else the run folder)
  -d            run the daemon
  -k            shut the daemon down
  -v            print every group's status after the command: GROUP LEVEL STATE
  -h --help     show this text

Exit status:
  0  done (the daemon accepted the request; with -d: clean shutdown)
  1  the daemon answered with an error (with -d: it could not start)
  2  bad usage
  3  no daemon answers on the socket
"""

from __future__ import annotations

import os
import sys

__all__ = ["main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NO_DAEMON = 0, 1, 2, 3


def _parse(argv):
    from docopt import DocoptExit, docopt

    try:
        return docopt(__doc__, argv=argv, default_help=False)
    except DocoptExit as err:
        print(str(err), file=sys.stderr)
        return None


def main(argv=None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    if args is None:
        return EXIT_USAGE
    if args["--help"]:
        print(__doc__.strip())
        return EXIT_OK
    if args["-d"]:
        return _run_daemon(args["-c"], args["-s"])
    return _run_client(args)


def _run_daemon(cltab, sock) -> int:
    import logging

    from .daemonactor import DaemonError, run

    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format=f"clinit[{os.getpid()}] %(levelname)s %(name)s: %(message)s")
    try:
        return run(cltab=cltab, socket=sock)
    except DaemonError as err:
        print(f"clinit: cannot start: {err}", file=sys.stderr)
        return EXIT_ERROR


def _run_client(args) -> int:
    from .control import Client, NoDaemon
    from .protocol import ProtocolError

    client = Client(cltab=args["-c"], socket=args["-s"])
    group, level = args["GROUP"], args["LEVEL"]
    if group is not None and level is None:
        group, level = os.uname().nodename, group  # one word is the level: GROUP is the host name
    try:
        if args["-k"]:
            ok, answer = client.request("shutdown")
        elif level is not None:
            ok, answer = client.request("tell", group=group, level=level)
        else:
            ok, answer = client.request("reread")
    except NoDaemon as err:
        print(f"clinit: {err}", file=sys.stderr)
        return EXIT_NO_DAEMON
    except ProtocolError as err:
        print(f"clinit: {err}", file=sys.stderr)
        return EXIT_ERROR
    print(answer, file=sys.stdout if ok else sys.stderr)
    if args["-v"]:
        sys.stdout.write(client.status())
    return EXIT_OK if ok else EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
