"""The weekly schedule and the automation sensor as the code location defines them, and the
environment variables that set them (a wrong value stops the location with one clear line)."""

from __future__ import annotations

import datetime as dt

import pytest
from dagster import AutomationConditionSensorDefinition, DagsterInstance, build_schedule_context

from pipeline.definitions import defs
from pipeline.defs.assets import ALL_ASSETS
from pipeline.defs.automation import (
    SENSOR_NAME,
    AutomationSettingError,
    automate,
    build_automation_sensor,
    build_schedule,
)
from pipeline.settings import Settings, SettingsError

build_all_job = defs.resolve_job_def("build_all")


@pytest.fixture
def instance():
    with DagsterInstance.ephemeral() as inst:
        yield inst


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


def test_automation_sensor_targets_every_asset():
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    assert isinstance(sensor, AutomationConditionSensorDefinition)
    assert sensor.minimum_interval_seconds == 600
    graph = defs.resolve_asset_graph()
    assert sensor.asset_selection.resolve(graph) == graph.materializable_asset_keys
    assert all(graph.get(k).automation_condition is not None and graph.get(k).code_version
               for k in graph.materializable_asset_keys)


def test_settings_from_env():
    """The schedule, the sensor and the conditions take their knobs from the one Settings object."""
    s = build_schedule(build_all_job, Settings.from_env({"TI_SCHEDULE_CRON": "30 2 * * *",
                                                         "TI_SCHEDULE_TIMEZONE": "UTC"}))
    assert (s.cron_schedule, s.execution_timezone) == ("30 2 * * *", "UTC")
    sensor = build_automation_sensor(Settings.from_env({"TI_SENSOR_INTERVAL_SECONDS": "60"}))
    assert sensor.minimum_interval_seconds == 60
    hourly = {s.key: s.automation_condition
              for a in automate(ALL_ASSETS, Settings.from_env({"TI_SOURCES_CRON": "15 * * * *"})) for s in a.specs}
    assert any("check on 15 * * * *" in repr(c) for c in hourly.values())


@pytest.mark.parametrize("env, message", [
    ({"TI_SCHEDULE_CRON": "every monday"}, "TI_SCHEDULE_CRON='every monday': expected a cron expression"),
    ({"TI_SCHEDULE_CRON": "0 6 * * 8"}, "TI_SCHEDULE_CRON='0 6 \\* \\* 8': expected a cron expression"),
    ({"TI_SCHEDULE_TIMEZONE": "Mars/Olympus"}, "TI_SCHEDULE_TIMEZONE='Mars/Olympus': expected an IANA"),
    ({"TI_SENSOR_INTERVAL_SECONDS": "soon"}, "TI_SENSOR_INTERVAL_SECONDS='soon': expected a whole number"),
    ({"TI_SENSOR_INTERVAL_SECONDS": "10"}, "TI_SENSOR_INTERVAL_SECONDS='10': expected a whole number"),
    ({"TI_SOURCES_CRON": "hourly"}, "TI_SOURCES_CRON='hourly': expected a cron expression"),
])
def test_a_wrong_setting_names_the_variable(env, message):
    """A wrong value is refused where the settings are read, in one line naming the variable."""
    with pytest.raises(SettingsError, match=f"^{message}"):
        Settings.from_env(env)


def test_a_cron_dagster_cannot_schedule_is_refused_by_the_builder():
    settings = Settings.from_env({"TI_SCHEDULE_CRON": "0 0 30 2 *"})     # five valid fields, 30 February
    with pytest.raises(AutomationSettingError, match="TI_SCHEDULE_CRON='0 0 30 2 \\*' is not a cron expression"):
        build_schedule(build_all_job, settings)
