"""Helpers for the web map tests: the pinned libraries from npm, and a real build whose lists name
one territory ``<img src=x onerror=alert(1)>``.

The libraries: ``tests/web/node_modules`` when ``npm ci`` was run there (``.ci/run`` does), else a
fresh ``npm ci`` of ``tests/web/package.json`` + ``package-lock.json`` into a temporary folder
(npm reaches its registry here and in CI). Without npm, or without chromium, the web tests skip
locally and fail in CI (``.ci/run`` sets ``CI_REQUIRE_CHROMIUM=1``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from source_fixtures import COMMUNES, GROUPEMENTS, scratch_mirror

from pipeline.publish import weblibs

WEB = Path(__file__).resolve().parent / "web"
XSS_NAME = "<img src=x onerror=alert(1)>"
XSS_ID = "ti-2704"              # Grand Chalon: Chalon-sur-Saône (71076) is one of its communes
# its plan (a plan table the user supplies, TI_PLANS_PATH): every kind of column, and HTML as text
PLAN = {"axe_transition_ecologique": "oui", "axe_innovation": "non", "plan_date_adoption": "2024-03-15",
        "plan_nb_actions_innovation": "4", "plan_url": "https://example.org/plan-grand-chalon.pdf",
        "plan_commentaire": "<script>alert(2)</script> & <b>gras</b>"}


def unavailable(reason: str):
    """Skip where the web tests cannot run; fail instead in CI (.ci/run sets CI_REQUIRE_CHROMIUM=1)."""
    if os.environ.get("CI_REQUIRE_CHROMIUM") == "1":
        pytest.fail(f"CI_REQUIRE_CHROMIUM=1 but {reason}")
    pytest.skip(reason)


def _pinned(folder: Path) -> bool:
    files = weblibs.library_files(str(folder))
    return all(f.local is not None and f.local.is_file() and weblibs.sri(f.local.read_bytes()) == f.integrity
               for f in files.values())


def local_libraries(tmp_path_factory) -> Path:
    """A node_modules folder holding the pinned libraries (see the module docstring)."""
    if _pinned(WEB / "node_modules"):
        return WEB / "node_modules"
    npm = shutil.which("npm")
    if npm is None:
        unavailable("npm not found: the web map's libraries cannot be installed (npm ci in tests/web)")
    folder = tmp_path_factory.mktemp("npm")
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(WEB / name, folder / name)
    run = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=folder,
                         capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        unavailable(f"npm ci in a copy of tests/web failed: {run.stderr.strip()[-500:]}")
    return folder / "node_modules"


def _rename(text: str, id_ti: str, name: str) -> str:
    """The CSV ``text`` with the territory ``id_ti``'s name (second column) replaced by ``name``."""
    lines = []
    for line in text.splitlines(keepends=True):
        if line.startswith(f"{id_ti},"):
            rest = line.split(",", 2)[2]
            line = f"{id_ti},{name},{rest}"
        lines.append(line)
    return "".join(lines)


def xss_mirror(root: Path, mirror: Path) -> Path:
    """A scratch copy of the shared mirror where :data:`XSS_ID` is named :data:`XSS_NAME` in both
    2023-2027 lists."""
    added = {rel: _rename((mirror / rel).read_text(encoding="utf-8"), XSS_ID, XSS_NAME).encode("utf-8")
             for rel in (COMMUNES, GROUPEMENTS)}
    return scratch_mirror(root, mirror, added)


def plan_table(path: Path) -> Path:
    """A plan table with :data:`PLAN` for :data:`XSS_ID`."""
    import csv

    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id_ti", *PLAN])
        writer.writerow([XSS_ID, *PLAN.values()])
    return path


def publish_both_phases(mirror: Path, out: Path, libraries: Path) -> None:
    """``python -m pipeline build --offline --phase all`` into ``out``, the libraries copied next to
    the page, the plan table :func:`plan_table`."""
    from pipeline.cli import main

    patch = pytest.MonkeyPatch()
    patch.setenv("TI_WEB_LIBRARIES", str(libraries))
    patch.setenv("TI_PLANS_PATH", str(plan_table(out.parent / "plans.csv")))
    try:
        code = main(["build", "--offline", "--mirror", str(mirror), "--phase", "all", "--output", str(out)])
    finally:
        patch.undo()
    assert code == 0
