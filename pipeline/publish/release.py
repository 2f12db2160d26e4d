"""Publish a release: write every output into a release folder, verify it, then swap stable files.

Layout under ``settings.output_dir`` (phase 2023-2027; another phase ``P`` uses ``phase=P/`` for
its stable files and ``releases/<build_id>/phase=P/`` for its release files)::

    territoires-industrie.parquet | .geojson | .gpkg | -100m.geojson | -1km.geojson | .png
    manifest.json                      <- replaced last
    releases/<build_id>/...            <- the same files + manifest; the last settings.keep_releases
                                          releases of each phase are kept

Sequence: write and re-read every output in a hidden staging folder ``releases/.staging-*``; move
them into ``releases/<build_id>/``; copy each to a temporary file beside its stable path; only
then ``os.replace`` each temporary file onto its stable path, the manifest last. Any failure
before the swap removes the staging and temporary files and the new release folder, leaves the
stable files and manifest byte-identical, and raises :class:`~pipeline.errors.PublishError`
naming the file and the cause. A lock file serialises concurrent publishes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time
import uuid
from pathlib import Path

import geopandas as gpd

from ..errors import PublishError
from . import changes, geojson, geoparquet, gpkg, light, preview
from .columns import column_infos, prepare_frame
from .manifest import MANIFEST_NAME, build_manifest, dumps, output_entry, read_manifest, utc_now

log = logging.getLogger(__name__)

DEFAULT_PHASE = "2023-2027"
RELEASES_DIR = "releases"
LOCK_NAME = ".publish.lock"
BASENAME = "territoires-industrie"
STABLE_NAMES: dict[str, str] = {
    "geoparquet": f"{BASENAME}.parquet",
    "geojson": f"{BASENAME}.geojson",
    "gpkg": f"{BASENAME}.gpkg",
    **{f"light_{v.suffix}": f"{BASENAME}-{v.suffix}.geojson" for v in light.VARIANTS},
    "preview": f"{BASENAME}.png",
    "manifest": MANIFEST_NAME,
}
_TMP_SUFFIX = ".publish-tmp"
_BUILD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_PHASE = re.compile(r"^\d{4}-\d{4}$")


def phase_subdir(phase: str) -> str:
    """'' for the default phase, else ``phase=<phase>`` (relative to the output dir)."""
    return "" if phase == DEFAULT_PHASE else f"phase={phase}"


def stable_dir(output_dir: Path, phase: str = DEFAULT_PHASE) -> Path:
    return Path(output_dir) / phase_subdir(phase) if phase_subdir(phase) else Path(output_dir)


def stable_paths(output_dir: Path, phase: str = DEFAULT_PHASE) -> dict[str, Path]:
    """Name -> stable path of every published file of ``phase`` (the contract's paths)."""
    base = stable_dir(output_dir, phase)
    return {name: base / filename for name, filename in STABLE_NAMES.items()}


def release_dir(output_dir: Path, build_id: str, phase: str = DEFAULT_PHASE) -> Path:
    base = Path(output_dir) / RELEASES_DIR / build_id
    return base / phase_subdir(phase) if phase_subdir(phase) else base


def preview_path(output_dir: Path, phase: str = DEFAULT_PHASE) -> Path:
    """Stable path of the preview PNG (for Dagster metadata)."""
    return stable_paths(output_dir, phase)["preview"]


def _rel(path: Path, output_dir: Path) -> str:
    return Path(path).relative_to(output_dir).as_posix()


def _cause(err: BaseException) -> str:
    if isinstance(err, OSError):
        cause = err.strerror or str(err)
        return f"{cause} (errno {err.errno})" if err.errno else cause
    return f"{type(err).__name__}: {err}"


def _fail(build_id: str, what: str, err: BaseException) -> PublishError:
    return PublishError(
        f"publishing release {build_id} failed, previous files left unchanged: {what}: {_cause(err)}"
    )


@contextlib.contextmanager
def _publish_lock(output_dir: Path):
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(output_dir / LOCK_NAME, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _copy_to_temp(src: Path, dest_dir: Path, build_id: str) -> Path:
    """Copy ``src`` to a hidden temporary file in ``dest_dir`` (same filesystem as its target)."""
    tmp = dest_dir / f".{src.name}.{build_id}{_TMP_SUFFIX}"
    shutil.copyfile(src, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    return tmp


def _write_outputs(frame: gpd.GeoDataFrame, staging: Path, build_id: str, phase: str) -> tuple[dict, dict]:
    """Write and verify every data file in ``staging``; return (facts per name, seconds per name)."""
    names = STABLE_NAMES
    facts: dict[str, dict] = {}
    timings: dict[str, float] = {}

    def step(name: str, write, verify) -> None:
        path = staging / names[name]
        t0 = time.perf_counter()
        try:
            write(path)
            facts[name] = verify(path)
        except PublishError as err:
            raise PublishError(f"publishing release {build_id} failed, previous files left unchanged: {err}") from err
        except Exception as err:
            raise _fail(build_id, f"could not write {names[name]} ({path})", err) from err
        timings[name] = round(time.perf_counter() - t0, 3)

    step("geoparquet", lambda p: geoparquet.write_geoparquet(frame, p),
         lambda p: geoparquet.verify_geoparquet(p, frame))
    step("geojson", lambda p: geojson.write_geojson(frame, p),
         lambda p: geojson.verify_geojson(p, frame))
    step("gpkg", lambda p: gpkg.write_gpkg(frame, p), lambda p: gpkg.verify_gpkg(p, frame))
    full_size = (staging / names["geojson"]).stat().st_size
    source_valid: dict[str, bool] = {}  # coverage check of the source, done once for every variant
    for variant in light.VARIANTS:
        def write_light(p, v=variant):
            geojson.write_geojson(frame, p, v.decimals, geoms=light.simplify_coverage(frame, v.tolerance_m))

        def verify_light(p, v=variant):
            out = geojson.verify_geojson(p, frame, v.decimals)
            if p.stat().st_size >= full_size:
                raise PublishError(f"{p}: light variant is not smaller than the full GeoJSON")
            out.update({"simplification_m": v.tolerance_m})
            if not source_valid:
                source_valid.update(light.coverage_valid_by_zone(frame, frame.geometry.values))
            out.update(light.check_light(frame, geojson.read_geometries(p), v.tolerance_m, source_valid))
            return out

        step(f"light_{variant.suffix}", write_light, verify_light)
    title = f"Territoires d'industrie {phase} - {len(frame)} territoires"
    step("preview", lambda p: preview.render_preview(frame, p, title), preview.verify_png)
    return facts, timings


def _cleanup(paths: list[Path], dirs: list[Path]) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            p.unlink()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def _remove_stale(output_dir: Path, stable: Path) -> None:
    """Leftovers of a killed publish (we hold the lock, so none is in progress)."""
    releases = output_dir / RELEASES_DIR
    if releases.is_dir():
        for d in releases.glob(".staging-*"):
            shutil.rmtree(d, ignore_errors=True)
    if stable.is_dir():
        for f in stable.glob(f".*{_TMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                f.unlink()


def _built_at(manifest: Path) -> str:
    with contextlib.suppress(Exception):
        return str(read_manifest(manifest)["built_at"])
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(manifest.parent.stat().st_mtime))


def _remove_phase_part(folder: Path, phase: str) -> None:
    """Delete one phase's files from a release folder; the folder too once it is empty."""
    if phase_subdir(phase):
        shutil.rmtree(folder / phase_subdir(phase), ignore_errors=True)
    else:
        for child in folder.iterdir():
            if child.is_dir() and child.name.startswith("phase="):
                continue
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    child.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()  # only succeeds when empty


def apply_retention(output_dir: Path, keep: int, current: str, phase: str = DEFAULT_PHASE) -> list[str]:
    """Keep the ``keep`` newest releases of ``phase`` (always ``current``); return the deleted ids.

    Releases are ordered by their manifest's ``built_at``. Only this phase's part of an older
    release folder is deleted (another phase published under the same build id stays).
    """
    releases = Path(output_dir) / RELEASES_DIR
    if not releases.is_dir():
        return []
    folders = [d for d in releases.iterdir() if d.is_dir() and not d.name.startswith(".")]
    mine = [d for d in folders if (release_dir(output_dir, d.name, phase) / MANIFEST_NAME).is_file()]
    mine.sort(key=lambda d: (_built_at(release_dir(output_dir, d.name, phase) / MANIFEST_NAME), d.name),
              reverse=True)
    keep = max(1, int(keep))
    kept = [d for d in mine if d.name == current]
    for d in mine:
        if len(kept) >= keep:
            break
        if d not in kept:
            kept.append(d)
    deleted = []
    for d in mine:
        if d not in kept:
            _remove_phase_part(d, phase)
            deleted.append(d.name)
    if deleted:
        log.info("release retention (%s, keep %d): deleted %s", phase, keep, ", ".join(deleted))
    return deleted


def publish_release(
    territories: gpd.GeoDataFrame,
    settings,
    *,
    build_id: str,
    inputs: list[dict],
    checks: list[dict],
    phase: str = DEFAULT_PHASE,
    extra: dict | None = None,
) -> dict:
    """Publish ``territories`` (one row per territory, EPSG:4326) as release ``build_id``.

    Returns the manifest dict (also written as ``manifest.json`` in the release folder and at the
    stable path). Raises PublishError, leaving the previous stable files untouched, on any failure
    before the swap.
    """
    t_start = time.perf_counter()
    if not _BUILD_ID.match(str(build_id)):
        raise PublishError(f"build id {build_id!r} must be 1-128 characters among A-Z a-z 0-9 . _ - (not starting with . _ -)")
    if not _PHASE.match(str(phase)):
        raise PublishError(f"phase {phase!r} must look like 2023-2027")
    output_dir = Path(settings.output_dir).resolve()
    stable = stable_dir(output_dir, phase)
    final = release_dir(output_dir, build_id, phase)
    try:
        stable.mkdir(parents=True, exist_ok=True)
        (output_dir / RELEASES_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _fail(build_id, f"cannot create the output folder {output_dir}", err) from err

    frame = prepare_frame(territories, phase)
    with _publish_lock(output_dir):
        _remove_stale(output_dir, stable)
        if (final / MANIFEST_NAME).exists():
            raise PublishError(f"release {build_id} of phase {phase} already exists ({final}); use a new build id")
        staging = output_dir / RELEASES_DIR / f".staging-{build_id}-{uuid.uuid4().hex[:8]}"
        # topmost folder of the release that this call creates (removed again on failure)
        created = next((d for d in [final.parent, final] if d != output_dir / RELEASES_DIR and not d.exists()), None)
        moved: list[Path] = []
        temps: list[tuple[Path, Path]] = []
        try:
            staging.mkdir(parents=True)
            facts, timings = _write_outputs(frame, staging, build_id, phase)
            outputs = [
                output_entry(name, staging / STABLE_NAMES[name], _rel(stable / STABLE_NAMES[name], output_dir),
                             _rel(final / STABLE_NAMES[name], output_dir), facts[name])
                for name in facts
            ]
            timings["total_before_swap"] = round(time.perf_counter() - t_start, 3)
            manifest = build_manifest(
                build_id=build_id, phase=phase, built_at=utc_now(), release_path=_rel(final, output_dir),
                inputs=inputs, outputs=outputs, checks=checks, extra=extra,
                columns=[{"name": c.name, "kind": c.kind} for c in column_infos(frame)], timings=timings,
            )
            manifest_path = staging / MANIFEST_NAME
            try:
                manifest_path.write_text(dumps(manifest), encoding="utf-8")
                if read_manifest(manifest_path) != read_manifest_roundtrip(manifest):
                    raise PublishError(f"{manifest_path}: manifest does not read back identically")
            except PublishError:
                raise
            except Exception as err:
                raise _fail(build_id, f"could not write {MANIFEST_NAME} ({manifest_path})", err) from err
            # changes.json + CHANGES.md against the stable release, swapped in with the manifest
            try:
                report = changes.report_for(stable, manifest, frame, MANIFEST_NAME, STABLE_NAMES["geoparquet"])
                files = [STABLE_NAMES[n] for n in facts] + changes.write_changes(staging, report) + [MANIFEST_NAME]
            except Exception as err:
                raise _fail(build_id, f"could not write {changes.CHANGES_JSON}", err) from err
            # into the release folder
            final.mkdir(parents=True, exist_ok=True)
            for file in files:
                src = staging / file
                os.replace(src, final / src.name)
                moved.append(final / src.name)
            shutil.rmtree(staging, ignore_errors=True)
            # temporary copies beside the stable paths (this is where a full disk would show)
            for file in files:
                src = final / file
                try:
                    temps.append((_copy_to_temp(src, stable, build_id), stable / src.name))
                except Exception as err:
                    raise _fail(build_id, f"could not stage {src.name} in {stable}", err) from err
        except BaseException as err:
            _cleanup([t for t, _ in temps] + moved, [staging])
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            if isinstance(err, PublishError):
                raise
            if isinstance(err, Exception):
                raise _fail(build_id, "release folder", err) from err
            raise
        # the swap: renames only, manifest last
        done = []
        for tmp, target in temps:
            try:
                os.replace(tmp, target)
                done.append(target.name)
            except OSError as err:
                _cleanup([t for t, _ in temps], [])
                raise PublishError(
                    f"publishing release {build_id}: swap interrupted after {done or 'no file'}: "
                    f"could not replace {target}: {_cause(err)}"
                ) from err
        _fsync_dir(stable)
        apply_retention(output_dir, settings.keep_releases, build_id, phase)
    log.info("published release %s (%s) in %.1f s", build_id, phase, time.perf_counter() - t_start)
    return manifest


def read_manifest_roundtrip(manifest: dict) -> dict:
    """The manifest as it reads back from its JSON text (paths and dates become strings)."""
    import json

    return json.loads(dumps(manifest))


__all__ = ["DEFAULT_PHASE", "STABLE_NAMES", "publish_release", "stable_paths", "release_dir", "preview_path",
           "apply_retention"]
