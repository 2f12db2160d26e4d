"""Facts the docs and the packaging repeat agree with the one place they are defined."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pipeline
from pipeline import CONTRACT_VERSION

ROOT = Path(__file__).resolve().parents[1]


def test_readme_states_the_current_contract_version_and_its_changes():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    stated = re.findall(r"currently `(\d+\.\d+\.\d+)`", readme)
    assert stated == [CONTRACT_VERSION]
    # every version from 1.1.0 on has its entry under "Contract"
    contract = readme.split("## Contract", 1)[1]
    assert re.search(rf"(\*\*|### ){re.escape(CONTRACT_VERSION)}\b", contract), CONTRACT_VERSION


def test_package_version_is_read_from_the_package():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "pipeline.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", pipeline.__version__)


def test_the_readmes_benchmark_figures_are_those_of_bench_results():
    """The README quotes bench/RESULTS.md (ratios, sizes); each figure quoted must be in it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    results = (ROOT / "bench" / "RESULTS.md").read_text(encoding="utf-8")
    start = readme.index("Speed and memory are measured by `bench/`")
    paragraph = readme[start:readme.index("\n\n", start)]
    quoted = re.findall(r"\b\d+\.\d+x\b", paragraph)
    assert quoted, "no ratio quoted"
    missing = [q for q in quoted if q not in results]
    assert not missing, f"README ratios absent from bench/RESULTS.md: {missing}"
