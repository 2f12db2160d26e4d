"""Which territory is commune X in? Answers from the published membership table, never a rebuild.

The table is ``territoires-industrie-communes.parquet`` of a phase's published folder (the output
folder itself for 2023-2027, ``phase=<phase>/`` otherwise), or any copy of it or of its CSV. It is
read whole (about 0.3 MB) and checked against the ``manifest.json`` beside it: a table whose sha256
differs from the one the manifest lists is refused; a table with no manifest that lists it is
read, with :attr:`PublishedTable.verified` False and the reason in :attr:`PublishedTable.note`.

A query is an INSEE commune code (``71076``, ``2A004``; four digits are a code that lost its
leading zero, ``1001`` is ``01001``) or a commune name, compared without accents, case or
punctuation (``chalon sur saone``); a name shared by several communes gives them all. A code that
is no commune of the table's boundary vintage is also looked up among the listed codes behind a
merger or a split (``from_codes``), then among the communes absorbed from outside the lists
(``absorbed_outside``); each row says which ``match`` found it.

    >>> index = MembershipIndex.open("data_out")
    >>> answer = index.find("71076")
    >>> [(row["id_ti"], row["lib_ti"], row["how"], row["match"]) for row in answer.rows]
    [('ti-2704', 'Grand Chalon', 'groupement', 'insee_com')]
    >>> index.find("Chalon sur Saone").rows[0]["insee_com"]
    '71076'
    >>> lookup("99999", "data_out").found
    False

:func:`csv_dtypes` gives the pandas dtypes that read the published CSV tables as declared
(codes stay text: ``01`` is not ``1``).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import PipelineError
from .phases import CURRENT_PHASE as DEFAULT_PHASE
from .publish.layout import MANIFEST_NAME, STABLE_NAMES, stable_dir
from .regular_files import RefusedFile, read_regular

TABLE = "communes"
MAX_MANIFEST_BYTES = 64 << 20
MAX_QUERY_CHARS = 200
# the columns a lookup answers with; a table without them is not a membership table
REQUIRED_COLUMNS = ("insee_com", "nom_commune", "id_ti", "lib_ti", "phase", "how")
_CODE = re.compile(r"^[0-9][0-9AB][0-9]{3}$")
_NOT_WORD = re.compile(r"[\W_]+")
# a publish renames the table before its manifest: a mismatch seen during one is retried
_RETRIES, _RETRY_WAIT_S = 3, 0.4


class LookupTableError(PipelineError):
    """No membership table to answer from, or one that cannot be trusted (it names the file)."""


def table_filename(table: str = TABLE, ext: str = "parquet") -> str:
    """The published file name of a membership table: ``territoires-industrie-<table>.<ext>``."""
    return STABLE_NAMES[f"membership_{table}_{ext}"]


def published_table(output_dir: str | Path, phase: str = DEFAULT_PHASE, table: str = TABLE) -> Path:
    """Path of a phase's published membership Parquet table under ``output_dir``."""
    return stable_dir(Path(output_dir), phase) / table_filename(table)


def normalize_name(text: str) -> str:
    """A commune name as compared: no accents, no case, punctuation and spaces as one space.

    >>> normalize_name("  Chalon-sur-Saône ") == normalize_name("CHALON SUR SAONE")
    True
    """
    plain = text
    for _ in range(2):   # twice: folding can give marks (ǰ -> j + caron), decomposing capitals (𝔍 -> J)
        marks_off = "".join(c for c in unicodedata.normalize("NFKD", plain) if not unicodedata.combining(c))
        plain = marks_off.casefold().replace("œ", "oe").replace("æ", "ae")
    return _NOT_WORD.sub(" ", plain).strip()


def as_code(query: str) -> str | None:
    """The INSEE code a query names (``2a004`` -> ``2A004``, ``1001`` -> ``01001``), or None."""
    text = query.strip().upper()
    if len(text) == 4 and text.isdigit():   # a spreadsheet dropped the leading zero
        text = "0" + text
    return text if _CODE.match(text) else None


@dataclass(frozen=True)
class Answer:
    """The rows found for one query: each a row of the table plus ``match`` (the column that
    matched: ``insee_com``, ``from_codes``, ``absorbed_outside`` or ``nom_commune``)."""

    query: str
    rows: tuple[dict, ...]

    @property
    def found(self) -> bool:
        return bool(self.rows)


@dataclass
class PublishedTable:
    """One membership table as read, with what its manifest says about it."""

    path: Path
    columns: list[str]
    rows: list[dict]
    verified: bool
    note: str = ""
    build_id: str | None = None
    _index: dict[str, dict[str, list[int]]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        by: dict[str, dict[str, list[int]]] = {k: {} for k in ("insee_com", "from_codes", "absorbed_outside",
                                                                  "nom_commune")}
        for i, row in enumerate(self.rows):
            by["insee_com"].setdefault(str(row["insee_com"]), []).append(i)
            by["nom_commune"].setdefault(normalize_name(str(row["nom_commune"] or "")), []).append(i)
            for key in ("from_codes", "absorbed_outside"):
                for code in str(row.get(key) or "").split(";"):
                    if code:
                        by[key].setdefault(code, []).append(i)
        self._index = by

    def find(self, query: str) -> list[dict]:
        """Rows answering ``query`` (see the module docstring), each with its ``match``."""
        code = as_code(query)
        keys = ("insee_com", "from_codes", "absorbed_outside") if code else ("nom_commune",)
        key_value = code or normalize_name(query)
        if not key_value:
            return []
        for key in keys:
            hits = self._index[key].get(key_value)
            if hits:
                return [{"match": key, **self.rows[i]} for i in hits]
        return []


@dataclass
class MembershipIndex:
    """The membership tables of one or several phases, ready to answer many queries."""

    tables: list[PublishedTable]

    @classmethod
    def open(cls, output_dir: str | Path = "data_out", phase: str = DEFAULT_PHASE, *,
             table: str | Path | None = None, max_bytes: int = 512 << 20) -> MembershipIndex:
        """The published table of ``phase`` (``"all"``: of every phase published) under
        ``output_dir``, or the file ``table`` (a membership Parquet or CSV) instead.

        Raises :class:`LookupTableError` when a table is missing, larger than ``max_bytes``,
        unreadable, or differs from the manifest beside it.
        """
        if table is not None:
            paths = [Path(table)]
        elif phase == "all":
            paths = sorted(Path(output_dir).glob(f"phase=*/{table_filename()}"))
            if not paths:
                raise LookupTableError(f"no published membership table under {Path(output_dir)}/phase=*/: "
                                       "build and publish first (territoires-industrie build), or pass --output DIR")
        else:
            paths = [published_table(output_dir, phase)]
        return cls([read_table(p, max_bytes) for p in paths])

    def find(self, query: str) -> Answer:
        """Every row of every table answering ``query``."""
        query = str(query)
        if len(query) > MAX_QUERY_CHARS:
            return Answer(query, ())
        return Answer(query, tuple(row for t in self.tables for row in t.find(query)))

    def find_all(self, queries: Iterable[str]) -> Iterator[Answer]:
        """One :class:`Answer` per query, in order, computed as they are consumed."""
        return (self.find(q) for q in queries)

    @property
    def columns(self) -> list[str]:
        return self.tables[0].columns


def lookup(query: str, output_dir: str | Path = "data_out", phase: str = DEFAULT_PHASE) -> Answer:
    """One query against the published table of ``phase`` (opens it each time: for many queries,
    open a :class:`MembershipIndex` once)."""
    return MembershipIndex.open(output_dir, phase).find(query)


# ------------------------------------------------------------------ reading and checking
def read_table(path: Path, max_bytes: int = 512 << 20) -> PublishedTable:
    """Read a membership table (Parquet, or CSV by its ``.csv`` name) and check it against the
    manifest beside it (retried while a publish is swapping the files)."""
    path = Path(path)
    for attempt in range(_RETRIES):
        data = _read_bounded(path, max_bytes, "membership table")
        verified, note, build_id = _check_manifest(path, hashlib.sha256(data).hexdigest())
        if verified is not None:
            break
        if attempt + 1 < _RETRIES:
            time.sleep(_RETRY_WAIT_S)
    else:
        raise LookupTableError(f"{path}: its sha256 differs from the one {path.parent / MANIFEST_NAME} lists "
                               "(an altered file, or a publish that did not finish); not used")
    columns, rows = _parse(path, data)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise LookupTableError(f"{path}: not a membership table: missing column(s) {', '.join(missing)}")
    return PublishedTable(path=path, columns=columns, rows=rows, verified=verified, note=note, build_id=build_id)


def _read_bounded(path: Path, max_bytes: int, what: str) -> bytes:
    try:
        return read_regular(path, max_bytes)
    except FileNotFoundError:
        raise LookupTableError(f"no {what} at {path}: build and publish first (territoires-industrie "
                               "build), or pass --output DIR / --table FILE") from None
    except RefusedFile as err:
        if err.kind == "too_large":
            raise LookupTableError(f"{path}: {what} larger than {max_bytes >> 20} MiB (TI_MAX_TABLE_MB); not read") \
                from None
        raise LookupTableError(f"{path}: cannot read the {what}: {err.why}") from None


def _check_manifest(path: Path, sha256: str) -> tuple[bool | None, str, str | None]:
    """(True, "", build id) when the manifest beside ``path`` lists it with this sha256; (False,
    why, build id) when there is no such manifest or entry; (None, ...) when the sha256 differs."""
    manifest_path = path.parent / MANIFEST_NAME
    if not manifest_path.is_file():
        return False, f"no {MANIFEST_NAME} beside it", None
    try:
        manifest = json.loads(_read_bounded(manifest_path, MAX_MANIFEST_BYTES, "manifest"))
        outputs = [o for o in manifest.get("outputs", []) if isinstance(o, dict)]
        build_id = manifest.get("build_id")
    except (ValueError, AttributeError, TypeError):
        return False, f"{manifest_path} is not a readable manifest", None
    entry = next((o for o in outputs if Path(str(o.get("path", ""))).name == path.name), None)
    if entry is None:
        return False, f"{manifest_path} does not list {path.name}", build_id
    if entry.get("sha256") != sha256:
        return None, "", build_id
    return True, "", build_id


def _parse(path: Path, data: bytes) -> tuple[list[str], list[dict]]:
    """Column names and rows (dicts of Python values) of a Parquet or CSV table."""
    if path.suffix.lower() == ".csv":
        return _parse_csv(path, data)
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        arrow = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as err:
        raise LookupTableError(f"{path}: not a readable Parquet file ({err})") from None
    return list(arrow.column_names), arrow.to_pylist()


def _parse_csv(path: Path, data: bytes) -> tuple[list[str], list[dict]]:
    import csv

    from .publish.membership_tables import COMMUNE_COLUMNS

    ints = {name for name, (kind, _) in COMMUNE_COLUMNS.items() if kind == "int"}
    try:
        reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline=""))
        columns = list(reader.fieldnames or [])
        rows = []
        for row in reader:
            for name in ints & row.keys():
                row[name] = int(row[name]) if row[name] not in ("", None) else None
            rows.append(row)
    except (UnicodeDecodeError, csv.Error) as err:
        raise LookupTableError(f"{path}: not a readable UTF-8 CSV table ({err})") from None
    except ValueError as err:
        raise LookupTableError(f"{path}:{reader.line_num}: {err}") from None
    return columns, rows


# ------------------------------------------------------------------ typed reading for pandas
def csv_dtypes(table: str = TABLE) -> dict[str, str]:
    """pandas dtypes of a published membership CSV, from its column declarations: text columns as
    ``string`` (``01`` stays ``01``), counts as nullable ``Int64`` (an empty cell is missing).

    >>> csv_dtypes()["region"], csv_dtypes()["list_cog"]
    ('string', 'Int64')
    """
    from .publish.membership_tables import TABLES

    return {name: "Int64" if kind == "int" else "string" for name, (kind, _) in TABLES[table].items()}
