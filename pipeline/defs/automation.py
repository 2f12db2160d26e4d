"""Automation: a weekly schedule of the whole graph, and a sensor that rebuilds only what changed.

* ``weekly_build`` runs the ``build_all`` job (every asset and check) on ``TI_SCHEDULE_CRON``
  (default ``0 6 * * 1``: Monday 06:00) in ``TI_SCHEDULE_TIMEZONE`` (default ``Europe/Paris``).
* ``source_change_sensor`` probes every catalog source's resolved release with :func:`pipeline.sources.resolve.probe_one`
  (mirror mode: sha256 of the file; live: HEAD / conditional GET validators) and the plan table
  (``TI_PLANS_PATH``: sha256 of the file), every ``TI_SENSOR_INTERVAL_SECONDS`` (default 3600).
  Its cursor is a JSON object ``{input name: last seen version}``. An empty cursor (first tick)
  requests a run of everything; a tick where nothing changed returns a SkipReason; otherwise one
  RunRequest selects the changed inputs' assets and everything downstream of them (and the asset
  checks of those assets), so assets not downstream of a change are not re-run: the run loads
  them from their last materialization. A probe that fails is logged, keeps its previous version
  and is tried again at the next tick.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zoneinfo
from collections.abc import Mapping

from dagster import (AssetCheckKey, AssetKey, AssetSelection, DagsterInvalidDefinitionError, Definitions,
                     RunRequest, ScheduleDefinition, SensorDefinition, SensorEvaluationContext, SensorResult,
                     SkipReason, sensor)

from ..sources.catalog import load_catalog
from ..errors import PipelineError, SourceError
from ..sources.fetch import sha256_file
from ..sources.resolve import probe_one
from .resources import PipelineSettings
from ..settings import Settings

DEFAULT_CRON = "0 6 * * 1"
DEFAULT_TIMEZONE = "Europe/Paris"
DEFAULT_SENSOR_INTERVAL = 3600
SCHEDULE_NAME = "weekly_build"
SENSOR_NAME = "source_change_sensor"
PLAN_INPUT = "plan_table"          # the probed plan table's name in the cursor (and its asset key)
NO_PLAN_TABLE = "none"


class AutomationSettingError(PipelineError):
    """A TI_SCHEDULE_* / TI_SENSOR_* environment variable has a value Dagster cannot use."""


# ---------------------------------------------------------------- schedule
def build_schedule(job, env: Mapping[str, str] | None = None) -> ScheduleDefinition:
    """The weekly schedule of ``job``, its cron and timezone read from ``env`` (default os.environ)."""
    env = os.environ if env is None else env
    cron = (env.get("TI_SCHEDULE_CRON") or DEFAULT_CRON).strip()
    timezone = (env.get("TI_SCHEDULE_TIMEZONE") or DEFAULT_TIMEZONE).strip()
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise AutomationSettingError(
            f"TI_SCHEDULE_TIMEZONE={timezone!r} is not an IANA time zone (e.g. Europe/Paris, UTC)") from None
    try:
        return ScheduleDefinition(
            name=SCHEDULE_NAME, job=job, cron_schedule=cron, execution_timezone=timezone,
            tags={"ti/trigger": SCHEDULE_NAME},
            description=f"Rebuild and publish everything on '{cron}' ({timezone}); set by TI_SCHEDULE_CRON "
                        "and TI_SCHEDULE_TIMEZONE.")
    except DagsterInvalidDefinitionError:
        raise AutomationSettingError(
            f"TI_SCHEDULE_CRON={cron!r} is not a valid cron expression "
            f"(five fields, e.g. {DEFAULT_CRON!r} for Monday 06:00)") from None


# ---------------------------------------------------------------- probes
def plan_version(settings: Settings) -> str:
    """``sha256:<hex>`` of the plan table, ``none`` when TI_PLANS_PATH is unset, ``missing:<path>``."""
    path = settings.plans_path
    if path is None:
        return NO_PLAN_TABLE
    if not path.is_file():
        return f"missing:{path}"
    return "sha256:" + sha256_file(path)


def probe_inputs(settings: Settings) -> tuple[dict[str, str], dict[str, str]]:
    """(version per input, error message per input that could not be probed), catalog order."""
    catalog = load_catalog(settings)
    versions: dict[str, str] = {}
    errors: dict[str, str] = {}
    for name, spec in catalog.sources.items():
        try:
            versions[name] = probe_one(settings, catalog, name)   # the newest release's version
        except SourceError as err:
            errors[name] = str(err)
    versions[PLAN_INPUT] = plan_version(settings)
    return versions, errors


def input_asset_key(name: str) -> AssetKey:
    """The asset fed by a probed input: ``sources/<name>``, or ``plan_table``."""
    return AssetKey([PLAN_INPUT]) if name == PLAN_INPUT else AssetKey(["sources", name])


def downstream_selection(asset_graph, names) -> tuple[list[AssetKey], list[AssetCheckKey]]:
    """The assets of the inputs ``names`` and everything downstream, and the checks on those assets."""
    roots = [input_asset_key(n) for n in names]
    keys = AssetSelection.assets(*roots).downstream().resolve(asset_graph)
    checks = [k for k in asset_graph.asset_check_keys if k.asset_key in keys]
    return (sorted(keys, key=lambda k: k.to_user_string()),
            sorted(checks, key=lambda k: (k.asset_key.to_user_string(), k.name)))


def read_cursor(cursor: str | None) -> dict[str, str]:
    """The versions kept in a sensor cursor; {} for no cursor or one this code did not write."""
    if not cursor:
        return {}
    try:
        value = json.loads(cursor)
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


# ---------------------------------------------------------------- sensor
def _sensor_settings(settings: Settings) -> Settings:
    """Probes are cheap and repeated every tick: at most one retry and a 30 s timeout each."""
    return dataclasses.replace(settings, http_retries=min(settings.http_retries, 1),
                               http_timeout=min(settings.http_timeout, 30.0))


def evaluate_sources(context: SensorEvaluationContext, settings: Settings, asset_graph) -> SensorResult:
    """One tick of the source sensor (see the module docstring)."""
    previous = read_cursor(context.cursor)
    versions, errors = probe_inputs(_sensor_settings(settings))
    for name, message in errors.items():
        context.log.warning(f"probe failed, kept the last seen version: {message}")
    current = {**versions, **{n: previous[n] for n in errors if n in previous}}
    cursor = json.dumps(current, sort_keys=True)
    failed = f"; {len(errors)} probe(s) failed: {', '.join(errors)}" if errors else ""
    if not versions.keys() - {PLAN_INPUT}:
        return SensorResult(skip_reason=SkipReason(f"no source could be probed{failed}"),
                            cursor=context.cursor)
    if not previous:
        return SensorResult(run_requests=[RunRequest(tags={"ti/trigger": SENSOR_NAME, "ti/changed": "first tick"})],
                            cursor=cursor)
    changed = [n for n in versions if previous.get(n) != versions[n]]
    if not changed:
        return SensorResult(skip_reason=SkipReason(f"no input changed since the last tick{failed}"), cursor=cursor)
    for name in changed:
        context.log.info(f"{name}: {previous.get(name, '(never seen)')} -> {versions[name]}")
    assets, checks = downstream_selection(asset_graph, changed)
    request = RunRequest(asset_selection=assets, asset_check_keys=checks,
                         tags={"ti/trigger": SENSOR_NAME, "ti/changed": ",".join(changed)})
    return SensorResult(run_requests=[request], cursor=cursor)


def _asset_graph(context: SensorEvaluationContext):
    if context.repository_def is not None:
        return context.repository_def.asset_graph
    from .assets import ALL_ASSETS
    from .checks import ALL_CHECKS

    return Definitions(assets=ALL_ASSETS, asset_checks=ALL_CHECKS).resolve_asset_graph()


def build_source_sensor(job, env: Mapping[str, str] | None = None) -> SensorDefinition:
    """The change sensor targeting ``job``; its interval is TI_SENSOR_INTERVAL_SECONDS (default 3600)."""
    env = os.environ if env is None else env
    raw = (env.get("TI_SENSOR_INTERVAL_SECONDS") or str(DEFAULT_SENSOR_INTERVAL)).strip()
    if not raw.isdigit() or int(raw) < 30:
        raise AutomationSettingError(f"TI_SENSOR_INTERVAL_SECONDS={raw!r} must be a whole number of seconds >= 30")

    @sensor(name=SENSOR_NAME, job=job, minimum_interval_seconds=int(raw),
            description="Probes every source (and the plan table) cheaply and runs only the changed inputs' "
                        "assets and their downstream assets; the first tick runs everything.")
    def source_change_sensor(context: SensorEvaluationContext, pipeline_settings: PipelineSettings):
        return evaluate_sources(context, pipeline_settings.settings(), _asset_graph(context))

    return source_change_sensor
