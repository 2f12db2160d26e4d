"""The suite's own set-up: the modules run first exist, and the README states the workers pyproject sets."""

from __future__ import annotations

import tomllib
from pathlib import Path

from conftest import SLOW_FIRST

ROOT = Path(__file__).resolve().parents[1]


def test_the_modules_run_first_exist():
    assert len(set(SLOW_FIRST)) == len(SLOW_FIRST)
    assert [name for name in SLOW_FIRST if not (ROOT / "tests" / name).is_file()] == []


def test_the_readme_states_the_workers_of_pyproject():
    addopts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["pytest"]["ini_options"]["addopts"]
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "-n 2 --dist loadfile" in addopts and "--no-loadscope-reorder" in addopts
    assert "`-n 2 --dist loadfile` in `pyproject.toml`" in readme
