"""Readers of each source kind into tidy frames: territory lists, admin references, changes."""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass
from functools import cached_property, partial
from operator import attrgetter, is_not
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pandas as pd

from ..errors import InputFormatError
from ..limits import DEFAULT_LIMITS, Limits
from .csv_tables import (
    INSEE_RE,
    SIREN_RE,
    all_str,
    clean_text,
    decode_text,
    normalise_insee_series,
    normalise_siren,
    read_bytes,
    read_csv,
)
from .names import names_of

# The official files separate several territory ids in one cell with " ; ".
MULTI_SEP = ";"

_TI_ALIASES = {
    "id_territoire": "id_ti", "lib_territoire": "lib_ti", "code_insee": "insee_com",
    "insee": "insee_com", "com": "insee_com", "depcom": "insee_com", "codgeo": "insee_com",
    "code_commune": "insee_com", "insee_commune": "insee_com", "code_insee_commune": "insee_com",
    "nom_commune": "lib_com", "lib_commune": "lib_com", "libelle_commune": "lib_com",
    "siren": "siren_groupement", "siren_epci": "siren_groupement",
    "lib_grpt": "lib_groupement", "nom_groupement": "lib_groupement",
    "type_groupement": "nature_juridique", "type_groupement_resolved_cog2023": "nature_juridique",
}


def _split_ids(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Explode cells holding several territory ids (and names) separated by ';'."""
    def pieces(cell: str) -> list[str]:
        parts = [clean_text(p) for p in str(cell).split(MULTI_SEP)]
        kept = [p for p in parts if p]   # a trailing ';' leaves an empty piece
        return kept or [""]

    ids = frame["id_ti"].tolist()
    if (MULTI_SEP not in "\n".join(ids) if all_str(ids)
            else not frame["id_ti"].str.contains(MULTI_SEP, regex=False).any()):
        return _check_ids(frame.reset_index(drop=True), path)   # one id per cell: already clean
    pieces_of_ids = frame["id_ti"].map(pieces)
    if "lib_ti" in frame:
        # Names may contain ';': pair names with ids only when the counts match.
        libs = pd.Series([lib if len(lib) == len(i) else [clean_text(whole)] * len(i)
                          for lib, i, whole in zip(frame["lib_ti"].map(pieces), pieces_of_ids, frame["lib_ti"])],
                         index=frame.index, dtype=object)
        frame = frame.assign(id_ti=pieces_of_ids, lib_ti=libs).explode(["id_ti", "lib_ti"])
    else:
        frame = frame.assign(id_ti=pieces_of_ids).explode("id_ti")
    frame["id_ti"] = frame["id_ti"].map(clean_text)
    if "lib_ti" in frame:
        frame["lib_ti"] = frame["lib_ti"].map(clean_text)
    return _check_ids(frame.reset_index(drop=True), path)


_ID = r"[A-Za-z0-9_\-]+"
_ID_RE = re.compile(_ID)


def _check_ids(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    ids = frame["id_ti"].tolist()
    if set(map(type, ids)) == {str} and all(map(_ID_RE.fullmatch, set(ids))):
        return frame.reset_index(drop=True)   # every id valid (each distinct one checked once)
    bad = frame[~frame["id_ti"].str.fullmatch(_ID, na=False)]
    if len(bad):
        line, tid = bad["_line"].iloc[0], bad["id_ti"].iloc[0]
        what = "no territory id" if tid == "" else f"invalid territory id {tid!r}"
        raise InputFormatError(f"{path}:{line}: column id_ti: {what}")
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


def _problems(frame: pd.DataFrame, mask: pd.Series, path: Path, column: str, problem) -> list[ListProblem]:
    bad = frame[mask]
    return [ListProblem(str(path), int(line), tid, code, problem(code) if callable(problem) else problem)
            for line, tid, code in zip(bad["_line"], bad["id_ti"], bad[column])]


def _tag(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    frame.attrs["source"] = str(path)
    return frame


def read_ti_communes(path: Path, limits: Limits = DEFAULT_LIMITS) -> tuple[pd.DataFrame, list[ListProblem]]:
    """The list by commune: columns id_ti, lib_ti, insee_com, lib_com, _line (one row per pair).

    Codes are normalised (lost leading zero restored, 2A/2B upper-cased). Rows whose code is not
    an INSEE commune code are returned as problems; duplicated (id_ti, insee_com) rows are merged
    (the first line is kept). ``frame.attrs["source"]`` is the file read.
    """
    frame = read_csv(path, ["id_ti", "insee_com"], ["lib_ti", "lib_com"], _TI_ALIASES, limits)
    frame = _split_ids(frame, path)
    raw = frame["insee_com"]
    frame["insee_com"] = normalise_insee_series(raw)
    ok = frame["insee_com"].str.match(INSEE_RE)
    problems = _problems(frame.assign(insee_com=raw), ~ok, path, "insee_com",
                         lambda c: "no commune code" if c == "" else "not an INSEE commune code")
    frame = frame[ok]
    names_of(_tag(frame, path))   # one name per id, checked before duplicated rows are merged
    frame = frame[~frame.duplicated(["id_ti", "insee_com"])]
    for col in ("lib_ti", "lib_com"):
        if col not in frame:
            frame[col] = pd.NA
    return _tag(frame.reset_index(drop=True), path), problems


def read_ti_groupements(path: Path, limits: Limits = DEFAULT_LIMITS) -> tuple[pd.DataFrame, list[ListProblem]]:
    """The list by groupement, one row per (id_ti, siren_groupement).

    Accepts the official one-row-per-groupement shape and the aggregated shape with a
    ``siren_groupements`` column of ';'-separated SIRENs (ANCT's 2018-2022 derived file).
    A row without any SIREN, or with a value that is not a SIREN, is returned as a problem.
    """
    aliases = dict(_TI_ALIASES)
    frame = read_csv(path, ["id_ti"], ["lib_ti", "siren_groupement", "siren_groupements",
                                       "lib_groupement", "lib_groupements", "nature_juridique"], aliases, limits)
    if "siren_groupement" not in frame and "siren_groupements" not in frame:
        raise InputFormatError(f"{path}: missing column siren_groupement (or siren_groupements); "
                               f"found {', '.join(c for c in frame.columns if c != '_line')}")
    frame = _split_ids(frame, path)
    if "siren_groupement" not in frame:
        frame["siren_groupement"] = frame["siren_groupements"].str.split(r"[;,]", regex=True)
        frame = frame.explode("siren_groupement")
        frame["lib_groupement"] = pd.NA
        frame["siren_groupement"] = frame["siren_groupement"].fillna("").map(normalise_siren)
        # Empty bits of a ';'-joined cell (trailing separator) are dropped; an empty cell is not.
        blank = frame["siren_groupement"] == ""
        frame = frame[~blank | ~frame.index.duplicated(keep=False)]
    else:
        frame["siren_groupement"] = frame["siren_groupement"].map(normalise_siren)
    frame = frame.reset_index(drop=True)
    ok = frame["siren_groupement"].str.match(SIREN_RE)
    problems = _problems(frame, ~ok, path, "siren_groupement",
                         lambda c: "no SIREN" if c == "" else "not a SIREN (9 digits)")
    names_of(_tag(frame[ok], path))   # one name per id, checked before duplicated rows are merged
    frame = frame[ok].drop_duplicates(["id_ti", "siren_groupement"])
    for col in ("lib_ti", "lib_groupement", "nature_juridique"):
        if col not in frame:
            frame[col] = pd.NA
    cols = ["id_ti", "lib_ti", "siren_groupement", "lib_groupement", "nature_juridique", "_line"]
    return _tag(frame[cols].reset_index(drop=True), path), problems


def _read_json(path: Path, raw: bytes) -> list:
    try:   # orjson: several times faster than json on the 35,000-commune files
        data = orjson.loads(raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw)
    except orjson.JSONDecodeError:
        try:   # not UTF-8, or invalid: the standard parser names the line
            data = json.loads(decode_text(raw, path))
        except json.JSONDecodeError as err:
            raise InputFormatError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise InputFormatError(f"{path}: expected a JSON array of objects")
    return data


# Fast path: msgspec decodes only the fields read (the others are validated and skipped), several
# times faster than building every object. Any file it does not take as is (invalid JSON, another
# shape, a missing field) goes through _read_json and the dict-based code, errors included.
class _Commune(msgspec.Struct, gc=False):
    code: Any
    type: Any = "commune-actuelle"
    nom: Any = None
    departement: Any = None
    region: Any = None
    siren: Any = None
    population: Any = None
    zone: Any = None


class _Member(msgspec.Struct, gc=False):
    code: Any


class _Groupement(msgspec.Struct, gc=False):
    code: Any
    membres: list[_Member]
    nom: Any = None
    type: Any = None


_COMMUNES = msgspec.json.Decoder(list[_Commune])
_GROUPEMENTS = msgspec.json.Decoder(list[_Groupement])
COMMUNE_FIELDS = ("code", "nom", "departement", "region", "siren", "population", "zone")
MEMBER_COLUMNS = ["siren_groupement", "nom_groupement", "type_groupement", "insee_com"]


def _decode_fast(raw: bytes, decoder: msgspec.json.Decoder) -> list | None:
    body = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
    if not body.isascii():
        try:   # like orjson, UTF-8 only (msgspec does not check the fields it skips)
            codecs.utf_8_decode(body, "strict", True)
        except UnicodeDecodeError:
            return None
    try:
        return decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):   # ValidationError included
        return None


def _as_orjson_reads(columns) -> bool:
    """True when every value is one orjson would give too (it reads integers beyond 64 bits as
    floats; nested arrays and objects are not looked into: the dict-based path takes them)."""
    for values in columns:
        types = set(map(type, values))
        if types - {str, type(None), int, float, bool}:
            return False
        if int in types:
            ints = (list(filter(partial(is_not, None), values)) if types <= {int, type(None)}
                    else [v for v in values if type(v) is int])
            if min(ints) < -(1 << 63) or max(ints) >= 1 << 64:
                return False
    return True


def _commune_columns(path: Path, limits: Limits) -> dict[str, list]:
    """The fields of the communes of type commune-actuelle, one list per field."""
    raw = read_bytes(path, limits.table_bytes)
    fast = _decode_fast(raw, _COMMUNES)
    if fast is not None:
        kept = [c for c in fast if c.type == "commune-actuelle"]
        columns = {f: list(map(attrgetter(f), kept)) for f in COMMUNE_FIELDS}
        if _as_orjson_reads(columns.values()):
            return columns
    rows = _read_json(path, raw)
    kept = [r for r in rows if r.get("type", "commune-actuelle") == "commune-actuelle"]
    try:
        codes = [r["code"] for r in kept]
    except KeyError as err:
        raise InputFormatError(f"{path}: commune without {err} field") from None
    return {"code": codes, **{f: [r.get(f) for r in kept] for f in COMMUNE_FIELDS[1:]}}


def _member_columns(path: Path, default_type: str | None, limits: Limits) -> dict[str, list]:
    """One entry per (groupement, member commune): SIREN, name and type of the groupement, commune."""
    raw = read_bytes(path, limits.table_bytes)
    fast = _decode_fast(raw, _GROUPEMENTS)
    columns: dict[str, list] = {c: [] for c in MEMBER_COLUMNS}
    if fast is not None:
        for g in fast:
            n = len(g.membres)
            columns["siren_groupement"] += [g.code] * n
            columns["nom_groupement"] += [g.nom] * n
            columns["type_groupement"] += [default_type or g.type] * n
            columns["insee_com"] += map(attrgetter("code"), g.membres)
        if _as_orjson_reads(columns.values()):
            columns["siren_groupement"] = list(map(str, columns["siren_groupement"]))
            return columns
        columns = {c: [] for c in MEMBER_COLUMNS}
    for g in _read_json(path, raw):
        try:
            for m in g["membres"]:
                columns["siren_groupement"].append(str(g["code"]))
                columns["nom_groupement"].append(g.get("nom"))
                columns["type_groupement"].append(default_type or g.get("type"))
                columns["insee_com"].append(m["code"])
        except KeyError as err:
            raise InputFormatError(f"{path}: groupement {g.get('code')} without {err} field") from None
    return columns


@dataclass
class AdminRef:
    """Communes and groupements of one COG year (from @etalab/decoupage-administratif)."""

    cog: int
    communes: pd.DataFrame     # code, nom, departement, region, siren, population, zone
    members: pd.DataFrame      # siren_groupement, nom_groupement, type_groupement, insee_com

    @cached_property
    def codes(self) -> set[str]:
        return set(self.communes["code"].tolist())


def read_admin(cog: int, communes_path: Path, epci_path: Path, ept_path: Path,
               limits: Limits = DEFAULT_LIMITS) -> AdminRef:
    """One COG year of decoupage-administratif: its communes, and the members of its EPCI and EPT."""
    columns = _commune_columns(communes_path, limits)
    if not columns["code"]:
        raise InputFormatError(f"{communes_path}: no commune of type commune-actuelle")
    com = pd.DataFrame(columns)
    com["code"] = com["code"].astype(str)
    com["population"] = pd.to_numeric(com["population"], errors="coerce").astype("Int64")
    epci, ept = _member_columns(epci_path, None, limits), _member_columns(ept_path, "EPT", limits)
    columns = {c: epci[c] + ept[c] for c in MEMBER_COLUMNS}
    members = pd.DataFrame(columns if columns["insee_com"] else [], columns=MEMBER_COLUMNS)   # [] -> object
    return AdminRef(cog=cog, communes=com, members=members)


CHANGE_COLUMNS = ["MOD", "DATE_EFF", "TYPECOM_AV", "COM_AV", "TYPECOM_AP", "COM_AP"]


def _parse_dates(values: pd.Series) -> pd.Series:
    """ISO dates (INSEE's format), else day-first dates (dd/mm/yyyy, as a spreadsheet saves them)."""
    iso = pd.to_datetime(values, errors="coerce", format="ISO8601")
    other = iso.isna()
    if other.any():
        iso[other] = pd.to_datetime(values[other], errors="coerce", format="%d/%m/%Y")
    return iso


def read_commune_changes(path: Path, limits: Limits = DEFAULT_LIMITS) -> pd.DataFrame:
    """INSEE 'mouvements de communes': MOD, DATE_EFF (datetime), TYPECOM_AV, COM_AV, TYPECOM_AP, COM_AP.

    Codes are normalised like the lists' (lost leading zero restored), so both sides match.
    """
    frame = read_csv(path, [c.lower() for c in CHANGE_COLUMNS], ["libelle_av", "libelle_ap"], limits=limits)
    frame.columns = [c.upper() if c != "_line" else c for c in frame.columns]
    frame["DATE_EFF"] = _parse_dates(frame["DATE_EFF"])
    bad = frame[frame["DATE_EFF"].isna()]
    if len(bad):
        raise InputFormatError(f"{path}:{bad['_line'].iloc[0]}: column DATE_EFF: not a date "
                               "(expected YYYY-MM-DD)")
    mods = frame["MOD"].tolist()
    if not all_str(mods) or ".0\n" in "\n".join(mods) + "\n":   # else nothing to replace
        frame["MOD"] = frame["MOD"].str.replace(r"\.0$", "", regex=True)
    for col in ("TYPECOM_AV", "TYPECOM_AP"):
        kinds = frame[col].tolist()
        if not all_str(kinds) or "\n".join(kinds).upper() != "\n".join(kinds):   # else all upper case
            frame[col] = frame[col].str.upper()
    for col in ("COM_AV", "COM_AP"):
        frame[col] = normalise_insee_series(frame[col])
    return _tag(frame, path)
