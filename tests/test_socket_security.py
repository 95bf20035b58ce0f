"""The control socket's security (SPEC §5): born 0600, its folder made 0700,
and only root and the daemon's own user (or the configured socket group)
obeyed, by the peer's credentials (SO_PEERCRED), whatever the file's mode.

The tests with another user need root (to run a client as `nobody`
under setpriv); they are skipped otherwise.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT, WEB as CLTAB, Daemon, wait_for, web_running

CLIENT = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except OSError as err:
    print(json.dumps({"connect_error": err.errno}))
    sys.exit()
s.sendall(sys.argv[2].encode() + b"\n")
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print(data.decode().strip() or "{}")
"""

OTHER_UID = OTHER_GID = 54321  # a user and group nobody else uses

needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                                reason="needs root and setpriv to run a client as another user")


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- the files ---------------------------------------------------------------------------

def test_the_socket_is_born_0600(make_daemon):
    d = make_daemon(CLTAB)
    st = os.stat(d.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.getuid()


def test_a_socket_folder_that_clinit_makes_is_0700(make_daemon, tmp_path):
    sock = tmp_path / "run" / "clinit" / "clinit.sock"
    d = make_daemon(CLTAB, socket=sock)
    assert d.client().request("ping")[0]
    assert mode(sock.parent) == 0o700
    assert mode(sock) == 0o600


def test_an_existing_socket_folder_keeps_its_mode(make_daemon, tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    os.chmod(folder, 0o755)
    d = make_daemon(CLTAB, socket=folder / "clinit.sock")
    assert d.client().request("ping")[0]
    assert mode(folder) == 0o755


# -- other users -------------------------------------------------------------------------------

NOBODY = pwd.getpwnam("nobody")
NOBODY_GROUP = grp.getgrgid(NOBODY.pw_gid).gr_name


def as_user(uid: int, gid: int, groups=()) -> list[str]:
    groups_opt = ["--groups=" + ",".join(map(str, groups))] if groups else ["--clear-groups"]
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", *groups_opt]


def python_for(uid: int, gid: int) -> str:
    """An interpreter this user may run (ours may sit in root's home)."""
    for candidate in (sys.executable, "/usr/bin/python3", shutil.which("python3")):
        if candidate and subprocess.run(as_user(uid, gid) + ["env", candidate, "-c",
                                                             "import json, socket"],
                                        capture_output=True).returncode == 0:
            return candidate
    pytest.skip(f"no Python interpreter that uid {uid} may run")


def ask_as(uid: int, gid: int, socket_path, request: dict, groups=()) -> dict:
    result = subprocess.run(as_user(uid, gid, groups) + ["env", python_for(uid, gid), "-c", CLIENT,
                                                         str(socket_path), json.dumps(request)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def open_folder():
    """A folder every user may pass through (pytest's tmp folders are 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="clinit-sock-"))
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)





@needs_root
def test_another_user_is_refused_even_when_the_socket_file_lets_it_in(make_daemon, open_folder):
    sock = open_folder / "clinit.sock"
    d = web_running(make_daemon, socket=sock)
    before = (d.clstat.read_text(), d.children())
    # the file's mode stops nobody first...
    reply = ask_as(NOBODY.pw_uid, NOBODY.pw_gid, sock, {"cmd": "shutdown"})
    assert reply == {"connect_error": 13}  # EACCES
    # ...and past the file's mode, the peer's credentials do
    os.chmod(sock, 0o666)
    for request in ({"cmd": "shutdown"}, {"cmd": "tell", "group": "web", "level": "stop"},
                    {"cmd": "ping"}):
        reply = ask_as(NOBODY.pw_uid, NOBODY.pw_gid, sock, request)
        assert reply["ok"] is False and reply["answer"].startswith("permission denied"), reply
    assert d.proc.poll() is None
    assert (d.clstat.read_text(), d.children()) == before
    d.logged(f"refused a client of uid {NOBODY.pw_uid}")
    assert d.client().request("ping")[0]  # root still is obeyed


@needs_root
def test_a_daemon_run_by_a_user_obeys_that_user_and_root_and_refuses_others(open_folder):
    os.chown(open_folder, NOBODY.pw_uid, NOBODY.pw_gid)
    d = Daemon(open_folder, CLTAB, {})
    d._log = open(d.log, "ab")
    try:
        command = clinit_for(NOBODY.pw_uid, NOBODY.pw_gid, open_folder) + ["-d", "-c", str(d.cltab)]
        d.proc = subprocess.Popen(as_user(NOBODY.pw_uid, NOBODY.pw_gid) + command,
                                  stdout=d._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for(d.answers, message=f"daemon did not come up: {d.log_text()}")
        assert os.stat(d.socket).st_uid == NOBODY.pw_uid and mode(d.socket) == 0o600
        # root is obeyed
        assert d.tell("web", "run").startswith("level transition started: ")
        d.wait_state("web", "run", "DONE")
        # the daemon's own user is obeyed (socket opened up so the test can reach it as anyone)
        os.chmod(d.socket, 0o666)
        reply = ask_as(NOBODY.pw_uid, NOBODY.pw_gid, d.socket, {"cmd": "ping"})
        assert reply["ok"] is True, reply
        # another user is not
        reply = ask_as(OTHER_UID, OTHER_GID, d.socket, {"cmd": "shutdown"})
        assert reply["ok"] is False and reply["answer"].startswith("permission denied"), reply
        assert d.proc.poll() is None
        assert d.status("web", "run") == "DONE"
    finally:
        assert d.stop() == 0, d.log_text()


@needs_root
def test_members_of_the_socket_group_are_obeyed_and_others_are_not(make_daemon, open_folder):
    sock = open_folder / "clinit.sock"
    d = web_running(make_daemon, socket=sock, socket_group=NOBODY_GROUP)
    st = os.stat(sock)
    assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == NOBODY.pw_gid
    # by primary group, and by a supplementary one
    reply = ask_as(NOBODY.pw_uid, NOBODY.pw_gid, sock, {"cmd": "ping"})
    assert reply["ok"] is True, reply
    reply = ask_as(OTHER_UID, OTHER_GID, sock, {"cmd": "tell", "group": "web", "level": "run"},
                   groups=[NOBODY.pw_gid])
    assert reply["ok"] is True and reply["answer"].startswith("level transition started: ")
    # a user outside the group: stopped by the file's mode, then by its credentials
    assert ask_as(OTHER_UID, OTHER_GID, sock, {"cmd": "ping"}) == {"connect_error": 13}
    os.chmod(sock, 0o666)
    reply = ask_as(OTHER_UID, OTHER_GID, sock, {"cmd": "shutdown"})
    assert reply["ok"] is False and reply["answer"].startswith("permission denied"), reply
    assert d.proc.poll() is None


def clinit_for(uid: int, gid: int, folder: Path) -> list[str]:
    """`env PYTHONPATH=... PYTHON bin/clinit` as this user can run it (pykka and
    docopt copied into `folder` if the user cannot read ours)."""
    python = python_for(uid, gid)
    path = os.pathsep.join(sorted({str(Path(m.__file__).parent.parent)
                                   for m in _imports("pykka", "docopt")}))
    check = subprocess.run(as_user(uid, gid)
                           + ["env", f"PYTHONPATH={path}", python, "-c", "import pykka, docopt"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        path = _copy_packages(folder / "lib", "pykka", "docopt")
    return ["env", f"PYTHONPATH={path}", python, str(ROOT / "bin" / "clinit")]


# -- the run folder ------------------------------------------------------------------------

def start_refused(command: list[str], d: Daemon) -> str:
    """Run `clinit -d` on d's cltab; it must exit 1 without a socket: its stderr."""
    result = subprocess.run(command + ["-d", "-c", str(d.cltab)], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert not os.path.exists(d.socket) and not os.path.exists(d.clstat)
    return result.stderr


@needs_root
def test_a_run_folder_owned_by_another_user_is_refused(open_folder):
    # nobody's daemon, and a run folder that OTHER_UID made first (mode 0755)
    run = open_folder / "run"
    run.mkdir(mode=0o755)
    os.chown(run, OTHER_UID, OTHER_GID)
    d = Daemon(open_folder, CLTAB, {"socket": run / "clinit.sock", "clstat": run / "clstat"})
    err = start_refused(as_user(NOBODY.pw_uid, NOBODY.pw_gid)
                        + clinit_for(NOBODY.pw_uid, NOBODY.pw_gid, open_folder), d)
    assert f"run folder {run}: the folder is owned by uid {OTHER_UID}, not by uid " \
           f"{NOBODY.pw_uid} or root" in err, err
    assert os.listdir(run) == []


@needs_root
@pytest.mark.parametrize("folder_mode", [0o777, 0o770, 0o1777], ids=["0777", "0770", "1777"])
def test_a_run_folder_others_may_write_to_is_refused(open_folder, folder_mode):
    # nobody's daemon, and its own run folder, but one its group or anyone may write to
    run = open_folder / "run"
    run.mkdir()
    os.chmod(run, folder_mode)
    os.chown(run, NOBODY.pw_uid, NOBODY.pw_gid)
    d = Daemon(open_folder, CLTAB, {"socket": run / "clinit.sock", "clstat": run / "clstat"})
    err = start_refused(as_user(NOBODY.pw_uid, NOBODY.pw_gid)
                        + clinit_for(NOBODY.pw_uid, NOBODY.pw_gid, open_folder), d)
    assert f"run folder {run}: writable by " in err and f"(mode {folder_mode:04o})" in err, err


def test_a_status_folder_others_may_write_to_is_refused_as_well(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    d = Daemon(tmp_path, CLTAB, {"clstat": shared / "clstat"})
    err = start_refused([sys.executable, str(ROOT / "bin" / "clinit")], d)
    assert f"run folder {shared}: writable by its group and others (mode 0777)" in err, err


def test_a_symlink_to_a_run_folder_is_trusted_only_if_the_link_is_ours_or_roots(make_daemon,
                                                                                  tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    d = make_daemon(CLTAB, socket=tmp_path / "link" / "clinit.sock")
    assert d.client().request("ping")[0]
    if os.geteuid() == 0:
        d.stop()
        os.lchown(tmp_path / "link", OTHER_UID, OTHER_GID)
        err = start_refused([sys.executable, str(ROOT / "bin" / "clinit")], d)
        assert f"the symlink is owned by uid {OTHER_UID}" in err, err


def _imports(*names):
    import importlib
    return [importlib.import_module(n) for n in names]


def _copy_packages(dest: Path, *names) -> str:
    """Copies of pure-Python packages where another user can read them."""
    for module in _imports(*names):
        shutil.copytree(Path(module.__file__).parent, dest / module.__name__)
    for folder, _, _ in os.walk(dest):
        os.chmod(folder, 0o755)
    return str(dest)
