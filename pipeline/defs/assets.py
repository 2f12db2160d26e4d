"""Dagster assets: thin wrappers around the core steps of ``pipeline.build``.

Groups: ``sources`` (one asset per catalog source, fetched or read from the mirror),
``reference`` (boundaries, admin references, commune changes), one group per programme phase
(membership, shapes, territories, checked by blocking asset checks), ``plans`` and ``publish``.
"""


import time

import pandas as pd
from dagster import (AssetExecutionContext, AssetIn, AssetKey, Backoff, DataVersion, Failure, Jitter,
                     MetadataValue, Output, RetryPolicy, asset)

from ..build import steps as core
from ..sources.catalog import load_catalog
from ..errors import SourceError
from ..sources.resolve import fetch_one
from .resources import PipelineSettings, definition_settings

CATALOG = load_catalog(definition_settings())
PHASES = list(CATALOG.phases)
BOUNDARY_COG = CATALOG.boundaries().cog

# Retried: network errors, timeouts, 429 and 5xx (SourceError.retryable). Not retried: 4xx, bad content.
FETCH_RETRY = RetryPolicy(max_retries=2, delay=10, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)


def phase_key(phase: str) -> str:
    """``2023-2027`` -> ``2023_2027`` (asset keys allow letters, digits and underscores)."""
    return phase.replace("-", "_")


def markdown_table(frame: pd.DataFrame) -> str:
    """A small frame as a Markdown table (no extra dependency)."""
    cells = frame.map(lambda v: str(v).replace("|", "\\|")[:120])
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + " --- |" * len(frame.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines)


def _md_table(rows: list[dict], limit: int = 50) -> MetadataValue:
    if not rows:
        return MetadataValue.md("_none_")
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


def _md_list(items: list, limit: int = 50) -> MetadataValue:
    if not items:
        return MetadataValue.md("_none_")
    text = "\n".join(f"- {x}" for x in items[:limit])
    if len(items) > limit:
        text += f"\n- … and {len(items) - limit} more"
    return MetadataValue.md(text)


# ---------------------------------------------------------------- sources
def source_asset(name: str):
    spec = CATALOG.source(name)

    @asset(name=name, key_prefix="sources", group_name="sources", retry_policy=FETCH_RETRY,
           description=f"{spec.title}. Live: {spec.url} ({spec.url_status}); mirror: $TI_MIRROR_DIR/{spec.mirror}. "
                       f"Licence: {spec.licence}.",
           kinds={"file"})
    def _fetch(context: AssetExecutionContext, pipeline_settings: PipelineSettings):
        settings = pipeline_settings.settings()
        t = time.perf_counter()
        try:   # the newest release, the pinned one, or the lock's (pipeline.sources.resolve)
            result = fetch_one(settings, load_catalog(settings), name)
        except SourceError as err:
            if getattr(err, "retryable", False):
                raise
            raise Failure(description=str(err), allow_retries=False) from err
        return Output(result, data_version=DataVersion(result.sha256), metadata={
            "origin": result.origin, "mode": result.mode, "sha256": result.sha256,
            "bytes": result.size, "release": result.release, "cog": result.cog,
            "changed": result.changed, "http_attempts": result.attempts,
            "etag": result.etag or "", "last_modified": result.last_modified or "",
            "path": MetadataValue.path(str(result.path)),
            "elapsed_s": round(time.perf_counter() - t, 3),
        })

    return _fetch


SOURCE_ASSETS = [source_asset(name) for name in CATALOG.sources]


def _src(name: str) -> AssetIn:
    return AssetIn(key=AssetKey(["sources", name]))


# ---------------------------------------------------------------- reference
@asset(group_name="reference", ins={"src": _src("communes_boundaries")}, kinds={"geopandas"},
       description=f"Commune polygons (COG {BOUNDARY_COG}), EPSG:4326, one row per commune, "
                   "invalid polygons repaired, empty ones dropped and reported.")
def commune_boundaries(context: AssetExecutionContext, src):
    t = time.perf_counter()
    frame, report = core.load_boundaries({"communes_boundaries": src})
    frame.attrs["boundary_report"] = report     # travels with the frame to the manifest
    return Output(frame, metadata={
        "rows": report.rows, "crs_read": report.crs, "repaired": _md_list(report.repaired),
        "empty_dropped": _md_list(report.empty), "duplicates": _md_list(report.duplicates),
        "sub_communal_left_out": _md_list(report.sub_communal),
        "cog": BOUNDARY_COG, "sha256": src.sha256, "elapsed_s": round(time.perf_counter() - t, 3),
    })


@asset(group_name="reference", kinds={"shapely"},
       description="The commune coverage projected to a metric CRS per zone (Lambert-93, and one per overseas "
                   "departement) and cleaned once with shapely.coverage_clean: overlaps removed, shared edges "
                   "identical. Both phases dissolve from it.")
def clean_communes(context: AssetExecutionContext, commune_boundaries):
    from ..geometry.coverage import clean_coverage

    t = time.perf_counter()
    cov = clean_coverage(commune_boundaries)
    return Output(cov, metadata={"communes": cov.communes,
                                 "zones": str({f"EPSG:{c}": len(z.codes) for c, z in cov.zones.items()}),
                                 "elapsed_s": round(time.perf_counter() - t, 3)})


@asset(group_name="reference", ins={"src": _src("insee_mvt_communes")}, kinds={"pandas"},
       description="INSEE commune changes (mergers, splits, code changes) used to map codes between COG years.")
def commune_changes(src) -> Output:
    t = time.perf_counter()
    frame = core.load_changes({"insee_mvt_communes": src})
    return Output(frame, metadata={"rows": len(frame), "last_event": str(frame["DATE_EFF"].max().date()),
                                   "sha256": src.sha256, "release": src.release,
                                   "elapsed_s": round(time.perf_counter() - t, 3)})


def admin_asset(cog: int):
    names = [CATALOG.decoupage(cog, w).name for w in ("communes", "epci", "ept")]

    @asset(name=f"admin_cog{cog}", group_name="reference", ins={n: _src(n) for n in names}, kinds={"pandas"},
           description=f"Communes (names, departement, region, population) and EPCI/EPT membership, COG {cog}.")
    def _admin(**sources):
        t = time.perf_counter()
        ref = core.load_admin(CATALOG, sources, cog)
        return Output(ref, metadata={"communes": len(ref.communes),
                                     "groupements": int(ref.members["siren_groupement"].nunique()),
                                     "cog": cog, "release": sources[names[0]].release,
                                     "elapsed_s": round(time.perf_counter() - t, 3)})

    return _admin


ADMIN_COGS = sorted({BOUNDARY_COG} | {p.list_cog for p in CATALOG.phases.values()})
ADMIN_ASSETS = [admin_asset(cog) for cog in ADMIN_COGS]


# ---------------------------------------------------------------- phases
def phase_assets(phase: str):
    spec = CATALOG.phases[phase]
    key = phase_key(phase)
    lists = [n for n in (spec.communes, spec.groupements) if n]
    group = f"phase_{key}"

    @asset(name=f"membership_{key}", group_name=group, kinds={"pandas"},
           ins={**{n: _src(n) for n in lists}, "admin": AssetIn(f"admin_cog{spec.list_cog}"),
                "changes": AssetIn("commune_changes"), "boundaries": AssetIn("commune_boundaries")},
           description=f"One row per (territory, commune) of the {phase} lists, in COG {BOUNDARY_COG} codes: "
                       "codes reconciled through INSEE changes, groupements expanded, disagreements reported.")
    def membership(context: AssetExecutionContext, admin, changes, boundaries, **lists_in):
        t = time.perf_counter()
        m = core.phase_membership(CATALOG, phase, lists_in, admin, changes, set(boundaries["code_insee"]))
        s = m.summary()
        return Output(m, metadata={
            **{k: v for k, v in s.items()},
            "reconciled_codes_list": _md_table(m.reconciled),
            "absorbed_outside_list": _md_table(m.absorbed_outside),
            "list_disagreements_list": _md_table([{**d, "only_in_communes_list": len(d["only_in_communes_list"]),
                                                   "only_in_groupements_list": len(d["only_in_groupements_list"])}
                                                  for d in m.disagreements]),
            "errors_list": _md_list(m.errors),
            "perimeter_source": str(m.territories["perimeter_source"].value_counts().to_dict()),
            "vintages": str({n: f"{r.release} (COG {r.cog}, sha256 {r.sha256[:12]})" for n, r in lists_in.items()}),
            "elapsed_s": round(time.perf_counter() - t, 3),
        })

    @asset(name=f"territory_shapes_{key}", group_name=group, kinds={"shapely"},
           ins={"membership": AssetIn(f"membership_{key}"), "coverage": AssetIn("clean_communes")},
           description="Cleaned commune coverage dissolved per territory (coverage union); gaps of the source "
                       "inside a territory filled, real enclaves kept.")
    def shapes(context: AssetExecutionContext, membership, coverage):
        from ..geometry.coverage import dissolve_clean

        t = time.perf_counter()
        dissolved, stats = dissolve_clean(coverage, membership.members)
        return Output((dissolved, stats), metadata={
            **{k: (str(v) if isinstance(v, dict) else getattr(v, "item", lambda: v)()) for k, v in stats.as_dict().items()},
            "territories": len(dissolved), "elapsed_s": round(time.perf_counter() - t, 3)})

    extra_ins = {}
    if spec.list_cog != BOUNDARY_COG:   # the list's COG year: names and members of the listed groupements
        extra_ins["list_admin"] = AssetIn(f"admin_cog{spec.list_cog}")
    if phase == core.CURRENT_PHASE and core.PREVIOUS_PHASE in CATALOG.phases:
        extra_ins["previous"] = AssetIn(f"membership_{phase_key(core.PREVIOUS_PHASE)}")

    @asset(name=f"territories_{key}", group_name=group, kinds={"geopandas"},
           ins={"membership": AssetIn(f"membership_{key}"), "shapes": AssetIn(f"territory_shapes_{key}"),
                "boundaries": AssetIn("commune_boundaries"), "admin": AssetIn(f"admin_cog{BOUNDARY_COG}"),
                **{n: _src(n) for n in core.phase_sources(CATALOG, phase)}, **extra_ins},
           description=f"The {phase} territories with every contract column (before the plan table). "
                       "Checked by blocking asset checks before anything is published.")
    def territories(context: AssetExecutionContext, membership, shapes, boundaries, admin, **sources):
        t = time.perf_counter()
        previous = sources.pop("previous", None)
        list_admin = sources.pop("list_admin", admin)
        dissolved, stats = shapes
        frame = core.assemble(phase, membership, dissolved, boundaries, admin, previous)
        from ..publish.membership_tables import references as membership_references
        from ..sources.boundaries import BoundaryReport

        result = core.BuildResult(
            phase=phase, territories=frame, membership=membership, dissolve_stats=stats,
            boundary_report=boundaries.attrs.get("boundary_report")
            or BoundaryReport(len(boundaries), [], [], [], "EPSG:4326"), checks=[],
            inputs=[core.inputs_entry(sources[n], CATALOG) for n in sorted(sources)], previous=previous,
            references=membership_references(membership, list_admin, admin))
        new = int(frame["is_new"].fillna(False).sum())
        meta = {"territories": len(frame), "communes": int(frame["n_communes"].sum()),
                "area_km2": round(float(frame["area_km2"].sum()), 1),
                "population": int(frame["population"].sum()),
                "preview": MetadataValue.md(markdown_table(frame.drop(columns="geometry").head(10))),
                "dagster/row_count": len(frame)}
        if previous is not None:
            meta["new_territories"] = new
            meta["new_territories_list"] = _md_list([f"{a} {b}" for a, b in
                                                     frame.loc[frame["is_new"].fillna(False), ["id_ti", "lib_ti"]].values])
        from ..publish.dictionary import column_descriptions
        from dagster import TableColumn, TableSchema

        desc = column_descriptions()
        meta["dagster/column_schema"] = TableSchema(columns=[
            TableColumn(c, str(frame[c].dtype), description=desc.get(c, "")) for c in frame.columns])
        meta["elapsed_s"] = round(time.perf_counter() - t, 3)
        return Output(result, metadata=meta)

    return [membership, shapes, territories]


PHASE_ASSETS = [a for phase in PHASES for a in phase_assets(phase)]


# ---------------------------------------------------------------- plans and publishing
@asset(group_name="plans", ins={"membership": AssetIn(f"membership_{phase_key(core.CURRENT_PHASE)}")},
       kinds={"csv"},
       description="The user's per-territory plan table (TI_PLANS_PATH), validated; null columns when unset. "
                   "A change to it re-runs only this asset and the publishing.")
def plan_table(context: AssetExecutionContext, pipeline_settings: PipelineSettings, membership):
    from ..sources.plans import read_plans

    settings = pipeline_settings.settings()
    plans = read_plans(settings.plans_path, membership.territories["id_ti"])
    for w in plans.warnings:
        context.log.warning(w)
    version = plans.source["sha256"] if plans.source else "no-plan-table"
    return Output(plans, data_version=DataVersion(version), metadata={
        "rows": len(plans.table), "path": str(settings.plans_path or ""), "sha256": version,
        "warnings": _md_list(plans.warnings)})


def publish_asset(phase: str):
    key = phase_key(phase)
    ins = {"build": AssetIn(f"territories_{key}"), "boundaries": AssetIn("commune_boundaries")}
    if phase == core.CURRENT_PHASE:
        ins["plans"] = AssetIn("plan_table")

    @asset(name=f"published_{key}", group_name="publish", ins=ins, kinds={"parquet", "geojson"},
           description=f"The {phase} files (GeoParquet 1.1, GeoJSON RFC 7946, GeoPackage, light variants, preview, "
                       "manifest) written to a release folder, then swapped into the stable paths atomically.")
    def published(context: AssetExecutionContext, pipeline_settings: PipelineSettings, build, boundaries,
                  **maybe_plans):
        from ..publish.release import stable_paths

        plans = maybe_plans.get("plans")
        settings = pipeline_settings.settings()
        # The blocking asset checks already stopped a wrong build before this step; they are run
        # again here (0.3 s) because the manifest records their results and publish_build refuses
        # to publish a failing build even when this asset is materialized on its own.
        build.checks = core.run_checks(build.territories, build.membership, boundaries)
        t = time.perf_counter()
        manifest = core.publish_build(build, settings, plans=plans, build_id=core.new_build_id())
        meta = {"build_id": manifest["build_id"], "contract_version": manifest["contract_version"],
                "elapsed_s": round(time.perf_counter() - t, 3),
                "output_dir": MetadataValue.path(str(settings.output_dir))}
        meta["manifest"] = MetadataValue.path(str(stable_paths(settings.output_dir, phase)["manifest"]))
        meta["dagster/row_count"] = len(build.territories)
        from ..publish.changes import changes_markdown   # what changed since the previous release

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
        return Output(manifest, metadata=meta)

    return published


PUBLISH_ASSETS = [publish_asset(phase) for phase in PHASES]

ALL_ASSETS = [*SOURCE_ASSETS, commune_boundaries, clean_communes, commune_changes, *ADMIN_ASSETS, *PHASE_ASSETS, plan_table,
              *PUBLISH_ASSETS]
