"""Publishing the real core build (pipeline.build.steps) of the 183 territories, end to end.

Runs only where ``pipeline.build.steps.build_territories`` imports; uses the session's ``real_build``
fixture (tests/conftest.py), so the build itself is shared with the other real-build tests.
"""

from __future__ import annotations

import json

import geopandas as gpd
import pyogrio
import pytest
import shapely

from pipeline.publish import publish_release, stable_paths
from pipeline.publish.gpkg import LAYER, default_style
from pipeline.settings import Settings

build = pytest.importorskip("pipeline.build.steps", reason="pipeline.build.steps (the core build) is not importable")
if not hasattr(build, "build_territories"):  # pragma: no cover
    pytest.skip("pipeline.build.steps has no build_territories", allow_module_level=True)


@pytest.fixture(scope="module")
def published_real(real_build, tmp_path_factory):
    out = tmp_path_factory.mktemp("real_publish")
    manifest = publish_release(real_build.territories, Settings(output_dir=out), build_id="real",
                               inputs=real_build.inputs, checks=[c.as_dict() for c in real_build.checks],
                               phase=real_build.phase)
    return out, manifest, real_build


def test_real_build_publishes_183_territories_in_every_format(published_real):
    out, manifest, result = published_real
    paths = stable_paths(out)
    assert len(gpd.read_parquet(paths["geoparquet"])) == 183
    doc = json.loads(paths["geojson"].read_text(encoding="utf-8"))
    assert len(doc["features"]) == 183 and "crs" not in doc
    geoms = [shapely.from_geojson(json.dumps(f["geometry"])) for f in doc["features"]]
    assert all(g.is_valid and g.geom_type == "MultiPolygon" for g in geoms)
    assert pyogrio.read_info(paths["gpkg"], layer=LAYER)["features"] == 183
    assert default_style(paths["gpkg"]) is not None
    rows = {o["name"]: o["rows"] for o in manifest["outputs"]}
    assert rows == {"geoparquet": 183, "geojson": 183, "gpkg": 183, "light_100m": 183, "light_1km": 183,
                    "preview": None}
    assert manifest["inputs"] == json.loads(json.dumps(result.inputs, default=str))
    assert {i["source"] for i in manifest["inputs"]} >= {"communes_boundaries", "ti2023_communes"}


def test_real_build_light_variants_keep_a_valid_coverage(published_real):
    _, manifest, _ = published_real
    for o in manifest["outputs"]:
        if o["name"].startswith("light_"):
            assert o["source_coverage_valid"] is True and o["coverage_valid"] is True, o


def test_real_build_attributes_survive_publishing(published_real):
    out, _, result = published_real
    back = gpd.read_parquet(stable_paths(out)["geoparquet"]).set_index("id_ti").sort_index()
    src = result.territories.set_index("id_ti").sort_index()
    assert list(back.index) == list(src.index)
    assert back["n_communes"].sum() == src["n_communes"].sum()
    assert [list(v) for v in back["insee_communes"]] == [list(v) for v in src["insee_communes"]]
    assert shapely.equals_exact(back.geometry.values, src.geometry.values, tolerance=0).all()
