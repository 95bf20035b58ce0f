"""The Python API (SPEC §7): `clinit.client`, `clinit.status` and `clinit.daemon`."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import clinit
from conftest import ROOT, wait_for

SLEEPER = "exec sleep 1000"


@pytest.fixture(autouse=True)
def private_run_dir(tmp_path, monkeypatch):
    """Default socket and status paths fall in this test's folder."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))


def test_a_client_tells_reads_the_status_and_shuts_the_daemon_down(make_daemon):
    d = make_daemon(f"""
        web:w1:run:respawn:{SLEEPER}
        db:d1:1:once:true
    """)
    c = clinit.client(cltab=str(d.cltab))
    assert c.tell("web", "run").startswith("level transition started: ")
    assert c.tell("db", "1").startswith("level transition started: ")
    d.wait_state("web", "run", "DONE")
    d.wait_state("db", "1", "DONE")
    assert sorted(c.status().splitlines()) == ["db 1 DONE", "web run DONE"]
    assert c.status(group="web") == "run DONE\n"
    assert c.status(level="1") == "db DONE\n"
    assert c.status("web", "run") == "DONE"
    assert c.shutdown() == "all groups halting"
    assert d.proc.wait(timeout=20) == 0
    assert c.status() == ""


def test_a_client_tell_returns_the_daemons_error_answers(make_daemon):
    d = make_daemon(f"web:w1:run:respawn:{SLEEPER}\n")
    c = clinit.client(cltab=str(d.cltab))
    assert c.tell("nosuch", "run") == "no such group: nosuch"
    assert c.tell("a;b", "run").startswith("bad group name 'a;b'")
    assert c.status() == ""


def test_a_client_without_a_daemon_raises_no_daemon(make_daemon):
    d = make_daemon(f"web:w1:run:respawn:{SLEEPER}\n", start=False)
    c = clinit.client(cltab=str(d.cltab))
    with pytest.raises(clinit.NoDaemon, match="no clinit daemon answers"):
        c.tell("web", "run")
    with pytest.raises(ConnectionError):
        c.shutdown()
    assert c.status() == ""


def test_conf_gives_the_cltab_socket_and_status_paths(make_daemon):
    d = make_daemon(f"web:w1:run:respawn:{SLEEPER}\n", start=False)
    c = clinit.client(cltab=str(d.cltab))
    assert c.conf("cltab") == str(d.cltab)
    assert c.conf("socket") == str(d.socket)
    assert c.conf("clstat") == str(d.clstat)


def test_cltab_settings_override_the_constructors_values(make_daemon, tmp_path):
    d = make_daemon(f"web:w1:run:respawn:{SLEEPER}\n")
    c = clinit.client(cltab=str(d.cltab), socket=str(tmp_path / "other.sock"),
                      clstat=str(tmp_path / "other-clstat"))
    assert c.conf("socket") == str(d.socket)
    assert c.conf("clstat") == str(d.clstat)
    assert c.tell("web", "run").startswith("level transition started: ")
    d.wait_state("web", "run", "DONE")
    assert c.status("web", "run") == "DONE"


def test_constructor_values_stand_when_the_cltab_has_no_such_setting(tmp_path):
    cltab = tmp_path / "cltab"
    cltab.write_text(":::term_delay:0.25\nweb:w1:run:once:true\n")
    c = clinit.client(cltab=str(cltab), socket=str(tmp_path / "s.sock"), clstat=str(tmp_path / "st"))
    assert c.conf("socket") == str(tmp_path / "s.sock")
    assert c.conf("clstat") == str(tmp_path / "st")
    assert float(c.conf("term_delay")) == 0.25
    assert c.conf("no_such_setting") == ""


def test_without_settings_or_values_the_paths_are_in_the_run_folder(tmp_path):
    cltab = tmp_path / "cltab"
    cltab.write_text("web:w1:run:once:true\n")
    c = clinit.client(cltab=str(cltab))
    run = Path("/run/clinit") if os.getuid() == 0 else tmp_path / "run" / "clinit"
    assert c.conf("socket") == str(run / "clinit.sock")
    assert c.conf("clstat") == str(run / "clstat")


def test_module_status_reads_a_daemons_status_file(make_daemon):
    d = make_daemon(f"web:w1:run:respawn:{SLEEPER}\n")
    d.tell("web", "run")
    d.wait_state("web", "run", "DONE")
    assert clinit.status(clstat=str(d.clstat)) == "web run DONE\n"
    assert clinit.status(clstat=str(d.clstat), group="web", level="run") == "DONE"
    assert clinit.status(clstat=str(d.clstat), group="web") == "run DONE\n"
    assert clinit.status(clstat=str(d.clstat), level="run") == "web DONE\n"


def start_api_daemon(d, **kwargs):
    """Run `clinit.daemon(cltab=..., **kwargs)` in a subprocess as `d.proc`."""
    args = ", ".join(f"{k}={v if isinstance(v, (int, float)) else str(v)!r}"
                     for k, v in {"cltab": d.cltab, **kwargs}.items())
    code = f"import clinit, sys; sys.exit(clinit.daemon({args}))"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    d._log = open(d.log, "ab")
    d.proc = subprocess.Popen([sys.executable, "-c", code], stdout=d._log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, env=env)


def test_the_daemon_function_runs_a_daemon_like_clinit_d(make_daemon):
    d = make_daemon(f"web:w1:run:respawn:{SLEEPER}\n", start=False)
    start_api_daemon(d)
    wait_for(d.answers, message=f"daemon did not come up: {d.log_text()}")
    assert d.tell("web", "run").startswith("level transition started: ")
    d.wait_state("web", "run", "DONE")
    [child] = wait_for(lambda: d.children())
    assert d.cli("-k", check=0).stdout == "all groups halting\n"
    assert d.proc.wait(timeout=20) == 0
    assert not os.path.exists(f"/proc/{child}/stat") or child not in d.children()
    assert not d.socket.exists() and not d.clstat.exists()


def test_a_setting_deleted_from_cltab_goes_back_to_the_callers_value_on_a_reread(make_daemon):
    # Started with cltab term_delay 30 over the caller's 0.05; the line is
    # deleted before the first tell: a stop must then send SIGTERM after
    # 0.05 s, not 30 s (the trap logs each signal; the ladder ends at TERM).
    d = make_daemon("", start=False)
    del d.settings["term_delay"]
    log = d.folder / "signals"
    entry = (f"g:t:1:respawn:trap 'echo INT >> {log}' INT; trap 'echo TERM >> {log}; exit 0' TERM; "
             f"sleep 1000 & echo ready >> {log}; while :; do wait; done\n")
    d.write(":::term_delay:30\n" + entry)
    start_api_daemon(d, term_delay=0.05)
    wait_for(d.answers, message=f"daemon did not come up: {d.log_text()}")
    d.write(entry)
    assert d.tell("g", "1").startswith("level transition started: ")
    wait_for(lambda: log.exists() and log.read_text() == "ready\n")
    assert d.tell("g", "2").startswith("level transition started: ")
    d.wait_state("g", "2", "DONE")  # 10 s at most: far below 30
    assert log.read_text() == "ready\nINT\nTERM\n"


def test_the_daemon_function_takes_socket_and_clstat_when_the_cltab_has_none(make_daemon, tmp_path):
    d = make_daemon("", start=False)
    del d.settings["socket"], d.settings["clstat"]
    d.write("web:w1:run:once:true\n")
    sock, clstat = tmp_path / "api.sock", tmp_path / "api-clstat"
    start_api_daemon(d, socket=sock, clstat=clstat)
    c = clinit.client(cltab=str(d.cltab), socket=str(sock), clstat=str(clstat))
    wait_for(lambda: _answers(c), message=f"daemon did not come up: {d.log_text()}")
    assert c.tell("web", "run").startswith("level transition started: ")
    wait_for(lambda: c.status("web", "run") == "DONE")
    assert clinit.status(clstat=str(clstat)) == "web run DONE\n"
    assert c.shutdown() == "all groups halting"
    assert d.proc.wait(timeout=20) == 0
    assert not sock.exists() and not clstat.exists()


def _answers(c) -> bool:
    try:
        return c.request("ping")[0]
    except clinit.NoDaemon:
        return False


def test_the_daemon_function_on_a_bad_cltab_raises_and_starts_nothing(make_daemon):
    d = make_daemon("""
        web:w1:run:once:touch started
        web:w1:run:once:true
    """, start=False)
    start_api_daemon(d)
    assert d.proc.wait(timeout=30) != 0
    d._log.close()
    assert "DaemonError" in d.log_text()
    assert f"{d.cltab}:" in d.log_text() and "duplicate tag 'w1'" in d.log_text()
    assert not d.socket.exists() and not d.clstat.exists()
    assert not (d.folder / "started").exists()


PUBLIC_FUNCTIONS = ("daemon", "client", "status")  # SPEC §7


def test_no_module_shadows_a_public_name_of_the_api():
    # in a fresh interpreter: every module of the package imported, then the
    # functions of SPEC §7 are still the package's functions
    code = textwrap.dedent(f"""
        import importlib, pkgutil, types, clinit
        names = [m.name for m in pkgutil.iter_modules(clinit.__path__)]
        for name in names:
            importlib.import_module("clinit." + name)
        shadowing = sorted(set(names) & set({PUBLIC_FUNCTIONS!r}))
        wrong = [n for n in {PUBLIC_FUNCTIONS!r} if type(getattr(clinit, n)) is not types.FunctionType]
        print(shadowing, wrong, "daemonactor" in names)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert out == "[] [] True\n", out


def test_clinit_daemon_is_the_function_after_its_module_is_imported():
    import clinit
    import clinit.daemonactor  # noqa: F401 - the module that runs the daemon

    assert clinit.daemon.__module__ == "clinit"
    with pytest.raises(clinit.DaemonError, match="cannot read"):
        clinit.daemon(cltab="/nonexistent/cltab", socket="/nonexistent/s")
