"""The membership tables: which territory each commune and each groupement is in, and why.

``communes``: one row per (commune of the boundary vintage, territory): a commune in no territory
is absent, one in two territories has two rows. ``how`` says how it got there (the detail
columns are filled whatever ``how`` is):

- ``listed``: listed as is in the list by commune;
- ``groupement``: brought by the groupement ``siren_groupement`` of the list by groupement;
- ``successor``: successor of the listed code(s) ``from_codes`` (merger or code change);
- ``split_part``: part of the split commune ``from_codes``;
- ``successor_absorbing_outside``: also absorbed ``absorbed_outside``, communes in no list.

The first that applies in the order split_part, successor, successor_absorbing_outside,
groupement, listed is given. ``groupements``: one row per (listed SIREN, territory). Written as
Parquet (the build's metadata in the file metadata) and CSV (UTF-8, comma, one header line).
Lists are ``;``-joined strings in both, so both have the same columns and types.

The names, departements, regions and EPCI/EPT come from the build's references
(:class:`MembershipRefs`, built by :func:`references` while the build still holds them).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import PublishError
from ..reconcile.membership import Membership
from ..sources.csv_tables import in_set
from ..sources.readers import AdminRef
from .layout import MEMBERSHIP_TABLES
from .provenance import KEY, dumps

SEP = ";"
HOW = ("listed", "groupement", "successor", "split_part", "successor_absorbing_outside")
# name -> (kind, meaning), in published order (the data dictionary lists them)
COMMUNE_COLUMNS: dict[str, tuple[str, str]] = {
    "insee_com": ("string", "INSEE code of the commune in the boundary vintage (`boundary_cog`)"),
    "nom_commune": ("string", "commune name (boundary vintage)"),
    "departement": ("string", "INSEE code of its departement"),
    "region": ("string", "INSEE code of its region"),
    "siren_epci": ("string", "SIREN of its EPT when it has one (Grand Paris), else of its EPCI (boundary vintage)"),
    "nom_epci": ("string", "name of that EPT/EPCI"),
    "id_ti": ("string", "territory id"),
    "lib_ti": ("string", "territory name"),
    "phase": ("string", "programme phase"),
    "how": ("string", "how the commune got into the territory: " + ", ".join(HOW) + " (see the README)"),
    "from_codes": ("string", "the listed code(s) (list vintage) behind a successor or a split part, `;`-joined"),
    "siren_groupement": ("string", "SIREN(s) of the listed groupement(s) that brought it, `;`-joined; "
                                   "empty when the list by commune defines the territory"),
    "absorbed_outside": ("string", "communes in no list that this commune absorbed, `;`-joined"),
    "list_cog": ("int", "COG year of the list's codes"),
    "boundary_cog": ("int", "COG year of the boundaries (of `insee_com`)"),
}
GROUPEMENT_COLUMNS: dict[str, tuple[str, str]] = {
    "siren_groupement": ("string", "SIREN as listed: an EPCI, an EPT or a single commune"),
    "nom_groupement": ("string", "its name in the list vintage (the commune's name for a single commune)"),
    "type_groupement": ("string", "CC, CA, CU, METRO, MET69, EPT, or COM for a single commune"),
    "id_ti": ("string", "territory id"),
    "lib_ti": ("string", "territory name"),
    "phase": ("string", "programme phase"),
    "n_communes_list": ("int", "its communes in the list vintage"),
}
TABLES = dict(zip(MEMBERSHIP_TABLES, (COMMUNE_COLUMNS, GROUPEMENT_COLUMNS)))   # names: layout.MEMBERSHIP_TABLES
# What every row holds, as Table Schema constraints (datapackage.py publishes them; frictionless
# checks the published CSV against them in the tests): patterns are anchored, an empty cell is null.
_CODE, _SIREN = "[0-9][0-9AB][0-9]{3}", "[0-9]{9}"
PRIMARY_KEYS: dict[str, tuple[str, ...]] = {"communes": ("insee_com", "id_ti"),
                                            "groupements": ("siren_groupement", "id_ti")}
_TERRITORY: dict[str, dict] = {"id_ti": {"required": True}, "lib_ti": {"required": True},
              "phase": {"required": True, "pattern": "[0-9]{4}-[0-9]{4}"}}
CONSTRAINTS: dict[str, dict[str, dict]] = {
    "communes": {
        "insee_com": {"required": True, "pattern": _CODE},
        "departement": {"pattern": "[0-9]{2}|2A|2B|97[0-9]"},
        "region": {"pattern": "[0-9]{2}"},
        "siren_epci": {"pattern": _SIREN},
        **_TERRITORY,
        "how": {"required": True, "enum": list(HOW)},
        "from_codes": {"pattern": f"{_CODE}(;{_CODE})*"},
        "siren_groupement": {"pattern": f"{_SIREN}(;{_SIREN})*"},
        "absorbed_outside": {"pattern": f"{_CODE}(;{_CODE})*"},
        "list_cog": {"required": True}, "boundary_cog": {"required": True},
    },
    "groupements": {
        "siren_groupement": {"required": True, "pattern": _SIREN},
        **_TERRITORY,
        "n_communes_list": {"minimum": 1},
    },
}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class MembershipRefs:
    """What the tables need from the build's references, restricted to the members."""

    communes: pd.DataFrame     # insee_com, nom_commune, departement, region, siren_epci, nom_epci (boundary COG)
    groupements: pd.DataFrame  # siren_groupement, nom_groupement, type_groupement, insee_com (list COG)


def references(membership: Membership, list_admin: AdminRef, boundary_admin: AdminRef | None) -> MembershipRefs:
    """The :class:`MembershipRefs` of ``membership`` from the AdminRef of the list and boundary COG
    (either may be None: the columns it gives are then empty)."""
    codes = set(membership.members["insee_com"])
    com = pd.DataFrame(columns=["insee_com", "nom_commune", "departement", "region", "siren_epci", "nom_epci"])
    if boundary_admin is not None:
        c = boundary_admin.communes
        com = c[in_set(c["code"], codes)][["code", "nom", "departement", "region"]].rename(
            columns={"code": "insee_com", "nom": "nom_commune"})
        m = boundary_admin.members
        m = m[in_set(m["insee_com"], codes)].assign(_ept=lambda d: d["type_groupement"] != "EPT")
        m = m.sort_values(["_ept", "siren_groupement"]).drop_duplicates("insee_com")   # EPT first
        com = com.merge(m[["insee_com", "siren_groupement", "nom_groupement"]].rename(
            columns={"siren_groupement": "siren_epci", "nom_groupement": "nom_epci"}), on="insee_com", how="left")
    sirens = {s for lst in membership.territories["siren_groupements"] for s in lst}
    grp = pd.DataFrame(columns=["siren_groupement", "nom_groupement", "type_groupement", "insee_com"])
    if list_admin is not None and sirens:
        m = list_admin.members
        m = m[in_set(m["siren_groupement"], sirens)][list(grp.columns)]
        c = list_admin.communes.dropna(subset=["siren"])
        c = c[in_set(c["siren"], sirens)]
        single = pd.DataFrame({"siren_groupement": c["siren"], "nom_groupement": c["nom"],
                               "type_groupement": "COM", "insee_com": c["code"]})
        grp = pd.concat([m, single], ignore_index=True)
    return MembershipRefs(communes=com.reset_index(drop=True), groupements=grp.reset_index(drop=True))


def _join(values) -> str:
    return SEP.join(sorted(set(values)))


def commune_table(membership: Membership, refs: MembershipRefs | None, phase: str) -> pd.DataFrame:
    """One row per (commune, territory) with how it got there (see the module docstring)."""
    members = membership.members
    terr = membership.territories.set_index("id_ti")
    reconciled = {(r["id_ti"], r["code_list"]): r["codes_boundary"] for r in membership.reconciled}
    absorbed = {(a["id_ti"], a["successor"]): a["absorbed"] for a in membership.absorbed_outside}
    by_code: dict[str, set[str]] = {}
    if refs is not None:
        for siren, code in zip(refs.groupements["siren_groupement"], refs.groupements["insee_com"]):
            by_code.setdefault(code, set()).add(siren)
    # the SIRENs listed by each territory defined by groupements (dicts: a pandas lookup per row
    # cost seconds over the ~19,000 members)
    listed_by = {tid: set(cast(list, sirens)) for tid, source, sirens in
                 zip(terr.index, terr["perimeter_source"], terr["siren_groupements"]) if source == "groupements"}
    rows = []
    for tid, code, codes_list in zip(members["id_ti"].tolist(), members["insee_com"].tolist(),
                                     members["codes_list"].tolist()):   # lists: iterating Arrow strings is slower
        codes_list = list(codes_list)
        rec = [reconciled[(tid, c)] for c in codes_list if (tid, c) in reconciled]
        outside = absorbed.get((tid, code), [])
        via = ""
        listed = listed_by.get(tid)
        if listed is not None:
            via = _join(s for c in codes_list for s in by_code.get(c, ()) if s in listed)
        if any(len(r) > 1 for r in rec):
            how = "split_part"
        elif rec:
            how = "successor"
        elif outside:
            how = "successor_absorbing_outside"
        elif via:
            how = "groupement"
        else:
            how = "listed"
        from_codes = _join(c for c in codes_list if c != code or (tid, c) in reconciled)
        rows.append((code, tid, how, from_codes, via, _join(outside)))
    out = pd.DataFrame(rows, columns=["insee_com", "id_ti", "how", "from_codes", "siren_groupement",
                                      "absorbed_outside"])
    out["lib_ti"] = out["id_ti"].map(terr["lib_ti"])
    out["phase"] = phase
    out["list_cog"] = int(membership.list_cog)
    out["boundary_cog"] = int(membership.boundary_cog)
    if refs is not None:
        out = out.merge(refs.communes, on="insee_com", how="left")
    return _typed(out.sort_values(["id_ti", "insee_com"]), COMMUNE_COLUMNS)


def groupement_table(membership: Membership, refs: MembershipRefs | None, phase: str) -> pd.DataFrame:
    """One row per (listed SIREN, territory)."""
    pairs = [(s, tid, lib) for tid, lib, sirens in zip(membership.territories["id_ti"], membership.territories["lib_ti"],
                                                       membership.territories["siren_groupements"]) for s in sirens]
    out = pd.DataFrame(pairs, columns=["siren_groupement", "id_ti", "lib_ti"])
    out["phase"] = phase
    if refs is not None and len(refs.groupements):
        g = refs.groupements.groupby("siren_groupement").agg(
            nom_groupement=("nom_groupement", "first"), type_groupement=("type_groupement", "first"),
            n_communes_list=("insee_com", "nunique"))
        out = out.merge(g, left_on="siren_groupement", right_index=True, how="left")
    return _typed(out.sort_values(["id_ti", "siren_groupement"]), GROUPEMENT_COLUMNS)


def _typed(frame: pd.DataFrame, columns: dict[str, tuple[str, str]]) -> pd.DataFrame:
    """The columns in order, strings as ``string`` and ints as ``Int64`` (missing ones all null)."""
    out = {}
    for name, (kind, _) in columns.items():
        values = frame[name] if name in frame else pd.Series(pd.NA, index=frame.index)
        out[name] = values.astype("Int64" if kind == "int" else "string")
    return pd.DataFrame(out).reset_index(drop=True)


def spreadsheet_safe(column: pd.Series) -> pd.Series:
    """Text cells a spreadsheet will not run as formulas: a value starting with = + - @ (or a tab
    or carriage return) gets a leading apostrophe (OWASP's CSV injection advice)."""
    risky = column.str.startswith(_FORMULA_START).fillna(False).astype(bool)
    return column.mask(risky, "'" + column) if risky.any() else column


def write_parquet(table: pd.DataFrame, path: Path, metadata: dict | None = None) -> Path:
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    if metadata is not None:
        arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), KEY.encode(): dumps(metadata).encode()})
    pq.write_table(arrow, path, compression="zstd")
    return Path(path)


def write_csv(table: pd.DataFrame, path: Path) -> Path:
    safe = table.apply(lambda c: spreadsheet_safe(c) if c.dtype == "string" else c)
    safe.to_csv(path, index=False, encoding="utf-8", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    return Path(path)


def parquet_metadata(path: Path) -> dict | None:
    """The build's metadata written by :func:`write_parquet` (None if absent)."""
    import json

    raw = (pq.read_schema(path).metadata or {}).get(KEY.encode())
    return json.loads(raw) if raw else None


def verify(parquet: Path, csv_path: Path, expected: pd.DataFrame) -> dict:
    """Re-read both files; raise PublishError unless they hold ``expected``'s rows and columns."""
    back = pd.read_parquet(parquet)
    text = pd.read_csv(csv_path, dtype=str, keep_default_na=False, encoding="utf-8")
    problems = []
    if list(back.columns) != list(expected.columns) or list(text.columns) != list(expected.columns):
        problems.append("columns differ from the table")
    if len(back) != len(expected) or len(text) != len(expected):
        problems.append(f"{len(back)} Parquet and {len(text)} CSV rows instead of {len(expected)}")
    if problems:
        raise PublishError(f"{parquet}: membership table check failed: {'; '.join(problems)}")
    return {"rows": len(back)}
