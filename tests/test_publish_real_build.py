"""Publishing the real core build (pipeline.steps.sequence) of the 183 territories, end to end.

Runs only where ``pipeline.steps.sequence.build_territories`` imports; uses the session's ``real_build``
fixture (tests/conftest.py), so the build itself is shared with the other real-build tests.
"""

from __future__ import annotations

import json

import geopandas as gpd
import jsonschema
import pandas as pd
import pyogrio
import pytest
import shapely

from pipeline import CONTRACT_VERSION
from pipeline.publish import (
    STABLE_NAMES,
    geojson,
    geoparquet,
    gpkg,
    membership_tables,
    stable_paths,
    tiles,
)
from pipeline.publish.gpkg import LAYER, default_style
from pipeline.publish.light import MAP_COLUMNS
from pipeline.publish.provenance import KEY, source_lock
from pipeline.settings import ASSETS_DIR

build = pytest.importorskip("pipeline.steps.sequence", reason="pipeline.steps.sequence (the core build) is not importable")
if not hasattr(build, "build_territories"):  # pragma: no cover
    pytest.skip("pipeline.steps.sequence has no build_territories", allow_module_level=True)


@pytest.fixture(scope="module")
def published_real(real_release, real_build):
    """The session's publish of the real build (tests/conftest.py: ``real_release``), read-only."""
    out, manifest = real_release
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
    n = len(result.membership.members)
    assert rows == {"geoparquet": 183, "geojson": 183, "gpkg": 183, "flatgeobuf": 183, "pmtiles": 183,
                    "light_overview": 183, "light_regional": 183, "membership_communes_parquet": n,
                    "membership_communes_csv": n, "membership_groupements_parquet": 641,
                    "membership_groupements_csv": 641, "preview": None, "qgis_project": None, "datapackage": None,
                    "web_script": None, "web_style": None, "web_data": 183, "web_search": 183, "web_page": None}
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


# ------------------------------------------------------------------ membership tables
def _communes(out):
    return pd.read_parquet(stable_paths(out)["membership_communes_parquet"])


def test_membership_table_has_one_row_per_member_commune_and_agrees_with_the_territories(published_real):
    out, _, result = published_real
    table = _communes(out)
    assert len(table) == len(result.membership.members) == 18659
    assert not table.duplicated(["insee_com", "id_ti"]).any()
    territories = gpd.read_parquet(stable_paths(out)["geoparquet"])
    expected = {(t, c) for t, codes in zip(territories["id_ti"], territories["insee_communes"]) for c in codes}
    assert set(zip(table["id_ti"], table["insee_com"])) == expected
    assert table["nom_commune"].notna().all() and table["departement"].notna().all()
    assert table["siren_epci"].notna().all() and (table["phase"] == "2023-2027").all()
    csv = pd.read_csv(stable_paths(out)["membership_communes_csv"], dtype=str, keep_default_na=False)
    assert list(csv.columns) == list(table.columns) and len(csv) == len(table)
    assert list(csv["insee_com"]) == list(table["insee_com"])   # leading zeros kept
    groupements = pd.read_parquet(stable_paths(out)["membership_groupements_parquet"])
    listed = {(t, s) for t, sirens in zip(territories["id_ti"], territories["siren_groupements"]) for s in sirens}
    assert set(zip(groupements["id_ti"], groupements["siren_groupement"])) == listed
    assert groupements["nom_groupement"].notna().all()


def test_each_reconciled_code_appears_with_its_reason(published_real):
    table = _communes(published_real[0]).set_index(["id_ti", "insee_com"])
    mergers = {"08053": "08294", "16097": "16355", "35062": "35112", "64300": "64541", "85292": "85041;85271",
               "95169": "95282"}
    rows = table[table["how"] == "successor"]
    assert dict(zip(rows.index.get_level_values("insee_com"), rows["from_codes"])) == mergers
    split = table[table["how"] == "split_part"]
    assert sorted(split.index.get_level_values("insee_com")) == ["85084", "85165", "85212"]
    assert set(split["from_codes"]) == {"85084"}
    mixed = table.loc[("ti-5201", "49160")]
    assert mixed["how"] == "successor_absorbing_outside" and mixed["absorbed_outside"] == "49321"
    others = table[~table["how"].isin(["successor", "split_part", "successor_absorbing_outside"])]
    assert set(others["how"]) == {"groupement"}   # the 2024 list by groupement defines every territory
    assert (others["siren_groupement"].str.len() >= 9).all()


# ------------------------------------------------------------------ web formats
def test_pmtiles_cover_every_territory_at_every_zoom(published_real):
    out, manifest, _ = published_real
    path = stable_paths(out)["pmtiles"]
    info = pyogrio.read_info(path)
    assert info["driver"] == "PMTiles" and info["crs"] == "EPSG:3857"
    header, _, tile_sizes = tiles.pmtiles_info(path)
    ids = set(gpd.read_parquet(stable_paths(out)["geoparquet"])["id_ti"])
    for zoom in range(header["min_zoom"], header["max_zoom"] + 1):
        assert tiles.ids_at_zoom(path, zoom) == ids, zoom
    entry = next(o for o in manifest["outputs"] if o["name"] == "pmtiles")
    assert entry["largest_tile_bytes"] == max(size for _, size in tile_sizes) < 100_000
    fields = set(info["fields"]) - {"mvt_id"}
    assert fields == set(MAP_COLUMNS)


def test_flatgeobuf_reads_back_through_its_index(published_real):
    out, _, _ = published_real
    path = stable_paths(out)["flatgeobuf"]
    territories = gpd.read_parquet(stable_paths(out)["geoparquet"])
    assert len(pyogrio.read_dataframe(path, bbox=tuple(territories.total_bounds))) == 183
    one = territories.iloc[0]
    near = pyogrio.read_dataframe(path, bbox=tuple(one.geometry.bounds), columns=["id_ti"])
    assert one["id_ti"] in set(near["id_ti"]) and len(near) < 20


# ------------------------------------------------------------------ self-describing files and schemas
def test_every_data_file_names_the_build_of_its_manifest(published_real):
    out, manifest, _ = published_real
    paths = stable_paths(out)
    readers = {
        "geoparquet": geoparquet.file_metadata, "geojson": geojson.file_metadata, "gpkg": gpkg.file_metadata,
        "flatgeobuf": tiles.flatgeobuf_metadata, "pmtiles": tiles.pmtiles_metadata,
        "light_overview": geojson.file_metadata, "light_regional": geojson.file_metadata,
        "membership_communes_parquet": membership_tables.parquet_metadata,
        "membership_groupements_parquet": membership_tables.parquet_metadata,
    }
    for name, read in readers.items():
        meta = read(paths[name])
        assert meta["build_id"] == manifest["build_id"] == "real", name
        assert meta["contract_version"] == manifest["contract_version"] == CONTRACT_VERSION, name
        assert meta["source_lock"] == manifest["source_lock"] == source_lock(manifest), name
    assert gpd.read_parquet(paths["geoparquet"]).attrs[KEY]["build_id"] == "real"


def _validate(doc, schema_name):
    schema = json.loads((ASSETS_DIR / "schemas" / schema_name).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(doc)


def test_manifest_and_release_index_validate_against_their_schemas(published_real):
    out, manifest, _ = published_real
    _validate(json.loads(stable_paths(out)["manifest"].read_text(encoding="utf-8")), "manifest.schema.json")
    index = json.loads((out / "releases" / "index.json").read_text(encoding="utf-8"))
    _validate(index, "releases-index.schema.json")
    _validate(json.loads((out / "changes.json").read_text(encoding="utf-8")), "changes.schema.json")
    assert [r["build_id"] for r in index["releases"]] == ["real"]
    assert {f["name"] for f in index["releases"][0]["files"]} == {o["name"] for o in manifest["outputs"]}
    broken = dict(manifest, outputs=[dict(manifest["outputs"][0], sha256="not a hash")])
    with pytest.raises(jsonschema.ValidationError):
        _validate(broken, "manifest.schema.json")


def test_cli_build_all_publishes_the_same_layout_for_both_phases(published_out):
    # published_out (tests/conftest.py): `build --offline --phase all` run once per session, exit 0 asserted there
    out = published_out
    found = sorted(p.parent.name for p in out.glob("phase=*/territoires-industrie.parquet"))
    assert found == ["phase=2018-2022", "phase=2023-2027"]
    layouts = {phase: sorted(p.name for p in (out / phase).iterdir()) for phase in found}
    assert layouts["phase=2018-2022"] == layouts["phase=2023-2027"]
    assert set(layouts["phase=2023-2027"]) == set(STABLE_NAMES.values()) | {"changes.json", "CHANGES.md"}
    for name in STABLE_NAMES.values():   # the current phase is also at the root, byte for byte
        assert (out / name).read_bytes() == (out / "phase=2023-2027" / name).read_bytes(), name
    old = gpd.read_parquet(out / "phase=2018-2022" / "territoires-industrie.parquet")
    new = gpd.read_parquet(out / "phase=2023-2027" / "territoires-industrie.parquet")
    assert len(old) == 149 and len(new) == 183
    assert old.dtypes.astype(str).to_dict() == new.dtypes.astype(str).to_dict()   # same types in both phases
    assert old["is_new"].all()   # the programme's first phase: every territory is new
    for name in ("territoires-industrie.gpkg", "territoires-industrie.fgb"):   # GDAL field types too
        infos = [pyogrio.read_info(out / phase / name, layer=0) for phase in found]
        types = [dict(zip(i["fields"], zip(i["ogr_types"], i["ogr_subtypes"]))) for i in infos]
        assert types[0] == types[1], name
    members = pd.read_csv(out / "phase=2018-2022" / "territoires-industrie-communes.csv", dtype=str)
    assert len(members) == old["n_communes"].sum() and (members["phase"] == "2018-2022").all()
    index = json.loads((out / "releases" / "index.json").read_text(encoding="utf-8"))
    assert sorted(r["phase"] for r in index["releases"]) == ["2018-2022", "2023-2027"]
