"""Automation: declarative conditions on every asset, code versions, and the weekly safety net.

* **Change detection is Dagster's own.** The assets that read something outside the graph (the
  ``sources`` group: a download or a mirror file; ``plans``: the TI_PLANS_PATH table) run again on
  every tick of ``TI_SOURCES_CRON`` (default hourly): the newest (or pinned) release is resolved and
  fetched, live with a conditional GET (304 when unchanged),
  in mirror mode a sha256 of the file. Their data version is the file's sha256. Every other asset
  runs when a dependency's data version changed, or when a dependency runs in the same tick (so one
  run carries a change down the graph), when its own ``code_version`` changed, or when it is
  missing. A fetch that brings the same bytes therefore rebuilds nothing, and a changed source
  rebuilds only what depends on it. Dagster derives the data version of the other assets from their
  code version and their inputs' data versions, so a code change propagates the same way.
* **A failed run is retried**: an asset whose latest run failed is requested again at every
  evaluation of ``automation_sensor`` (TI_SENSOR_INTERVAL_SECONDS apart) until it succeeds; a
  change is never forgotten because the request was made.
* **Code versions**: each asset's ``code_version`` is a digest of its step's function and of the
  core modules that step runs (``STEP_CODE``, by asset group), so editing the dissolve marks the
  dissolve and what is below it as changed, not the fetches.
* **Freshness policies** (alerts.py) on the published and source assets.
* ``weekly_build`` runs the whole ``build_all`` job on ``TI_SCHEDULE_CRON`` in
  ``TI_SCHEDULE_TIMEZONE``: the safety net if the automation is off or its history was lost.

No custom change sensor is left: Dagster expresses all of the above (the previous hand-written
sensor built its own downstream selection and lost a change whose run failed).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Iterable
from pathlib import Path

from dagster import (
    AssetsDefinition,
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    ScheduleDefinition,
)
from dagster._core.definitions.decorators.op_decorator import DecoratedOpFunction

from ..errors import PipelineError
from ..settings import ASSETS_DIR, Settings
from .alerts import freshness_policy
from .resources import definition_settings

SCHEDULE_NAME = "weekly_build"
SENSOR_NAME = "automation_sensor"
# Groups whose assets read an input from outside the graph: re-run on TI_SOURCES_CRON.
EXTERNAL_INPUT_GROUPS = ("sources", "plans")

# The core code each group's steps run, relative to the package (``static/`` is the assets/
# folder shipped as pipeline.static). A group not listed here hashes the whole package.
PACKAGE_DIR = Path(__file__).resolve().parent.parent
STEP_CODE: dict[str, tuple[str, ...]] = {
    "sources": ("sources/catalog.py", "sources/resolve.py", "sources/fetch.py", "sources/http.py",
                "checksums.py", "static/sources.toml"),
    # a phase asset runs the whole core build (build_phase): boundaries, references, reconciliation, geometry
    "phase_": ("steps/sequence.py", "steps/quality.py", "reconcile/", "geometry/coverage.py", "sources/readers.py",
               "sources/boundaries.py", "sources/csv_tables.py", "sources/parse_cache.py",
               "publish/membership_tables.py", "schema.py"),
    "plans": ("sources/plans.py",),
    "publish": ("steps/sequence.py", "steps/quality.py", "publish/", "checksums.py", "schema.py", "static/"),
}


class AutomationSettingError(PipelineError):
    """A TI_SCHEDULE_CRON / TI_SOURCES_CRON value that Dagster's own cron parser refuses."""


def _settings(settings: Settings | None) -> Settings:
    return definition_settings() if settings is None else settings


def _checked_cron(cron: str, variable: str) -> str:
    from dagster._utils.schedules import is_valid_cron_string

    if not is_valid_cron_string(cron):       # e.g. 30 February: the shape was checked by Settings
        raise AutomationSettingError(f"{variable}={cron!r} is not a cron expression Dagster can schedule")
    return cron


# ---------------------------------------------------------------- schedule
def build_schedule(job, settings: Settings | None = None) -> ScheduleDefinition:
    """The weekly schedule of ``job`` on TI_SCHEDULE_CRON in TI_SCHEDULE_TIMEZONE."""
    settings = _settings(settings)
    cron = _checked_cron(settings.schedule_cron, "TI_SCHEDULE_CRON")
    timezone = settings.schedule_timezone
    return ScheduleDefinition(
        name=SCHEDULE_NAME, job=job, cron_schedule=cron, execution_timezone=timezone,
        tags={"ti/trigger": SCHEDULE_NAME},
        description=f"Rebuild and publish everything on '{cron}' ({timezone}); set by TI_SCHEDULE_CRON "
                    "and TI_SCHEDULE_TIMEZONE. The safety net of the declarative automation.")


# ---------------------------------------------------------------- conditions
def _not_busy(condition: AutomationCondition) -> AutomationCondition:
    """Never while the asset or one of its inputs is running or an input is missing: one request at a time."""
    return (condition & ~AutomationCondition.any_deps_missing() & ~AutomationCondition.any_deps_in_progress()
            & ~AutomationCondition.in_progress())


def retry_failed() -> AutomationCondition:
    """The latest run of the asset failed: request it again (at most once per evaluation)."""
    return AutomationCondition.execution_failed().with_label("latest run failed")


def inputs_changed() -> AutomationCondition:
    """An input's data version changed, or an input runs in this tick (one run carries a change down).

    An external-input asset requested in this tick is not a reason to run: its fetch may bring the
    same bytes, and the next tick sees whether its data version changed.
    """
    return (AutomationCondition.any_deps_match(AutomationCondition.data_version_changed())
            | AutomationCondition.any_deps_match(AutomationCondition.will_be_requested())
            .ignore(AssetSelection.groups(*EXTERNAL_INPUT_GROUPS))).with_label("an input changed")


def asset_condition(check_cron: str | None = None, timezone: str = "UTC") -> AutomationCondition:
    """When an asset runs: an input or its code changed, it is missing, or its latest run failed.

    ``check_cron``: an external-input asset also runs on each tick of that cron, to see whether its
    outside input changed (a conditional GET, a sha256 of the mirror file or of the plan table).
    """
    due: AutomationCondition = inputs_changed() | AutomationCondition.code_version_changed()
    if check_cron:
        due = due | AutomationCondition.cron_tick_passed(check_cron, timezone).with_label(f"check on {check_cron}")
    return _not_busy(due.since_last_handled() | AutomationCondition.missing() | retry_failed())


# ---------------------------------------------------------------- code versions
def _step_files(group: str | None) -> list[Path]:
    entries = next((paths for prefix, paths in STEP_CODE.items() if group and group.startswith(prefix)), ("",))
    files: set[Path] = set()
    for entry in entries:
        base = ASSETS_DIR / entry[len("static/"):] if entry.startswith("static/") else PACKAGE_DIR / entry
        if base.is_file():
            files.add(base)
        else:
            files.update(p for p in base.rglob("*") if p.is_file() and p.suffix != ".pyc"
                         and "__pycache__" not in p.parts)
    return sorted(files)


def _function_source(assets_def: AssetsDefinition) -> str:
    """The source of the step's function (an edit to one asset's wrapper changes only that asset)."""
    compute = assets_def.op.compute_fn
    fn = compute.decorated_fn if isinstance(compute, DecoratedOpFunction) else compute
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        module = inspect.getmodule(fn)
        return inspect.getsource(module) if module is not None else ""


def code_version(assets_def: AssetsDefinition, group: str | None,
                 read: Callable[[Path], bytes] = Path.read_bytes) -> str:
    """16 hex digits of sha256 over the step's function and the core files of its group."""
    digest = hashlib.sha256(_function_source(assets_def).encode())
    for path in _step_files(group):
        name = path.relative_to(PACKAGE_DIR) if path.is_relative_to(PACKAGE_DIR) else path.relative_to(ASSETS_DIR)
        digest.update(name.as_posix().encode())
        digest.update(read(path))
    return digest.hexdigest()[:16]


def automate(assets: Iterable[AssetsDefinition], settings: Settings | None = None,
             read: Callable[[Path], bytes] = Path.read_bytes) -> list[AssetsDefinition]:
    """The assets with their automation condition, code version and freshness policy (by group)."""
    settings = _settings(settings)
    external = asset_condition(_checked_cron(settings.sources_cron, "TI_SOURCES_CRON"), settings.schedule_timezone)
    derived = asset_condition()

    def with_automation(assets_def: AssetsDefinition) -> AssetsDefinition:
        def mapped(spec):
            condition = external if spec.group_name in EXTERNAL_INPUT_GROUPS else derived
            return spec.replace_attributes(automation_condition=condition,
                                           code_version=code_version(assets_def, spec.group_name, read),
                                           freshness_policy=freshness_policy(spec.group_name, settings))
        return assets_def.map_asset_specs(mapped)

    return [with_automation(a) if isinstance(a, AssetsDefinition) and a.is_executable else a for a in assets]


def build_automation_sensor(settings: Settings | None = None) -> AutomationConditionSensorDefinition:
    """Evaluates every asset's condition each TI_SENSOR_INTERVAL_SECONDS (default 600, at least 30)."""
    return AutomationConditionSensorDefinition(
        SENSOR_NAME, target=AssetSelection.all(), minimum_interval_seconds=_settings(settings).sensor_interval_seconds,
        run_tags={"ti/trigger": SENSOR_NAME},
        description="Re-checks the sources on TI_SOURCES_CRON and rebuilds only what a changed input, a code "
                    "change or a failed run requires (the assets' automation conditions).")
