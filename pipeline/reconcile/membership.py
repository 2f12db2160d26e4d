"""Which communes (in the boundary vintage) make each territory, and what had to be reconciled.

Inputs are the list by commune and/or by groupement (codes of the list's COG year), the admin
reference of that year, the INSEE change history and the boundary codes. The most recent list
release defines the perimeter; where the lists disagree it is reported. Every listed code ends
matched, reconciled, or in ``Membership.errors`` (which fails a blocking check); errors name the
territory, the code and the line (and file) of the list. A territory left without any valid
commune is an error and is left out of ``Membership.territories``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from ..sources.csv_tables import in_set
from ..sources.names import moved_names, names_of, renames
from ..sources.readers import AdminRef, ListProblem
from . import vintages


@dataclass
class Membership:
    members: pd.DataFrame      # id_ti, insee_com (boundary COG), codes_list (list COG), status
    territories: pd.DataFrame  # id_ti, lib_ti, siren_groupements (list), perimeter_source; one row
                               # per territory with at least one member commune
    list_cog: int
    boundary_cog: int
    reconciled: list[dict] = field(default_factory=list)    # id_ti, code_list, codes_boundary, how
    absorbed_outside: list[dict] = field(default_factory=list)  # id_ti, successor, absorbed
    shared_communes: list[dict] = field(default_factory=list)   # insee_com, id_ti list
    disagreements: list[dict] = field(default_factory=list)     # id_ti, only_communes, only_groupements
    errors: list[str] = field(default_factory=list)
    listed_codes: int = 0
    listed_territories: list[str] = field(default_factory=list)  # every territory id of the lists:
                                                                  # each must be built (territory_count)
    renamed_between_lists: list[dict] = field(default_factory=list)  # id_ti, old, new, old_list, new_list
    names_moved_between_lists: list[str] = field(default_factory=list)  # for the change guard

    def summary(self) -> dict:
        st = self.members["status"].value_counts().to_dict() if len(self.members) else {}
        return {
            "territories": int(self.territories["id_ti"].nunique()),
            "listed_codes": self.listed_codes,
            "member_communes": len(self.members),
            "matched": int(st.get("matched", 0)),
            "reconciled": int(st.get("reconciled", 0)),
            "reconciled_codes": len(self.reconciled),
            "absorbed_outside": len(self.absorbed_outside),
            "shared_communes": len(self.shared_communes),
            "list_disagreements": len(self.disagreements),
            "renamed_between_lists": len(self.renamed_between_lists),
            "errors": len(self.errors),
        }


def _where(line: object, source: object) -> str:
    return f"line {line} of {source}" if source else f"line {line}"


def expand_groupements(groupements: pd.DataFrame, admin: AdminRef) -> tuple[pd.DataFrame, list[str]]:
    """(id_ti, siren) -> (id_ti, insee_com, siren_groupement) via EPCI/EPT members or commune SIREN."""
    source = groupements.attrs.get("source")
    by_grp = groupements.merge(admin.members[["siren_groupement", "insee_com"]], on="siren_groupement",
                               how="left")
    found = by_grp.dropna(subset=["insee_com"])
    rest = by_grp[by_grp["insee_com"].isna()].drop(columns="insee_com")
    com_siren = admin.communes[["siren", "code"]].dropna(subset=["siren"]).rename(
        columns={"siren": "siren_groupement", "code": "insee_com"})
    as_commune = rest.merge(com_siren, on="siren_groupement", how="left")
    unknown = as_commune[as_commune["insee_com"].isna()]
    errors = [
        f"{tid}: SIREN {siren} ({_where(line, source)}) is neither an EPCI/EPT nor a commune of COG {admin.cog}"
        for tid, siren, line in zip(unknown["id_ti"], unknown["siren_groupement"], unknown["_line"])
    ]
    out = pd.concat([found, as_commune.dropna(subset=["insee_com"])], ignore_index=True)
    return out[["id_ti", "insee_com", "siren_groupement", "_line"]], errors


def _codes_by_id(frame: pd.DataFrame, column: str) -> dict[str, set]:
    """The set of values of ``column`` for each territory id (missing ids left out, as groupby does)."""
    out: dict[str, set] = defaultdict(set)
    for tid, value in zip(frame["id_ti"].tolist(), frame[column].tolist()):
        if type(tid) is str or not pd.isna(tid):
            out[tid].add(value)
    return out


def _release_key(release: str | None) -> str:
    return release if release and release[:4].isdigit() else ""


def list_order(releases: dict[str, str | None]) -> list[str]:
    """List kinds ("communes", "groupements") by precedence: the most recent release defines the
    perimeter (ties: the list by commune); ``releases`` holds the kinds read."""
    return sorted(releases, key=lambda k: (_release_key(releases[k]), k == "communes"), reverse=True)


def _list_frames(communes_list: pd.DataFrame | None, groupements_list: pd.DataFrame | None,
                 admin: AdminRef) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Each list as (id_ti, insee_com, siren_groupement, _line, _source) rows; groupements expanded."""
    frames: dict[str, pd.DataFrame] = {}
    errors: list[str] = []
    if communes_list is not None:
        frames["communes"] = communes_list[["id_ti", "insee_com", "_line"]].assign(
            siren_groupement=pd.Series(pd.NA, index=communes_list.index, dtype="object"),
            _source=communes_list.attrs.get("source"))
    if groupements_list is not None:
        expanded, errors = expand_groupements(groupements_list, admin)
        frames["groupements"] = expanded.assign(_source=groupements_list.attrs.get("source"))
    if not frames:
        raise ValueError("build_membership needs a list by commune or by groupement")
    return frames, errors


def _disagreements(frames: dict[str, pd.DataFrame]) -> list[dict]:
    """Per territory, the codes only one of the two lists has (a report, never an error)."""
    if len(frames) != 2:
        return []
    # A territory's two sets of codes differ exactly where the (territory, code) pairs do.
    pairs = [set(zip(f["id_ti"].tolist(), f["insee_com"].tolist()))
             for f in (frames["communes"], frames["groupements"])]
    only: list[defaultdict[str, list[str]]] = [defaultdict(list), defaultdict(list)]
    for side, extra in enumerate((pairs[0] - pairs[1], pairs[1] - pairs[0])):
        for tid, code in extra:
            if type(tid) is str or not pd.isna(tid):   # as groupby, missing ids left out
                only[side][tid].append(code)
    return [{"id_ti": tid, "only_in_communes_list": sorted(only[0].get(tid, [])),
             "only_in_groupements_list": sorted(only[1].get(tid, []))}
            for tid in sorted(only[0].keys() | only[1].keys())]


def _perimeters(frames: dict[str, pd.DataFrame], order: list[str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """The rows defining each territory: from the first list of ``order`` that has it."""
    chosen = frames[order[0]]
    source_of = dict.fromkeys(chosen["id_ti"].unique(), order[0])
    for other in order[1:]:  # territories missing from the primary list come from the other one
        extra = frames[other][~frames[other]["id_ti"].isin(source_of)]
        for tid in extra["id_ti"].unique():
            source_of[tid] = other
        chosen = pd.concat([chosen, extra], ignore_index=True)
    return chosen, source_of


def validate_lists(frames: dict[str, pd.DataFrame], source_of: dict[str, str], admin: AdminRef,
                   changes: pd.DataFrame, boundary_codes: set[str], boundary_cog: int,
                   id_pattern: str | None) -> list[str]:
    """Errors for codes no vintage knows, and territory ids of the wrong shape, in every list read.

    The rows that define a territory's perimeter are checked again, code by code, when they are
    mapped to the boundary vintage (:func:`_place`); here: the other list's rows, which are only
    compared, so that a bad code there is not a mere disagreement. (Groupement SIRENs are checked by
    :func:`expand_groupements`, whichever list defines the perimeter.)
    """
    errors = []
    if id_pattern:
        shape = re.compile(id_pattern)
        for frame in frames.values():
            first = frame.drop_duplicates("id_ti")
            for tid, line, src in zip(first["id_ti"], first["_line"], first["_source"]):
                if isinstance(tid, str) and not shape.fullmatch(tid):
                    errors.append(f"{tid}: territory id {tid!r} ({_where(line, src)}) does not have the shape "
                                  f"{id_pattern}")
    other = frames.get("communes")
    if other is None:
        return errors
    other = other[other["id_ti"].map(source_of).ne("communes")]
    history = set(changes["COM_AV"].tolist()) | set(changes["COM_AP"].tolist())
    unknown = other[~in_set(other["insee_com"], admin.codes | boundary_codes | history)]
    errors += [f"{tid}: commune {code} ({_where(line, src)}) exists in no COG vintage: not a COG {admin.cog} code, "
               f"not in the COG {boundary_cog} boundaries, never in the INSEE change history"
               for tid, code, line, src in zip(unknown["id_ti"], unknown["insee_com"], unknown["_line"],
                                               unknown["_source"])]
    return errors


def _code_mapping(listed: set[str], admin: AdminRef, changes: pd.DataFrame, boundary_codes: set[str],
                  boundary_cog: int) -> tuple[dict[str, set[str]], dict[str, str], dict[str, set[str]]]:
    """Listed code -> its codes in the boundary COG (only codes that move, or are unknown to the
    list year), how each unknown code was found, and the predecessors of every moved code."""
    known = admin.codes
    # One walk over every code of the list year: the listed codes' successors (forward: not
    # restricted to the boundaries, so a successor missing from them is reported) and, below, the
    # predecessors. Only the codes that do not map to themselves alone are returned.
    if admin.cog <= boundary_cog:
        moved = vintages.forward_moved(changes, known, admin.cog, boundary_cog)
    else:
        moved = vintages.code_mapping_moved(changes, known, admin.cog, boundary_cog, boundary_codes)
    # Listed code -> its codes in the boundary COG; a code of the list year left out maps to itself.
    mapping = {c: t for c, t in moved.items() if c in listed}
    how_of: dict[str, str] = {}
    unknown = sorted(listed - known)
    history = vintages.from_history(changes, set(unknown) - boundary_codes, boundary_cog) if unknown else {}
    for code in unknown:
        if code in boundary_codes:   # a newer code, or an old one restored since: its own polygon
            mapping[code] = {code}
            how_of[code] = f"not a COG {admin.cog} code, found as is in the boundaries"
        elif history.get(code, {code}) != {code}:
            mapping[code] = history[code]
            how_of[code] = "old or delegated code"
        else:
            mapping[code] = set()
    # All codes of the list year, to find successors that absorbed communes outside any territory.
    preds = vintages.predecessors({c: t & boundary_codes for c, t in moved.items() if t != {c}})
    return mapping, how_of, preds


@dataclass
class _Placed:
    columns: dict[str, list]     # id_ti, insee_com, codes_list, status: one entry per member
    reconciled: list[dict]
    errors: list[str]
    territories: set[str]        # with at least one member
    rows: int                    # distinct (territory, listed code)


# The inner loop runs once per listed code (18,000 on the real list): plain dicts and lists, no
# pandas per row, and the error locations looked up only when there is an error.
def _place(chosen: pd.DataFrame, mapping: dict[str, set[str]], how_of: dict[str, str], admin: AdminRef,
           boundary_codes: set[str], boundary_cog: int) -> _Placed:
    """Every (territory, listed code) onto its boundary communes, or an error naming it."""
    known = admin.codes
    reconciled, errors = [], []
    first = chosen.sort_values("_line", kind="stable").drop_duplicates(["id_ti", "insee_com"])
    first_ids, first_codes = first["id_ti"].tolist(), first["insee_com"].tolist()
    located: dict[tuple[str, str], tuple] = {}

    def where(key: tuple[str, str]) -> str:
        if not located:   # built for the first error only
            located.update({(t, c): (line, src) for t, c, line, src in
                            zip(first_ids, first_codes, first["_line"].tolist(), first["_source"].tolist())})
        return _where(*located[key])

    # territory -> boundary code -> [list codes, status] ("matched" unless one of the list codes was
    # reconciled), or None for the common case: the boundary code itself, matched.
    merged: dict[str, dict[str, list | None]] = defaultdict(dict)
    for tid, code in zip(first_ids, first_codes):
        raw = mapping.get(code)
        if raw is None:   # a code of the list year that maps to itself
            if code in boundary_codes:   # the common case
                entry = merged[tid].setdefault(code, None)
                if entry is not None:   # the successor of another listed code too
                    entry[0].append(code)
                continue
            raw = {code}
        targets = {t for t in raw if t in boundary_codes}
        missing = sorted(raw - targets)
        if not raw:
            errors.append(f"{tid}: commune {code} ({where((tid, code))}) is not a COG {admin.cog} commune "
                          f"code and has no successor in the INSEE change history")
            continue
        if missing:
            what = "has" if raw == {code} else f"maps to {', '.join(sorted(raw))} of which"
            errors.append(f"{tid}: commune {code} ({where((tid, code))}) {what} no polygon in the "
                          f"COG {boundary_cog} boundaries: {', '.join(missing)}")
            if not targets:
                continue
        how = "matched" if targets == {code} and code in known else "reconciled"
        if how == "reconciled":
            reconciled.append({"id_ti": tid, "code_list": code, "codes_boundary": sorted(targets),
                               "how": how_of.get(code) or
                               ("split" if len(targets) > 1 else "merger or code change")})
        by_code = merged[tid]
        for t in targets:
            entry = by_code.get(t)
            if entry is None:
                entry = by_code[t] = [[t] if t in by_code else [], "matched"]
            entry[0].append(code)
            if how == "reconciled":
                entry[1] = "reconciled"
    return _Placed(_member_columns(merged), reconciled, errors, set(merged), len(first))


def _member_columns(merged: dict[str, dict[str, list | None]]) -> dict[str, list]:
    """The members as columns, sorted by (territory, boundary code), from :func:`_place`'s entries."""
    columns: dict[str, list] = {"id_ti": [], "insee_com": [], "codes_list": [], "status": []}
    for tid in sorted(merged):
        by_code = merged[tid]
        targets = sorted(by_code)
        entries = [by_code[t] for t in targets]
        columns["id_ti"] += [tid] * len(targets)
        columns["insee_com"] += targets
        columns["codes_list"] += [[t] if e is None else e[0] if len(e[0]) == 1 else sorted(set(e[0]))
                                  for t, e in zip(targets, entries)]
        columns["status"] += ["matched" if e is None else e[1] for e in entries]
    return columns


def _absorbed_and_shared(placed: _Placed, members: pd.DataFrame, preds: dict[str, set[str]],
                         listed: set[str]) -> tuple[list[dict], list[dict]]:
    """Successors that absorbed communes listed nowhere; communes in several territories."""
    columns = placed.columns
    absorbed = []
    hits = preds.keys() & set(columns["insee_com"])
    for tid, succ in zip(columns["id_ti"], columns["insee_com"]):
        if succ in hits:
            outside = sorted(p for p in preds[succ] if p not in listed)
            if outside:
                absorbed.append({"id_ti": tid, "successor": succ, "absorbed": outside})
    shared = []
    if len(set(columns["insee_com"])) < len(columns["insee_com"]):   # a commune in several territories
        multi = members[members["insee_com"].duplicated(keep=False)]
        shared = [{"insee_com": c, "id_ti": sorted(g)} for c, g in multi.groupby("insee_com")["id_ti"]]
    return absorbed, shared


def _territory_names(communes_list: pd.DataFrame | None, groupements_list: pd.DataFrame | None,
                     order: list[str], source_of: dict[str, str]) -> tuple[dict[str, str], list[dict], list[str]]:
    """Territory names (one per id in each list): from the list that defines the perimeter, else
    from the other one; with the renames between the lists and the names moving between ids."""
    names_in = {"communes": names_of(communes_list), "groupements": names_of(groupements_list)}
    renamed: list[dict] = []
    moved: list[str] = []
    if len(order) == 2:
        older, newer = names_in[order[1]], names_in[order[0]]
        renamed = [{**r, "old_list": order[1], "new_list": order[0]} for r in renames(older, newer)]
        moved = moved_names(older, newer)
    names = {tid: names_in[src].get(tid) or next((n[tid] for n in names_in.values() if tid in n), tid)
             for tid, src in source_of.items()}
    return names, renamed, moved


def build_membership(*, communes_list: pd.DataFrame | None, groupements_list: pd.DataFrame | None,
                     admin: AdminRef, changes: pd.DataFrame, boundary_codes: set[str],
                     boundary_cog: int, communes_release: str | None = None,
                     groupements_release: str | None = None,
                     list_problems: Sequence[ListProblem] = (), id_pattern: str | None = None) -> Membership:
    """Reconcile the list(s) into one row per (territory, boundary commune).

    Steps: the lists as rows (:func:`_list_frames`), the list defining each territory
    (:func:`list_order`, :func:`_perimeters`), the other list's codes validated
    (:func:`validate_lists`) and compared (:func:`_disagreements`), the codes mapped to the
    boundary vintage (:func:`_code_mapping`) and placed (:func:`_place`).
    """
    errors = [str(p) for p in list_problems]
    frames, grp_errors = _list_frames(communes_list, groupements_list, admin)
    errors += grp_errors
    releases = {"communes": communes_release, "groupements": groupements_release}
    order = list_order({k: releases[k] for k in frames})
    disagreements = _disagreements(frames)
    chosen, source_of = _perimeters(frames, order)
    errors += validate_lists(frames, source_of, admin, changes, boundary_codes, boundary_cog, id_pattern)

    names, renamed, moved = _territory_names(communes_list, groupements_list, order, source_of)
    sirens: dict[str, list[str]] = {}
    if groupements_list is not None:
        sirens = {tid: sorted(s) for tid, s in _codes_by_id(groupements_list, "siren_groupement").items()}

    listed = set(chosen["insee_com"].tolist())
    mapping, how_of, preds = _code_mapping(listed, admin, changes, boundary_codes, boundary_cog)
    placed = _place(chosen, mapping, how_of, admin, boundary_codes, boundary_cog)
    errors += placed.errors
    columns = placed.columns
    members = pd.DataFrame(columns) if columns["id_ti"] else pd.DataFrame([], columns=list(columns))
    absorbed, shared_list = _absorbed_and_shared(placed, members, preds, listed)

    # A territory without any valid commune has no perimeter: it is reported and left out of
    # ``territories`` (so the territory count check names the shortfall too).
    chosen_ids = set(chosen["id_ti"].tolist())
    errors += [f"{t}: no valid commune" for t in sorted(chosen_ids - placed.territories)]
    tids = sorted(placed.territories)
    # Territories whose every row was unusable (reported in list_problems) are named too.
    dropped = sorted({p.id_ti for p in list_problems} - chosen_ids - {""})
    errors += [f"{t}: no valid commune (every row of the list is invalid)" for t in dropped]
    territories = pd.DataFrame({
        "id_ti": tids,
        "lib_ti": [names.get(t, t) for t in tids],
        "siren_groupements": [list(sirens.get(t, [])) for t in tids],
        "perimeter_source": [source_of[t] for t in tids],
    })
    listed_ids = sorted({t for t in chosen_ids | set(dropped) if isinstance(t, str)})
    return Membership(members=members, territories=territories, list_cog=admin.cog,
                      boundary_cog=boundary_cog, reconciled=placed.reconciled, absorbed_outside=absorbed,
                      shared_communes=shared_list, disagreements=disagreements, errors=errors,
                      listed_codes=placed.rows,   # one row per distinct (territory, code)
                      listed_territories=listed_ids, renamed_between_lists=renamed,
                      names_moved_between_lists=moved)
