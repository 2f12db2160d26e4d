"""The streamed GeoJSON writer (chunks, worker threads), its fast decimals check, lazy imports.

The streamed file must be byte-identical to the file of one vectorised snap of all geometries;
``more_decimals_than`` must give the answer of the exact ``max_decimals``; importing a writer must
not load the preview's matplotlib nor the GeoPackage's pyogrio.
"""

from __future__ import annotations

import itertools
import subprocess
import sys

import geopandas as gpd
import numpy as np
import orjson
import pytest
import shapely
from publish_fixtures import cached_territories

from pipeline.errors import PublishError
from pipeline.publish import geojson, geoparquet


def _synthetic(n: int = 40) -> gpd.GeoDataFrame:
    """MultiPolygons of very different sizes (8 to ~2000 vertices), some with a hole, off-grid coordinates."""
    rng = np.random.default_rng(7)
    geoms = []
    for i in range(n):
        x, y = rng.uniform(-5, 8), rng.uniform(42, 51)
        disc = shapely.Point(x, y).buffer(0.05 + 0.01 * i, quad_segs=int(rng.integers(2, 500)))
        if i % 3 == 0:
            disc = disc.difference(shapely.Point(x, y).buffer(0.01))
        other = shapely.Point(x + 1, y).buffer(0.02, quad_segs=3)
        geoms.append(shapely.MultiPolygon([disc, other]) if i % 2 else disc)
    return gpd.GeoDataFrame(
        {"id_ti": [f"ti-{i:03d}" for i in range(n)], "lib_ti": [f"T {i}" for i in range(n)],
         "departements": [["01", "02"]] * n},
        geometry=geoms, crs=4326,
    )


def _reference_bytes(frame: gpd.GeoDataFrame, decimals: int) -> bytes:
    """The file as one vectorised snap of every geometry would give it."""
    snapped = geojson.rfc7946_geometries(frame.geometry.values, decimals)
    lines = [b'{"type":"FeatureCollection","features":[\n']
    for i, (rec, geom) in enumerate(zip(frame.drop(columns="geometry").astype(object).to_dict("records"), snapped)):
        feat = {"type": "Feature", "properties": {k: geojson.json_value(v) for k, v in rec.items()},
                "geometry": geojson.geometry_json(geom, decimals, as_lists=False)}
        lines.append((b"," if i else b"") + orjson.dumps(feat, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    return b"".join(lines) + b"]}\n"


def test_chunk_bounds_cover_every_row_once_in_order():
    frame = _synthetic()
    counts = shapely.get_num_coordinates(frame.geometry.values)
    bounds = geojson.chunk_bounds(frame.geometry.values, 1500)
    assert bounds[0][0] == 0 and bounds[-1][1] == len(frame)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    assert len(bounds) > 5
    for start, stop in bounds:  # full chunks, except a single geometry larger than a chunk
        assert stop - start == 1 or counts[start:stop].sum() <= 1500
    assert geojson.chunk_bounds(np.array([], dtype=object)) == []


@pytest.mark.parametrize("chunk_coords,workers", [(1, 1), (700, 3), (3000, 2), (10**9, 4)])
def test_streamed_file_is_byte_identical_to_one_vectorised_snap(tmp_path, monkeypatch, chunk_coords, workers):
    frame = _synthetic()
    monkeypatch.setattr(geojson, "CHUNK_COORDS", chunk_coords)
    monkeypatch.setattr(geojson, "WORKERS", workers)
    for decimals in (6, 3):
        path = geojson.write_geojson(frame, tmp_path / f"t{decimals}.geojson", decimals)
        assert path.read_bytes() == _reference_bytes(frame, decimals)


def test_streamed_real_territories_identical_whatever_the_chunks(mirror, tmp_path, monkeypatch):
    frame = cached_territories(mirror)
    whole = geojson.write_geojson(frame, tmp_path / "whole.geojson").read_bytes()
    monkeypatch.setattr(geojson, "CHUNK_COORDS", 5000)
    monkeypatch.setattr(geojson, "WORKERS", 2)
    assert len(geojson.chunk_bounds(frame.geometry.values, 5000)) > 10
    assert geojson.write_geojson(frame, tmp_path / "chunks.geojson").read_bytes() == whole


def test_a_territory_vanishing_on_the_grid_is_an_error_from_a_worker_thread(tmp_path):
    frame = _synthetic()
    geoms = frame.geometry.values.copy()
    geoms[-1] = shapely.box(1.0, 45.0, 1.0 + 1e-9, 45.0 + 1e-9)  # far below 10^-6 degree
    frame = frame.set_geometry(gpd.GeoSeries(geoms, crs=4326))
    with pytest.raises(PublishError, match="vanished"):
        list(geojson.iter_rfc7946_geometries(frame.geometry.values, 6, chunk_coords=500, workers=2))
    with pytest.raises(PublishError, match="vanished"):
        geojson.write_geojson(frame, tmp_path / "t.geojson")


def test_more_decimals_than_agrees_with_the_exact_count():
    rng = np.random.default_rng(3)
    grid6 = np.round(rng.uniform(-180, 180, 300), 6)
    values = np.concatenate([
        *(np.round(rng.uniform(-180, 180, 100), k) for k in range(10)),
        np.nextafter(grid6, 0), np.nextafter(grid6, 1000),  # one ulp off the grid
        [0.0, -0.0, 1e-7, 5e-7, 1e-6, 0.1 + 0.2, 1 / 3, 179.9999995, 9.9999995, -90.0],
    ])
    assert (np.nextafter(grid6, 0) != grid6).all()
    for decimals in range(9):
        for v in values:
            one = np.array([[v, 45.5]])
            assert geojson.more_decimals_than(one, decimals) == (geojson.max_decimals(one) > decimals), (v, decimals)
    assert not geojson.more_decimals_than(grid6, 6) and geojson.more_decimals_than(np.nextafter(grid6, 0), 6)


def test_read_geometries_matches_the_written_geometries(tmp_path):
    frame = _synthetic()
    path = geojson.write_geojson(frame, tmp_path / "t.geojson")
    back = geojson.read_geometries(path)
    assert shapely.equals_exact(back, geojson.rfc7946_geometries(frame.geometry.values), tolerance=0).all()
    assert geojson.verify_geojson(path, frame)["rows"] == len(frame)
    facts, geoms = geojson.verify_and_read(path, frame)   # the light files' check: one read for both
    assert facts == geojson.verify_geojson(path, frame)
    assert shapely.equals_exact(geoms, back, tolerance=0).all()


def test_verify_geojson_still_reports_extra_decimals(tmp_path):
    frame = _synthetic()
    path = geojson.write_geojson(frame, tmp_path / "t.geojson", decimals=7)
    with pytest.raises(PublishError, match="more than 6 decimals"):
        geojson.verify_geojson(path, frame)


def test_write_geoparquet_with_index_none_is_plain_to_parquet(tmp_path):
    frame = _synthetic().drop(columns="departements")
    frame.to_parquet(tmp_path / "a.parquet", schema_version="1.1.0", write_covering_bbox=True, compression="zstd")
    geoparquet.write_geoparquet(frame, tmp_path / "b.parquet", index=None)
    geoparquet.write_geoparquet(frame, tmp_path / "c.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    assert (tmp_path / "a.parquet").read_bytes() != (tmp_path / "c.parquet").read_bytes()  # index=False default


def test_importing_a_writer_does_not_load_matplotlib_pyogrio_or_requests():
    code = (
        "import sys\n"
        "heavy = ('matplotlib', 'pyogrio', 'requests', 'pipeline.publish.release')\n"
        "from pipeline.publish.geojson import write_geojson\n"
        "from pipeline.publish.geoparquet import write_geoparquet\n"
        "import pipeline.publish\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "from pipeline.publish import publish_release, STABLE_NAMES, column_descriptions\n"
        "print(callable(publish_release), STABLE_NAMES['geojson'])\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]"
    assert out[1] == "True territoires-industrie.geojson"
    assert out[2] == "['pipeline.publish.release']"  # release, dictionary, preview, gpkg: still no matplotlib


def test_package_attributes_are_lazy_but_complete():
    import pipeline.publish as publish

    public = [n for n in dir(publish) if not n.startswith("_")]
    assert {"publish_release", "stable_paths", "STABLE_NAMES", "render_preview"} <= set(public)
    for name in public:
        assert getattr(publish, name) is not None
    with pytest.raises(AttributeError):
        publish.no_such_name  # noqa: B018


def _feature(id_ti: str, coords) -> dict:
    return {"type": "Feature", "properties": {"id_ti": id_ti}, "geometry": {"type": "MultiPolygon", "coordinates": coords}}


def _write_layout(path, feats: list[dict]) -> None:
    """A file in the writer's layout: header line, one feature per line, footer line."""
    body = b"".join((b"," if i else b"") + orjson.dumps(f) + b"\n" for i, f in enumerate(feats))
    path.write_bytes(geojson._HEADER + body + geojson._FOOTER)


SQUARE = [[[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]]]  # counterclockwise


def test_read_back_of_the_written_layout_is_one_feature_at_a_time_and_same_as_a_whole_parse(tmp_path):
    frame = _synthetic()
    path = geojson.write_geojson(frame, tmp_path / "t.geojson")
    assert geojson._feature_lines(path) is not None
    pretty = tmp_path / "pretty.geojson"  # the same document in another layout: parsed as a whole
    pretty.write_bytes(orjson.dumps(orjson.loads(path.read_bytes()), option=orjson.OPT_INDENT_2))
    assert geojson._feature_lines(pretty) is None
    assert shapely.equals_exact(geojson.read_geometries(pretty), geojson.read_geometries(path), tolerance=0).all()
    assert geojson.verify_geojson(pretty, frame)["rows"] == geojson.verify_geojson(path, frame)["rows"] == len(frame)


def test_verify_reports_a_crs_member_outside_the_writer_layout(tmp_path):
    frame = _synthetic(2)
    path = geojson.write_geojson(frame, tmp_path / "t.geojson")
    doc = orjson.loads(path.read_bytes())
    doc["crs"] = {"type": "name", "properties": {"name": "EPSG:4326"}}
    path.write_bytes(orjson.dumps(doc))
    with pytest.raises(PublishError, match="'crs' member"):
        geojson.verify_geojson(path, frame)


@pytest.mark.parametrize("text", [
    geojson._HEADER + orjson.dumps(_feature("a", SQUARE)) + b"\n",  # no footer
    geojson._HEADER + b'{"type":"Feature"\n' + geojson._FOOTER,  # broken feature line
    geojson._HEADER + geojson._FOOTER + b"]}\n",  # text after the footer
])
def test_verify_rejects_text_that_is_not_json(tmp_path, text):
    path = tmp_path / "t.geojson"
    path.write_bytes(text)
    with pytest.raises(ValueError):
        geojson.verify_geojson(path, gpd.GeoDataFrame({"id_ti": ["a"]}, geometry=[shapely.box(0, 0, 1, 1)]))


@pytest.mark.parametrize("coords,problem", [
    ([[list(reversed(SQUARE[0][0]))]], "rings are not oriented"),
    ([[[[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]]], "1 invalid geometries, e.g. Self-intersection"),
    ([[[[0.0, 0.0], [181.0, 0.0], [181.0, 1.0], [0.0, 1.0], [0.0, 0.0]]]], r"outside \[-180,180\]"),
    ([[[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0000001], [0.0, 0.0]]]], "more than 6 decimals"),
])
def test_verify_reports_each_geometry_problem_in_any_chunk(tmp_path, monkeypatch, coords, problem):
    monkeypatch.setattr(geojson, "CHUNK_COORDS", 6)  # one geometry per chunk: the bad one is the 4th
    feats = [_feature(f"ti-{i}", SQUARE) for i in range(3)] + [_feature("ti-3", coords), _feature("ti-4", SQUARE)]
    path = tmp_path / "t.geojson"
    _write_layout(path, feats)
    frame = gpd.GeoDataFrame({"id_ti": [f"ti-{i}" for i in range(5)]}, geometry=[shapely.box(0, 0, 1, 1)] * 5)
    with pytest.raises(PublishError, match=problem):
        geojson.verify_geojson(path, frame)
    _write_layout(path, [_feature(f"ti-{i}", SQUARE) for i in range(5)])
    assert geojson.verify_geojson(path, frame)["rows"] == 5
