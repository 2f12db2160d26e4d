"""Dagster assets: orchestration and metadata around the core steps of :mod:`pipeline.steps.sequence`.

Groups and keys:

* ``sources``: ``sources/<name>``, one asset per catalog source (fetched, or read from the mirror),
  all made by one step (``fetch_sources``, which runs only the selected ones);
* ``phase_2023_2027``, ``phase_2018_2022``: ``territories_<phase>``, the whole core build of a phase
  (:func:`~pipeline.steps.sequence.build_phase`: reconcile, scan, repair and dissolve, attributes,
  checks) from the sources it reads, with its six blocking checks;
* ``plans``: ``plan_table``, the user's plan table validated against the 2023-2027 lists;
* ``publish``: ``published_<phase>``, the files swapped into the stable paths.

On unchanged inputs (the published build's inputs, plan table and code version: the CLI's "nothing
changed", :mod:`pipeline.steps.since_published`), a phase's step and its publishing materialize
nothing and say so (:func:`unchanged`); a run tagged ``ti/force=true`` rebuilds and publishes anyway.

A phase is one asset on purpose: its steps share the boundary polygons and overlap on two threads,
so splitting them would store and reload large frames and lose the overlap (the benchmark's main
job, ``python bench/run.py``, measures this graph against the CLI).
"""

import time
from pathlib import Path
from typing import TYPE_CHECKING

from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetObservation,
    AssetOut,
    Backoff,
    DataVersion,
    Failure,
    Jitter,
    MetadataValue,
    Nothing,
    Output,
    RetryPolicy,
    TableColumn,
    TableSchema,
    asset,
    multi_asset,
)

from ..errors import SourceError
from ..phases import CURRENT_PHASE, phase_key
from ..settings import Settings
from ..sources.catalog import load_catalog
from ..sources.fetch import FetchResult
from ..sources.phase_inputs import phase_sources
from ..sources.resolve import fetch_one
from . import checks
from .io_managers import store_value, stored_values
from .resources import PipelineSettings, definition_settings

if TYPE_CHECKING:   # the core build and pandas are imported by the steps that build or publish
    import pandas as pd

    from ..steps.sequence import BuildResult

CATALOG = load_catalog(definition_settings())
PHASES = list(CATALOG.phases)

# Retried: network errors, timeouts, 429 and 5xx (SourceError.retryable). Not retried: 4xx, bad content.
FETCH_RETRY = RetryPolicy(max_retries=2, delay=10, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)


def markdown_table(frame: "pd.DataFrame") -> str:
    """A small frame as a Markdown table (no extra dependency)."""
    cells = frame.map(lambda v: str(v).replace("|", "\\|")[:120])
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + " --- |" * len(frame.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines)


def _md_table(rows: list[dict], limit: int = 50) -> MetadataValue:
    if not rows:
        return MetadataValue.md("_none_")
    import pandas as pd

    text = markdown_table(pd.DataFrame(rows[:limit]))
    if len(rows) > limit:
        text += f"\n\n… and {len(rows) - limit} more"
    return MetadataValue.md(text)


def _thumbnail_markdown(png, width: int = 480) -> str:
    """The preview as an inline image the Dagster UI shows (a small thumbnail, base64)."""
    import base64
    import io

    from PIL import Image

    with Image.open(png) as img:
        img.thumbnail((width, width))
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="JPEG", quality=80)
    return f"![preview](data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()})"


def _json_list(items: list, limit: int = 200) -> MetadataValue:
    return MetadataValue.json(list(items)[:limit])


# ---------------------------------------------------------------- unchanged inputs
FORCE_TAG = "ti/force"     # a run tagged ti/force=true rebuilds and publishes even if nothing changed


def unchanged(context: AssetExecutionContext, settings: Settings, phase: str, input_sha256: dict[str, str],
              labels: dict[str, dict] | None = None) -> bool:
    """True when ``phase``'s published build already has these inputs, plan table and code version
    (the CLI's "nothing changed", :func:`pipeline.steps.since_published.changes_since_manifest`)
    and the run is not forced: the step then materializes nothing, and says so in an observation
    of the asset and in a tag of the run (``ti/unchanged_<phase>``)."""
    from ..steps.since_published import changes_since_manifest

    forced = context.run.tags.get(FORCE_TAG, "").lower() == "true"
    reasons = changes_since_manifest(settings, phase, input_sha256, labels)
    if reasons or forced:
        context.log.info(f"{phase}: rebuilding: " + (f"{FORCE_TAG}=true" if forced and not reasons
                                                    else "; ".join(reasons[:5])))
        return False
    message = (f"{phase}: nothing changed since the published build (inputs, plan table, code version); "
               f"nothing rebuilt nor published. Tag a run {FORCE_TAG}=true to rebuild anyway.")
    context.log.info(message)
    from ..publish.layout import stable_paths
    from ..publish.manifest import read_manifest

    build_id = read_manifest(stable_paths(settings.output_dir, phase)["manifest"]).get("build_id", "")
    context.log_event(AssetObservation(asset_key=context.asset_key, metadata={
        "published": False, "reason": message, "published_build_id": build_id}))
    context.instance.add_run_tags(context.run.run_id, {f"ti/unchanged_{phase_key(phase)}": build_id})
    return True


# ---------------------------------------------------------------- sources
def source_key(name: str) -> AssetKey:
    return AssetKey(["sources", name])


def fetch_source(name: str, settings: Settings) -> FetchResult:
    """Fetch one source (the newest release, the pinned one, or the lock's: pipeline.sources.resolve).

    A retryable SourceError (network, timeout, 429, 5xx) is raised as is, so the retry policy
    applies; any other one becomes a Failure that Dagster does not retry.
    """
    try:
        return fetch_one(settings, load_catalog(settings), name)
    except SourceError as err:
        if err.retryable:
            raise
        raise Failure(description=str(err), allow_retries=False) from err


def source_output(name: str, result: FetchResult, stored: Path, elapsed_s: float) -> Output:
    """The output of ``sources/<name>``: no value, the source's metadata (its own ``path`` included).

    Its type is Nothing, so Dagster hands it to no IO manager: the step stores the FetchResult
    itself (``stored``, :func:`~pipeline.defs.io_managers.store_value`), where the steps that read
    the sources find it (:func:`~pipeline.defs.io_managers.stored_values`). That spares one
    HANDLED_OUTPUT event, a write to the event log, per source and run.
    """
    return Output(None, output_name=source_key(name).to_python_identifier(),
                  data_version=DataVersion(result.sha256), metadata={
        "origin": result.origin, "mode": result.mode, "sha256": result.sha256,
        "bytes": result.size, "release": result.release, "cog": result.cog,
        "changed": result.changed, "http_attempts": result.attempts,
        "etag": result.etag or "", "last_modified": result.last_modified or "",
        "path": MetadataValue.path(str(result.path)), "stored_at": MetadataValue.path(str(stored)),
        "elapsed_s": round(elapsed_s, 3),
    })


def _source_out(name: str) -> AssetOut:
    spec = CATALOG.source(name)
    # is_required=False: a run that selects some sources gets only those (can_subset)
    return AssetOut(key=source_key(name), group_name="sources", kinds={"file"}, is_required=False, dagster_type=Nothing,
                    description=f"{spec.title}. Live: {spec.url} ({spec.url_status}); mirror: "
                                f"$TI_MIRROR_DIR/{spec.mirror}. Licence: {spec.licence}.")


# One step for every source (each still its own asset, selectable alone): a step per source
# costs Dagster about 0.07 s of CPU in events and logs, for a fetch that takes milliseconds from
# the mirror or the cache (measured with `python bench/run.py --scales 1 --methods cli,dagster`).
@multi_asset(name="fetch_sources", outs={source_key(n).to_python_identifier(): _source_out(n) for n in CATALOG.sources},
             can_subset=True, retry_policy=FETCH_RETRY)
def sources(context: AssetExecutionContext, pipeline_settings: PipelineSettings):
    settings = pipeline_settings.settings()
    for name in CATALOG.sources:
        if source_key(name) in context.selected_asset_keys:
            t = time.perf_counter()
            result = fetch_source(name, settings)
            stored = store_value(context, source_key(name), result)
            yield source_output(name, result, stored, time.perf_counter() - t)


SOURCE_ASSETS = [sources]


def _src(name: str) -> AssetIn:
    # A dependency Dagster does not load (Nothing): the step reads the sources' stored values
    # itself (stored_values), which spares two stored events per source and step (STEP_INPUT,
    # LOADED_INPUT: 152 -> 102 events in a run on unchanged inputs, each a SQLite commit).
    # The lineage and the data-version provenance are the same.
    return AssetIn(key=source_key(name), dagster_type=Nothing)


# ---------------------------------------------------------------- phases
def _build_metadata(result: "BuildResult") -> dict:
    """What the run shows of a phase's build: figures, reports, a preview, the column schema."""
    frame, m = result.territories, result.membership
    report = result.boundary_report
    meta = {
        **m.summary(),
        "reconciled_codes_list": _md_table(m.reconciled),
        "absorbed_outside_list": _md_table(m.absorbed_outside),
        "list_disagreements_list": _md_table([{**d, "only_in_communes_list": len(d["only_in_communes_list"]),
                                               "only_in_groupements_list": len(d["only_in_groupements_list"])}
                                              for d in m.disagreements]),
        "renamed_between_lists_list": _md_table(m.renamed_between_lists),
        "errors_list": _json_list(m.errors),
        "perimeter_source": MetadataValue.json({str(k): int(v) for k, v in
                                                m.territories["perimeter_source"].value_counts().items()}),
        "dissolve": MetadataValue.json(result.dissolve_stats.as_dict()),
        "boundaries": MetadataValue.json({"rows": report.rows, "crs_read": report.crs, "repaired": report.repaired,
                                          "empty_dropped": report.empty, "duplicates": report.duplicates,
                                          "sub_communal_left_out": report.sub_communal}),
        "inputs": MetadataValue.json([{k: i[k] for k in ("source", "release", "cog", "sha256")}
                                      for i in result.inputs]),
        "timings_s": MetadataValue.json(result.timings),
        "territories": len(frame), "communes": int(frame["n_communes"].sum()),
        "area_km2": round(float(frame["area_km2"].sum()), 1),
        "population": int(frame["population"].sum()),
        "preview": MetadataValue.md(markdown_table(frame.drop(columns="geometry").head(10))),
        "dagster/row_count": len(frame),
    }
    if result.previous is not None:
        new = frame.loc[frame["is_new"].fillna(False), ["id_ti", "lib_ti"]].values
        meta["new_territories"] = len(new)
        meta["new_territories_list"] = _json_list([f"{a} {b}" for a, b in new])
    from ..publish.dictionary import column_descriptions
    from ..steps.sequence import INTERNAL_COLUMNS

    desc = {**column_descriptions(), **INTERNAL_COLUMNS}
    meta["dagster/column_schema"] = TableSchema(columns=[
        TableColumn(c, str(frame[c].dtype), description=desc.get(c, "")) for c in frame.columns])
    return meta


def territories_asset(phase: str):
    """The ``territories_<phase>`` asset: the phase's core build from exactly the sources it reads."""
    key = phase_key(phase)
    name = f"territories_{key}"
    sources = phase_sources(CATALOG, phase)

    # A multi-asset that can subset: its checks' outputs are optional too, so the step may end
    # without any when nothing changed (an @asset's checks must always report).
    @multi_asset(name=name, ins={n: _src(n) for n in sources}, check_specs=checks.check_specs(name), can_subset=True,
                 outs={name: AssetOut(key=name, group_name=f"phase_{key}", kinds={"geopandas"}, is_required=False,
                                      description=f"The {phase} territories with every contract column (before the "
                                      "plan table): lists reconciled to the boundary codes, the members' coverage "
                                      "repaired and dissolved per territory, attributes, then the blocking checks. "
                                      "Nothing is published when one fails. Not rebuilt (nor published) when nothing "
                                      f"changed since the published build, unless the run is tagged {FORCE_TAG}=true.")})
    def territories(context: AssetExecutionContext, pipeline_settings: PipelineSettings):
        settings = pipeline_settings.settings()
        fetched = stored_values(context, {n: source_key(n) for n in sources})
        if unchanged(context, settings, phase, {n: r.sha256 for n, r in fetched.items()},
                     {n: r.lock for n, r in fetched.items() if r.lock}):
            return          # no output: the publishing step of this run is skipped too
        from .. import runtime

        runtime.tune_process()   # for the build only (threads, allocator, imports): an unchanged run needs no data stack
        from ..steps import sequence as core

        t = time.perf_counter()
        result = core.build_phase(settings, CATALOG, phase, fetched)
        meta = _build_metadata(result)
        meta["elapsed_s"] = round(time.perf_counter() - t, 3)
        yield Output(result, output_name=name, metadata=meta)
        yield from checks.check_results(name, result.checks)
        checks.stop_if_failed(phase, result.checks)

    return territories


TERRITORY_ASSETS = [territories_asset(phase) for phase in PHASES]


# ---------------------------------------------------------------- plans and publishing
NO_PLAN_TABLE = "no-plan-table"    # plan_table's data version without a plan table
LIST_SOURCES = [n for n in (CATALOG.phases[CURRENT_PHASE].communes, CATALOG.phases[CURRENT_PHASE].groupements) if n]


@asset(group_name="plans", ins={n: _src(n) for n in LIST_SOURCES}, kinds={"csv"},
       description="The user's per-territory plan table (TI_PLANS_PATH), validated against the 2023-2027 "
                   "lists; null columns when unset. A change to it re-runs only this asset and the publishing.")
def plan_table(context: AssetExecutionContext, pipeline_settings: PipelineSettings):
    from ..sources.plans import NO_TABLE_WARNING, read_plans

    settings = pipeline_settings.settings()
    if settings.plans_path is None:
        # Nothing to read: the value is None (published_2023_2027 attaches null plan columns) and
        # no data stack is imported, so a run on unchanged inputs stays light.
        context.log.warning(NO_TABLE_WARNING)
        return Output(None, data_version=DataVersion(NO_PLAN_TABLE), metadata={
            "rows": 0, "path": "", "sha256": NO_PLAN_TABLE, "warnings": _json_list([NO_TABLE_WARNING])})
    from ..steps.sequence import listed_territory_ids

    lists = stored_values(context, {n: source_key(n) for n in LIST_SOURCES})
    ids = listed_territory_ids(CATALOG, CURRENT_PHASE, lists, settings.limits)
    plans = read_plans(settings.plans_path, ids, settings.limits)
    for w in plans.warnings:
        context.log.warning(w)
    version = plans.source["sha256"] if plans.source else NO_PLAN_TABLE
    return Output(plans, data_version=DataVersion(version), metadata={
        "rows": len(plans.table), "path": str(settings.plans_path or ""), "sha256": version,
        "warnings": _json_list(plans.warnings)})


def publish_asset(phase: str):
    key = phase_key(phase)
    ins = {"build": AssetIn(f"territories_{key}")}
    if phase == CURRENT_PHASE:
        ins["plans"] = AssetIn("plan_table")

    @asset(name=f"published_{key}", group_name="publish", ins=ins, kinds={"parquet", "geojson"}, output_required=False,
           description=f"The {phase} files (GeoParquet 1.1, GeoJSON RFC 7946, GeoPackage, light variants, preview, "
                       "manifest) written to a release folder, then swapped into the stable paths atomically.")
    def published(context: AssetExecutionContext, pipeline_settings: PipelineSettings, build, **maybe_plans):
        from ..publish.layout import stable_paths

        plans = maybe_plans.get("plans")
        settings = pipeline_settings.settings()
        if "plans" in maybe_plans and plans is None:    # plan_table found none: null plan columns
            from ..sources.plans import read_plans

            plans = read_plans(None, [])
        if unchanged(context, settings, phase, {i["source"]: i["sha256"] for i in build.inputs},
                     {i["source"]: i["lock"] for i in build.inputs if i.get("lock")}):
            return          # e.g. run alone on a build that is already the published one
        from .. import runtime

        runtime.tune_process()   # e.g. a run of this asset alone, from the stored build
        from ..steps import sequence as core

        t = time.perf_counter()
        # publish_build refuses a build whose checks (run by the territories asset, kept in `build`) failed
        manifest = core.publish_build(build, settings, plans=plans)
        meta = {"build_id": manifest["build_id"], "contract_version": manifest["contract_version"],
                "elapsed_s": round(time.perf_counter() - t, 3),
                "output_dir": MetadataValue.path(str(settings.output_dir)),
                "manifest": MetadataValue.path(str(stable_paths(settings.output_dir, phase)["manifest"])),
                "dagster/row_count": len(build.territories)}
        from ..publish.changes import changes_markdown  # what changed since the previous release

        meta["changes"] = MetadataValue.md(changes_markdown(settings.output_dir, phase) or "_none_")
        for out in manifest.get("outputs", []):
            label = out.get("name") or out.get("path")
            meta[f"{label} bytes"] = out.get("bytes")
            meta[f"{label} path"] = MetadataValue.path(str(settings.output_dir / out["path"]))
            meta[f"{label} sha256"] = str(out.get("sha256") or "")
            if str(out.get("path", "")).endswith(".png"):
                png = settings.output_dir / out["path"]
                meta["preview_png"] = MetadataValue.path(str(png))
                meta["preview"] = MetadataValue.md(_thumbnail_markdown(png))
        yield Output(manifest, metadata=meta)

    return published


PUBLISH_ASSETS = [publish_asset(phase) for phase in PHASES]

ALL_ASSETS = [*SOURCE_ASSETS, *TERRITORY_ASSETS, plan_table, *PUBLISH_ASSETS]
