"""Which releases are kept, in which order: the publish sequence recorded in ``releases/index.json``.

Each release in the index carries ``sequence``, the order in which releases were published (1, 2,
...; one counter for every phase). Retention orders the releases of a phase by it, never by their
``built_at`` (a clock that went backwards, or a restored backup, must not reorder them), and never
removes the release the stable files come from. A release folder that the index does not list and
that no stable file comes from was never published (a publish killed before its swap): it is
removed by the next retention of its phase.

The index is checked at start-up (:func:`repair_index`, under the publish lock) against the release
folders and the stable manifests, and rewritten when they disagree: a publish killed right after its
swap left the index without the release now published, which then gets the next sequence. Without
any index (a first publish, or folders made by an older version) the releases are numbered in the
order of their ``built_at``, the published ones last.

Nothing read from the index is used as a path: only build ids, phases and sequences, after the
index is validated against ``releases-index.schema.json``; deletions walk ``releases/`` itself.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

from .. import atomic, documents
from ..errors import PublishError
from ..phases import CURRENT_PHASE, PHASES
from .layout import INDEX_NAME, MANIFEST_NAME, RELEASES_DIR, phase_subdir, stable_dirs
from .manifest import dumps, read_manifest, utc_now
from .provenance import source_lock

log = logging.getLogger(__name__)

Key = tuple[str, str]          # (build id, phase)

RETENTION_TEXT = ("a release is kept while it is the latest of its content (content_sha256) or among the latest "
                  "TI_KEEP_RELEASES of its phase, in the order of publication (sequence); the release the "
                  "published files come from is always kept")


def release_manifests(output_dir: Path, phase: str | None = None) -> dict[Key, tuple[Path, dict]]:
    """(build id, phase) -> (release folder, manifest) of every release of ``phase`` (every phase
    if None) whose manifest is valid; hidden (staging) folders and links are left out (retention
    never deletes through a link), and so is a release whose manifest is unreadable (kept, never
    indexed)."""
    releases = Path(output_dir) / RELEASES_DIR
    found: dict[Key, tuple[Path, dict]] = {}
    if not releases.is_dir() or releases.is_symlink():
        return found
    pattern = f"*/{phase_subdir(phase)}/{MANIFEST_NAME}" if phase else f"*/phase=*/{MANIFEST_NAME}"
    for path in sorted(releases.glob(pattern)):
        folder = path.parent.parent
        if folder.name.startswith(".") or folder.is_symlink() or path.parent.is_symlink():
            continue
        try:
            manifest = read_manifest(path)
        except (OSError, ValueError) as err:
            log.warning("release manifest %s unreadable (%s): left out of the index", path, err)
            continue
        found[(folder.name, path.parent.name.removeprefix("phase="))] = (folder, manifest)
    return found


def published(output_dir: Path) -> set[Key]:
    """The releases the stable files of each phase come from (their valid manifests say so)."""
    keys = set()
    for phase in PHASES:
        for folder in stable_dirs(output_dir, phase):
            with contextlib.suppress(OSError, ValueError):
                manifest = read_manifest(folder / MANIFEST_NAME)
                keys.add((manifest["build_id"], manifest["phase"]))
    return keys


def read_index(output_dir: Path) -> dict | None:
    """``releases/index.json`` validated against its schema; None when there is none;
    PublishError (one line) when it is not a bounded regular file of valid JSON fitting it."""
    path = Path(output_dir) / RELEASES_DIR / INDEX_NAME
    try:
        return documents.load(path, "releases-index.schema.json", "release index")
    except FileNotFoundError:
        return None
    except documents.InvalidDocument as err:
        raise PublishError(f"{err}; move it away: it is rebuilt from the release folders at the next run") from None


def sequences(output_dir: Path, index: dict | None, found: dict[Key, tuple[Path, dict]]) -> dict[Key, int]:
    """The publish sequence of every release found that was published (see the module's doc)."""
    seq: dict[Key, int] = {}
    if index is None:
        ordered = sorted(found, key=lambda k: (str(found[k][1].get("built_at", "")), k))
        seq = {key: n for n, key in enumerate(ordered, start=1)}
    else:
        entries = index["releases"]
        for pos, entry in enumerate(entries):   # an index written before sequences: newest first
            key = (str(entry["build_id"]), str(entry.get("phase")))
            if key in found:
                seq[key] = int(entry.get("sequence") or len(entries) - pos)
    top = max(seq.values(), default=0)
    for key in sorted(published(output_dir) & set(found)):
        same_phase = [n for k, n in seq.items() if k[1] == key[1] and k != key]
        if key not in seq or seq[key] < max(same_phase, default=0):   # the stable files' release is the latest
            top += 1
            seq[key] = top
    return seq


def next_sequence(seq: dict[Key, int]) -> int:
    return max(seq.values(), default=0) + 1


def write_index(output_dir: Path, seq: dict[Key, int] | None = None) -> dict:
    """Write ``releases/index.json``: every published release of every phase, latest published
    first, with its sequence, build id, date, phase, source lock, content hash and files (paths
    relative to the output dir). ``seq`` defaults to the sequences of the current index."""
    output_dir = Path(output_dir)
    found = release_manifests(output_dir)
    if seq is None:
        seq = sequences(output_dir, read_index(output_dir), found)
    entries = []
    for key in sorted((k for k in found if k in seq), key=lambda k: -seq[k]):
        folder, m = found[key]
        entries.append({
            "sequence": seq[key],
            "build_id": m.get("build_id", folder.name), "built_at": m.get("built_at"), "phase": m.get("phase"),
            "contract_version": m.get("contract_version"), "source_lock": source_lock(m),
            "content_sha256": m.get("content_sha256"), "manifest": f"{m.get('release_path')}/{MANIFEST_NAME}",
            "files": [{"name": o["name"], "path": o["release_path"], "sha256": o["sha256"], "bytes": o["bytes"]}
                      for o in m.get("outputs", [])],
        })
    index = {"generated_at": utc_now(), "retention": RETENTION_TEXT, "releases": entries}
    atomic.write_text(output_dir / RELEASES_DIR / INDEX_NAME, dumps(index))
    return index


def repair_index(output_dir: Path) -> bool:
    """Rewrite the index when it disagrees with the release folders (a release it lists is gone, a
    published one is missing, a sequence is missing); True when it did. The publish lock is held."""
    output_dir = Path(output_dir)
    found = release_manifests(output_dir)
    index = read_index(output_dir)
    if index is None and not found:
        return False
    seq = sequences(output_dir, index, found)
    listed = {(str(e["build_id"]), str(e.get("phase"))): e.get("sequence") for e in (index or {}).get("releases", [])}
    if index is not None and listed == seq:
        return False
    write_index(output_dir, seq)
    log.warning("%s/%s did not match the release folders: rebuilt from them", RELEASES_DIR, INDEX_NAME)
    return True


def apply_retention(output_dir: Path, keep: int, current: str, phase: str = CURRENT_PHASE,
                    seq: dict[Key, int] | None = None) -> list[str]:
    """Delete the releases of ``phase`` that are neither the latest of their content nor among the
    ``keep`` latest published, nor the one the stable files come from (``current`` always stays),
    and the release folders never published; return the deleted ids.

    A release's content is its manifest's ``content_sha256`` (a release without one is its own
    content). Only this phase's part of a release folder is deleted (another phase published
    under the same build id stays).
    """
    output_dir = Path(output_dir)
    found = release_manifests(output_dir, phase)
    if seq is None:
        seq = sequences(output_dir, read_index(output_dir), release_manifests(output_dir))
    protected = {current} | {b for b, p in published(output_dir) if p == phase}
    deleted = []
    for key in [k for k in found if k not in seq and k[0] not in protected]:   # never published
        _remove_phase_part(found[key][0], phase)
        deleted.append(key[0])
    seen: set[str] = set()
    ranked = sorted((k for k in found if k in seq or k[0] in protected), key=lambda k: -seq.get(k, 1 << 62))
    for rank, key in enumerate(ranked):
        folder, manifest = found[key]
        content = manifest.get("content_sha256") or f"build:{folder.name}"
        latest_of_content = content not in seen
        seen.add(content)
        if latest_of_content or rank < max(1, int(keep)) or key[0] in protected:
            continue
        _remove_phase_part(folder, phase)
        deleted.append(key[0])
    if deleted:
        log.info("release retention (%s): deleted %s", phase, ", ".join(deleted))
    return deleted


def _remove_phase_part(folder: Path, phase: str) -> None:
    """Delete one phase's files from a release folder; the folder too once it is empty."""
    shutil.rmtree(folder / phase_subdir(phase), ignore_errors=True)
    with contextlib.suppress(OSError):
        folder.rmdir()  # only succeeds when empty
