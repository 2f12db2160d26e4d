"""The change guard: a build that differs implausibly from the published release is not published.

Every blocking check of a build can pass on wrong inputs: a territory list cut at a line boundary
still parses, and its missing territories are filled in from the other list. So before publishing,
the new territories are compared with the ones published (the stable GeoParquet the manifest
names); past these thresholds the build stops, listing what would change:

* a territory published before is missing (:data:`MAX_TERRITORIES_LOST`);
* a territory loses more than :data:`MAX_MEMBER_LOSS` of its communes or of its groupements, or
  loses all its groupements;
* a territory's area changes by more than :data:`MAX_AREA_CHANGE`;
* (with or without a previous release) a territory is missing from the phase's most recent list
  and its perimeter was taken from the older list (:data:`MAX_LIST_GAPS`);
* a territory name moves from one id to another (two names swapped, a name given to another
  territory): against the published release, and between the phase's two lists
  (:data:`MAX_NAMES_MOVED`). A territory renamed under its own id is not stopped: it is reported;
* a territory's status flips between new in 2023-2027 and continuing (``is_new``,
  :data:`MAX_STATUS_FLIPS`): the 2018-2022 list is history, so a flip means that list (or a
  perimeter) changed, as a damaged copy of it would do silently otherwise.

A change that is real is accepted on purpose for one build with ``--accept-changes`` or
``TI_ACCEPT_CHANGES=1``; the report is then written in the manifest (``extra.change_guard``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from .. import documents
from ..checksums import sha256_file
from ..errors import CheckFailedError
from ..sources.names import moved_names

log = logging.getLogger(__name__)

MAX_TERRITORIES_LOST = 0        # any territory lost stops the build
MAX_MEMBER_LOSS = 0.10          # share of a territory's communes (or groupements) lost
MAX_AREA_CHANGE = 0.10          # relative change of a territory's area
MAX_LIST_GAPS = 0               # territories missing from the most recent list
MAX_NAMES_MOVED = 0             # names that move from one territory id to another
MAX_STATUS_FLIPS = 0            # territories whose is_new flips (new <-> continuing)
SHOWN_IDS = 10                  # ids listed per kind of change in the message
ACCEPT_HINT = "if these changes are intended, publish this build with --accept-changes (or TI_ACCEPT_CHANGES=1)"

_COLUMNS = ["id_ti", "lib_ti", "insee_communes", "siren_groupements", "area_km2", "is_new"]


def previous_territories(parquet: Path) -> pd.DataFrame | None:
    """The published territories (only the compared columns), None when there is none or it is unreadable."""
    import pyarrow.parquet as pq

    if not Path(parquet).is_file():
        return None
    try:
        names = pq.read_schema(parquet).names
        return pq.read_table(parquet, columns=[c for c in _COLUMNS if c in names]).to_pandas()
    except Exception as err:  # noqa: BLE001 - an unreadable previous file cannot be compared
        log.warning("change guard: cannot read the published %s (%s); nothing to compare with", parquet, err)
        return None


def _ids(values) -> str:
    values = sorted(values)
    more = f" and {len(values) - SHOWN_IDS} more" if len(values) > SHOWN_IDS else ""
    return ", ".join(values[:SHOWN_IDS]) + more


def _as_set(value) -> set:
    return set() if value is None or (not hasattr(value, "__len__") and pd.isna(value)) else set(value)


def _lost_share(before: set, after: set) -> float:
    return len(before - after) / len(before) if before else 0.0


def _names(frame: pd.DataFrame) -> dict[str, str]:
    if "lib_ti" not in frame:
        return {}
    return {str(t): str(n) for t, n in frame["lib_ti"].items() if isinstance(n, str) and n}


def _status_flips(old: pd.DataFrame, new: pd.DataFrame) -> list[str]:
    """Territories (in both) whose ``is_new`` differs, both known (null: not compared)."""
    if "is_new" not in old or "is_new" not in new:
        return []
    both = old[["is_new"]].add_suffix("_old").join(new[["is_new"]].add_suffix("_new"), how="inner").dropna()
    flipped = both[both["is_new_old"].astype(bool) != both["is_new_new"].astype(bool)]
    word = {True: "new", False: "continuing"}
    return [f"{tid} ({word[bool(o)]} -> {word[bool(n)]})"
            for tid, o, n in zip(flipped.index, flipped["is_new_old"], flipped["is_new_new"])]


def compare(previous: pd.DataFrame, current: pd.DataFrame) -> dict[str, list]:
    """What changed past the thresholds: {kind: [item, ...]} (empty lists when plausible)."""
    old = previous.set_index("id_ti")
    new = current.set_index("id_ti")
    lost = sorted(set(old.index) - set(new.index))
    members, groupements, areas = [], [], []
    for tid in sorted(set(old.index) & set(new.index)):
        o, n = old.loc[tid], new.loc[tid]
        communes_o, communes_n = _as_set(o["insee_communes"]), _as_set(n["insee_communes"])
        if _lost_share(communes_o, communes_n) > MAX_MEMBER_LOSS:
            members.append(f"{tid} ({len(communes_o - communes_n)} of {len(communes_o)} communes)")
        grp_o, grp_n = _as_set(o["siren_groupements"]), _as_set(n["siren_groupements"])
        if grp_o and (not grp_n or _lost_share(grp_o, grp_n) > MAX_MEMBER_LOSS):
            groupements.append(f"{tid} ({len(grp_o - grp_n)} of {len(grp_o)} groupements)")
        a_o, a_n = float(o["area_km2"]), float(n["area_km2"])
        if a_o > 0 and abs(a_n - a_o) / a_o > MAX_AREA_CHANGE:
            areas.append(f"{tid} ({a_o:.1f} -> {a_n:.1f} km2)")
    names = moved_names(_names(old), _names(new))
    flips = _status_flips(old, new)
    return {"territories lost": lost if len(lost) > MAX_TERRITORIES_LOST else [],
            "names moved between territories": names if len(names) > MAX_NAMES_MOVED else [],
            "new/continuing status flipped": flips if len(flips) > MAX_STATUS_FLIPS else [],
            "communes lost": members, "groupements lost": groupements, "area changed": areas,
            "territories added": sorted(set(new.index) - set(old.index))}


def list_gaps(membership, releases: dict[str, str | None]) -> list[str]:
    """Territories missing from the phase's most recent list (their perimeter came from the other
    one). ``releases`` maps each list of the phase (communes, groupements) to its release date."""
    if len(releases) < 2 or "perimeter_source" not in membership.territories:
        return []
    newest = max(releases, key=lambda k: (str(releases[k]), k == "communes"))
    frame = membership.territories
    return sorted(frame.loc[frame["perimeter_source"] != newest, "id_ti"].astype(str))


def check_changes(current: pd.DataFrame, published: Path | None, gaps: list[str], accept: bool,
                  phase: str, moved_between_lists: list[str] | None = None) -> dict:
    """Compare with the published territories (``published``: their GeoParquet, None for a first
    build); CheckFailedError past the thresholds unless ``accept``. ``moved_between_lists``: names
    that moved from one id to another between the phase's two lists
    (:func:`pipeline.sources.names.moved_names`).

    Returns the report (kinds of change with their items, and whether it was accepted).
    """
    previous = previous_territories(published) if published is not None else None
    found = compare(previous, current[[c for c in _COLUMNS if c in current]]) if previous is not None else {}
    found["missing from the most recent list"] = gaps if len(gaps) > MAX_LIST_GAPS else []
    between = list(moved_between_lists or [])
    found["names moved between the lists"] = between if len(between) > MAX_NAMES_MOVED else []
    blocking = {k: v for k, v in found.items() if v and k != "territories added"}
    report = {"compared_with": str(published) if previous is not None else None,
              "changes": {k: v for k, v in found.items() if v}, "accepted": bool(blocking and accept)}
    if blocking and not accept:
        listed = "; ".join(f"{len(v)} {k}: {_ids(v)}" for k, v in blocking.items())
        raise CheckFailedError(f"{phase}: change guard: the build differs implausibly from the published "
                               f"release, nothing published: {listed}; {ACCEPT_HINT}")
    if blocking:
        log.warning("change guard: accepted on purpose: %s", "; ".join(f"{len(v)} {k}" for k, v in blocking.items()))
    return report


def published_parquet(output_dir: Path, phase: str) -> Path | None:
    """The published GeoParquet of ``phase`` as its manifest describes it: the stable file, else
    (a set left mixed by a killed publish) the release copy the manifest names; None without one."""
    from .layout import stable_paths
    from .manifest import read_manifest

    paths = stable_paths(output_dir, phase)
    try:
        manifest = read_manifest(paths["manifest"])
    except (OSError, ValueError):
        return None
    entry: dict = next((o for o in manifest.get("outputs", []) if o.get("name") == "geoparquet"), {})
    for rel in (entry.get("path"), entry.get("release_path")):
        try:   # a path out of the output folder is never read
            candidate = documents.confined(Path(output_dir), rel, str(paths["manifest"]))
        except ValueError:
            continue
        if candidate.is_file() and sha256_file(candidate) == entry.get("sha256"):
            return candidate
    return None


def guard_build(result, settings) -> dict:
    """:func:`check_changes` of a core ``BuildResult`` against the published files of its phase."""
    from ..sources.catalog import load_catalog

    spec = load_catalog(settings).phases.get(result.phase)
    release_of = {i.get("source"): i.get("release") for i in result.inputs}
    releases = {kind: release_of.get(name) for kind, name in
                (("communes", getattr(spec, "communes", None)), ("groupements", getattr(spec, "groupements", None)))
                if name and name in release_of}
    gaps = list_gaps(result.membership, releases)
    parquet = published_parquet(Path(settings.output_dir), result.phase)
    return check_changes(result.territories, parquet, gaps, bool(getattr(settings, "accept_changes", False)),
                         result.phase, getattr(result.membership, "names_moved_between_lists", []))
