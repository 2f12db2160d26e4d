"""What changed since the previous published release: ``changes.json`` and ``CHANGES.md``.

Written beside the manifest (in the release folder and at the stable paths) by
:func:`pipeline.publish.release.publish_release`, from the previous stable manifest and GeoParquet
file read before the swap. It holds: the sources whose file changed (old and new sha256, release,
COG year), the COG years of the list and of the boundaries, the territories added, removed and
renamed, the communes that entered or left each territory (codes of each release's boundary COG),
the area change per territory, and the columns added or removed; the sources read with the same
content under another label (``labels_changed``: file name, COG year, release, date) and the
territories renamed between the phase's two lists (``renamed_between_lists``, from the manifest).
The first release of a phase says so (``first_release: true``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .layout import stable_dir
from .manifest import dumps, read_manifest

log = logging.getLogger(__name__)

CHANGES_JSON = "changes.json"
CHANGES_MD = "CHANGES.md"
_READ = ("id_ti", "lib_ti", "insee_communes", "area_km2", "list_cog", "boundary_cog")
AREA_DIGITS = 4                   # km², as published


def read_territories(parquet: Path) -> dict[str, dict]:
    """id_ti -> the columns compared (no geometry decoded), from a published GeoParquet file."""
    import pyarrow.parquet as pq

    names = pq.read_schema(parquet).names
    rows = pq.read_table(parquet, columns=[c for c in _READ if c in names]).to_pylist()
    return {r["id_ti"]: r for r in rows}


def _frame_rows(frame) -> dict[str, dict]:
    cols = [c for c in _READ if c in frame.columns]
    out = {}
    for values in zip(*(frame[c].tolist() for c in cols)):
        row = dict(zip(cols, values))
        if row.get("insee_communes") is not None:
            row["insee_communes"] = list(row["insee_communes"])
        out[row["id_ti"]] = row
    return out


def _sources(manifest: dict) -> dict[str, dict]:
    lock = manifest.get("lock") or {}
    out = {}
    for item in manifest.get("inputs", []):
        entry = lock.get(item.get("source"), {})
        out[item.get("source")] = {"sha256": item.get("sha256"), "release": item.get("release"),
                                   "cog": item.get("cog"), "date": entry.get("date"),
                                   "origin": item.get("origin"), "file": entry.get("file")}
    return out


def _source_changes(before: dict, after: dict) -> list[dict]:
    changed = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name) or {}, after.get(name) or {}
        if old.get("sha256") != new.get("sha256"):
            changed.append({"source": name, "old_sha256": old.get("sha256"), "new_sha256": new.get("sha256"),
                            "old_release": old.get("release"), "new_release": new.get("release"),
                            "old_cog": old.get("cog"), "new_cog": new.get("cog"),
                            "old_date": old.get("date"), "new_date": new.get("date")})
    return changed


LABEL = ("file", "cog", "release", "date")   # what a file's name or the API says of a release


def label_changes(before: dict, after: dict) -> list[dict]:
    """Sources read with the same content (sha256) under another label (file name, COG year,
    release, date): a label is a claim, its change is reported, never silently accepted."""
    changed = []
    for name in sorted(set(before) & set(after)):
        old, new = before[name], after[name]
        if old.get("sha256") and old.get("sha256") == new.get("sha256") and any(
                old.get(k) != new.get(k) for k in LABEL):
            changed.append({"source": name, "sha256": new.get("sha256"),
                            **{f"{w}_{k}": side.get(k) for k in LABEL for w, side in (("old", old), ("new", new))}})
    return changed


def _single(rows: dict[str, dict], column: str):
    values: set[Any] = {r.get(column) for r in rows.values() if r.get(column) is not None}
    return sorted(values)[0] if len(values) == 1 else sorted(values) or None


def compare(previous: dict | None, previous_rows: dict[str, dict] | None, manifest: dict,
            rows: dict[str, dict]) -> dict:
    """The changes report of ``manifest`` (its territories ``rows``) against the previous release."""
    report = {"build_id": manifest.get("build_id"), "phase": manifest.get("phase"),
              "territories_count": {"old": None, "new": len(rows)},
              "renamed_between_lists": (manifest.get("extra") or {}).get("renamed_between_lists", [])}
    if previous is None or previous_rows is None:
        report.update(first_release=True, previous_build_id=None,
                      note="first release of this phase: nothing to compare with")
        return report
    old_ids, new_ids = set(previous_rows), set(rows)
    both = sorted(old_ids & new_ids)
    communes, areas = [], []
    for tid in both:
        old, new = previous_rows[tid], rows[tid]
        before, after = set(old.get("insee_communes") or []), set(new.get("insee_communes") or [])
        if before != after:
            communes.append({"id_ti": tid, "lib_ti": new.get("lib_ti"), "entered": sorted(after - before),
                             "left": sorted(before - after)})
        if old.get("area_km2") is not None and new.get("area_km2") is not None:
            delta = round(float(new["area_km2"]) - float(old["area_km2"]), AREA_DIGITS)
            if delta:
                areas.append({"id_ti": tid, "old_km2": old["area_km2"], "new_km2": new["area_km2"],
                              "change_km2": delta,
                              "change_pct": round(100 * delta / float(old["area_km2"]), 3)
                              if old["area_km2"] else None})
    old_columns = [c.get("name") for c in previous.get("columns", [])]
    new_columns = [c.get("name") for c in manifest.get("columns", [])]
    report.update(
        first_release=False,
        previous_build_id=previous.get("build_id"),
        previous_built_at=previous.get("built_at"),
        territories_count={"old": len(previous_rows), "new": len(rows)},
        vintages={c: {"old": _single(previous_rows, c), "new": _single(rows, c)}
                  for c in ("list_cog", "boundary_cog")},
        sources=_source_changes(_sources(previous), _sources(manifest)),
        labels_changed=label_changes(_sources(previous), _sources(manifest)),
        territories_added=[{"id_ti": t, "lib_ti": rows[t].get("lib_ti")} for t in sorted(new_ids - old_ids)],
        territories_removed=[{"id_ti": t, "lib_ti": previous_rows[t].get("lib_ti")}
                             for t in sorted(old_ids - new_ids)],
        territories_renamed=[{"id_ti": t, "old": previous_rows[t].get("lib_ti"), "new": rows[t].get("lib_ti")}
                             for t in both if previous_rows[t].get("lib_ti") != rows[t].get("lib_ti")],
        communes=communes,
        areas=areas,
        columns={"added": [c for c in new_columns if c not in old_columns],
                 "removed": [c for c in old_columns if c not in new_columns]},
    )
    return report


def _short(sha: str | None) -> str:
    return (sha or "none")[:12]


def render_markdown(report: dict, limit: int = 50) -> str:
    """CHANGES.md: the report for people (lists cut at ``limit`` items; changes.json has them all)."""
    title = f"# Changes in release {report['build_id']} (phase {report['phase']})\n\n"
    if report.get("first_release"):
        return title + (f"First release of this phase ({report['territories_count']['new']} territories): "
                        "nothing to compare with.\n")
    count = report["territories_count"]
    lines = [title + f"Compared with release {report['previous_build_id']} (built {report['previous_built_at']}).",
             "", f"- territories: {count['old']} -> {count['new']} ({len(report['territories_added'])} added, "
             f"{len(report['territories_removed'])} removed, {len(report['territories_renamed'])} renamed)"]
    for key, item in report["vintages"].items():
        if item["old"] != item["new"]:
            lines.append(f"- {key}: {item['old']} -> {item['new']}")
    lines.append(f"- territories whose communes changed: {len(report['communes'])}; "
                 f"whose area changed: {len(report['areas'])}")
    if report["columns"]["added"] or report["columns"]["removed"]:
        lines.append(f"- columns added: {', '.join(report['columns']['added']) or 'none'}; "
                     f"removed: {', '.join(report['columns']['removed']) or 'none'}")

    def section(name: str, items: list[str]) -> None:
        if items:
            lines.extend(["", f"## {name}", "", *items[:limit]])
            if len(items) > limit:
                lines.append(f"- ... and {len(items) - limit} more (see {CHANGES_JSON})")

    section("Sources", [f"- {s['source']}: release {s['old_release']} -> {s['new_release']} "
                        f"(COG {s['old_cog']} -> {s['new_cog']}), sha256 {_short(s['old_sha256'])} -> "
                        f"{_short(s['new_sha256'])}" for s in report["sources"]])
    section("Territories added", [f"- {t['id_ti']} {t['lib_ti']}" for t in report["territories_added"]])
    section("Territories removed", [f"- {t['id_ti']} {t['lib_ti']}" for t in report["territories_removed"]])
    section("Territories renamed", [f"- {t['id_ti']}: {t['old']!r} -> {t['new']!r}"
                                    for t in report["territories_renamed"]])
    section("Sources relabelled (same content)", [
        f"- {s['source']}: file {s['old_file']} -> {s['new_file']}, COG {s['old_cog']} -> {s['new_cog']}, "
        f"release {s['old_release']} -> {s['new_release']}" for s in report.get("labels_changed", [])])
    section("Renamed between the lists (the most recent list's name is published)", [
        f"- {t['id_ti']}: {t['old']!r} ({t['old_list']}) -> {t['new']!r} ({t['new_list']})"
        for t in report.get("renamed_between_lists", [])])
    section("Communes entered (+) or left (-)", [
        f"- {c['id_ti']} {c['lib_ti']}: " + ", ".join([f"+{x}" for x in c["entered"]] + [f"-{x}" for x in c["left"]])
        for c in report["communes"]])
    section("Areas (km²)", [f"- {a['id_ti']}: {a['old_km2']} -> {a['new_km2']} ({a['change_km2']:+}, "
                            f"{a['change_pct']:+}%)" for a in report["areas"]])
    return "\n".join(lines) + "\n"


def read_previous(stable: Path, manifest_name: str, parquet_name: str) -> tuple[dict | None, dict | None]:
    """The previous stable manifest and territories, or (None, None) when there is none (or it is unreadable:
    then the report says it is a first release, and the log why)."""
    manifest_path, parquet = Path(stable) / manifest_name, Path(stable) / parquet_name
    if not manifest_path.is_file() or not parquet.is_file():
        return None, None
    try:
        return read_manifest(manifest_path), read_territories(parquet)
    except Exception as err:   # noqa: BLE001 - a report must never stop a publish
        log.warning("previous release unreadable (%s: %s): changes reported as a first release",
                    type(err).__name__, err)
        return None, None


def write_changes(folder: Path, report: dict) -> list[str]:
    """Write changes.json and CHANGES.md into ``folder``; return their file names."""
    text = dumps(report)
    (Path(folder) / CHANGES_JSON).write_text(text, encoding="utf-8")
    (Path(folder) / CHANGES_MD).write_text(render_markdown(report), encoding="utf-8")
    return [CHANGES_JSON, CHANGES_MD]


def changes_markdown(output_dir: Path, phase: str) -> str:
    """The published CHANGES.md of a phase ('' when there is none), e.g. for run metadata."""

    path = stable_dir(Path(output_dir), phase) / CHANGES_MD
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def report_for(stable: Path, manifest: dict, frame, manifest_name: str, parquet_name: str) -> dict:
    """The report of a release about to be published (``frame``: its territories)."""
    previous, previous_rows = read_previous(stable, manifest_name, parquet_name)
    return compare(previous, previous_rows, manifest, _frame_rows(frame))
