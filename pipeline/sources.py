"""Readers of each source kind into tidy frames: territory lists, admin references, changes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .errors import InputFormatError
from .tables import (INSEE_RE, SIREN_RE, clean_text, decode_text, normalise_insee,
                     normalise_siren, read_bytes, read_csv)

# The official files separate several territory ids in one cell with " ; ".
MULTI_SEP = ";"

_TI_ALIASES = {
    "id_territoire": "id_ti", "lib_territoire": "lib_ti", "code_insee": "insee_com",
    "insee": "insee_com", "com": "insee_com", "depcom": "insee_com", "codgeo": "insee_com",
    "nom_commune": "lib_com", "siren": "siren_groupement", "siren_epci": "siren_groupement",
    "lib_grpt": "lib_groupement", "nom_groupement": "lib_groupement",
    "type_groupement": "nature_juridique", "type_groupement_resolved_cog2023": "nature_juridique",
}


def _split_ids(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Explode cells holding several territory ids (and names) separated by ';'."""
    ids = frame["id_ti"].str.split(MULTI_SEP)
    if "lib_ti" in frame:
        libs = frame["lib_ti"].str.split(MULTI_SEP)
        # Names may legitimately contain ';' only if the ids do not: pair them when counts match.
        pair = ids.str.len() == libs.str.len()
        libs = libs.where(pair, frame["lib_ti"].map(lambda v: [v]))
        libs = [lib if len(lib) == len(i) else lib * len(i) for lib, i in zip(libs, ids)]
        frame = frame.assign(id_ti=ids, lib_ti=libs).explode(["id_ti", "lib_ti"])
    else:
        frame = frame.assign(id_ti=ids).explode("id_ti")
    frame["id_ti"] = frame["id_ti"].map(clean_text)
    if "lib_ti" in frame:
        frame["lib_ti"] = frame["lib_ti"].map(clean_text)
    bad = frame[~frame["id_ti"].str.fullmatch(r"[A-Za-z0-9_\-]+", na=False)]
    if len(bad):
        row = bad.iloc[0]
        raise InputFormatError(f"{path}:{row['_line']}: column id_ti: invalid territory id {row['id_ti']!r}")
    return frame.reset_index(drop=True)


@dataclass
class ListProblem:
    """A row of a list that cannot be used as is (reported, never dropped silently)."""

    path: str
    line: int
    id_ti: str
    code: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.id_ti}: {self.code!r}: {self.problem}"


def read_ti_communes(path: Path) -> tuple[pd.DataFrame, list[ListProblem]]:
    """The list by commune: columns id_ti, lib_ti, insee_com, lib_com, _line (one row per pair)."""
    frame = read_csv(path, ["id_ti", "insee_com"], ["lib_ti", "lib_com"], _TI_ALIASES)
    frame = _split_ids(frame, path)
    frame["insee_com"] = frame["insee_com"].map(normalise_insee)
    problems = [ListProblem(str(path), r._line, r.id_ti, r.insee_com, "not an INSEE commune code")
                for r in frame[~frame["insee_com"].str.match(INSEE_RE)].itertuples()]
    frame = frame[frame["insee_com"].str.match(INSEE_RE)]
    dup = frame.duplicated(["id_ti", "insee_com"])
    frame = frame[~dup]
    for col in ("lib_ti", "lib_com"):
        if col not in frame:
            frame[col] = pd.NA
    return frame.reset_index(drop=True), problems


def read_ti_groupements(path: Path) -> tuple[pd.DataFrame, list[ListProblem]]:
    """The list by groupement, one row per (id_ti, siren_groupement).

    Accepts the official one-row-per-groupement shape and the aggregated shape with a
    ``siren_groupements`` column of ';'-separated SIRENs (ANCT's 2018-2022 derived file).
    """
    aliases = dict(_TI_ALIASES)
    frame = read_csv(path, ["id_ti"], ["lib_ti", "siren_groupement", "siren_groupements",
                                       "lib_groupement", "lib_groupements", "nature_juridique"], aliases)
    if "siren_groupement" not in frame and "siren_groupements" not in frame:
        raise InputFormatError(f"{path}: missing column siren_groupement (or siren_groupements); "
                               f"found {', '.join(c for c in frame.columns if c != '_line')}")
    frame = _split_ids(frame, path)
    if "siren_groupement" not in frame:
        frame["siren_groupement"] = frame["siren_groupements"].str.split(r"[;,]")
        frame = frame.explode("siren_groupement")
        frame["lib_groupement"] = pd.NA
    frame["siren_groupement"] = frame["siren_groupement"].map(normalise_siren)
    frame = frame[frame["siren_groupement"] != ""]
    ok = frame["siren_groupement"].str.match(SIREN_RE)
    problems = [ListProblem(str(path), r._line, r.id_ti, r.siren_groupement, "not a SIREN (9 digits)")
                for r in frame[~ok].itertuples()]
    frame = frame[ok].drop_duplicates(["id_ti", "siren_groupement"])
    for col in ("lib_ti", "lib_groupement", "nature_juridique"):
        if col not in frame:
            frame[col] = pd.NA
    cols = ["id_ti", "lib_ti", "siren_groupement", "lib_groupement", "nature_juridique", "_line"]
    return frame[cols].reset_index(drop=True), problems


def _read_json(path: Path) -> list:
    try:
        data = json.loads(decode_text(read_bytes(path), path))
    except json.JSONDecodeError as err:
        raise InputFormatError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
    if not isinstance(data, list):
        raise InputFormatError(f"{path}: expected a JSON array of objects")
    return data


@dataclass
class AdminRef:
    """Communes and groupements of one COG year (from @etalab/decoupage-administratif)."""

    cog: int
    communes: pd.DataFrame     # code, nom, departement, region, siren, population, zone
    members: pd.DataFrame      # siren_groupement, nom_groupement, type_groupement, insee_com

    @property
    def codes(self) -> set[str]:
        return set(self.communes["code"])


def read_admin(cog: int, communes_path: Path, epci_path: Path, ept_path: Path) -> AdminRef:
    rows = _read_json(communes_path)
    try:
        com = pd.DataFrame([
            {"code": r["code"], "nom": r.get("nom"), "departement": r.get("departement"),
             "region": r.get("region"), "siren": r.get("siren"), "population": r.get("population"),
             "zone": r.get("zone")}
            for r in rows if r.get("type", "commune-actuelle") == "commune-actuelle"
        ])
    except KeyError as err:
        raise InputFormatError(f"{communes_path}: commune without {err} field") from None
    com["population"] = pd.array(com["population"], dtype="Int64")
    member_rows = []
    for path, default_type in ((epci_path, None), (ept_path, "EPT")):
        for g in _read_json(path):
            try:
                for m in g["membres"]:
                    member_rows.append({"siren_groupement": str(g["code"]), "nom_groupement": g.get("nom"),
                                        "type_groupement": default_type or g.get("type"),
                                        "insee_com": m["code"]})
            except KeyError as err:
                raise InputFormatError(f"{path}: groupement {g.get('code')} without {err} field") from None
    members = pd.DataFrame(member_rows, columns=["siren_groupement", "nom_groupement",
                                                 "type_groupement", "insee_com"])
    return AdminRef(cog=cog, communes=com, members=members)


CHANGE_COLUMNS = ["MOD", "DATE_EFF", "TYPECOM_AV", "COM_AV", "TYPECOM_AP", "COM_AP"]


def read_commune_changes(path: Path) -> pd.DataFrame:
    """INSEE 'mouvements de communes': MOD, DATE_EFF (datetime), TYPECOM_AV, COM_AV, TYPECOM_AP, COM_AP."""
    frame = read_csv(path, [c.lower() for c in CHANGE_COLUMNS], ["libelle_av", "libelle_ap"])
    frame.columns = [c.upper() if c != "_line" else c for c in frame.columns]
    frame["DATE_EFF"] = pd.to_datetime(frame["DATE_EFF"], errors="coerce")
    bad = frame[frame["DATE_EFF"].isna()]
    if len(bad):
        raise InputFormatError(f"{path}:{bad.iloc[0]['_line']}: column DATE_EFF: not a date")
    return frame
