"""The Dagster code location: ``pipeline.definitions:defs`` (see workspace.yaml).

Loading it imports none of the data stack (pandas, geopandas, pyarrow): the steps that build or
publish tune the process first (:func:`pipeline.runtime.tune_process`), as the CLI does before a
build, so a run that finds nothing changed, and the daemon and UI processes that load this code
location, do not pay for them.
"""

from __future__ import annotations

import gc

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

from .alerts import failure_alert
from .assets import ALL_ASSETS
from .automation import automate, build_automation_sensor, build_schedule
from .io_managers import frame_files_io_manager
from .resources import PipelineSettings

build_all_job = define_asset_job("build_all", selection=AssetSelection.all(),
                                 description="Fetch every source, rebuild what changed, check, publish.")

# Dagster's own import-time objects (and ours) out of the cyclic collector's sight, as
# pipeline.runtime.tune_process does for a build: its passes no longer walk them during the run.
gc.freeze()

defs = Definitions(
    assets=automate(ALL_ASSETS),   # automation conditions, code versions, freshness (automation.py)
    jobs=[build_all_job],
    schedules=[build_schedule(build_all_job)],
    sensors=[build_automation_sensor(), failure_alert],
    resources={"pipeline_settings": PipelineSettings(), "io_manager": frame_files_io_manager},
    # One process: the steps share the machine's memory instead of each re-importing the stack
    # (measured with `python bench/run.py`: the main job, Dagster against the CLI).
    executor=in_process_executor,
)
