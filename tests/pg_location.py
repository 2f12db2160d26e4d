"""A one-asset code location for the daemon test (tests/test_postgres.py): the project's own
schedule (``build_schedule``, cron from TI_SCHEDULE_CRON) on a job of one real source asset, so a
scheduled run takes seconds instead of a full build."""

from dagster import AssetSelection, Definitions, define_asset_job

import pipeline.definitions as project
from pipeline.defs.automation import build_schedule

graph = project.defs.resolve_asset_graph()
source = next(k for k in sorted(graph.materializable_asset_keys, key=str)
              if graph.get(k).group_name == "sources" and not graph.get(k).parent_keys)
job = define_asset_job("tiny", selection=AssetSelection.assets(source))
# The resolved asset already carries the project's resources (pipeline_settings).
defs = Definitions(assets=[graph.assets_def_for_key(source)], jobs=[job], schedules=[build_schedule(job)])
