"""Repairing a published set at start-up, and the publish lock: light, no writer imported.

A publish killed during its swap leaves stable files that do not match their manifest, and
staging or temporary files. :func:`repair_published` (the CLI's start, before it decides whether
anything changed) removes those leftovers and restores the stable set from the release folder its
manifest names (:func:`.swap.repair_stable`), then the release index. It lives apart from
:mod:`.release` so that a run that finds nothing changed imports none of the writers (pandas,
geopandas, pyarrow...); :mod:`.release` uses the same lock and checks when it publishes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

from .. import atomic
from ..errors import PublishError
from ..phases import CURRENT_PHASE
from . import retention, swap
from .layout import INDEX_NAME, LOCK_NAME, MANIFEST_NAME, RELEASES_DIR, stable_dirs

log = logging.getLogger(__name__)


def cause(err: BaseException) -> str:
    """An error's cause in a few words (an OSError's strerror and errno)."""
    if isinstance(err, OSError):
        cause = err.strerror or str(err)
        return f"{cause} (errno {err.errno})" if err.errno else cause
    return f"{type(err).__name__}: {err}"


def check_not_links(output_dir: Path) -> None:
    """The lock and ``releases/`` are never links: they would lead writes (and retention's
    deletions) out of the output folder."""
    for name in (LOCK_NAME, RELEASES_DIR):
        if (output_dir / name).is_symlink():
            raise PublishError(f"{output_dir / name} is a symbolic link; refused (it must stay inside "
                               f"TI_OUTPUT_DIR {output_dir}): remove it")


@contextlib.contextmanager
def publish_lock(output_dir: Path):
    """Hold the output folder's lock file (one publish or repair at a time)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    try:
        fd = os.open(output_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as err:
        raise PublishError(f"cannot publish into {output_dir}: cannot open the lock file {LOCK_NAME} "
                           f"({cause(err)}); is the folder writable?") from None
    with os.fdopen(fd, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def remove_stale(output_dir: Path, stable: Path) -> None:
    """Leftovers of a killed publish (we hold the lock, so none is in progress)."""
    releases = output_dir / RELEASES_DIR
    if releases.is_dir():
        for d in releases.glob(".staging-*"):
            shutil.rmtree(d, ignore_errors=True)
    if stable.is_dir():
        for f in atomic.leftovers(stable):
            with contextlib.suppress(OSError):
                f.unlink()


def clear_and_repair(output_dir: Path, dirs: list[Path], phase: str) -> list[str]:
    """Remove a killed publish's leftovers, repair the stable set, then the release index when it
    disagrees with the release folders (the publish lock is held)."""
    for d in dirs:
        remove_stale(output_dir, d)
    lines = repair_stable_sets(output_dir, phase)
    if retention.repair_index(output_dir):
        lines.append(f"{RELEASES_DIR}/{INDEX_NAME} did not match the release folders (an interrupted publish, "
                     "or an index written before publish sequences): rebuilt from them")
    return lines


def repair_stable_sets(output_dir: Path, phase: str) -> list[str]:
    """Check every stable folder of ``phase`` against its own manifest's sha256 and repair it from
    the release folder that manifest names (the publish lock is held); one line per finding."""
    lines = []
    for i, d in enumerate(stable_dirs(output_dir, phase)):
        swap.remove_leftovers(d)
        try:   # the phase folder's manifest names its files by phase_path, the output dir's by path
            repaired = swap.repair_stable(output_dir, d / MANIFEST_NAME, "phase_path" if i == 0 else "path")
        except PublishError as err:      # the next publish replaces the whole set anyway
            lines.append(f"{err}; the next publish replaces the whole set")
            continue
        lines += [f"published file {p} did not match {MANIFEST_NAME} (an interrupted publish): restored "
                  "from its release folder" for p in repaired]
    for line in lines:
        log.warning("%s", line)
    return lines


def repair_published(settings, phase: str = CURRENT_PHASE) -> list[str]:
    """At start-up: put back a published set that does not match its manifest's sha256 (a publish
    killed during the swap), from its release folder; one line per repaired file ([] if intact)."""
    output_dir = Path(settings.output_dir).resolve()
    dirs = stable_dirs(output_dir, phase)
    if not any((d / MANIFEST_NAME).is_file() for d in dirs):
        return []
    check_not_links(output_dir)
    with publish_lock(output_dir):
        return clear_and_repair(output_dir, dirs, phase)
