"""The declarative automation of the real asset graph, evaluated against a Dagster instance.

Generic over the graph: the expected selections are computed from the graph itself (a source's
downstream), so they hold whatever the asset granularity. Materializations are reported to the
instance with data versions (what the fetch assets record: the file's sha256); the failed run is a
real run of the requested assets that fails (their inputs were never stored).
"""

from __future__ import annotations

import datetime as dt

import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    AssetSelection,
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    evaluate_automation_conditions,
)

from pipeline.definitions import defs
from pipeline.defs.automation import EXTERNAL_INPUT_GROUPS

# evaluate_automation_conditions selects with a beta parameter (include_sources) internally;
# Definitions.map_resolved_asset_specs (to edit one code version) is a preview API.
pytestmark = [pytest.mark.filterwarnings("ignore::dagster.BetaWarning"),
              pytest.mark.filterwarnings("ignore::dagster.PreviewWarning")]

GRAPH = defs.resolve_asset_graph()
KEYS = sorted(GRAPH.materializable_asset_keys, key=lambda k: k.to_user_string())
SOURCES = [k for k in KEYS if GRAPH.get(k).group_name == "sources"]
EXTERNAL = {k for k in KEYS if GRAPH.get(k).group_name in EXTERNAL_INPUT_GROUPS}
# Within one hour: no tick of the hourly TI_SOURCES_CRON passes between these evaluations.
T0 = dt.datetime(2026, 3, 3, 10, 5, tzinfo=dt.UTC)


def strictly_downstream(*keys: AssetKey) -> set[AssetKey]:
    return AssetSelection.assets(*keys).downstream().resolve(GRAPH) - set(keys)


class Automation:
    """Successive evaluations of the automation conditions on one instance, one minute apart."""

    def __init__(self, instance, definitions=defs):
        self.instance, self.definitions = instance, definitions
        self.cursor, self.time = None, T0

    def tick(self, definitions=None, minutes: int = 1) -> set[AssetKey]:
        result = evaluate_automation_conditions(defs=definitions or self.definitions, instance=self.instance,
                                                cursor=self.cursor, evaluation_time=self.time)
        self.cursor, self.time = result.cursor, self.time + dt.timedelta(minutes=minutes)
        return {r.key for r in result.results if r.true_subset.size}

    def materialize(self, keys, version: str = "v0") -> None:
        for key in keys:
            self.instance.report_runless_asset_event(
                AssetMaterialization(key, tags={"dagster/data_version": version}))


@pytest.fixture
def settled():
    """Everything built once (the first evaluation requests every asset), then one quiet tick."""
    with DagsterInstance.ephemeral() as instance:
        auto = Automation(instance)
        assert auto.tick() == set(KEYS)                 # first deployment: every missing asset
        auto.materialize(KEYS)
        yield auto


def test_unchanged_graph_launches_nothing(settled):
    assert settled.tick() == set()
    assert settled.tick() == set()


def test_a_step_that_materializes_nothing_is_not_asked_again_and_again():
    """A phase whose step found nothing changed since the published build (the CLI's "nothing
    changed") stays missing in Dagster: it is not requested at every evaluation for that."""
    with DagsterInstance.ephemeral() as instance:
        auto = Automation(instance)
        assert auto.tick() == set(KEYS)
        auto.materialize([k for k in KEYS if not k.to_user_string().startswith(("territories_", "published_"))])
        auto.tick()                                      # their inputs' first data versions: asked once more
        assert auto.tick() == set()
        assert auto.tick() == set()


@pytest.mark.parametrize("source", [SOURCES[0], SOURCES[-1]], ids=lambda k: k.to_user_string())
def test_a_changed_source_selects_only_its_downstream(settled, source):
    settled.tick()
    settled.materialize([source], version="v1")          # fetched: new bytes, new sha256
    assert settled.tick() == strictly_downstream(source)
    settled.materialize(strictly_downstream(source), version="v1")
    assert settled.tick() == set()


def test_sources_fetched_again_with_the_same_bytes_rebuild_nothing(settled):
    settled.tick()
    settled.time = T0.replace(hour=10, minute=59)
    assert settled.tick(minutes=2) == set()
    assert settled.tick() == EXTERNAL                    # 11:00, a tick of TI_SOURCES_CRON
    settled.materialize(EXTERNAL, version="v0")          # same sha256 everywhere
    assert settled.tick() == set()


def test_a_failed_run_after_a_change_is_retried_at_the_next_evaluation(settled, tmp_path, monkeypatch):
    monkeypatch.setenv("TI_OUTPUT_DIR", str(tmp_path / "out"))
    source = SOURCES[-1]
    settled.tick()
    settled.materialize([source], version="v1")
    requested = settled.tick()
    assert requested == strictly_downstream(source)
    # The run the sensor would launch, for real: it fails (the inputs were reported, not stored);
    # what it could still materialize (plan_table without a plan table needs no list) is done.
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=requested)
    for _ in range(2):
        result = job.execute_in_process(instance=settled.instance, raise_on_error=False)
        assert settled.instance.get_run_by_id(result.run_id).status == DagsterRunStatus.FAILURE
        done = {e.asset_key for e in result.get_asset_materialization_events()}
        assert any(k.to_user_string().startswith("territories_") for k in requested - done)
        assert settled.tick() == requested - done        # not forgotten: asked again at each evaluation
    # (A run that succeeds clears it: execution_failed looks at the latest run that planned the asset.)


def _with_code_version(definitions: Definitions, key: AssetKey, version: str) -> Definitions:
    return definitions.map_resolved_asset_specs(func=lambda spec: spec.replace_attributes(code_version=version),
                                       selection=AssetSelection.assets(key))


def test_a_code_change_to_one_step_reruns_that_step_and_its_downstream(settled):
    settled.tick()
    middle = next(k for k in KEYS if GRAPH.get(k).parent_keys and GRAPH.get(k).child_keys
                  and k not in EXTERNAL)
    edited = _with_code_version(defs, middle, "edited")
    assert settled.tick(edited) == {middle} | strictly_downstream(middle)
    settled.materialize({middle} | strictly_downstream(middle), version="v1")
    assert settled.tick(edited) == set()
