"""Shared fixtures: the real shared data (via TI_MIRROR_DIR) and one real build per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

# The modules that take minutes (`pytest --durations`), run first: with two pytest-xdist workers
# (--dist loadfile, pyproject.toml) the short modules then fill in beside them, rather than one long
# module running alone at the end while the other worker idles.
SLOW_FIRST = ("test_postgres.py", "test_follow_sources.py", "test_webmap_browser.py", "test_wheel.py",
              "test_materialize.py", "test_fuzz_sources.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))    # stable: each module keeps its order


def mirror_dir() -> Path | None:
    value = os.environ.get("TI_MIRROR_DIR")
    if not value:
        return None
    path = Path(value)
    if not path.is_absolute():
        path = (ROOT / path).resolve()
    return path if path.is_dir() else None


@pytest.fixture(scope="session", autouse=True)
def _caches_in_tmp(tmp_path_factory):
    """No test writes to the project's data_raw/ or data_out/: unless a test sets its own,
    TI_RAW_DIR and TI_OUTPUT_DIR point to temporary folders (the build writes its parse cache
    to TI_RAW_DIR even in mirror mode)."""
    patch = pytest.MonkeyPatch()
    for name in ("TI_RAW_DIR", "TI_OUTPUT_DIR"):
        if name not in os.environ:
            patch.setenv(name, str(tmp_path_factory.mktemp(name.lower())))
    yield
    patch.undo()


@pytest.fixture(scope="session")
def mirror() -> Path:
    path = mirror_dir()
    if path is None:
        pytest.skip("TI_MIRROR_DIR is not set to the shared data folder (e.g. ../shared/data)")
    return path


@pytest.fixture(scope="session")
def mirror_settings(mirror, tmp_path_factory) -> Settings:
    base = tmp_path_factory.mktemp("build")
    return Settings(mirror_dir=mirror, raw_dir=base / "raw", output_dir=base / "out")


@pytest.fixture(scope="session")
def real_build(mirror_settings):
    """The whole 2023-2027 build on the real shared data, once per test session."""
    from pipeline.steps.sequence import build_territories

    return build_territories(mirror_settings)


@pytest.fixture(scope="session")
def published_out(mirror, tmp_path_factory) -> Path:
    """``data_out/`` as users get it: both phases built and published by the command line
    (``build --offline --phase all``), once per session. Read-only: copy it to alter it."""
    from pipeline.cli import main

    out = tmp_path_factory.mktemp("published") / "data_out"
    raw = tmp_path_factory.mktemp("published_raw")
    patch = pytest.MonkeyPatch()
    patch.setenv("TI_RAW_DIR", str(raw))
    try:
        code = main(["build", "--offline", "--mirror", str(mirror), "--output", str(out), "--phase", "all"])
    finally:
        patch.undo()
    assert code == 0, "the published build failed"
    return out


@pytest.fixture(scope="session")
def real_release(real_build, tmp_path_factory) -> tuple[Path, dict]:
    """``real_build`` published by ``publish_release`` (build id ``real``, its checks, no plan table),
    once per session: (output folder, manifest). Read-only: copy the folder to alter it."""
    from pipeline.publish import publish_release

    out = tmp_path_factory.mktemp("real_release")
    manifest = publish_release(real_build.territories, Settings(output_dir=out), build_id="real",
                               inputs=real_build.inputs, checks=[c.as_dict() for c in real_build.checks],
                               phase=real_build.phase, membership=real_build.membership,
                               references=real_build.references)
    return out, manifest


@pytest.fixture(scope="session")
def core_published(real_build, mirror, tmp_path_factory) -> Path:
    """``real_build`` published by the core (``publish_build``, as the CLI and Dagster do) into a
    fresh output folder, once per session: a previous good release. Read-only: tests that publish
    over it copy it first (``shutil.copytree``)."""
    from pipeline.steps.sequence import publish_build

    out = tmp_path_factory.mktemp("core_published") / "out"
    publish_build(real_build, Settings(mirror_dir=mirror, raw_dir=out.parent / "raw", output_dir=out))
    return out
