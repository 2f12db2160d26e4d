"""The whole Dagster graph materialized on the real shared data into temporary folders."""

from __future__ import annotations

import json

import geopandas as gpd
import pytest
from dagster import DagsterInstance, materialize

from pipeline.defs.assets import ALL_ASSETS
from pipeline.defs.checks import ALL_CHECKS
from pipeline.defs.resources import PipelineSettings


@pytest.fixture(scope="module")
def run(mirror, tmp_path_factory):
    base = tmp_path_factory.mktemp("materialize")
    resources = {"pipeline_settings": PipelineSettings(mirror_dir=str(mirror), raw_dir=str(base / "raw"),
                                                       output_dir=str(base / "out"))}
    with DagsterInstance.ephemeral() as instance:
        result = materialize([*ALL_ASSETS, *ALL_CHECKS], resources=resources, instance=instance,
                             raise_on_error=False)
        yield result, base / "out"


def test_every_asset_and_check_succeeds(run):
    result, _ = run
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 12 and all(c.passed for c in checks)
    keys = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()
            for m in [m.event_specific_data.materialization]}
    assert {"published_2023_2027", "published_2018_2022", "clean_communes", "plan_table"} <= keys


def test_published_files_at_the_contract_paths(run):
    _, out = run
    for name in ("territoires-industrie.parquet", "territoires-industrie.geojson",
                 "territoires-industrie.gpkg", "manifest.json"):
        assert (out / name).is_file(), name
    t = gpd.read_parquet(out / "territoires-industrie.parquet")
    assert len(t) == 183 and set(t["phase"]) == {"2023-2027"}
    assert int(t["is_new"].sum()) == 29
    # no plan table given: plan columns exist and are null, never invented
    for col in ("axe_transition_ecologique", "axe_innovation", "axe_competences", "axe_foncier", "plan_url"):
        assert col in t.columns and t[col].isna().all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["phase"] == "2023-2027" and manifest["contract_version"]
    assert {i["source"] for i in manifest["inputs"]} >= {"communes_boundaries", "ti2023_communes",
                                                         "ti2023_groupements", "insee_mvt_communes"}
    assert all(len(i["sha256"]) == 64 and i["mode"] == "mirror" for i in manifest["inputs"])
    assert all(c["passed"] for c in manifest["checks"])
    previous = gpd.read_parquet(out / "phase=2018-2022" / "territoires-industrie.parquet")
    assert len(previous) == 149 and set(previous["phase"]) == {"2018-2022"}
