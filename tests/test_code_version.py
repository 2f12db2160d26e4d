"""Code versions derived from the imports (pipeline.code_version), on a scratch copy of the package.

Each module of the package is edited in turn (a statement appended) and the code versions of the
Dagster assets and of the CLI's build are computed again: exactly the steps whose import closure
holds the module change. The closures are checked against the standard library's
``modulefinder`` (another reading of the same imports), so a module left out of a closure fails.
"""

from __future__ import annotations

import modulefinder
import shutil
from pathlib import Path

import pytest

from pipeline.code_version import BUILD_ROOT, PACKAGE_DIR, Package, build_code_version, module_closure
from pipeline.defs.assets import ALL_ASSETS
from pipeline.defs.automation import _function, _step_code, code_version
from pipeline.settings import ASSETS_DIR

CLI = "cli build"
MODULES = sorted(".".join(["pipeline", *p.relative_to(PACKAGE_DIR).with_suffix("").parts]).removesuffix(".__init__")
                 for p in PACKAGE_DIR.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Package:
    base = tmp_path_factory.mktemp("code_version")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(PACKAGE_DIR, base / "pipeline", ignore=ignore)
    shutil.copytree(ASSETS_DIR, base / "assets", ignore=ignore)
    return Package(base / "pipeline", base / "assets")


class _OurModules(modulefinder.ModuleFinder):
    """modulefinder limited to the ``pipeline`` package (everything else is not ours to hash)."""

    def find_module(self, name, path, parent=None):
        if path is None and name != "pipeline":
            raise ImportError(name)
        return super().find_module(name, path, parent)


def oracle_closure(roots, package: Package) -> set[str]:
    """The modules ``roots`` import, read by modulefinder; a package whose ``__getattr__`` imports its
    modules on first use (PEP 562: invisible to a static reader) stands for all of them."""
    finder = _OurModules(path=[str(package.modules.parent)])
    for root in sorted(roots):
        try:
            finder.import_hook(root)
        except ImportError:
            finder.import_hook(root.rpartition(".")[0], fromlist=[root.rpartition(".")[2]])
    found = {name for name, m in finder.modules.items() if m.__file__}
    for name in list(found):
        init = package.file_of(name)
        if init is not None and init.name == "__init__.py" and "def __getattr__" in init.read_text():
            found |= {m for m in MODULES if m.startswith(name + ".")}
    return found


# one step per assets definition (named by its first key in sorted order: a multi-asset's keys are a set, and
# xdist's workers must collect the same ids) and the CLI's build
STEP_OF = {min(k.to_user_string() for k in a.keys): a for a in ALL_ASSETS}
CLOSURES: dict[str, set[str]] = {}
BEFORE: dict[Package, dict[str, str]] = {}


def closure_of(step: str, package: Package) -> set[str]:
    """The oracle's closure of a step (an appended statement imports nothing: computed once)."""
    if step not in CLOSURES:
        roots = {BUILD_ROOT} if step == CLI else _step_code(_function(STEP_OF[step]))[0]
        CLOSURES[step] = oracle_closure(roots, package)
    return CLOSURES[step]


def versions(package: Package) -> dict[str, str]:
    """Each step's code version and the CLI's (the manifest's) for the package's files."""
    return {**{step: code_version(a, package) for step, a in STEP_OF.items()}, CLI: build_code_version(package)}


def expected_changes(module: str, package: Package) -> set[str]:
    return {step for step in [*STEP_OF, CLI] if module in closure_of(step, package)}


def changed_by_edit(module: str, package: Package, text: str = "\n_edited_by_the_test = None\n") -> set[str]:
    if package not in BEFORE:          # the scratch copy unedited (each edit is undone)
        BEFORE[package] = versions(package)
    before = BEFORE[package]
    path = package.file_of(module)
    assert path is not None
    original = path.read_bytes()
    try:
        path.write_bytes(original + text.encode())
        after = versions(package)
    finally:
        path.write_bytes(original)
    return {step for step in before if before[step] != after[step]}


@pytest.mark.parametrize("step", [*STEP_OF, CLI])
def test_each_closure_is_the_one_modulefinder_reads(step, scratch):
    roots = {BUILD_ROOT} if step == CLI else _step_code(_function(STEP_OF[step]))[0]
    assert set(module_closure(roots, scratch)) == closure_of(step, scratch)


def test_editing_each_module_changes_exactly_the_steps_that_import_it(scratch):
    wrong = {}
    for module in MODULES:
        changed, expected = changed_by_edit(module, scratch), expected_changes(module, scratch)
        if changed != expected:
            wrong[module] = {"changed": sorted(changed), "expected": sorted(expected)}
    assert wrong == {}


def test_a_module_left_out_of_a_closure_is_caught(scratch, monkeypatch):
    import pipeline.code_version as cv

    real = cv.module_closure
    monkeypatch.setattr(cv, "module_closure", lambda roots, package=cv.INSTALLED:
                        [m for m in real(roots, package) if m != "pipeline.sources.plans"])
    monkeypatch.setitem(globals(), "BEFORE", {})      # the versions before the edit, with the bad closure too
    assert changed_by_edit("pipeline.sources.plans", scratch) != expected_changes("pipeline.sources.plans", scratch)


def test_what_a_change_marks_in_the_real_graph(scratch):
    """The facts behind the closures: the plan table's module marks its step and the publishing (it
    was missed by the hand-kept list), the dissolve marks the builds, the HTTP client the fetches."""
    plans = changed_by_edit("pipeline.sources.plans", scratch)
    assert {"plan_table", "published_2023_2027", CLI} <= plans
    assert not any(step.startswith("sources/") for step in plans)   # the fetch does not use it
    dissolve = changed_by_edit("pipeline.geometry.coverage", scratch)
    assert {"territories_2023_2027", "territories_2018_2022", CLI} <= dissolve
    assert not any(step.startswith("sources/") for step in dissolve)
    assert {s for s in STEP_OF if s.startswith("sources/")} <= changed_by_edit("pipeline.sources.http", scratch)


def test_data_files_count_and_comments_count(scratch):
    style = scratch.assets / "styles" / "territoires-industrie.qml"
    original = style.read_bytes()
    before = versions(scratch)
    try:
        style.write_bytes(original + b"\n")
        after = versions(scratch)
    finally:
        style.write_bytes(original)
    changed = {s for s in before if before[s] != after[s]}
    assert changed == expected_changes("pipeline.publish.gpkg", scratch)   # the module that names it
    assert {"published_2023_2027", "published_2018_2022", CLI} <= changed
    assert not any(step.startswith("sources/") for step in changed)
    assert CLI in changed_by_edit("pipeline.geometry.coverage", scratch, text="\n# a comment\n")


def test_versions_are_stable_and_the_installed_package_is_the_default():
    assert build_code_version() == build_code_version(Package(PACKAGE_DIR, ASSETS_DIR))
    assert len(build_code_version()) == 64
    assert {code_version(a) for a in ALL_ASSETS} == {code_version(a) for a in ALL_ASSETS}
    assert Path(PACKAGE_DIR / "code_version.py").is_file()
