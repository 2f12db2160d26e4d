"""The user-supplied per-territory plan table (``TI_PLANS_PATH``) and the four plan axes.

No open dataset gives each territory's action plan, so the plan columns come only from a CSV the
user supplies (template: ``assets/plans_template.csv``; guide: ``docs/PLANS.md``). Without one,
every plan column is null. This module reads that CSV (UTF-8 with or without BOM, or
Windows-1252; ``,`` or ``;``), validates every cell, and reports ALL problems in one
:class:`~pipeline.errors.PlanTableError`, each as ``<file>:<line>: column <col>: <problem> (<value>)``
with line numbers as a text editor shows them (header = line 1).

Dtypes of the table: ``boolean`` (axes), ``Int64`` (action counts), ``string`` (URL, free text)
and, for ``plan_date_adoption``, an ``object`` column of ``datetime.date`` values (or ``None``):
pyarrow writes it as ``date32``, GeoJSON as ``"YYYY-MM-DD"``.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..errors import InputFormatError, PlanTableError
from ..limits import DEFAULT_LIMITS, Limits
from ..regular_files import read_raw, shown
from ..settings import ASSETS_DIR

if TYPE_CHECKING:   # pandas and the CSV readers are imported to read or attach a table (see defs.assets.plan_table)
    import pandas as pd

ID_COLUMN = "id_ti"
AXIS_CODES = ("transition_ecologique", "innovation", "competences", "foncier")
AXES_PATH = ASSETS_DIR / "axes.toml"
TEMPLATE_PATH = ASSETS_DIR / "plans_template.csv"
# Columns accepted in the plan table but not read (handy for the person filling it in).
IGNORED_COLUMNS = ("lib_ti",)
MAX_LISTED_PROBLEMS = 50
NO_TABLE_WARNING = "no plan table (TI_PLANS_PATH unset): plan columns are null"


@dataclass(frozen=True)
class PlanColumn:
    """One published plan column. ``kind`` drives parsing: boolean, date, count, url or text."""

    name: str
    dtype: str
    kind: str
    description: str


_AXIS_WORDS = {
    "transition_ecologique": "axis 1, ecological and energy transition",
    "innovation": "axis 2, innovation ecosystems",
    "competences": "axis 3, recruitment and skills",
    "foncier": "axis 4, industrial land",
}

PLAN_COLUMNS: list[PlanColumn] = [
    *(
        PlanColumn(f"axe_{c}", "boolean", "boolean",
                   f"The territory's action plan covers {_AXIS_WORDS[c]} (null: unknown).")
        for c in AXIS_CODES
    ),
    PlanColumn("plan_date_adoption", "object", "date",
               "Date the action plan was adopted (datetime.date; null: unknown)."),
    *(
        PlanColumn(f"plan_nb_actions_{c}", "Int64", "count",
                   f"Number of plan actions under {_AXIS_WORDS[c]} (null: unknown).")
        for c in AXIS_CODES
    ),
    PlanColumn("plan_url", "string", "url", "http(s) address of the published action plan."),
    PlanColumn("plan_statut", "string", "text", "Status of the plan, free text as supplied."),
    PlanColumn("plan_commentaire", "string", "text", "Comment, free text as supplied."),
]
PLAN_COLUMN_NAMES = [c.name for c in PLAN_COLUMNS]
_BY_NAME = {c.name: c for c in PLAN_COLUMNS}


@dataclass(frozen=True)
class Axis:
    """One of the four plan axes, as described in ``assets/axes.toml``."""

    code: str
    order: int
    column: str
    label_fr: str
    label_en: str
    short_fr: str
    description: str

    @property
    def count_column(self) -> str:
        return f"plan_nb_actions_{self.code}"


@dataclass
class PlansResult:
    """The plan table (indexed by ``id_ti``, exactly :data:`PLAN_COLUMNS`), warnings, provenance."""

    table: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    source: dict | None = None  # path, sha256, rows, encoding, separator; None without a table


def load_axes(path: Path | None = None) -> list[Axis]:
    """The four axes from ``assets/axes.toml`` (under ``ASSETS_DIR``), in their order 1-4."""
    path = Path(path) if path is not None else AXES_PATH
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputFormatError(f"axes file not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise InputFormatError(f"axes file {path} is not valid TOML: {err}") from None
    fields = ("code", "order", "column", "label_fr", "label_en", "short_fr", "description")
    axes = []
    for i, entry in enumerate(raw.get("axes", []), start=1):
        missing = [f for f in fields if f not in entry]
        if missing:
            raise InputFormatError(f"axes file {path}: axis #{i} lacks {', '.join(missing)}")
        axes.append(Axis(**{f: entry[f] for f in fields}))
    axes.sort(key=lambda a: a.order)
    got = [(a.order, a.code, a.column) for a in axes]
    want = [(i, c, f"axe_{c}") for i, c in enumerate(AXIS_CODES, start=1)]
    if got != want:
        raise InputFormatError(f"axes file {path}: expected (order, code, column) {want}, found {got}")
    return axes


def empty_plan_table() -> pd.DataFrame:
    """A plan table with no rows and the published dtypes."""
    return _frame({c.name: [] for c in PLAN_COLUMNS}, [])


def _frame(values: dict[str, list], ids: list[str]) -> pd.DataFrame:
    import pandas as pd

    index = pd.Index(ids, dtype="string", name=ID_COLUMN)
    data = {c.name: pd.Series(values[c.name], index=index, dtype=c.dtype) for c in PLAN_COLUMNS}
    return pd.DataFrame(data, index=index)


# ---------------------------------------------------------------- cell parsers


class _Bad(ValueError):
    """A cell value is invalid; the message is the problem."""


_TRUE = {"oui", "true", "vrai", "yes", "1", "x"}
_FALSE = {"non", "false", "faux", "no", "0"}
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}")
_FR = re.compile(r"\d{1,2}/\d{1,2}/\d{4}")
_INT64_MAX = 2**63 - 1


def _parse_boolean(text: str) -> bool:
    low = text.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise _Bad("not a boolean, use oui/non, true/false, vrai/faux, yes/no, 1/0 or x (blank: unknown)")


def _parse_date(text: str) -> dt.date:
    try:
        if _ISO.fullmatch(text):
            return dt.date.fromisoformat(text)
        if _FR.fullmatch(text):
            return dt.datetime.strptime(text, "%d/%m/%Y").date()
    except ValueError:
        raise _Bad("not a real calendar date") from None
    raise _Bad("not a date, use YYYY-MM-DD or DD/MM/YYYY")


def _parse_count(text: str) -> int:
    if re.fullmatch(r"\+?\d+", text):
        value = int(text)
        if value > _INT64_MAX:
            raise _Bad("action count too large")
        return value
    if re.fullmatch(r"-\d+([.,]\d*)?", text):
        raise _Bad("negative action count")
    if re.fullmatch(r"\+?\d*[.,]\d+|\+?\d+[.,]", text) or re.fullmatch(r"[+-]?\d+(\.\d*)?e[+-]?\d+", text, re.I):
        raise _Bad("action count is not a whole number")
    raise _Bad("action count is not a number")


def _parse_url(text: str) -> str:
    if any(ch.isspace() for ch in text):
        raise _Bad("URL contains whitespace")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        raise _Bad("not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise _Bad("URL must start with http:// or https://")
    if not parts.hostname:
        raise _Bad("URL has no host name")
    return text


_PARSERS = {
    "boolean": _parse_boolean,
    "date": _parse_date,
    "count": _parse_count,
    "url": _parse_url,
    "text": lambda text: text,
}


# ---------------------------------------------------------------- reading


def _show(value: str) -> str:
    if value == "":
        return "empty"
    value = value.replace("\r", "\\r").replace("\n", "\\n")
    return value if len(value) <= 80 else value[:77] + "..."


def _clean(value: str) -> str:
    """Trim whitespace, including non-breaking spaces (str.strip covers \\xa0 and \\u202f)."""
    return value.strip()


def _decode(data: bytes, label: str) -> tuple[str, str]:
    """Text and encoding name; the byte-level checks are those of every CSV the pipeline reads."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise PlanTableError(f"{label}: file is UTF-16; save it as 'CSV UTF-8' (or CSV Windows-1252)")
    try:
        from . import csv_tables as tables

        text = tables.decode_text(data, label)
    except InputFormatError as err:
        raise PlanTableError(str(err)) from None
    return text, ("utf-8" if _is_utf8(data) else "cp1252")


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return False
    return True


def _separator(text: str, label: str) -> tuple[str, str, int]:
    """Separator detected from the header line, the text without an Excel ``sep=`` line, line offset."""
    first, _, rest = text.partition("\n")
    hint = re.fullmatch(r"\s*sep=(.)\s*", first)
    if hint:
        sep = hint.group(1)
        if sep not in ",;":
            raise PlanTableError(f"{label}:1: separator {sep!r} is not supported, use ',' or ';'")
        return sep, rest, 1
    header = next((line for line in text.splitlines() if line.strip()), "")
    unquoted = re.sub(r'"[^"]*"', "", header)
    commas, semicolons = unquoted.count(","), unquoted.count(";")
    if commas and semicolons:
        raise PlanTableError(
            f"{label}: cannot tell the separator: the header line has both ',' and ';' ({_show(header)})"
        )
    return (";" if semicolons else ","), text, 0


def _records(text: str, sep: str, label: str, offset: int):
    """Yield (line where the record starts, fields) for every non-blank record."""
    try:
        from . import csv_tables as tables

        yield from tables.iter_records(text, sep, label, offset)
    except InputFormatError as err:
        raise PlanTableError(str(err)) from None


def _header(fields: list[str], label: str, line: int) -> list[str | None]:
    """Column name per field position (None for ignored columns); raise on header problems."""
    names = [_clean(f).lower() for f in fields]
    expected = [ID_COLUMN, *PLAN_COLUMN_NAMES]
    known = set(expected) | set(IGNORED_COLUMNS)
    problems = []
    unknown = [n for n in names if n and n not in known]
    for name in unknown:
        close = difflib.get_close_matches(name, expected, n=1)
        hint = f", did you mean {close[0]}?" if close else ""
        problems.append(f"{label}:{line}: unknown column {shown(name)}{hint}")
    seen: set[str] = set()
    for name in names:
        if name and name in seen:
            problems.append(f"{label}:{line}: column {name!r} appears twice")
        seen.add(name)
    if ID_COLUMN not in names:
        problems.append(f"{label}:{line}: no {ID_COLUMN!r} column")
    if problems:
        raise PlanTableError(
            "invalid plan table header:\n" + "\n".join(problems)
            + f"\nexpected columns: {', '.join(expected)} (only {ID_COLUMN} is required; "
            f"{', '.join(IGNORED_COLUMNS)} is accepted and ignored)"
        )
    return [n if n and n not in IGNORED_COLUMNS else None for n in names]


def _raise_problems(label: str, listed: list[str], total: int) -> None:
    more = total - len(listed)
    tail = f"\n... and {more} more problem(s)" if more else ""
    raise PlanTableError(
        f"invalid plan table {label}: {total} problem(s)\n" + "\n".join(listed) + tail
    )


# Control characters (C0 but tab and line breaks, which a quoted comment may hold; DEL; C1).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
def _parse_cell(name: str, cell: str) -> object:
    """The parsed value of one non-empty cell of column ``name``; _Bad when it is invalid."""
    found = _CONTROL.search(cell)
    if found:
        raise _Bad(f"control character {found.group()!r} (U+{ord(found.group()):04X}) in the value")
    return _PARSERS[_BY_NAME[name].kind](cell)


def _parse_row(fields: list[str], names: list[str | None], header_fields: list[str], label: str,
               line: int) -> tuple[dict[str, object], list[tuple[int, str]]]:
    """The cells of one record by column name, and its problems as (field position, message)."""
    row: dict[str, object] = {}
    problems: list[tuple[int, str]] = []
    for pos, raw in enumerate(fields):
        cell = _clean(raw)
        if pos >= len(names):
            if cell:
                problems.append((pos, f"{label}:{line}: column {pos + 1}: "
                                 f"value beyond the last header column ({_show(cell)})"))
            continue
        name = names[pos]
        if name is None:
            if cell and not header_fields[pos].strip():
                problems.append((pos, f"{label}:{line}: column {pos + 1}: "
                                 f"value under an unnamed column ({_show(cell)})"))
            continue
        if name == ID_COLUMN or cell == "":
            row[name] = cell if name == ID_COLUMN else None
            continue
        try:
            row[name] = _parse_cell(name, cell)
        except _Bad as bad:
            problems.append((pos, f"{label}:{line}: column {name}: {bad} ({_show(cell)})"))
            row[name] = None
    return row, problems


@dataclass
class _Rows:
    """The valid rows read so far and the problems: the first MAX_LISTED_PROBLEMS listed, all counted."""

    canonical: dict[str, str]
    ids: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    values: dict[str, list] = field(default_factory=lambda: {c: [] for c in PLAN_COLUMN_NAMES})
    first_line: dict[str, int] = field(default_factory=dict)
    listed: list[str] = field(default_factory=list)
    total: int = 0

    def problems(self, found: list[tuple[int, str]]) -> None:
        self.total += len(found)
        room = MAX_LISTED_PROBLEMS - len(self.listed)
        if room > 0:
            self.listed.extend(msg for _, msg in sorted(found, key=lambda p: p[0])[:room])

    def id_problem(self, raw_id: str, label: str, line: int) -> str | None:
        """Why ``raw_id`` cannot be used (unknown or duplicate), else None (the id is recorded)."""
        tid = self.canonical.get(raw_id.lower())
        if tid is None:
            hint = ""
            if len(self.listed) < MAX_LISTED_PROBLEMS:   # only for listed problems: difflib is slow
                close = difflib.get_close_matches(raw_id.lower(), list(self.canonical), n=1)
                hint = f", did you mean {self.canonical[close[0]]}?" if close else ""
            return f"{label}:{line}: column {ID_COLUMN}: unknown territory id{hint} ({_show(raw_id)})"
        if tid in self.first_line:
            return (f"{label}:{line}: column {ID_COLUMN}: duplicate territory id, also on line "
                    f"{self.first_line[tid]} ({tid})")
        self.first_line[tid] = line
        return None

    def add(self, tid: str, line: int, row: dict[str, object]) -> None:
        self.ids.append(tid)
        self.lines.append(line)
        for name in PLAN_COLUMN_NAMES:
            self.values[name].append(row.get(name))


def _read_rows(records, names: list[str | None], header_fields: list[str], canonical: dict[str, str],
               label: str) -> _Rows:
    """Parse and check every record; the problems of each line are kept in column order."""
    rows = _Rows(canonical)
    id_pos = names.index(ID_COLUMN)
    for line, fields in records:
        row, found = _parse_row(fields, names, header_fields, label, line)
        raw_id = str(row.get(ID_COLUMN, ""))
        why = (f"{label}:{line}: column {ID_COLUMN}: missing territory id (empty)" if raw_id == ""
               else rows.id_problem(raw_id, label, line))
        if why is not None:
            found.append((id_pos, why))
        else:
            rows.add(canonical[raw_id.lower()], line, row)
        rows.problems(found)
    return rows


def _warnings(label: str, names: list[str | None], rows: _Rows) -> list[str]:
    warnings = []
    absent = [c for c in PLAN_COLUMN_NAMES if c not in names]
    if absent:
        warnings.append(f"{label}: columns absent from the plan table, left null: {', '.join(absent)}")
    for code in AXIS_CODES:
        for line, axis, count in zip(rows.lines, rows.values[f"axe_{code}"],
                                     rows.values[f"plan_nb_actions_{code}"]):
            if axis is False and count:
                warnings.append(
                    f"{label}:{line}: column plan_nb_actions_{code}: {count} action(s) but axe_{code} is false"
                )
    if len(rows.ids) < len(rows.canonical):
        warnings.append(
            f"{label}: plan rows for {len(rows.ids)} of {len(rows.canonical)} territories; "
            "the others have null plan columns"
        )
    return warnings


def _read_file(path: Path, label: str, limits: Limits) -> bytes:
    """The plan table's bytes: a regular file within TI_MAX_TABLE_MB."""
    if not path.is_file():
        raise PlanTableError(f"plan table is not a file: {label} (set by TI_PLANS_PATH)")
    try:
        return read_raw(path, limits.table_bytes, what="plan table (TI_PLANS_PATH)")
    except InputFormatError as err:
        raise PlanTableError(str(err)) from None


def read_plans(path: str | Path | None, valid_ids: Iterable[str], limits: Limits = DEFAULT_LIMITS) -> PlansResult:
    """Read and validate the plan table at ``path`` against the territory ids ``valid_ids``.

    ``path=None`` gives an empty table and a warning. Every problem found is collected and raised
    as one :class:`PlanTableError` (the first :data:`MAX_LISTED_PROBLEMS` listed). Territory ids
    are matched case-insensitively and stored in the spelling of ``valid_ids``.
    """
    if path is None:
        return PlansResult(empty_plan_table(), [NO_TABLE_WARNING], None)
    if isinstance(valid_ids, str):
        raise TypeError("valid_ids must be an iterable of ids, not a single string")
    label = str(path)
    path = Path(path)
    if not path.exists():
        raise PlanTableError(f"plan table not found: {label} (set by TI_PLANS_PATH)")
    data = _read_file(path, label, limits)
    text, encoding = _decode(data, label)
    sep, text, offset = _separator(text, label)
    records = _records(text, sep, label, offset)
    first = next(records, None)
    if first is None:
        raise PlanTableError(
            f"{label}: plan table is empty; it needs at least the header line "
            f"({ID_COLUMN},{','.join(PLAN_COLUMN_NAMES)}); copy {TEMPLATE_PATH.name}"
        )
    header_line, header_fields = first
    names = _header(header_fields, label, header_line)
    rows = _read_rows(records, names, header_fields, {str(i).lower(): str(i) for i in valid_ids}, label)
    if rows.total:
        _raise_problems(label, rows.listed, rows.total)
    source = {
        "path": str(path.resolve()),
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "rows": len(rows.ids),
        "encoding": encoding,
        "separator": sep,
    }
    return PlansResult(_frame(rows.values, rows.ids), _warnings(label, names, rows), source)


def attach_plans(territories: pd.DataFrame, plans: PlansResult) -> pd.DataFrame:
    """A copy of ``territories`` with every :data:`PLAN_COLUMNS` column added (left join on id_ti).

    Rows, their order, the index and any geometry are kept; territories without a plan row get
    nulls. Plan columns already present are replaced.
    """
    import pandas as pd

    if ID_COLUMN not in territories.columns:
        raise KeyError(f"attach_plans: the territories frame has no {ID_COLUMN!r} column")
    present = [c for c in PLAN_COLUMN_NAMES if c in territories.columns]
    out = territories.drop(columns=present).copy()
    keys = pd.Index(out[ID_COLUMN].astype("string"), name=ID_COLUMN)
    for col in PLAN_COLUMNS:
        series = plans.table[col.name].reindex(keys)
        # dates: datetime.date or None, never NaN
        data = [v if pd.notna(v) else None for v in series] if col.dtype == "object" else series.array
        out[col.name] = pd.Series(data, index=out.index, dtype=col.dtype)
    return out
