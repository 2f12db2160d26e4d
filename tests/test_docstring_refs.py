"""Docstrings and comments name only modules that exist, and the docs no folder of one machine.

Every ``pipeline.<module>`` reference in the package's source resolves to a module (or to a name
defined in one); every ``<folder>/<name>.py`` path names a file of the package or the repository,
and a bare ``<name>.py`` a file somewhere in it. No doc names a home or work folder or a venv to
activate at an absolute path."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pipeline"
DOTTED = re.compile(r"\bpipeline(?:\.[A-Za-z_]\w*)+")
PATH = re.compile(r"\b(?:[a-z_]+/)+[a-z_]+\.py\b")
BARE = re.compile(r"(?<![/\w])([a-z_]+\.py)\b")
KNOWN_FILES = {p.name for base in ("pipeline", "tests", "bench", ".ci") for p in (ROOT / base).rglob("*.py")}


def _resolves(dotted: str) -> bool:
    """A module, or a name defined in the longest importable module of the dotted path."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            if i == len(parts):
                return True
            return hasattr(importlib.import_module(name), parts[i])
    return False


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_module_references_exist(path):
    text = path.read_text(encoding="utf-8")
    missing = sorted({ref for ref in DOTTED.findall(text) if not _resolves(ref.rstrip("."))})
    assert not missing, f"{path.relative_to(ROOT)} names modules that do not exist: {missing}"
    bad_paths = sorted({ref for ref in PATH.findall(text)
                        if not any((base / ref).exists() for base in (ROOT, PACKAGE, path.parent))})
    assert not bad_paths, f"{path.relative_to(ROOT)} names files that do not exist: {bad_paths}"
    bare = sorted({name for name in BARE.findall(text) if name not in KNOWN_FILES})
    assert not bare, f"{path.relative_to(ROOT)} names files that exist nowhere in the repository: {bare}"


def test_a_stale_reference_is_caught():
    assert not _resolves("pipeline.dagster_assets") and not _resolves("pipeline.plans.PLAN_COLUMNS")
    assert _resolves("pipeline.sources.plans.PLAN_COLUMNS") and _resolves("pipeline.defs")


MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|root|home|Users)/|(?:^|\s)(?:\.|source) /\S*/bin/activate")
DOCS = sorted([ROOT / "README.md", ROOT / "bench" / "README.md", *(ROOT / "docs").glob("*.md")])


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_docs_name_no_folder_of_one_machine(doc):
    """A reader's machine has none of ours: no home or work folder, no venv to activate at an absolute path."""
    found = [f"{doc.relative_to(ROOT)}:{n}: {line.strip()}" for n, line in
             enumerate(doc.read_text(encoding="utf-8").splitlines(), 1) if MACHINE_PATH.search(line)]
    assert not found, "\n".join(found)


def test_a_machine_path_is_caught():
    assert MACHINE_PATH.search(". /work/venvs/x/bin/activate") and MACHINE_PATH.search("see /home/me/data")
    assert not MACHINE_PATH.search("python bench/run.py --output /tmp/R.md")
