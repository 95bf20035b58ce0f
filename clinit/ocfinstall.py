"""Installing the OCF agent: `clinit-ocf --install [--ocf-root DIR] [--python PATH]`.

Pacemaker runs agents with PATH=/usr/sbin:/usr/bin:/sbin:/bin and asks for
their meta-data as user hacluster, so the agent gets an absolute interpreter
that every user may run, and a copy of the clinit package beside it in
OCF_ROOT/lib/clinit (the agent imports only the client side: no pykka).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

__all__ = ["install", "agent_python", "default_daemon_command"]


def default_daemon_command() -> list[str]:
    """`clinit` run by this interpreter with this clinit package (`-d -c CLTAB` follow)."""
    parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return [sys.executable, "-c", "import sys; sys.path.insert(0, %r); from clinit.cli import "
            "main; sys.exit(main())" % parent]



AGENT_TEMPLATE = '''#!{python} -S
# OCF resource agent for clinit groups, written by `clinit-ocf --install`.
# Its logic is clinit.ocf, copied into {lib}: run `clinit-ocf --install`
# again after upgrading clinit.  (-S: no site-packages, it needs none and
# starts faster.)
import sys
sys.path.insert(0, {lib!r})
from clinit.ocf import main
sys.exit(main(daemon_command={daemon!r}))
'''


def _runnable_by_all(path: str) -> bool:
    """Whether any user may run `path` (every folder on the way searchable by all)."""
    path = os.path.realpath(path)
    try:
        if not os.stat(path).st_mode & 0o001:
            return False
        folder = os.path.dirname(path)
        while True:
            if not os.stat(folder).st_mode & 0o001:
                return False
            if folder == "/":
                return True
            folder = os.path.dirname(folder)
    except OSError:
        return False


def agent_python() -> str:
    """The interpreter for the agent: this one when every user may run it, else the
    system's /usr/bin/python3 (3.10+).  Pacemaker asks for meta-data as user hacluster,
    and the agent needs the standard library only."""
    if _runnable_by_all(sys.executable):
        return sys.executable
    system = "/usr/bin/python3"
    if _runnable_by_all(system):
        probe = subprocess.run([system, "-c", "import sys; print(sys.version_info >= (3, 10))"],
                               capture_output=True, text=True)
        if probe.stdout.strip() == "True":
            return system
    return sys.executable


def install(ocf_root: str = "/usr/lib/ocf", python: str | None = None) -> str:
    """Write OCF_ROOT/resource.d/clinit/clinit and copy clinit into OCF_ROOT/lib/clinit.

    The agent runs on `python` (default: `agent_python()`); a daemon it
    starts runs on this interpreter, with this clinit.  Returns the agent's path.
    """
    package = os.path.dirname(os.path.abspath(__file__))
    lib = os.path.join(ocf_root, "lib", "clinit")
    target = os.path.join(lib, "clinit")
    tmp = target + ".new"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(package, tmp, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for folder, _, files in os.walk(tmp):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)
    shutil.rmtree(target, ignore_errors=True)
    os.rename(tmp, target)
    os.chmod(lib, 0o755)
    daemon = default_daemon_command()
    agent_dir = os.path.join(ocf_root, "resource.d", "clinit")
    os.makedirs(agent_dir, mode=0o755, exist_ok=True)
    agent = os.path.join(agent_dir, "clinit")
    text = AGENT_TEMPLATE.format(python=python or agent_python(), lib=lib, daemon=daemon)
    with open(agent + ".new", "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(agent + ".new", 0o755)
    os.rename(agent + ".new", agent)
    return agent
