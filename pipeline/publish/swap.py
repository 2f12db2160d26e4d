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
The manifest is not trusted: it must fit its schema, and every path it names must stay inside the
output folder (:func:`~pipeline.documents.confined`), else nothing is repaired from it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from .. import atomic, documents
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


def swap_in(pairs: list[tuple[Path, Path]], tag: str) -> None:
    """Rename each ``(temporary file, stable path)`` in order (the manifest last), as one set.

    On any failure every stable path is put back as it was, every temporary and backup file is
    removed, and PublishError names the file and the cause.
    """
    backups: list[tuple[Path, Path | None]] = []
    temps: list[Path] = []      # every backup, recorded before it is written
    done: list[str] = []
    try:
        check_targets(pairs)
        try:
            for _, target in pairs:
                backups.append((target, atomic.backup(target, temps) if target.exists() else None))
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
        for tmp in [t for t, _ in pairs] + temps:
            with contextlib.suppress(OSError):
                tmp.unlink()


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


def _inside(output_dir: Path, relative: object, manifest: Path) -> Path:
    """A path the manifest names, refused unless it is relative and stays in ``output_dir``."""
    return documents.confined(output_dir, relative, f"{manifest}")


def mismatched(output_dir: Path, manifest: dict, key: str = "path", source: Path | None = None) -> list[str]:
    """Stable paths (relative, the outputs' ``key``: path or phase_path) of the manifest's outputs
    that are missing or differ from its sha256 (InvalidDocument for a path out of ``output_dir``)."""
    bad = []
    for out in manifest.get("outputs", []):
        path = _inside(output_dir, _stable(out, key), source or Path(output_dir) / MANIFEST_NAME)
        if not path.is_file() or path.is_symlink() or sha256_file(path) != out.get("sha256"):
            bad.append(_stable(out, key))
    return bad


def repair_stable(output_dir: Path, stable_manifest: Path, key: str = "path") -> list[str]:
    """Make the stable set match its manifest again, from the release folder the manifest names.

    Returns the repaired stable paths ([] when the set was intact or there is no manifest yet).
    PublishError when the set is mixed and no intact release can repair it, or when the manifest
    is not valid or names a path out of ``output_dir`` (then nothing is written).
    """
    output_dir = Path(output_dir)
    if not stable_manifest.is_file():
        return []
    try:
        manifest = read_manifest(stable_manifest)
        bad = mismatched(output_dir, manifest, key, stable_manifest)
        if not bad:
            return []
        release = _inside(output_dir, manifest.get("release_path"), stable_manifest)
        outputs = [(_inside(output_dir, out.get("release_path"), stable_manifest),
                    _inside(output_dir, _stable(out, key), stable_manifest), out)
                   for out in manifest.get("outputs", []) if _stable(out, key) in bad]
    except (OSError, ValueError) as err:
        raise PublishError(f"published manifest {stable_manifest} cannot be used to repair the published files "
                           f"({err}); restore it from {output_dir / 'releases'} or delete the stable files to "
                           "publish afresh") from None
    pairs: list[tuple[Path, Path]] = []
    temps: list[Path] = []       # every temp copy, recorded before it is written
    try:
        for source, target, out in outputs:
            if not source.is_file() or source.is_symlink() or sha256_file(source) != out.get("sha256"):
                raise PublishError(
                    f"the published files do not match {stable_manifest} ({', '.join(bad)}) and release "
                    f"{release} cannot repair them ({source.name} missing or altered)")
            pairs.append((atomic.copy_beside(source, target, temps), target))
    except BaseException:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    swap_in(pairs, "repair")
    log.warning("published files did not match %s: %s restored from %s", MANIFEST_NAME, ", ".join(bad), release)
    return bad
