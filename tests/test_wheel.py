"""The wheel, installed outside the checkout, carries everything the code needs at run time.

Builds the wheel from this checkout, installs it into a new virtual environment in a temporary
folder (its dependencies are those of the environment running the tests, venv or not, through a
``.pth`` file: no download, and never the base interpreter's packages), then,
from a working directory outside the checkout: runs ``territoires-industrie build --offline``,
which publishes into ``./data_out`` (the default is the working directory), and loads the Dagster
code location ``pipeline.definitions`` with ``dagster definitions validate``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from http_server import require_shared_data

ROOT = Path(__file__).resolve().parent.parent


def _run(cmd, cwd, env, timeout=600):
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd}: exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def _share_running_site_packages(python: Path) -> None:
    """Give the new venv the dependencies of the environment running the tests (a venv or not),
    not those of the base interpreter (``--system-site-packages`` would): a ``.pth`` file in its
    site-packages lists the running interpreter's site-packages folders. Plain folder lines, so the
    ``.pth`` files inside them (the checkout's editable install) are not run."""
    ours = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                cwd=python.parent, env=os.environ).stdout.strip()
    (Path(site) / "_running_environment.pth").write_text("".join(f"{p}\n" for p in ours), encoding="utf-8")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    mirror = require_shared_data()
    base = tmp_path_factory.mktemp("wheel")
    # Built from a copy of the project's files: setuptools writes build/ and *.egg-info beside
    # the sources, and tests write only to temporary folders.
    source = base / "source"
    # (the tool caches too: another pytest-xdist worker may be writing them while this copies)
    skip_top = {".git", "build", "data_raw", "data_out", "bench", ".pytest_cache", ".mypy_cache", ".ruff_cache",
                ".hypothesis"}

    def ignore(folder, names):
        top = Path(folder) == ROOT
        return [n for n in names if (top and n in skip_top) or n in ("__pycache__", "node_modules")
                or n.endswith(".egg-info")]

    shutil.copytree(ROOT, source, ignore=ignore)
    dist = base / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)],
         cwd=base, env=os.environ)
    wheel = next(dist.glob("territoires_industrie-*.whl"))
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=base, env=os.environ)
    python = venv / "bin" / "python"
    _share_running_site_packages(python)
    _run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], cwd=base, env=os.environ)
    work = base / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TI_") and k != "PYTHONPATH"}
    env |= {"TI_MIRROR_DIR": str(mirror), "DAGSTER_HOME": str(base / "dagster_home")}
    (base / "dagster_home").mkdir()
    return {"wheel": wheel, "venv": venv, "python": python, "work": work, "env": env}


def test_installed_wheel_imports_from_the_venv_not_the_checkout(installed):
    with zipfile.ZipFile(installed["wheel"]) as whl:
        files = set(whl.namelist())
    for static in ("sources.toml", "axes.toml", "plans_template.csv", "styles/territoires-industrie.qml",
                   "styles/territoires-industrie.sld", "schemas/geoparquet-1.1.0.schema.json", "web/index.html",
                   "web/territoires-industrie-map.js", "web/territoires-industrie-map.css", "web/libraries.json"):
        assert f"pipeline/static/{static}" in files
    code = "import json, pipeline, pipeline.settings as s; print(json.dumps([pipeline.__file__, str(s.ASSETS_DIR)]))"
    out = _run([str(installed["python"]), "-c", code], cwd=installed["work"], env=installed["env"])
    module, assets = json.loads(out.stdout)
    assert Path(module).is_relative_to(installed["venv"]) and Path(assets).is_relative_to(installed["venv"])
    assert (Path(assets) / "sources.toml").is_file()


def test_installed_cli_builds_into_the_working_directory(installed):
    cli = installed["venv"] / "bin" / "territoires-industrie"
    _run([str(cli), "build", "--offline"], cwd=installed["work"], env=installed["env"])
    out = installed["work"] / "data_out"
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["outputs"] and (out / "territoires-industrie.parquet").is_file()
    gpkg_style = [o for o in manifest["outputs"] if str(o.get("path", "")).endswith(".gpkg")]
    assert gpkg_style, "the GeoPackage (with its default style from the wheel) is published"
    page = (out / "index.html").read_text(encoding="utf-8")   # the web map, from the wheel's assets/web
    assert "territoires-industrie-map.js" in page and (out / "territoires-industrie-map.js").is_file()
    assert (installed["work"] / "data_raw").is_dir()


def test_installed_code_location_loads(installed):
    _run([str(installed["python"]), "-m", "dagster", "definitions", "validate", "-m", "pipeline.definitions"],
         cwd=installed["work"], env=installed["env"])
