"""Real QGIS (Debian's python3-qgis, headless) opens the published GeoJSON and GeoPackage, applies
the GeoPackage's default style and renders a non-blank map.

Runs ``tests/qgis_render.py`` with /usr/bin/python3 (not the venv); skipped with a reason when that
interpreter cannot import qgis (``apt-get install -y python3-qgis``).
"""

from __future__ import annotations

import json
import os
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
