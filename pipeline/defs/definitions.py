"""The Dagster code location: ``pipeline.definitions:defs`` (see workspace.yaml).

Loading it tunes the process once (:func:`pipeline.runtime.tune_process`), as the CLI's ``main``
does: the run worker executes the same core steps with the same threads and allocator.
"""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

from .. import runtime
from .alerts import failure_alert
from .assets import ALL_ASSETS
from .automation import automate, build_automation_sensor, build_schedule
from .io_managers import frame_files_io_manager
from .resources import PipelineSettings

runtime.tune_process()

build_all_job = define_asset_job("build_all", selection=AssetSelection.all(),
                                 description="Fetch every source, rebuild what changed, check, publish.")

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
