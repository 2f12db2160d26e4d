"""The Dagster code location as ``workspace.yaml`` names it: assets, blocking checks, job, schedule,
sensor; the fetch retry rules; and a failing blocking check that must leave the published files alone."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, AssetSelection, DagsterInstance, Failure, materialize
from http_server import FaultServer, Reply

from pipeline.defs.assets import ALL_ASSETS, fetch_source, sources
from pipeline.defs.io_managers import FrameFilesIOManager, frame_files_io_manager
from pipeline.defs.resources import PipelineSettings
from pipeline.errors import SourceError
from pipeline.settings import Settings
from pipeline.sources.catalog import load_catalog
from pipeline.steps import quality

ROOT = Path(__file__).resolve().parent.parent
CATALOG = load_catalog(Settings())


DATA_STACK = ("pandas", "numpy", "pyarrow", "geopandas", "shapely", "pyogrio", "pyproj", "matplotlib")


@pytest.fixture(scope="module")
def defs():
    """The object workspace.yaml points `dagster dev` at."""
    entry = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    return getattr(importlib.import_module(entry["module_name"]), entry["attribute"])


def test_the_code_location_loads_without_the_data_stack():
    """The daemon, the UI and each run load it; a run that finds nothing changed imports none of
    the data stack either (bench/RESULTS.md, "Nothing changed"): the steps that build or publish,
    or read a plan table, import it."""
    script = f"import sys\nimport pipeline.definitions\nprint(sorted(m for m in {DATA_STACK!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_the_plan_table_asset_without_a_plan_table_imports_no_data_stack(tmp_path):
    """Every run materializes plan_table; without TI_PLANS_PATH its value is None (null plan
    columns), its data version "no-plan-table", and no pandas is imported for it."""
    script = "\n".join([
        "import sys",
        "from dagster import DagsterInstance, materialize",
        "from pipeline.defs.assets import plan_table",
        "from pipeline.defs.io_managers import frame_files_io_manager",
        "from pipeline.defs.resources import PipelineSettings",
        f"instance = DagsterInstance.local_temp({str(tmp_path / 'home')!r})",
        f"settings = PipelineSettings(raw_dir={str(tmp_path / 'raw')!r}, output_dir={str(tmp_path / 'out')!r})",
        "result = materialize([plan_table], resources={'pipeline_settings': settings, "
        "'io_manager': frame_files_io_manager}, instance=instance)",
        "event = result.get_asset_materialization_events()[0].event_specific_data.materialization",
        "print(result.success, result.output_for_node('plan_table'), event.tags['dagster/data_version'])",
        f"print(sorted(m for m in {DATA_STACK!r} if m in sys.modules))",
    ])
    (tmp_path / "home").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "TI_PLANS_PATH"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.stdout.splitlines()[-2:] == ["True None no-plan-table", "[]"], proc.stdout + proc.stderr


def test_asset_keys(defs):
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    expected = {f"sources/{n}" for n in CATALOG.sources} | {"plan_table"}
    for phase in ("2023_2027", "2018_2022"):
        expected |= {f"territories_{phase}", f"published_{phase}"}
    assert keys == expected


def test_each_phase_reads_only_its_sources(defs):
    graph = defs.resolve_asset_graph()
    parents = {k.to_user_string() for k in graph.get(AssetKey("territories_2018_2022")).parent_keys}
    assert parents == {f"sources/{n}" for n in (
        "communes_boundaries", "insee_mvt_communes", "ti2018_groupements", "decoupage_2024_communes",
        "decoupage_2024_epci", "decoupage_2024_ept", "decoupage_2025_communes", "decoupage_2025_epci",
        "decoupage_2025_ept")}
    assert "sources/ti2023_communes" not in parents
    plan_parents = {k.to_user_string() for k in graph.get(AssetKey("plan_table")).parent_keys}
    assert plan_parents == {"sources/ti2023_communes", "sources/ti2023_groupements"}


def test_asset_checks_are_blocking(defs):
    graph = defs.resolve_asset_graph()
    checks = {(k.asset_key.to_user_string(), k.name): graph.get_check_spec(k).blocking for k in graph.asset_check_keys}
    names = {"territory_count", "geometries_valid", "communes_accounted_for", "area_matches_communes",
             "holes_are_enclaves", "no_unexpected_overlaps"}
    assert set(checks) == {(f"territories_{p}", n) for p in ("2023_2027", "2018_2022") for n in names}
    assert all(checks.values())


def test_job_schedule_and_sensor(defs):
    job = defs.resolve_job_def("build_all")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {
        k.to_user_string() for k in defs.resolve_all_asset_keys()}
    schedule = defs.resolve_schedule_def("weekly_build")
    assert (schedule.job_name, schedule.cron_schedule, schedule.execution_timezone) == (
        "build_all", "0 6 * * 1", "Europe/Paris")
    assert {s.name for s in defs.sensors} == {"automation_sensor", "failure_alert"}   # tests/test_schedules.py


# The TI_SCHEDULE_* / TI_SENSOR_* / TI_SOURCES_CRON variables: tests/test_schedules.py.


# ---------------------------------------------------------------- retries of the fetch assets

@pytest.fixture
def live_env(monkeypatch, tmp_path):
    monkeypatch.delenv("TI_MIRROR_DIR", raising=False)
    monkeypatch.setenv("TI_RAW_DIR", str(tmp_path / "raw"))
    monkeypatch.setenv("TI_HTTP_RETRIES", "1")
    monkeypatch.setenv("TI_HTTP_BACKOFF", "0")
    with FaultServer() as srv:
        srv.route("/ti2018.csv", b"id_ti,siren\nti-1,200000000\n", content_type="text/csv")
        monkeypatch.setenv("TI_URL_TI2018_GROUPEMENTS", srv.url("/ti2018.csv"))
        yield srv


def _invoke(name: str):
    return fetch_source(name, PipelineSettings().settings())


def test_fetch_4xx_is_a_failure_dagster_does_not_retry(live_env):
    assert sources.op.retry_policy.max_retries == 2
    live_env.script("/ti2018.csv", Reply(status=404))
    with pytest.raises(Failure) as info:
        _invoke("ti2018_groupements")
    assert info.value.allow_retries is False and "HTTP 404" in info.value.description
    # through a real run: the step fails once, with no retry scheduled
    live_env.script("/ti2018.csv", Reply(status=404))
    with DagsterInstance.ephemeral() as instance:
        result = materialize([sources], instance=instance, selection=["sources/ti2018_groupements"],
                             resources={"pipeline_settings": PipelineSettings()}, raise_on_error=False)
    kinds = [e.event_type_value for e in result.all_events]
    assert not result.success and "STEP_FAILURE" in kinds and "STEP_UP_FOR_RETRY" not in kinds
    assert len(live_env.hits("/ti2018.csv", "GET")) == 2


def test_fetch_5xx_and_network_errors_stay_retryable(live_env):
    live_env.script("/ti2018.csv", Reply(status=503), Reply(status=503))
    with pytest.raises(SourceError) as info:
        _invoke("ti2018_groupements")
    assert not isinstance(info.value, Failure) and info.value.retryable is True   # the RetryPolicy applies
    assert "HTTP 503" in str(info.value)
    # after the server recovers, the same asset succeeds
    out = _invoke("ti2018_groupements")
    assert out.sha256 == hashlib.sha256(b"id_ti,siren\nti-1,200000000\n").hexdigest()


# ---------------------------------------------------------------- a blocking check that fails
def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def published_before(core_published, mirror, tmp_path_factory):
    """A previous good release in a fresh output folder, published with the core (a copy of the
    session's, tests/conftest.py)."""
    base = tmp_path_factory.mktemp("blocked")
    shutil.copytree(core_published, base / "out")
    settings = Settings(mirror_dir=mirror, raw_dir=base / "raw", output_dir=base / "out")
    manifest = json.loads((base / "out" / "manifest.json").read_text(encoding="utf-8"))
    return settings, manifest


def test_failing_blocking_check_stops_publish_and_keeps_files(published_before, monkeypatch):
    settings, _before = published_before
    out = settings.output_dir
    snapshot = _snapshot(out)
    assert "manifest.json" in snapshot and "territoires-industrie.parquet" in snapshot

    def broken_count(territories, expected):
        return quality.CheckResult("territory_count", False, True, "forced failure for the test",
                                   {"expected": len(expected), "found": -1})

    monkeypatch.setattr(quality, "check_count", broken_count)
    resources = {"pipeline_settings": PipelineSettings(mirror_dir=str(settings.mirror_dir),
                                                       raw_dir=str(settings.raw_dir), output_dir=str(out)),
                 "io_manager": frame_files_io_manager}
    with DagsterInstance.ephemeral() as instance:
        # forced: the previous release has the same inputs, so the build would otherwise be skipped
        result = materialize(ALL_ASSETS, resources=resources, instance=instance,
                             selection=AssetSelection.assets("published_2023_2027").upstream(),
                             raise_on_error=False, tags={"ti/force": "true"})
    assert not result.success
    materialized = {e.event_specific_data.materialization.asset_key.to_user_string()
                    for e in result.get_asset_materialization_events()}
    assert "territories_2023_2027" in materialized and "published_2023_2027" not in materialized
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert "published_2023_2027" not in started                    # the publish asset never ran
    failed = [c for c in result.get_asset_check_evaluations() if not c.passed]
    assert [(c.asset_key.to_user_string(), c.check_name) for c in failed] == [("territories_2023_2027",
                                                                              "territory_count")]
    assert _snapshot(out) == snapshot                               # stable files and manifest byte-identical
    # the run's error names the check and what it found, as the CLI does (not only "1 check failed")
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error_display_string
    assert "2023-2027: blocking checks failed, nothing published: territory_count (expected 183, found -1)" \
        in message


def test_io_manager_round_trip_keeps_the_build(real_build, tmp_path):
    """A BuildResult stored as (Geo)Parquet files plus a small pickle reads back equal."""
    import pandas as pd
    from geopandas.testing import assert_geodataframe_equal
    manager = FrameFilesIOManager(base_path=tmp_path)
    manager.dump_to_path(None, real_build, tmp_path / "t")
    assert {p.name for p in (tmp_path / "t").iterdir()} >= {"value.pickle", "value.territories.parquet",
                                                            "value.membership.members.parquet"}
    assert (tmp_path / "t" / "value.pickle").stat().st_size < 1_000_000        # the frames are not pickled
    back = manager.load_from_path(None, tmp_path / "t")
    assert_geodataframe_equal(back.territories, real_build.territories)
    assert back.territories["insee_communes"].map(type).eq(list).all()        # lists stay lists
    pd.testing.assert_frame_equal(back.membership.members, real_build.membership.members)
    assert back.checks == real_build.checks and back.inputs == real_build.inputs
    assert back.territories is not real_build.territories


def test_io_manager_hands_a_run_its_own_values_once_and_reads_the_files_otherwise(tmp_path):
    """Within one run (one process), a step takes the object its upstream step stored, as the CLI
    passes the build to publishing; a later run reads the stored files back, equal but new."""
    import pandas as pd
    from dagster import asset

    made_value = {"frame": pd.DataFrame({"a": [1, 2]}), "n": 3}
    taken: list = []

    @asset
    def made():
        return made_value

    @asset
    def uses(made):
        taken.append(made)

    with DagsterInstance.ephemeral(tempdir=str(tmp_path)) as instance:
        resources = {"io_manager": frame_files_io_manager}
        assert materialize([made, uses], instance=instance, resources=resources).success
        assert taken[-1] is made_value
        assert materialize([made, uses], selection=["uses"], instance=instance, resources=resources).success
    assert taken[-1] is not made_value and taken[-1]["n"] == 3
    pd.testing.assert_frame_equal(taken[-1]["frame"], made_value["frame"])


def test_io_manager_keeps_a_value_in_memory_only_until_it_is_taken(tmp_path):
    from dagster import build_input_context, build_output_context

    manager = FrameFilesIOManager(base_path=tmp_path)
    value = {"n": 1}
    out = build_output_context(asset_key=AssetKey("made"), run_id="run-1")
    manager.handle_output(out, value)
    other_run = build_input_context(asset_key=AssetKey("made"),
                                    upstream_output=build_output_context(asset_key=AssetKey("made"), run_id="run-2"))
    assert manager.load_input(other_run) == value and manager.load_input(other_run) is not value
    same_run = build_input_context(asset_key=AssetKey("made"), upstream_output=out)
    assert manager.load_input(same_run) is value
    assert manager.load_input(same_run) is not value        # taken once: the memory is given back
    assert manager._this_run == {}


@dataclasses.dataclass
class _Stored:
    frame: object
    n: int


@pytest.mark.parametrize("stop_at", ["a frame", "the pickle", "moving the old value aside",
                                     "moving the new value in"])
def test_io_manager_stopped_while_storing_leaves_the_previous_value_whole(tmp_path, monkeypatch, stop_at):
    """The pickle names the frame files: a value stopped anywhere must not mix with the previous one."""
    import pathlib

    import pandas as pd

    manager = FrameFilesIOManager(base_path=tmp_path)
    path = tmp_path / "made"
    manager.dump_to_path(None, _Stored(pd.DataFrame({"a": [1, 2]}), 1), path)

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    if stop_at == "a frame":
        monkeypatch.setattr(pd.DataFrame, "to_parquet", stopped)
    elif stop_at == "the pickle":      # the frames are written, then the run stops
        monkeypatch.setattr("pipeline.defs.io_managers.pickle.dump", stopped)
    else:
        rename, calls = pathlib.Path.rename, []

        def rename_until_stopped(self, target):
            calls.append(self)
            if len(calls) == (1 if stop_at == "moving the old value aside" else 2):
                raise KeyboardInterrupt
            return rename(self, target)

        monkeypatch.setattr(pathlib.Path, "rename", rename_until_stopped)
    with pytest.raises(KeyboardInterrupt):
        manager.dump_to_path(None, _Stored(pd.DataFrame({"a": [7, 8, 9]}), 2), path)
    monkeypatch.undo()
    back = manager.load_from_path(None, path)
    assert back.n == 1 and back.frame["a"].tolist() == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["made"]     # nothing left beside it
    manager.dump_to_path(None, _Stored(pd.DataFrame({"a": [3]}), 3), path)
    back = manager.load_from_path(None, path)
    assert back.n == 3 and back.frame["a"].tolist() == [3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["made"]


@pytest.mark.parametrize("damage", ["truncated", "frame missing"])
def test_an_unreadable_stored_value_is_one_line_naming_it(tmp_path, damage):
    import pandas as pd

    manager = FrameFilesIOManager(base_path=tmp_path)
    path = tmp_path / "made"
    manager.dump_to_path(None, _Stored(pd.DataFrame({"a": [1, 2]}), 1), path)
    if damage == "truncated":
        data = (path / "value.pickle").read_bytes()
        (path / "value.pickle").write_bytes(data[: len(data) // 2])
    else:
        next(path.glob("*.parquet")).unlink()
    with pytest.raises(Failure) as info:
        manager.read_stored(None, path, AssetKey("made"))
    message = info.value.description
    assert info.value.allow_retries is False and "\n" not in message
    assert message.startswith("made: its stored value under ") and message.endswith("materialize it again")
