"""Real QGIS (Debian's python3-qgis, headless) opens the published GeoJSON and GeoPackage, applies
the GeoPackage's default style and renders a non-blank map; it opens the published QGIS project
(``territoires-industrie.qgz``) from a moved copy of its folder, finds every layer valid and the
membership tables related, and renders it in Lambert-93.

Runs ``tests/qgis_render.py`` with /usr/bin/python3 (not the venv); skipped with a reason when that
interpreter cannot import qgis (``apt-get install -y python3-qgis``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from publish_fixtures import cached_territories

from pipeline.publish import publish_release, stable_paths
from pipeline.settings import Settings

SYSTEM_PYTHON = "/usr/bin/python3"
SCRIPT = Path(__file__).with_name("qgis_render.py")


def _qgis_available() -> str | None:
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import qgis.core"], capture_output=True, text=True,
                           env={**os.environ, "QT_QPA_PLATFORM": "offscreen"}, timeout=120)
    if probe.returncode != 0:
        return f"{SYSTEM_PYTHON} cannot import qgis (apt-get install -y python3-qgis): {probe.stderr.strip()[-200:]}"
    return None


@pytest.fixture(scope="module")
def qgis_report(mirror, tmp_path_factory):
    reason = _qgis_available()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("qgis")
    publish_release(cached_territories(mirror), Settings(output_dir=out), build_id="qgis", inputs=[], checks=[])
    paths = stable_paths(out)
    png = out / "qgis-render.png"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update({"QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(out)})
    run = subprocess.run([SYSTEM_PYTHON, str(SCRIPT), str(png), str(paths["geojson"]), str(paths["gpkg"])],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    report["png"] = png
    return report


@pytest.mark.parametrize("layer", ["geojson", "gpkg"])
def test_qgis_opens_the_layer_with_183_multipolygons(qgis_report, layer):
    info = qgis_report["layers"][layer]
    assert info["valid"], info
    assert info["features"] == 183
    assert info["geometry_type"] == "MultiPolygon"
    assert info["crs"] == "EPSG:4326"
    assert "lib_ti" in info["fields"] and "insee_communes" in info["fields"]


def test_qgis_applies_the_geopackage_default_style(qgis_report):
    gpkg, geojson = qgis_report["layers"]["gpkg"], qgis_report["layers"]["geojson"]
    assert gpkg["labels_enabled"] is True and gpkg["label_field"] == "lib_ti"
    assert gpkg["fill_color"] == "#f2994a"  # the fill of assets/styles/territoires-industrie.qml
    assert geojson["labels_enabled"] is False  # control: a file without a stored style gets no labels


def test_qgis_opens_only_the_territories_of_the_geopackage_by_default(qgis_report):
    """Opened without a layer name (browser, drag and drop), QGIS offers the territories alone: its
    own ``layer_styles`` table, which GDAL lists second, is not a layer to QGIS."""
    assert qgis_report["gpkg_sublayers"] == ["territoires_industrie"]


def test_qgis_renders_a_non_blank_map(qgis_report):
    import matplotlib.pyplot as plt

    render = qgis_report["render"]
    assert render["saved"] and render["errors"] == []
    img = plt.imread(qgis_report["png"])[..., :3]
    assert img.shape[:2] == (render["height"], render["width"])
    drawn = 1 - (img > 0.98).all(axis=-1).mean()
    assert 0.1 < drawn < 0.9, drawn
    alpha = 140 / 255  # the style's fill, 242,153,74 at alpha 140, over the white background
    blended = (np.array([242, 153, 74]) * alpha + 255 * (1 - alpha)) / 255
    fill = (np.abs(img - blended).max(axis=-1) < 0.03).mean()
    assert fill > 0.1, fill  # the style's orange fill covers much of the map


# ------------------------------------------------------------------ the published QGIS project
@pytest.fixture(scope="module")
def project_report(published_out, tmp_path_factory):
    """The published project opened by QGIS from a copy of its folder moved elsewhere (its paths are
    relative), rendered as a user double-clicking it sees it."""
    reason = _qgis_available()
    if reason:
        pytest.skip(reason)
    moved = tmp_path_factory.mktemp("moved") / "territoires"
    shutil.copytree(published_out / "phase=2023-2027", moved)
    png = moved.parent / "project-render.png"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update({"QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(moved.parent)})
    run = subprocess.run([SYSTEM_PYTHON, str(SCRIPT), "--project", str(png), str(moved / "territoires-industrie.qgz")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    report.update(png=png, folder=moved)
    return report


def test_qgis_opens_the_project_with_every_layer_valid_in_lambert_93(project_report):
    assert project_report["read"] is True and project_report["error"] == ""
    assert project_report["crs"] == "EPSG:2154" and project_report["title"].startswith("Territoires d'industrie 2023-2027")
    layers = project_report["layers"]
    assert set(layers) == {"territoires_industrie", "communes_membres", "groupements_listes"}
    assert all(layer["valid"] for layer in layers.values()), layers
    for layer in layers.values():   # every file is the one beside the project, wherever it was moved
        assert layer["source"].split("|")[0].startswith(str(project_report["folder"]) + "/")
    territories = layers["territoires_industrie"]
    assert territories["features"] == 183 and territories["crs"] == "EPSG:4326"
    assert territories["labels_enabled"] is True and territories["label_field"] == "lib_ti"
    assert territories["fill_color"] == "#f2994a"   # the default style of assets/styles/territoires-industrie.qml
    assert layers["communes_membres"]["features"] == 18659 and layers["groupements_listes"]["features"] == 641
    assert "insee_com" in layers["communes_membres"]["fields"]


def test_the_project_relates_each_territory_to_its_member_communes(project_report):
    import geopandas as gpd

    territories = gpd.read_parquet(project_report["folder"] / "territoires-industrie.parquet")
    relations = project_report["relations"]
    assert {r["child"] for r in relations.values()} == {"communes_membres", "groupements_listes"}
    assert all(r["valid"] for r in relations.values())
    communes = next(r for r in relations.values() if r["child"] == "communes_membres")["related"]
    groupements = next(r for r in relations.values() if r["child"] == "groupements_listes")["related"]
    assert communes == dict(zip(territories["id_ti"], territories["n_communes"].astype(int)))
    assert groupements == dict(zip(territories["id_ti"], territories["n_groupements"].astype(int)))


def test_the_project_has_a_bookmark_per_zone_in_its_own_crs(project_report):
    assert [(b["name"], b["crs"]) for b in project_report["bookmarks"]] == [
        ("France métropolitaine (EPSG:2154)", "EPSG:2154"), ("Guadeloupe (EPSG:5490)", "EPSG:5490"),
        ("Martinique (EPSG:5490)", "EPSG:5490"), ("Guyane (EPSG:2972)", "EPSG:2972"),
        ("La Réunion (EPSG:2975)", "EPSG:2975"), ("Mayotte (EPSG:4471)", "EPSG:4471")]


def test_the_project_renders_the_metropole_in_lambert_93_not_squashed(project_report):
    """The drawn territories have the proportions of the metropole in Lambert-93 (in degrees, as QGIS
    drew the GeoPackage alone, France is 1.4 times too wide)."""
    import geopandas as gpd
    import matplotlib.pyplot as plt

    render = project_report["render"]
    assert render["saved"] and render["errors"] == [] and render["crs"] == "EPSG:2154"
    img = plt.imread(project_report["png"])[..., :3]
    alpha = 140 / 255  # the style's fill over white
    blended = (np.array([242, 153, 74]) * alpha + 255 * (1 - alpha)) / 255
    fill = np.abs(img - blended).max(axis=-1) < 0.03
    assert fill.mean() > 0.1, fill.mean()
    rows, cols = np.nonzero(fill)
    drawn = (cols.max() - cols.min() + 1) / (rows.max() - rows.min() + 1)
    territories = gpd.read_parquet(project_report["folder"] / "territoires-industrie.parquet")
    metropole = territories[[not d[0].startswith("97") for d in territories["departements"]]]
    xmin, ymin, xmax, ymax = metropole.to_crs(2154).total_bounds
    assert drawn == pytest.approx((xmax - xmin) / (ymax - ymin), rel=0.03)
    lon0, lat0, lon1, lat1 = metropole.total_bounds
    assert abs(drawn - (lon1 - lon0) / (lat1 - lat0)) > 0.2   # what an EPSG:4326 drawing would give
    x0, y0, x1, y1 = project_report["view"]["extent"]
    assert project_report["view"]["crs"] == "EPSG:2154" and x0 < xmin < xmax < x1 and y0 < ymin < ymax < y1


def test_a_project_published_without_membership_tables_has_the_territories_only(qgis_report, tmp_path):
    """A release published without the build's membership (as the tests' small publishes): the
    project names no missing file, so QGIS opens it without a bad-layer dialog."""
    project = qgis_report["png"].parent / "territoires-industrie.qgz"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update({"QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(tmp_path)})
    run = subprocess.run([SYSTEM_PYTHON, str(SCRIPT), "--project", str(tmp_path / "p.png"), str(project)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["read"] is True and report["crs"] == "EPSG:2154"
    assert list(report["layers"]) == ["territoires_industrie"] and report["layers"]["territoires_industrie"]["valid"]
    assert report["relations"] == {} and report["render"]["errors"] == []
