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
* **Code versions** are derived, not listed: each asset's ``code_version`` is
  :func:`pipeline.code_version.code_version` (the CLI's code hash too) of the core modules its step
  function uses, with their import closure, and of the function's own source; so editing the
  dissolve marks the steps that import the step sequence, not the fetches.
* **Missing** assets are requested when they become missing, not at every evaluation: a step that
  finds nothing changed since the published build materializes nothing (``assets.unchanged``).
* **Freshness policies** (alerts.py) on the published and source assets.
* ``weekly_build`` runs the whole ``build_all`` job on ``TI_SCHEDULE_CRON`` in
  ``TI_SCHEDULE_TIMEZONE``: the safety net if the automation is off or its history was lost.

No custom change sensor is left: Dagster expresses all of the above (the previous hand-written
sensor built its own downstream selection and lost a change whose run failed).
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import textwrap
from collections.abc import Callable, Iterable
from types import ModuleType

from dagster import (
    AssetsDefinition,
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    ScheduleDefinition,
)
from dagster._core.definitions.decorators.op_decorator import DecoratedOpFunction

from ..code_version import INSTALLED, PACKAGE, Package
from ..code_version import code_version as core_code_version
from ..errors import PipelineError
from ..settings import Settings
from .alerts import freshness_policy
from .resources import definition_settings

SCHEDULE_NAME = "weekly_build"
SENSOR_NAME = "automation_sensor"
# Groups whose assets read an input from outside the graph: re-run on TI_SOURCES_CRON.
EXTERNAL_INPUT_GROUPS = ("sources", "plans")

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
    # missing: asked when it becomes so, not at every evaluation: a step that finds nothing changed
    # since the published build materializes nothing (assets.unchanged), and the asset stays missing.
    missing = AutomationCondition.missing().newly_true().with_label("missing")
    return _not_busy(due.since_last_handled() | missing | retry_failed())


# ---------------------------------------------------------------- code versions
def _function(assets_def: AssetsDefinition) -> Callable:
    compute = assets_def.op.compute_fn
    return compute.decorated_fn if isinstance(compute, DecoratedOpFunction) else compute


def _step_code(fn: Callable) -> tuple[set[str], dict[str, str]]:
    """The package's modules a step function uses, and the source of the function and of the
    helpers of its own module it calls (followed transitively).

    A name the function reads is resolved as the running code would: a module of the package, a
    function or class defined in one (a helper of the function's own module is followed into),
    or an object whose type is (the source catalog); the modules its ``import`` statements name.
    """
    roots: set[str] = set()
    helpers: dict[str, str] = {}
    todo = [fn]
    while todo:
        current = todo.pop()
        name = f"{current.__module__}.{current.__qualname__}"
        if name in helpers:
            continue
        source = inspect.getsource(current)
        helpers[name] = source
        tree = ast.parse(textwrap.dedent(source))
        scope = {**current.__globals__, **inspect.getclosurevars(current).nonlocals}
        anchor = current.__module__.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), anchor)
                roots.add(base)
                roots.update(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                roots.update(alias.name for alias in node.names)
            elif isinstance(node, ast.Name) and node.id in scope:
                value = scope[node.id]
                if isinstance(value, ModuleType):
                    roots.add(value.__name__)
                elif inspect.isfunction(value) and value.__module__ == fn.__module__:
                    todo.append(value)          # a helper of the assets module: its code is the step's
                else:
                    owner = value if inspect.isfunction(value) or inspect.isclass(value) else type(value)
                    roots.add(getattr(owner, "__module__", None) or "")
    return {r for r in roots if r.partition(".")[0] == PACKAGE}, helpers


def code_version(assets_def: AssetsDefinition, package: Package = INSTALLED) -> str:
    """The asset's ``code_version``: :func:`pipeline.code_version.code_version` of the core modules
    its step uses (their import closure), with the step function's own source."""
    roots, helpers = _step_code(_function(assets_def))
    return core_code_version(sorted(roots), package, extra="\n".join(f"{k} {helpers[k]}" for k in sorted(helpers)))


def automate(assets: Iterable[AssetsDefinition], settings: Settings | None = None,
             package: Package = INSTALLED) -> list[AssetsDefinition]:
    """The assets with their automation condition, code version and freshness policy (by group)."""
    settings = _settings(settings)
    external = asset_condition(_checked_cron(settings.sources_cron, "TI_SOURCES_CRON"), settings.schedule_timezone)
    derived = asset_condition()

    def with_automation(assets_def: AssetsDefinition) -> AssetsDefinition:
        version = code_version(assets_def, package)

        def mapped(spec):
            condition = external if spec.group_name in EXTERNAL_INPUT_GROUPS else derived
            return spec.replace_attributes(automation_condition=condition,
                                           code_version=version,
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
