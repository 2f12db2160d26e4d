"""The stable files of a phase, replaced as one set, and repaired when a set does not match its manifest.

:func:`swap_in` renames prepared temporary files onto their stable paths, the manifest last. Every
target is checked before the first rename (a directory or a link where a file should be stops it);
each replaced file is first hard-linked to a backup, so that a failed rename puts every previous
file back. No temporary or backup file is left in the stable folder, whatever happens short of a
``kill -9``.

After a ``kill -9`` during the renames, the stable folder holds a mix of two builds. The manifest
records each file's sha256: :func:`repair_stable` (run at start-up, under the publish lock) finds a
file that does not match it and copies the set back from the release folder the manifest names,
once that folder's files are checked against the same sha256, saying so in its return value.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

from .. import atomic
from ..checksums import sha256_file
from ..errors import PublishError
from .layout import MANIFEST_NAME
from .manifest import read_manifest

log = logging.getLogger(__name__)


def _cause(err: OSError) -> str:
    return f"{err.strerror or err} (errno {err.errno})" if err.errno else str(err)


def check_targets(pairs: list[tuple[Path, Path]]) -> None:
    """Every target is absent or a regular file (not a link) in an existing folder; PublishError else."""
    for tmp, target in pairs:
        if target.is_symlink() or (target.exists() and not target.is_file()):
            what = "a link" if target.is_symlink() else "a directory" if target.is_dir() else "not a regular file"
            raise PublishError(f"cannot publish {target.name}: {target} is {what}; move it away "
                               "(previous files left unchanged)")
        if not tmp.is_file():
            raise PublishError(f"cannot publish {target.name}: its staged copy {tmp} is missing")


def _backup(target: Path) -> Path | None:
    """A hard link (else a copy) of an existing target, to put it back if the swap fails."""
    if not target.exists():
        return None
    backup = atomic.temp_path(target)
    try:
        os.link(target, backup)
    except OSError:
        shutil.copy2(target, backup)
    return backup


def swap_in(pairs: list[tuple[Path, Path]], tag: str) -> None:
    """Rename each ``(temporary file, stable path)`` in order (the manifest last), as one set.

    On any failure every stable path is put back as it was, every temporary and backup file is
    removed, and PublishError names the file and the cause.
    """
    backups: list[tuple[Path, Path | None]] = []
    done: list[str] = []
    try:
        check_targets(pairs)
        try:
            for _, target in pairs:
                backups.append((target, _backup(target)))
            for tmp, target in pairs:
                os.replace(tmp, target)
                done.append(target.name)
        except OSError as err:
            failed = next((t for (_, t) in pairs if t.name not in done), pairs[-1][1])
            _restore(backups)
            raise PublishError(f"publishing release {tag}: could not replace {failed}: {_cause(err)}; "
                               f"the previous files were put back") from err
        except BaseException:
            _restore(backups)
            raise
    finally:
        for tmp, _ in pairs:
            with contextlib.suppress(OSError):
                tmp.unlink()
        for _, backup in backups:
            if backup is not None:
                with contextlib.suppress(OSError):
                    backup.unlink()


def _restore(backups: list[tuple[Path, Path | None]]) -> None:
    """Put every backed-up target back; remove a target that did not exist before."""
    for target, backup in backups:
        with contextlib.suppress(OSError):
            if backup is None:
                target.unlink(missing_ok=True)
            else:
                os.replace(backup, target)


def remove_leftovers(stable: Path) -> None:
    """Temp and backup files of a killed swap (the caller holds the publish lock: none is in progress)."""
    for f in atomic.leftovers(stable):
        with contextlib.suppress(OSError):
            f.unlink()


def _stable(out: dict, key: str) -> str:
    return str(out.get(key) or out.get("path", ""))


def mismatched(output_dir: Path, manifest: dict, key: str = "path") -> list[str]:
    """Stable paths (relative, the outputs' ``key``: path or phase_path) of the manifest's outputs
    that are missing or differ from its sha256."""
    bad = []
    for out in manifest.get("outputs", []):
        path = Path(output_dir) / _stable(out, key)
        if not path.is_file() or path.is_symlink() or sha256_file(path) != out.get("sha256"):
            bad.append(_stable(out, key))
    return bad


def repair_stable(output_dir: Path, stable_manifest: Path, key: str = "path") -> list[str]:
    """Make the stable set match its manifest again, from the release folder the manifest names.

    Returns the repaired stable paths ([] when the set was intact or there is no manifest yet).
    PublishError when the set is mixed and no intact release can repair it.
    """
    output_dir = Path(output_dir)
    if not stable_manifest.is_file():
        return []
    try:
        manifest = read_manifest(stable_manifest)
    except (OSError, ValueError) as err:
        raise PublishError(f"published manifest {stable_manifest} is unreadable ({err}); restore it from "
                           f"{output_dir / 'releases'} or delete the stable files to publish afresh") from None
    bad = mismatched(output_dir, manifest, key)
    if not bad:
        return []
    release = output_dir / str(manifest.get("release_path", ""))
    pairs = []
    for out in manifest.get("outputs", []):
        if _stable(out, key) not in bad:
            continue
        source = output_dir / str(out.get("release_path", ""))
        if not source.is_file() or source.is_symlink() or sha256_file(source) != out.get("sha256"):
            raise PublishError(
                f"the published files do not match {stable_manifest} ({', '.join(bad)}) and release "
                f"{release} cannot repair them ({source.name} missing or altered)")
        target = output_dir / _stable(out, key)
        pairs.append((atomic.copy_beside(source, target), target))
    swap_in(pairs, "repair")
    log.warning("published files did not match %s: %s restored from %s", MANIFEST_NAME, ", ".join(bad), release)
    return bad
