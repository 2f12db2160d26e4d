"""The whole Dagster graph materialized on the real shared data into temporary folders."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
from dagster import DagsterInstance, materialize

from pipeline.defs.assets import ALL_ASSETS
from pipeline.defs.io_managers import frame_files_io_manager
from pipeline.defs.resources import PipelineSettings


@pytest.fixture(scope="module")
def run(mirror, tmp_path_factory):
    base = tmp_path_factory.mktemp("materialize")
    with DagsterInstance.ephemeral() as instance:
        result = materialize(ALL_ASSETS, resources=_resources(mirror, base / "out"), instance=instance,
                             raise_on_error=False)
        yield result, base / "out", instance


def test_every_asset_and_check_succeeds(run):
    result, _, _ = run
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 12 and all(c.passed for c in checks)
    keys = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()
            for m in [m.event_specific_data.materialization]}
    assert {"published_2023_2027", "published_2018_2022", "territories_2023_2027", "plan_table"} <= keys
    # structured check metadata, not stringified lists
    count = next(c for c in checks if c.check_name == "territory_count"
                 and c.asset_key.to_user_string() == "territories_2023_2027")
    assert count.metadata["found"].value == 183
    overlaps = next(c for c in checks if c.check_name == "no_unexpected_overlaps")
    assert isinstance(overlaps.metadata["allowed_pairs"].value, list)


def test_sources_keep_their_own_path_and_frames_are_stored_as_parquet(run):
    result, _, instance = run
    meta = {m.asset_key.to_user_string(): m.metadata for m in
            [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]}
    src = meta["sources/ti2023_communes"]
    assert src["path"].value.endswith(".csv") and src["path"].value != src["stored_at"].value
    source_folder = Path(src["stored_at"].value)
    assert source_folder == Path(instance.storage_directory()) / "sources" / "ti2023_communes"
    assert (source_folder / "value.pickle").is_file()
    # the sources' values go to no IO manager: no HANDLED_OUTPUT event for them (one write each)
    handled = [e.step_key for e in result.all_events if e.event_type_value == "HANDLED_OUTPUT"]
    assert handled and "fetch_sources" not in handled
    schema = {c.name: c.description for c in meta["territories_2023_2027"]["dagster/column_schema"].schema.columns}
    assert schema["communes_area_km2"].startswith("internal:") and schema["perimeter_source"].startswith("internal:")
    stored = Path(instance.storage_directory()) / "territories_2023_2027"
    t = gpd.read_parquet(stored / "value.territories.parquet")     # readable by anyone, no pickle
    assert len(t) == 183 and t.crs.to_epsg() == 4326


def test_the_steps_read_the_stored_sources_dagster_loads_none(run):
    """Sources are dependencies of type Nothing: no input event per source and step, yet each
    phase's build used exactly the stored sources (their sha256, the data versions of the run)."""
    result, _, _ = run
    loaded = [e for e in result.all_events if e.event_type_value in ("LOADED_INPUT", "STEP_INPUT")
              and e.step_key.startswith(("territories_", "plan_table"))]
    assert loaded == []
    versions = {m.asset_key.to_user_string(): m.tags["dagster/data_version"] for m in
                [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]}
    for phase in ("2023_2027", "2018_2022"):
        build = next(e.event_specific_data.materialization for e in result.get_asset_materialization_events()
                     if e.asset_key.to_user_string() == f"territories_{phase}")
        inputs = {i["source"]: i["sha256"] for i in build.metadata["inputs"].value}
        assert inputs and all(versions[f"sources/{name}"] == sha for name, sha in inputs.items())


def test_published_files_at_the_contract_paths(run):
    _, out, _ = run
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


def _releases(out: Path) -> dict[str, list[str]]:
    """Release folders (build ids) by phase: ``releases/<build id>/phase=<phase>/``."""
    found = sorted((p.parent.name, p.parent.parent.name) for p in (out / "releases").glob("*/*/manifest.json"))
    return {phase: [build for name, build in found if name == f"phase={phase}"] for phase in ("2023-2027", "2018-2022")}


def _materialized(result) -> set[str]:
    return {e.event_specific_data.materialization.asset_key.to_user_string()
            for e in result.get_asset_materialization_events()}


def _resources(mirror: Path, out: Path) -> dict:
    return {"pipeline_settings": PipelineSettings(mirror_dir=str(mirror), raw_dir=str(out.parent / "raw"),
                                                  output_dir=str(out)),
            "io_manager": frame_files_io_manager}


def test_a_second_run_on_unchanged_inputs_publishes_no_release_and_says_so(run, mirror):
    _, out, instance = run
    releases = _releases(out)
    before = {p: (out / p).read_bytes() for p in ("manifest.json", "territoires-industrie.parquet")}
    again = materialize(ALL_ASSETS, resources=_resources(mirror, out), instance=instance)
    assert again.success
    assert _releases(out) == releases and all(len(r) == 1 for r in releases.values())
    assert {p: (out / p).read_bytes() for p in before} == before
    built = _materialized(again)
    assert not any(k.startswith(("territories_", "published_")) for k in built)
    observations = {e.event_specific_data.asset_observation.asset_key.to_user_string():
                    e.event_specific_data.asset_observation.metadata
                    for e in again.all_events if e.event_type_value == "ASSET_OBSERVATION"}
    for key in ("territories_2023_2027", "territories_2018_2022"):
        assert observations[key]["published"].value is False
        assert "nothing changed since the published build" in observations[key]["reason"].value
    tags = instance.get_run_by_id(again.run_id).tags
    assert tags["ti/unchanged_2023_2027"] == json.loads((out / "manifest.json").read_text())["build_id"]
    # the CLI sees the Dagster build as its own: same code version, inputs and plan table
    from pipeline.cli import main

    assert main(["build", "--offline", "--mirror", str(mirror), "--output", str(out)]) == 3
    assert _releases(out) == releases


def test_the_cli_and_dagster_publish_the_same_content(run, published_out):
    """One build, two paths: the Dagster run's files have the content of the CLI's (content_sha256)."""
    _, out, _ = run
    for phase_dir in (".", "phase=2018-2022"):
        dagster, cli = (json.loads((root / phase_dir / "manifest.json").read_text()) for root in (out, published_out))
        assert dagster["content_sha256"] == cli["content_sha256"]
        assert dagster["extra"]["code_fingerprint"] == cli["extra"]["code_fingerprint"]
        assert dagster["inputs"] and [i["sha256"] for i in dagster["inputs"]] == [i["sha256"] for i in cli["inputs"]]


def test_a_run_tagged_ti_force_publishes_anyway(run, mirror):
    _, out, instance = run
    before = json.loads((out / "phase=2018-2022" / "manifest.json").read_text())
    forced = materialize(ALL_ASSETS, selection=["published_2018_2022"], resources=_resources(mirror, out),
                         instance=instance, tags={"ti/force": "true"})
    assert forced.success and _materialized(forced) == {"published_2018_2022"}
    again = json.loads((out / "phase=2018-2022" / "manifest.json").read_text())
    assert again["build_id"] != before["build_id"]
    # published from the build read back from its files, as the whole run published it from memory
    assert again["content_sha256"] == before["content_sha256"]


def test_a_phase_without_stored_sources_fails_with_one_line_naming_them(mirror, tmp_path):
    with DagsterInstance.ephemeral() as instance:
        result = materialize(ALL_ASSETS, selection=["territories_2018_2022"], instance=instance,
                             resources=_resources(mirror, tmp_path / "out"), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.error.message
    assert "sources/" in message and "has no stored value" in message and "materialize it first" in message
    assert not (tmp_path / "out").exists()
