"""Which communes (in the boundary vintage) make each territory, and what had to be reconciled.

Inputs are the list by commune and/or by groupement (codes of the list's COG year), the admin
reference of that year, the INSEE change history and the boundary codes. The most recent list
release defines the perimeter; where the lists disagree it is reported. Every listed code ends
matched, reconciled, or in ``Membership.errors`` (which fails a blocking check); errors name the
territory, the code and the line (and file) of the list. A territory left without any valid
commune is an error and is left out of ``Membership.territories``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from . import vintages
from .sources import AdminRef, ListProblem
from .tables import clean_text


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

    def summary(self) -> dict:
        st = self.members["status"].value_counts().to_dict() if len(self.members) else {}
        return {
            "territories": int(self.territories["id_ti"].nunique()),
            "listed_codes": self.listed_codes,
            "member_communes": int(len(self.members)),
            "matched": int(st.get("matched", 0)),
            "reconciled": int(st.get("reconciled", 0)),
            "reconciled_codes": len(self.reconciled),
            "absorbed_outside": len(self.absorbed_outside),
            "shared_communes": len(self.shared_communes),
            "list_disagreements": len(self.disagreements),
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
    com_siren = admin.communes.dropna(subset=["siren"])[["siren", "code"]].rename(
        columns={"siren": "siren_groupement", "code": "insee_com"})
    as_commune = rest.merge(com_siren, on="siren_groupement", how="left")
    unknown = as_commune[as_commune["insee_com"].isna()]
    errors = [
        f"{tid}: SIREN {siren} ({_where(line, source)}) is neither an EPCI/EPT nor a commune of COG {admin.cog}"
        for tid, siren, line in zip(unknown["id_ti"], unknown["siren_groupement"], unknown["_line"])
    ]
    out = pd.concat([found, as_commune.dropna(subset=["insee_com"])], ignore_index=True)
    return out[["id_ti", "insee_com", "siren_groupement", "_line"]], errors


def _names(frame: pd.DataFrame | None) -> dict[str, str]:
    """First non-empty territory name per id in a list (whitespace cleaned)."""
    if frame is None or "lib_ti" not in frame:
        return {}
    first = frame.dropna(subset=["lib_ti"]).groupby("id_ti")["lib_ti"].first()
    return {tid: clean_text(lib) for tid, lib in first.items() if lib}


def _release_key(release: str | None) -> str:
    return release if release and release[:4].isdigit() else ""


def build_membership(*, communes_list: pd.DataFrame | None, groupements_list: pd.DataFrame | None,
                     admin: AdminRef, changes: pd.DataFrame, boundary_codes: set[str],
                     boundary_cog: int, communes_release: str | None = None,
                     groupements_release: str | None = None,
                     list_problems: list[ListProblem] = ()) -> Membership:
    """Reconcile the list(s) into one row per (territory, boundary commune)."""
    errors = [str(p) for p in list_problems]
    frames = {}
    if communes_list is not None:
        frames["communes"] = communes_list[["id_ti", "insee_com", "_line"]].assign(
            siren_groupement=pd.NA, _source=communes_list.attrs.get("source"))
    if groupements_list is not None:
        expanded, grp_errors = expand_groupements(groupements_list, admin)
        errors += grp_errors
        frames["groupements"] = expanded.assign(_source=groupements_list.attrs.get("source"))
    if not frames:
        raise ValueError("build_membership needs a list by commune or by groupement")

    # Which list defines each territory's perimeter: the most recent release; ties -> communes.
    order = sorted(frames, key=lambda k: (_release_key(communes_release if k == "communes" else groupements_release),
                                          k == "communes"), reverse=True)
    primary = order[0]
    disagreements = []
    if len(frames) == 2:
        a = frames["communes"].groupby("id_ti")["insee_com"].agg(set)
        b = frames["groupements"].groupby("id_ti")["insee_com"].agg(set)
        for tid in sorted(set(a.index) | set(b.index)):
            sa, sb = a.get(tid, set()), b.get(tid, set())
            if sa != sb:
                disagreements.append({"id_ti": tid, "only_in_communes_list": sorted(sa - sb),
                                      "only_in_groupements_list": sorted(sb - sa)})
    chosen = frames[primary]
    source_of = {tid: primary for tid in chosen["id_ti"].unique()}
    for other in order[1:]:  # territories missing from the primary list come from the other one
        extra = frames[other][~frames[other]["id_ti"].isin(source_of)]
        for tid in extra["id_ti"].unique():
            source_of[tid] = other
        chosen = pd.concat([chosen, extra], ignore_index=True)

    # Territory names: from the list that defines the perimeter, else from the other one.
    names_in = {"communes": _names(communes_list), "groupements": _names(groupements_list)}
    names = {tid: names_in[src].get(tid) or next((n[tid] for n in names_in.values() if tid in n), tid)
             for tid, src in source_of.items()}
    if groupements_list is not None:
        sirens = groupements_list.groupby("id_ti")["siren_groupement"].agg(lambda s: sorted(set(s)))
    else:
        sirens = pd.Series(dtype=object)

    # Each listed code -> its codes in the boundary COG (before restricting to the boundary codes,
    # so that a successor missing from the boundaries is reported, not dropped).
    listed = set(chosen["insee_com"])
    known = admin.codes
    if admin.cog <= boundary_cog:
        # one walk over every code of the list year: the listed codes' successors (unrestricted,
        # so a successor missing from the boundaries is reported) and, below, the predecessors
        full_map = vintages.forward(changes, known, admin.cog, boundary_cog)
        mapping = {c: full_map[c] for c in known & listed}
    else:
        full_map = vintages.code_mapping(changes, known, admin.cog, boundary_cog, boundary_codes)
        mapping = {c: full_map[c] for c in known & listed}
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
    preds = vintages.predecessors({c: t & boundary_codes for c, t in full_map.items() if t != {c}})
    in_any = listed

    rows, reconciled, absorbed = [], [], []
    first = chosen.sort_values("_line", kind="stable").drop_duplicates(["id_ti", "insee_com"])
    located = {(t, c): (line, src) for t, c, line, src in
               zip(first["id_ti"].tolist(), first["insee_com"].tolist(), first["_line"].tolist(),
                   first["_source"].tolist())}

    def where(key: tuple[str, str]) -> str:
        return _where(*located[key])

    for tid, code in zip(first["id_ti"].tolist(), first["insee_com"].tolist()):
        raw = mapping.get(code, set())
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
        for t in targets:
            rows.append((tid, t, code, how))
    merged: dict[tuple[str, str], list] = {}
    for tid, t, code, how in rows:
        entry = merged.setdefault((tid, t), [set(), "matched"])
        entry[0].add(code)
        if how == "reconciled":
            entry[1] = "reconciled"
    members = pd.DataFrame(
        [(tid, t, sorted(codes), status) for (tid, t), (codes, status) in sorted(merged.items())],
        columns=["id_ti", "insee_com", "codes_list", "status"])
    for tid, succ in zip(members["id_ti"].tolist(), members["insee_com"].tolist()):
        outside = sorted(p for p in preds.get(succ, set()) if p not in in_any)
        if outside:
            absorbed.append({"id_ti": tid, "successor": succ, "absorbed": outside})

    multi = members[members["insee_com"].duplicated(keep=False)]
    shared_list = [{"insee_com": c, "id_ti": sorted(g)} for c, g in multi.groupby("insee_com")["id_ti"]]

    # A territory without any valid commune has no perimeter: it is reported and left out of
    # ``territories`` (so the territory count check names the shortfall too).
    with_members = set(members["id_ti"])
    errors += [f"{t}: no valid commune" for t in sorted(set(chosen["id_ti"]) - with_members)]
    tids = sorted(with_members)
    # Territories whose every row was unusable (reported in list_problems) are named too.
    dropped = sorted({p.id_ti for p in list_problems} - set(chosen["id_ti"]) - {""})
    errors += [f"{t}: no valid commune (every row of the list is invalid)" for t in dropped]
    territories = pd.DataFrame({
        "id_ti": tids,
        "lib_ti": [names.get(t, t) for t in tids],
        "siren_groupements": [list(sirens.get(t, [])) for t in tids],
        "perimeter_source": [source_of[t] for t in tids],
    })
    return Membership(members=members, territories=territories, list_cog=admin.cog,
                      boundary_cog=boundary_cog, reconciled=reconciled, absorbed_outside=absorbed,
                      shared_communes=shared_list, disagreements=disagreements, errors=errors,
                      listed_codes=len(chosen[["id_ti", "insee_com"]].drop_duplicates()))
