"""Publish a release: write every output into a release folder, verify it, then swap stable files.

Layout under ``settings.output_dir``, the same for every phase ``P``::

    phase=P/territoires-industrie.parquet | .geojson | .gpkg | .fgb | .pmtiles
            territoires-industrie-overview.geojson | -regional.geojson | .png
            territoires-industrie-communes.parquet | .csv | -groupements.parquet | .csv
            territoires-industrie.qgz              <- QGIS project of the folder's files
            datapackage.json                       <- Frictionless Data Package of the folder's files
            manifest.json                          <- replaced last
    territoires-industrie.* , manifest.json        <- the current phase (2023-2027) also here
    releases/<build_id>/phase=P/...                <- the same files + manifest
    releases/index.json                            <- every kept release (see :func:`.retention.write_index`)

A release is kept as long as it is the latest of its content (``content_sha256`` of its manifest:
the data without the build's metadata), or is among the ``settings.keep_releases`` latest published
of its phase, in the publish sequence the index records, and the release the stable files come
from is never removed (:mod:`.retention`).

Sequence: write and re-read every output in a hidden staging folder ``releases/.staging-*``; move
them into ``releases/<build_id>/``; copy each to a temporary file beside its stable path; only
then ``os.replace`` each temporary file onto its stable path, the manifest last, as one set
(:mod:`.swap`: targets checked first, previous files put back on failure). Any failure removes
the staging and temporary files and the new release folder, leaves the stable files and manifest
byte-identical, and raises :class:`~pipeline.errors.PublishError` naming the file and the cause.
A lock file serialises concurrent publishes; it and ``releases/`` are never symbolic links.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import re
import shutil
import time
import uuid
from pathlib import Path

import geopandas as gpd
import pandas as pd

from .. import atomic, runtime
from ..errors import PublishError
from ..phases import CURRENT_PHASE, PHASES
from ..reconcile.membership import Membership
from . import (
    changes,
    datapackage,
    geojson,
    geoparquet,
    gpkg,
    light,
    membership_tables,
    preview,
    qgis_project,
    retention,
    swap,
    tiles,
    weblibs,
    webmap,
)
from .columns import column_infos, prepare_frame
from .layout import (
    INDEX_NAME,
    MANIFEST_NAME,
    RELEASES_DIR,
    STABLE_NAMES,
    release_dir,
    stable_dir,
    stable_dirs,
    stable_paths,
)
from .manifest import build_manifest, dumps, output_entry, read_manifest, utc_now
from .membership_tables import MembershipRefs
from .provenance import file_metadata
from .repair import cause, check_not_links, clear_and_repair, publish_lock

log = logging.getLogger(__name__)

_BUILD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_PHASE = re.compile(r"^\d{4}-\d{4}$")


def preview_path(output_dir: Path, phase: str = CURRENT_PHASE) -> Path:
    """Stable path of the preview PNG (for Dagster metadata)."""
    return stable_paths(output_dir, phase)["preview"]


def _rel(path: Path, output_dir: Path) -> str:
    return Path(path).relative_to(output_dir).as_posix()


def _fail(build_id: str, what: str, err: BaseException) -> PublishError:
    return PublishError(
        f"publishing release {build_id} failed, previous files left unchanged: {what}: {cause(err)}"
    )


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@functools.cache
def _library_names() -> dict[str, str]:
    return weblibs.published_names()


def file_name(name: str) -> str:
    """The file name of a published output: :data:`STABLE_NAMES`, or a web map library's when
    ``TI_WEB_LIBRARIES`` names a local copy."""
    return STABLE_NAMES.get(name) or _library_names()[name]


def _write_outputs(frame: gpd.GeoDataFrame, staging: Path, build_id: str, phase: str, meta: dict,
                   web: webmap.WebOptions, membership: Membership | None = None,
                   references: MembershipRefs | None = None,
                   inputs: list[dict] | None = None) -> tuple[dict, dict]:
    """Write and verify every file in ``staging``; return (facts per name, seconds per name).

    ``meta`` is the build's metadata written inside each data file; the membership tables are
    written when the build's ``membership`` is given. One timed step per file, in manifest order;
    the web map after the data files, then the QGIS project and the data package, as they describe
    the files before them.
    """
    facts: dict[str, dict] = {}
    timings: dict[str, float] = {}

    def step(name: str, write, verify) -> None:
        path = staging / file_name(name)
        t0 = time.perf_counter()
        try:
            write(path)
            facts[name] = verify(path)
        except PublishError as err:
            raise PublishError(f"publishing release {build_id} failed, previous files left unchanged: {err}") from err
        except Exception as err:
            raise _fail(build_id, f"could not write {file_name(name)} ({path})", err) from err
        timings[name] = round(time.perf_counter() - t0, 3)

    communes = None
    # each tolerance computed once for the tiles and the light files, whichever thread asks first
    simplify = light.Simplifier(frame, planned=tiles.band_tolerances())

    def membership_tables() -> None:
        nonlocal communes
        if membership is not None:
            communes = _write_membership_tables(step, staging, membership, references, phase, meta)

    title = f"Territoires d'industrie {phase} - {len(frame)} territoires"
    _in_parallel([   # the longest first (CPU seconds of both real phases, one step at a time)
        lambda: step("pmtiles", lambda p: tiles.write_pmtiles(frame, p, simplify, metadata=meta),
                     lambda p: tiles.verify_pmtiles(p, frame)),                          # ~5 s
        lambda: _write_light_files(step, frame, simplify, meta),                         # ~3 s
        lambda: step("preview", lambda p: preview.render_preview(frame, p, title, projected=simplify.in_metric_crs()),
                     preview.verify_png),                                                # ~1 s
        lambda: _write_full_files(step, frame, meta),                                    # ~1.4 s
        membership_tables,                                                               # ~1.4 s
    ])
    _in_manifest_order(facts)      # whichever thread wrote them (the descriptions list them in this order)
    _in_manifest_order(timings)
    _write_web_files(step, frame, communes, build_id, phase, web, facts)
    _write_descriptions(step, frame, phase, meta, facts, inputs)
    return facts, timings


def _in_manifest_order(done: dict) -> None:
    """Reorder ``done`` (keyed by :data:`STABLE_NAMES` names) in place, in the manifest's order."""
    ordered = sorted(done.items(), key=lambda item: list(STABLE_NAMES).index(item[0]))
    done.clear()
    done.update(ordered)


def _in_parallel(tasks: list) -> None:
    """Run ``tasks`` on :func:`pipeline.runtime.threads` threads, each taking the next task in
    order when it is free (one after the other with one thread); after an error the tasks not
    started are dropped, and the first error (in task order) is raised once the others have ended.

    GEOS's coverage simplification, GDAL's writers and the PNG encoder release the GIL: the tasks,
    longest first, keep both cores busy until the end of the publish (a fixed split of the files
    between two threads left one core idle for seconds, as the tasks' lengths vary between phases).
    """
    workers = min(runtime.threads(), len(tasks))
    if workers < 2:
        for task in tasks:
            task()
        return
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    with ThreadPoolExecutor(workers, thread_name_prefix="publish") as pool:
        running = [pool.submit(task) for task in tasks]
        wait(running, return_when=FIRST_EXCEPTION)
        for future in running:    # after a failure, the tasks not started yet are dropped
            future.cancel()
    for future in running:
        if not future.cancelled():
            future.result()


def _write_descriptions(step, frame: gpd.GeoDataFrame, phase: str, meta: dict, facts: dict[str, dict],
                        inputs: list[dict] | None) -> None:
    """The QGIS project (over the files written so far), then the data package (over all of them)."""
    written = {name: file_name(name) for name in facts}
    step("qgis_project", lambda p: qgis_project.write_qgz(frame, p, phase, written, meta), qgis_project.verify_qgz)
    described = {name: file_name(name) for name in facts}
    step("datapackage", lambda p: datapackage.write_datapackage(p, described, facts, phase, meta, inputs),
         lambda p: datapackage.verify_datapackage(p, described))


def _write_full_files(step, frame: gpd.GeoDataFrame, meta: dict) -> None:
    """The full-resolution files: GeoParquet, GeoJSON, GeoPackage, FlatGeobuf (one ``step`` each)."""
    step("geoparquet", lambda p: geoparquet.write_geoparquet(frame, p, metadata=meta),
         lambda p: geoparquet.verify_geoparquet(p, frame))
    step("geojson", lambda p: geojson.write_geojson(frame, p, metadata=meta),
         lambda p: geojson.verify_geojson(p, frame))
    step("gpkg", lambda p: gpkg.write_gpkg(frame, p, metadata=meta), lambda p: gpkg.verify_gpkg(p, frame))
    step("flatgeobuf", lambda p: tiles.write_flatgeobuf(frame, p, metadata=meta),
         lambda p: tiles.verify_flatgeobuf(p, frame))


def _write_light_files(step, frame: gpd.GeoDataFrame, simplify, meta: dict) -> None:
    """One light GeoJSON per ``light.VARIANTS``, each checked against its size target and the coverage."""
    source_valid: dict[str, bool] = {}  # coverage check of the source, done once for every variant
    small = light.map_frame(frame)
    sizes: dict[float, int] = {}   # the variants write the same candidates: each measured once
    probes: dict[float, Path] = {}  # and written once (a variant may choose one another wrote)
    try:
        for variant in light.VARIANTS:
            chosen: dict = {}

            def write_light(p, v=variant, chosen=chosen):
                chosen.update(light.write_to_target(
                    frame, p, v, simplify,
                    lambda path, decimals, geoms: geojson.write_geojson(small, path, decimals, geoms=geoms, metadata=meta),
                    sizes, probes))

            def verify_light(p, chosen=chosen):
                out, geoms = geojson.verify_and_read(p, small, chosen["coordinate_decimals"])
                out.update(chosen)
                if not source_valid:
                    source_valid.update(light.coverage_valid_by_zone(frame, frame.geometry.values))
                out.update(light.check_light(frame, geoms, chosen["simplification_m"], source_valid))
                return out

            step(f"light_{variant.suffix}", write_light, verify_light)
    finally:   # the candidates no variant chose
        light.remove_probes(probes)


def _write_membership_tables(step, staging: Path, membership: Membership, references: MembershipRefs | None,
                             phase: str, meta: dict) -> pd.DataFrame:
    """The commune and groupement tables, each as Parquet then CSV (checked against the Parquet);
    return the commune table."""
    tables = {}
    for table, make in (("communes", membership_tables.commune_table),
                        ("groupements", membership_tables.groupement_table)):
        rows = tables[table] = make(membership, references, phase)
        step(f"membership_{table}_parquet",
             lambda p, rows=rows: membership_tables.write_parquet(rows, p, meta),
             lambda p, rows=rows: {"rows": len(pd.read_parquet(p)), "format": "Parquet",
                                   "media_type": "application/vnd.apache.parquet"})
        step(f"membership_{table}_csv", lambda p, rows=rows: membership_tables.write_csv(rows, p),
             lambda p, rows=rows, table=table: {
                 **membership_tables.verify(staging / STABLE_NAMES[f"membership_{table}_parquet"], p, rows),
                 "format": "CSV (UTF-8, comma, one header line)", "media_type": "text/csv"})
    return tables["communes"]


def _write_web_files(step, frame: gpd.GeoDataFrame, communes: pd.DataFrame | None, build_id: str, phase: str,
                     web: webmap.WebOptions, facts: dict) -> None:
    """The web map (README "Web map"): the libraries when copied, the page's own script and style,
    its data and search index (from the frame and the commune table), then the page."""
    libraries = weblibs.library_files(web.libraries)
    for role, lib in libraries.items():
        if lib.local is not None:
            step(f"web_lib_{role}", lambda p, lib=lib: weblibs.copy_local(lib, p),
                 lambda p, lib=lib: weblibs.verify_copy(lib, p))
    for name in ("web_script", "web_style"):
        step(name, lambda p, n=name: webmap.copy_static(STABLE_NAMES[n], p),
             lambda p, n=name: webmap.verify_static(STABLE_NAMES[n], p))
    files = {"layer": tiles.LAYER, "pmtiles": STABLE_NAMES["pmtiles"], "fallback": STABLE_NAMES["light_regional"],
             "search": STABLE_NAMES["web_search"], "manifest": MANIFEST_NAME, "changes": changes.CHANGES_MD}
    data = webmap.map_data(frame, phase=phase, build_id=build_id, options=web, files=files,
                           fallback_simplification_m=facts.get("light_regional", {}).get("simplification_m"))
    step("web_data", lambda p: webmap.write_json(data, p), lambda p: webmap.verify_map_data(p, frame))
    index = webmap.search_index(frame, communes, phase=phase, build_id=build_id)
    step("web_search", lambda p: webmap.write_json(index, p), lambda p: webmap.verify_search(p, frame))
    step("web_page", lambda p: p.write_text(webmap.render_page(phase, len(frame), libraries), encoding="utf-8"),
         lambda p: webmap.verify_page(p, libraries))


def content_sha256(staging: Path, names: list[str]) -> str:
    """sha256 of the published data without the build's own metadata: the full GeoJSON's features
    (its first line holds the metadata) and the membership CSV files (which have none)."""
    import hashlib

    digest = hashlib.sha256()
    with open(staging / STABLE_NAMES["geojson"], "rb") as fh:
        fh.readline()
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    for name in sorted(n for n in names if n.startswith("membership_") and n.endswith("_csv")):
        digest.update((staging / STABLE_NAMES[name]).read_bytes())
    return digest.hexdigest()


def _cleanup(paths: list[Path], dirs: list[Path]) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            p.unlink()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class _Layout:
    """The folders of one publish: ``stable`` (the folder the manifest's ``path`` names), every stable
    folder ``dirs`` (``dirs[0]`` is ``phase=<phase>/``) and the release folder ``final``."""

    build_id: str
    phase: str
    output_dir: Path
    stable: Path
    dirs: list[Path]
    final: Path

    @classmethod
    def of(cls, output_dir: Path, build_id: str, phase: str) -> _Layout:
        return cls(build_id, phase, output_dir, stable_dir(output_dir, phase), stable_dirs(output_dir, phase),
                   release_dir(output_dir, build_id, phase))

    def rel(self, path: Path) -> str:
        return _rel(path, self.output_dir)


def _check_ids(build_id: str, phase: str) -> None:
    """Refuse a build id or phase that could not be a folder name of the layout."""
    if not _BUILD_ID.match(str(build_id)):
        raise PublishError(f"build id {build_id!r} must be 1-128 characters among A-Z a-z 0-9 . _ - (not starting with . _ -)")
    if not _PHASE.match(str(phase)):
        raise PublishError(f"phase {phase!r} must look like 2023-2027")


def _make_folders(lay: _Layout) -> None:
    try:
        for d in lay.dirs:
            d.mkdir(parents=True, exist_ok=True)
        (lay.output_dir / RELEASES_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _fail(lay.build_id, f"cannot create the output folder {lay.output_dir}", err) from err


def _output_entries(lay: _Layout, staging: Path, facts: dict[str, dict]) -> list[dict]:
    """The manifest's ``outputs``: each staged file with its stable, release and phase paths."""
    return [
        output_entry(name, staging / file_name(name), lay.rel(lay.stable / file_name(name)),
                     lay.rel(lay.final / file_name(name)),
                     {"phase_path": lay.rel(lay.dirs[0] / file_name(name)), **facts[name]})
        for name in facts
    ]


def _write_manifest(manifest: dict, path: Path, build_id: str) -> None:
    """Write ``manifest`` to ``path`` and check it reads back identically."""
    try:
        path.write_text(dumps(manifest), encoding="utf-8")
        if read_manifest(path) != read_manifest_roundtrip(manifest):
            raise PublishError(f"{path}: manifest does not read back identically")
    except PublishError:
        raise
    except Exception as err:
        raise _fail(build_id, f"could not write {MANIFEST_NAME} ({path})", err) from err


def _write_changes(lay: _Layout, staging: Path, manifest: dict, frame: gpd.GeoDataFrame) -> list[str]:
    """changes.json + CHANGES.md against the stable release, swapped in with the manifest; return their names."""
    try:
        report = changes.report_for(lay.stable, manifest, frame, MANIFEST_NAME, STABLE_NAMES["geoparquet"])
        return changes.write_changes(staging, report)
    except Exception as err:
        raise _fail(lay.build_id, f"could not write {changes.CHANGES_JSON}", err) from err


def _stage(frame: gpd.GeoDataFrame, staging: Path, lay: _Layout, t_start: float, *, inputs: list[dict],
           checks: list[dict], extra: dict | None, membership: Membership | None,
           references: MembershipRefs | None, web: webmap.WebOptions) -> tuple[dict, list[str]]:
    """Write every file of the release in a new ``staging`` folder; return (manifest, file names
    with the manifest last)."""
    staging.mkdir(parents=True)
    meta = file_metadata(lay.build_id, lay.phase, {"inputs": inputs, "lock": (extra or {}).get("lock")})
    facts, timings = _write_outputs(frame, staging, lay.build_id, lay.phase, meta, web, membership, references,
                                    inputs)
    outputs = _output_entries(lay, staging, facts)
    timings["total_before_swap"] = round(time.perf_counter() - t_start, 3)
    manifest = build_manifest(
        build_id=lay.build_id, phase=lay.phase, built_at=utc_now(), release_path=lay.rel(lay.final),
        inputs=inputs, outputs=outputs, checks=checks, extra=extra,
        columns=[{"name": c.name, "kind": c.kind} for c in column_infos(frame)], timings=timings,
        source_lock=meta["source_lock"], content_sha256=content_sha256(staging, list(facts)),
    )
    _write_manifest(manifest, staging / MANIFEST_NAME, lay.build_id)
    files = [file_name(n) for n in facts] + _write_changes(lay, staging, manifest, frame) + [MANIFEST_NAME]
    return manifest, files


def _move_to_release(staging: Path, final: Path, files: list[str], moved: list[Path]) -> None:
    """Move ``files`` from ``staging`` into the release folder ``final``, recording each in ``moved``."""
    final.mkdir(parents=True, exist_ok=True)
    for file in files:
        src = staging / file
        os.replace(src, final / src.name)
        moved.append(final / src.name)
    shutil.rmtree(staging, ignore_errors=True)


def _copy_beside_stable(lay: _Layout, files: list[str], temps: list[tuple[Path, Path]]) -> None:
    """Copy each release file beside each of its stable paths, recording (temporary, stable) in ``temps``."""
    # temporary copies beside the stable paths (this is where a full disk would show),
    # in swap order: every other file of every folder, then the manifests
    for group in (files[:-1], files[-1:]):
        for d in lay.dirs:
            for file in group:
                src = lay.final / file
                try:   # a copy that fails removes its own temp file (atomic.writing)
                    temps.append((atomic.copy_beside(src, d / src.name), d / src.name))
                except Exception as err:
                    raise _fail(lay.build_id, f"could not stage {src.name} in {d}", err) from err


def _swap_in(temps: list[tuple[Path, Path]], created: Path | None, build_id: str) -> None:
    """Rename the temporary files onto their stable paths; on failure drop them and the new release."""
    # the swap: renames only, manifest last, as one set (swap.py); a release never published
    # is not kept
    try:
        swap.swap_in(temps, build_id)
    except BaseException:
        _cleanup([t for t, _ in temps], [created] if created is not None else [])
        raise


def _after_swap(lay: _Layout, keep: int) -> None:
    """Flush the stable folders, apply retention (in publish order) and rewrite the release index."""
    for d in lay.dirs:
        _fsync_dir(d)
    try:   # the files are published: a failure here is said, and repaired at the next start-up
        out = lay.output_dir
        seq = retention.sequences(out, retention.read_index(out), retention.release_manifests(out))
        retention.apply_retention(out, keep, lay.build_id, lay.phase, seq)
        retention.write_index(out, seq)
    except (OSError, PublishError) as err:
        log.warning("could not apply retention or write %s/%s: %s", RELEASES_DIR, INDEX_NAME, cause(err))


def publish_release(
    territories: gpd.GeoDataFrame,
    settings,
    *,
    build_id: str,
    inputs: list[dict],
    checks: list[dict],
    phase: str = CURRENT_PHASE,
    extra: dict | None = None,
    membership: Membership | None = None,
    references: MembershipRefs | None = None,
) -> dict:
    """Publish ``territories`` (one row per territory, EPSG:4326) as release ``build_id``.

    ``membership`` (the build's ``reconcile.membership.Membership``) and ``references``
    (``membership_tables.MembershipRefs``) give the membership tables; without ``membership``
    they are not written. Returns the manifest dict (also written as ``manifest.json`` in the
    release folder and at the stable paths). Raises PublishError, leaving the previous stable
    files untouched, on any failure before the swap.
    """
    t_start = time.perf_counter()
    _check_ids(build_id, phase)
    lay = _Layout.of(Path(settings.output_dir).resolve(), build_id, phase)
    output_dir, final = lay.output_dir, lay.final
    check_not_links(output_dir)
    _make_folders(lay)

    frame = prepare_frame(territories, phase)
    web = webmap.WebOptions(libraries=settings.web_libraries, phases=PHASES, current_phase=CURRENT_PHASE)
    with publish_lock(output_dir):
        clear_and_repair(output_dir, lay.dirs, phase)
        if (final / MANIFEST_NAME).exists():
            raise PublishError(f"release {build_id} of phase {phase} already exists ({final}); use a new build id")
        staging = output_dir / RELEASES_DIR / f".staging-{build_id}-{uuid.uuid4().hex[:8]}"
        # topmost folder of the release that this call creates (removed again on failure)
        created = next((d for d in [final.parent, final] if d != output_dir / RELEASES_DIR and not d.exists()), None)
        moved: list[Path] = []
        temps: list[tuple[Path, Path]] = []
        try:
            manifest, files = _stage(frame, staging, lay, t_start, inputs=inputs, checks=checks, extra=extra,
                                     membership=membership, references=references, web=web)
            _move_to_release(staging, final, files, moved)
            _copy_beside_stable(lay, files, temps)
        except BaseException as err:
            _cleanup([t for t, _ in temps] + moved, [staging])
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            if isinstance(err, PublishError):
                raise
            if isinstance(err, Exception):
                raise _fail(build_id, "release folder", err) from err
            raise
        _swap_in(temps, created, build_id)
        _after_swap(lay, settings.keep_releases)
    log.info("published release %s (%s) in %.1f s", build_id, phase, time.perf_counter() - t_start)
    return manifest


def read_manifest_roundtrip(manifest: dict) -> dict:
    """The manifest as it reads back from its JSON text (paths and dates become strings)."""
    import json

    return json.loads(dumps(manifest))

