"""The weekly schedule and the source-change sensor, evaluated in process.

Live mode: every catalog URL points (TI_URL_<NAME>) at a loopback server serving the mirror files
with an ETag; mirror mode: a temporary mirror of symlinks to the shared data, one file a real copy.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil

import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance, build_schedule_context, build_sensor_context

from http_server import FaultServer, Reply, shared_data_dir
from pipeline.sources.catalog import load_catalog
from pipeline.definitions import defs
from pipeline.defs.resources import PipelineSettings
from pipeline.defs.automation import PLAN_INPUT, SENSOR_NAME, read_cursor
from pipeline.settings import Settings

CATALOG = load_catalog(Settings())
SOURCES = list(CATALOG.sources)
CHECK_NAMES = ["area_matches_communes", "communes_accounted_for", "geometries_valid", "holes_are_enclaves",
               "no_unexpected_overlaps", "territory_count"]

# The real graph: what a change of each input must re-run (and nothing else).
DOWNSTREAM_OF_TI2018 = ["membership_2018_2022", "published_2018_2022", "published_2023_2027",
                        "sources/ti2018_groupements", "territories_2018_2022", "territories_2023_2027",
                        "territory_shapes_2018_2022"]
DOWNSTREAM_OF_TI2023_COMMUNES = ["membership_2023_2027", "plan_table", "published_2023_2027",
                                 "sources/ti2023_communes", "territories_2023_2027", "territory_shapes_2023_2027"]
DOWNSTREAM_OF_PLANS = ["plan_table", "published_2023_2027"]


def checks_of(*assets: str) -> list[AssetCheckKey]:
    return [AssetCheckKey(AssetKey(a), n) for a in assets for n in CHECK_NAMES]


def etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:20] + '"'


def tick(instance, cursor=None):
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    context = build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                   resources={"pipeline_settings": PipelineSettings()})
    return sensor.evaluate_tick(context)


def selection(result) -> tuple[list[str], list[AssetCheckKey]]:
    assert len(result.run_requests) == 1
    request = result.run_requests[0]
    return sorted(k.to_user_string() for k in request.asset_selection), list(request.asset_check_keys)


@pytest.fixture
def instance():
    with DagsterInstance.ephemeral() as inst:
        yield inst


@pytest.fixture
def live_server(monkeypatch, tmp_path):
    """Every source served over loopback HTTP from the mirror files; TI_MIRROR_DIR unset (live mode)."""
    data = shared_data_dir()
    if not data.is_dir():
        pytest.skip("shared data not found (set TI_MIRROR_DIR)")
    monkeypatch.delenv("TI_MIRROR_DIR", raising=False)
    monkeypatch.delenv("TI_PLANS_PATH", raising=False)
    monkeypatch.setenv("TI_RAW_DIR", str(tmp_path / "raw"))
    monkeypatch.setenv("TI_HTTP_BACKOFF", "0")
    with FaultServer() as srv:
        for name, spec in CATALOG.sources.items():
            body = (data / spec.mirror).read_bytes()
            path = f"/{name}/{os.path.basename(spec.mirror)}"
            srv.route(path, body, etag=etag(body))
            monkeypatch.setenv(f"TI_URL_{name.upper()}", srv.url(path))
        yield srv


def route_of(name: str) -> str:
    return f"/{name}/{os.path.basename(CATALOG.sources[name].mirror)}"


# ---------------------------------------------------------------- schedule
def test_schedule_requests_the_whole_job_weekly_monday_6_paris(instance):
    schedule = defs.resolve_schedule_def("weekly_build")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 6 * * 1", "Europe/Paris")
    assert schedule.job_name == "build_all"
    context = build_schedule_context(instance=instance, repository_def=defs.get_repository_def(),
                                     scheduled_execution_time=dt.datetime(2026, 3, 2, 6, 0))
    data = schedule.evaluate_tick(context)
    assert len(data.run_requests) == 1
    request = data.run_requests[0]
    assert request.asset_selection is None            # the whole build_all job: every asset and check
    assert request.tags["ti/trigger"] == "weekly_build"


# ---------------------------------------------------------------- sensor, live mode
def test_sensor_live_first_tick_runs_everything_then_nothing_then_only_downstream(live_server, instance):
    first = tick(instance)
    assert len(first.run_requests) == 1 and first.run_requests[0].asset_selection is None
    versions = read_cursor(first.cursor)
    assert set(versions) == {*SOURCES, PLAN_INPUT}
    assert versions["ti2023_communes"].startswith('etag:"')        # a HEAD, not a download
    assert versions[PLAN_INPUT] == "none"
    assert not live_server.hits(route_of("communes_boundaries"), "GET")

    second = tick(instance, first.cursor)
    assert second.run_requests == [] and "no input changed" in second.skip_message
    assert read_cursor(second.cursor) == versions

    new_body = (shared_data_dir() / CATALOG.sources["ti2018_groupements"].mirror).read_bytes() + b"\n"
    live_server.route(route_of("ti2018_groupements"), new_body, etag=etag(new_body))
    third = tick(instance, second.cursor)
    assets, checks = selection(third)
    assert assets == DOWNSTREAM_OF_TI2018
    assert "territory_shapes_2023_2027" not in assets          # the 2023-2027 dissolve is not re-run
    assert sorted(checks, key=str) == sorted(checks_of("territories_2018_2022", "territories_2023_2027"), key=str)
    assert third.run_requests[0].tags["ti/changed"] == "ti2018_groupements"
    assert read_cursor(third.cursor)["ti2018_groupements"] == f"etag:{etag(new_body)}"

    assert tick(instance, third.cursor).run_requests == []


def test_sensor_plan_table_change_reruns_only_plan_and_publish(live_server, instance, monkeypatch, tmp_path):
    first = tick(instance)
    plans = tmp_path / "plans.csv"
    plans.write_text("id_ti,axe_innovation\nti-8418,true\n", encoding="utf-8")
    monkeypatch.setenv("TI_PLANS_PATH", str(plans))
    result = tick(instance, first.cursor)
    assets, checks = selection(result)
    assert assets == DOWNSTREAM_OF_PLANS and checks == []
    assert read_cursor(result.cursor)[PLAN_INPUT] == "sha256:" + hashlib.sha256(plans.read_bytes()).hexdigest()
    assert tick(instance, result.cursor).run_requests == []
    plans.write_text("id_ti,axe_innovation\nti-8418,false\n", encoding="utf-8")
    assert selection(tick(instance, result.cursor))[0] == DOWNSTREAM_OF_PLANS


def test_sensor_probe_failure_keeps_the_last_version_and_requests_no_run(live_server, instance):
    first = tick(instance)
    live_server.script(route_of("ti2023_communes"), Reply(status=404))
    result = tick(instance, first.cursor)
    assert result.run_requests == []
    assert "1 probe(s) failed: ti2023_communes" in result.skip_message
    assert read_cursor(result.cursor) == read_cursor(first.cursor)


# ---------------------------------------------------------------- sensor, mirror mode
@pytest.fixture
def tmp_mirror(tmp_path, monkeypatch):
    """A mirror of symlinks to the shared data, with ti2023_communes as a real (writable) copy."""
    data = shared_data_dir()
    if not data.is_dir():
        pytest.skip("shared data not found (set TI_MIRROR_DIR)")
    root = tmp_path / "mirror"
    for name, spec in CATALOG.sources.items():
        target = root / spec.mirror
        target.parent.mkdir(parents=True, exist_ok=True)
        if name == "ti2023_communes":
            shutil.copyfile(data / spec.mirror, target)
        else:
            target.symlink_to(data / spec.mirror)
    monkeypatch.setenv("TI_MIRROR_DIR", str(root))
    monkeypatch.delenv("TI_PLANS_PATH", raising=False)
    return root


def test_sensor_mirror_mode_hashes_content(tmp_mirror, instance):
    first = tick(instance)
    assert len(first.run_requests) == 1 and first.run_requests[0].asset_selection is None
    path = tmp_mirror / CATALOG.sources["ti2023_communes"].mirror
    assert read_cursor(first.cursor)["ti2023_communes"] == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()

    os.utime(path, (1, 1))                                        # touched, same bytes: no run
    second = tick(instance, first.cursor)
    assert second.run_requests == []

    with open(path, "ab") as fh:
        fh.write(b"\n")
    third = tick(instance, second.cursor)
    assets, checks = selection(third)
    assert assets == DOWNSTREAM_OF_TI2023_COMMUNES
    assert "territory_shapes_2018_2022" not in assets and "commune_boundaries" not in assets
    assert checks == checks_of("territories_2023_2027")


def test_sensor_ignores_a_cursor_it_did_not_write(tmp_mirror, instance):
    result = tick(instance, cursor="not json")
    assert len(result.run_requests) == 1 and result.run_requests[0].asset_selection is None
    assert json.loads(result.cursor)["communes_boundaries"].startswith("sha256:")
