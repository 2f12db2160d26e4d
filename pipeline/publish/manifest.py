"""The release manifest: build id, time, versions, inputs, outputs (sha256, bytes, rows), checks."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from .. import CONTRACT_VERSION, __version__, documents
from ..checksums import sha256_file


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def output_entry(name: str, file: Path, stable_path: str, release_path: str, facts: dict) -> dict:
    """One ``outputs`` item: paths relative to the output dir, sha256, size and the writer's facts."""

    entry = {
        "name": name,
        "path": stable_path,
        "release_path": release_path,
        "sha256": sha256_file(file),
        "bytes": Path(file).stat().st_size,
    }
    entry.update(facts)
    entry.setdefault("rows", None)
    return entry


def build_manifest(
    *, build_id: str, phase: str, built_at: str, release_path: str, inputs: list[dict],
    outputs: list[dict], checks: list[dict], extra: dict | None, columns: list[dict], timings: dict,
    source_lock: str | None = None, content_sha256: str | None = None,
) -> dict:
    extra = dict(extra or {})
    lock = extra.pop("lock", None)     # the exact sources of the build (pipeline.sources.resolve)
    return {
        "build_id": build_id,
        "built_at": built_at,
        "contract_version": CONTRACT_VERSION,
        "pipeline_version": __version__,
        "phase": phase,
        "release_path": release_path,
        "source_lock": source_lock,
        "content_sha256": content_sha256,
        "inputs": list(inputs),
        **({"lock": lock} if lock is not None else {}),
        "outputs": outputs,
        "checks": list(checks),
        "columns": columns,
        "timings_s": timings,
        "extra": extra,
    }


def dumps(manifest: dict) -> str:
    """Stable JSON text (indent 2, UTF-8; non-JSON values such as paths become strings)."""
    return json.dumps(manifest, indent=2, ensure_ascii=False, default=str, allow_nan=False) + "\n"


def read_manifest(path: Path) -> dict:
    """A manifest read back: a bounded regular file valid against ``manifest.schema.json``
    (:class:`~pipeline.documents.InvalidDocument`, a ValueError, else; FileNotFoundError when absent).
    Its paths are still to be checked with :func:`~pipeline.documents.confined` before use."""
    return documents.load(Path(path), "manifest.schema.json", "manifest")
