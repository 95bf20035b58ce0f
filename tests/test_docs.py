"""docs/: the committed diagrams are those of the tables the code runs.

Each docs/MACHINE.dot must equal `clinit --dot MACHINE` exactly; each
docs/MACHINE.svg must carry the digest of that DOT source (written by
docs/make-diagrams) and draw every state and edge of it.  The SVG's
layout is left to Graphviz, whatever its version.  When a table
changes, `docs/make-diagrams` regenerates all six files in one step.
"""

import hashlib
import re
import shutil
import subprocess
import sys
from html import unescape

import pytest

from conftest import ROOT

DOCS = ROOT / "docs"
MACHINES = ("process", "group", "daemon")


def dot_of(machine: str) -> str:
    return subprocess.run([sys.executable, str(ROOT / "bin" / "clinit"), "--dot", machine],
                          capture_output=True, text=True, check=True, timeout=60).stdout


@pytest.mark.parametrize("machine", MACHINES)
def test_the_committed_dot_file_is_what_the_table_gives(machine):
    assert (DOCS / f"{machine}.dot").read_text() == dot_of(machine), \
        "out of date: run docs/make-diagrams"


@pytest.mark.parametrize("machine", MACHINES)
def test_the_committed_svg_was_rendered_from_that_dot_source(machine):
    text = dot_of(machine)
    svg = (DOCS / f"{machine}.svg").read_text()
    digest = hashlib.sha256(text.encode()).hexdigest()
    assert f"<!-- clinit-dot-sha256: {digest} -->" in svg, "out of date: run docs/make-diagrams"
    titles = {unescape(t) for t in re.findall(r"<title>(.*?)</title>", svg)}
    edges = {f"{a}->{b}" for a, b in re.findall(r"^  (\w+) -> (\w+) ", text, re.M)}
    nodes = set(re.findall(r"^  (\w+);$", text, re.M))
    assert edges and nodes
    assert edges <= titles and nodes <= titles, (edges | nodes) - titles


def test_the_check_mode_of_the_script_agrees():
    result = subprocess.run([sys.executable, str(DOCS / "make-diagrams"), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_graphviz_renders_every_table_without_a_warning():
    for machine in MACHINES:
        result = subprocess.run(["dot", "-Tsvg"], input=dot_of(machine), capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0 and result.stderr == "", result.stderr


def test_the_readme_shows_the_three_diagrams():
    readme = (ROOT / "README.md").read_text()
    for machine in MACHINES:
        assert f"(docs/{machine}.svg)" in readme
