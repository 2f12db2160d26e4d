"""Where published files live: stable folders, release folders and file names (no I/O here).

Under the output folder, the same for every phase ``P``::

    phase=P/<STABLE_NAMES>                 the phase's stable files (with the QGIS project and the
                                           data package describing them), manifest.json replaced last
    <STABLE_NAMES>                         the current phase's files again (the contract's paths)
    releases/<build_id>/phase=P/...        the same files, per release
    releases/index.json                    every kept release
"""

from __future__ import annotations

from pathlib import Path

from ..phases import CURRENT_PHASE

RELEASES_DIR = "releases"
INDEX_NAME = "index.json"
LOCK_NAME = ".publish.lock"
MANIFEST_NAME = "manifest.json"
BASENAME = "territoires-industrie"
# The light GeoJSON variants (publish/light.py defines their size targets) and the membership
# tables (publish/membership_tables.py defines their columns), by the suffix of their file names.
LIGHT_SUFFIXES = ("overview", "regional")
MEMBERSHIP_TABLES = ("communes", "groupements")

STABLE_NAMES: dict[str, str] = {
    "geoparquet": f"{BASENAME}.parquet",
    "geojson": f"{BASENAME}.geojson",
    "gpkg": f"{BASENAME}.gpkg",
    "flatgeobuf": f"{BASENAME}.fgb",
    "pmtiles": f"{BASENAME}.pmtiles",
    **{f"light_{suffix}": f"{BASENAME}-{suffix}.geojson" for suffix in LIGHT_SUFFIXES},
    **{f"membership_{t}_{ext}": f"{BASENAME}-{t}.{ext}" for t in MEMBERSHIP_TABLES for ext in ("parquet", "csv")},
    "preview": f"{BASENAME}.png",
    "qgis_project": f"{BASENAME}.qgz",    # publish/qgis_project.py: a QGIS project of the folder's files
    "datapackage": "datapackage.json",   # publish/datapackage.py: a Frictionless Data Package of them
    # the web map (publish/webmap.py): its own files, then the page
    "web_script": f"{BASENAME}-map.js",
    "web_style": f"{BASENAME}-map.css",
    "web_data": f"{BASENAME}-map.json",
    "web_search": f"{BASENAME}-search.json",
    "web_page": "index.html",
    "manifest": MANIFEST_NAME,
}


def phase_subdir(phase: str) -> str:
    """``phase=<phase>``: the folder of a phase's files (relative to the output dir or a release)."""
    return f"phase={phase}"


def stable_dir(output_dir: Path, phase: str = CURRENT_PHASE) -> Path:
    """The output dir itself for the current phase (the contract's paths), else ``phase=<phase>/``."""
    return Path(output_dir) if phase == CURRENT_PHASE else Path(output_dir) / phase_subdir(phase)


def stable_dirs(output_dir: Path, phase: str = CURRENT_PHASE) -> list[Path]:
    """Every folder that receives the stable files of ``phase``: ``phase=<phase>/``, and the
    output dir itself for the current phase."""
    dirs = [Path(output_dir) / phase_subdir(phase)]
    return [*dirs, Path(output_dir)] if phase == CURRENT_PHASE else dirs


def stable_paths(output_dir: Path, phase: str = CURRENT_PHASE) -> dict[str, Path]:
    """Name -> stable path of every published file of ``phase`` (the contract's paths)."""
    base = stable_dir(output_dir, phase)
    return {name: base / filename for name, filename in STABLE_NAMES.items()}


def release_dir(output_dir: Path, build_id: str, phase: str = CURRENT_PHASE) -> Path:
    """The folder of one release's files of ``phase``."""
    return Path(output_dir) / RELEASES_DIR / build_id / phase_subdir(phase)


def index_path(output_dir: Path) -> Path:
    """``releases/index.json``."""
    return Path(output_dir) / RELEASES_DIR / INDEX_NAME
