"""Whether a phase needs a rebuild: what changed since its published manifest (CLI and Dagster).

A phase is unchanged when its published manifest records the same pipeline and contract versions,
the same code version (:func:`pipeline.code_version.build_code_version`), the same sha256 and the
same label (file name, COG year, release, date) for each input it reads, the same plan table (2023-2027), and every published file is still the one the
manifest describes. The CLI then exits 3 ("nothing changed"); a Dagster run publishes no release
and says so in its metadata. Both can force a rebuild (``--force``; the run tag ``ti/force=true``).
"""

from __future__ import annotations

from pathlib import Path

from .. import CONTRACT_VERSION, __version__
from ..checksums import sha256_file
from ..code_version import build_code_version
from ..phases import CURRENT_PHASE
from ..settings import Settings


def plan_sha256(settings: Settings) -> str | None:
    """sha256 of the plan table (TI_PLANS_PATH), None when there is none."""
    return None if settings.plans_path is None else sha256_file(settings.plans_path)


def _short(value: object) -> str:
    return str(value or "none")[:12]


def changes_since_manifest(settings: Settings, phase: str, input_sha256: dict[str, str],
                           labels: dict[str, dict] | None = None) -> list[str]:
    """Why ``phase`` needs a rebuild compared with its published manifest; [] when nothing changed.

    ``input_sha256`` maps each source the phase reads to the sha256 of its current file; ``labels``
    to its lock entry (file name, COG year, release, date): the same content under another label
    is a change too (a label is a claim, checked by the build).
    """
    from ..publish.layout import stable_paths
    from ..publish.manifest import read_manifest

    paths = stable_paths(settings.output_dir, phase)
    try:
        manifest = read_manifest(paths["manifest"])
    except FileNotFoundError:
        return [f"no published manifest at {paths['manifest']}"]
    except (OSError, ValueError) as err:
        return [f"published manifest {paths['manifest']} unreadable ({err})"]
    reasons = []
    for key, now in (("pipeline_version", __version__), ("contract_version", CONTRACT_VERSION)):
        if manifest.get(key) != now:
            reasons.append(f"{key} {manifest.get(key)} -> {now}")
    extra = manifest.get("extra", {})
    if extra.get("code_fingerprint") != (code := build_code_version()):
        reasons.append(f"code changed: {_short(extra.get('code_fingerprint'))} -> {code[:12]}")
    before = {i.get("source"): i.get("sha256") for i in manifest.get("inputs", [])}
    for name in sorted(set(before) | set(input_sha256)):
        if before.get(name) != input_sha256.get(name):
            reasons.append(f"input {name}: {_short(before.get(name))} -> {_short(input_sha256.get(name))}")
    from ..publish.changes import LABEL

    for name, now_label in (labels or {}).items():
        was = (manifest.get("lock") or {}).get(name) or {}
        if was and before.get(name) == input_sha256.get(name):
            moved = [f"{k} {was.get(k)} -> {now_label.get(k)}" for k in LABEL if was.get(k) != now_label.get(k)]
            if moved:
                reasons.append(f"input {name}: same content, new label: {', '.join(moved)}")
    if phase == CURRENT_PHASE:
        old, new = ((extra.get("plans") or {}).get("source") or {}).get("sha256"), plan_sha256(settings)
        if old != new:
            reasons.append(f"plan table: {_short(old)} -> {_short(new)}")
    from ..publish.swap import mismatched  # sha256, not sizes: a same-size swap leftover is seen

    try:
        reasons += [f"published file missing or altered: {Path(settings.output_dir) / p}"
                    for p in mismatched(Path(settings.output_dir), manifest)]
    except ValueError as err:      # a path out of the output folder: nothing read from it, a whole new set
        reasons.append(f"published manifest unusable ({err})")
    return reasons
