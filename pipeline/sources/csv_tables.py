"""Robust reading of the CSV files third parties publish: encoding, BOM, separator, headers, codes.

:func:`read_csv` accepts UTF-8 (with or without BOM), UTF-16 with BOM or Windows-1252, one encoding
for the whole file (a file mixing UTF-8 and another encoding is refused); gzip by magic bytes,
decoded within ``TI_MAX_TABLE_MB``; regular files only; ``,`` ``;`` tab or ``|`` separators (sniffed from the header, or Excel's ``sep=`` first
line); quoted fields holding separators or line breaks; blank lines. Every row keeps ``_line``, the
line where its record starts as a text editor shows it, so errors can name it.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import zlib
from operator import itemgetter
from pathlib import Path
from typing import TypeVar, cast

import numpy as np
import pandas as pd

from ..errors import InputFormatError
from ..limits import DEFAULT_LIMITS, Limits, MiB
from ..regular_files import read_raw, shown
from ..regular_files import size_text as _size

_WS = " \t\r\n\xa0\u202f\u2007\u200b\ufeff"
INSEE_RE = re.compile(r"^(?:\d{5}|2[AB]\d{3})$")
SIREN_RE = re.compile(r"^\d{9}$")
SEPARATORS = (",", ";", "\t", "|")
T = TypeVar("T")


_SPACES = re.compile(r"[\s\xa0\u202f\u2007\u200b]+")
_NEEDS_CLEANING = re.compile(r"^[\s\xa0\u202f\u2007\u200b\ufeff]|[\s\xa0\u202f\u2007\u200b\ufeff]$"
                             r"|[\t\r\n\xa0\u202f\u2007\u200b\ufeff]|  ")


def clean_text(value: T) -> T:
    """Strip spaces including non-breaking ones, and fold inner runs of whitespace (a value that
    is not a string is returned as is)."""
    if not isinstance(value, str) or not _NEEDS_CLEANING.search(value):
        return value
    return cast(T, _SPACES.sub(" ", value).strip(_WS))


def read_bytes(path: Path, limit: int) -> bytes:
    """Read a regular file, transparently un-gzipping it (by magic bytes, not by name).

    ``limit`` (``Limits.table_bytes``) caps both the file and its decoded size: a gzip bomb is
    decoded in steps and refused as soon as it passes the cap, never expanded whole.
    """
    data = read_raw(path, limit)
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(data, limit, path)
    return data


def _gunzip(data: bytes, limit: int, path: Path) -> bytes:
    """Every gzip member of ``data`` decoded, once a first pass that keeps nothing (1 MiB at a
    time) has seen it stays within ``limit`` bytes: a bomb is refused without being held."""
    total = 0
    decoder = zlib.decompressobj(wbits=31)
    rest = data
    try:
        while True:
            piece = len(decoder.decompress(rest, MiB))
            total += piece
            if total > limit:
                raise InputFormatError(f"{path}: gzip data expands past {_size(limit)} "
                                       "(raise TI_MAX_TABLE_MB to read it)")
            if decoder.eof:
                rest = decoder.unused_data
                if not rest.strip(b"\x00"):       # trailing zero padding, as gzip accepts
                    break
                decoder = zlib.decompressobj(wbits=31)
            elif decoder.unconsumed_tail or piece == MiB:   # more input, or more output pending
                rest = decoder.unconsumed_tail
            else:
                raise InputFormatError(f"{path}: corrupt gzip data (truncated)")
        return gzip.decompress(data)
    except (zlib.error, OSError, EOFError) as err:
        raise InputFormatError(f"{path}: corrupt gzip data ({err})") from None


# A multi-byte UTF-8 sequence: in a file that is not UTF-8 as a whole, the sign of a mixed file.
NEWLINE = b"\n"
_UTF8_SEQUENCE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")


def decode_text(data: bytes, path: Path | str) -> str:
    """UTF-8 (with or without BOM), UTF-16 with BOM, else Windows-1252 -- one encoding for the whole file.

    A file that is not valid UTF-8 but holds UTF-8 sequences (or a UTF-8 BOM) mixes encodings,
    e.g. one line pasted from a Windows-1252 file into a UTF-8 one: decoding it either way would
    publish garbled names, so it is refused naming the first line that is not UTF-8.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as err:
            raise InputFormatError(f"{path}: invalid UTF-16 text ({err})") from None
    if data.startswith(b"PK\x03\x04"):
        raise InputFormatError(f"{path}: this is a zip archive or a spreadsheet workbook (.xlsx/.ods), "
                               "not a text file; export it as CSV")
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise InputFormatError(f"{path}:{line}: NUL byte: this is not a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        bad = err.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)   # offsets after the BOM
    line = data[:bad].count(b"\n") + 1
    utf8 = _UTF8_SEQUENCE.search(data, 3 if data.startswith(b"\xef\xbb\xbf") else 0)
    if data.startswith(b"\xef\xbb\xbf") or utf8 is not None:
        where = ("starts with a UTF-8 BOM" if utf8 is None
                 else f"line {data[:utf8.start()].count(NEWLINE) + 1} is UTF-8")
        raise InputFormatError(
            f"{path}:{line}: byte 0x{data[bad]:02x} is not UTF-8 but the file {where}: it mixes "
            "encodings; save the whole file as UTF-8")
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise InputFormatError(f"{path}:{line}: byte 0x{data[err.start]:02x} is neither UTF-8 nor "
                               "Windows-1252 text") from None


def sniff_separator(header: str) -> str:
    """The most frequent candidate separator of a header line, quoted parts ignored (',' if none)."""
    unquoted = re.sub(r'"[^"]*"', "", header)
    counts = {sep: unquoted.count(sep) for sep in SEPARATORS}
    best = max(counts, key=counts.__getitem__)   # ties: the first of SEPARATORS
    return best if counts[best] > 0 else ","


def _separator(text: str) -> tuple[str, str, int]:
    """(separator, text without an Excel ``sep=`` first line, number of lines removed)."""
    first, _, rest = text.partition("\n")
    hint = re.fullmatch(r"\s*sep=(.)\s*", first)
    if hint:
        return hint.group(1), rest, 1
    return sniff_separator(_first_line(text)), text, 0


def _first_line(text: str) -> str:
    """The first non-blank line (as ``str.splitlines`` cuts them), looking at a growing prefix."""
    size = 1 << 16
    while True:
        lines = text[:size].splitlines()
        whole = size >= len(text)
        found = next((line for line in (lines if whole else lines[:-1]) if line.strip(_WS)), None)
        if found is not None or whole:
            return found or ""
        size *= 4


def iter_records(text: str, sep: str, path: Path | str, offset: int = 0):
    """Yield (line where the record starts, fields) for every non-blank record."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, quotechar='"', strict=True)
    previous = 0
    try:
        for fields in reader:
            start, previous = previous + 1, reader.line_num
            if any(f.strip(_WS) for f in fields):
                yield start + offset, fields
    except csv.Error as err:
        raise InputFormatError(f"{path}:{reader.line_num + offset}: malformed CSV ({err})") from None


def header_key(name: str) -> str:
    """Normalised header: cleaned, lower case, spaces and dashes as underscores."""
    return re.sub(r"[\s\-]+", "_", str(clean_text(name)).lower())


def _records(text: str, sep: str, path: Path, offset: int
             ) -> tuple[list[list[str]], list[int], InputFormatError | None]:
    """Every record (blank ones included), the line where each starts, and the error that stopped
    the reading (to raise once the records before it are checked), or None."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, quotechar='"', strict=True)
    try:
        records = list(reader)   # C speed; line numbers below
        if reader.line_num == len(records):   # no record spans several lines: record i is line i + 1
            return records, list(range(1 + offset, len(records) + 1 + offset)), None
    except csv.Error:
        pass
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, quotechar='"', strict=True)
    records, lines, previous = [], [], 0
    try:
        for fields in reader:
            records.append(fields)
            lines.append(previous + 1 + offset)
            previous = reader.line_num
    except csv.Error as err:
        return records, lines, InputFormatError(f"{path}:{reader.line_num + offset}: malformed CSV ({err})")
    return records, lines, None


# On values joined by NUL (not in decoded text): a value starting with a space (also searched in
# the reversed text, for values ending with one; a literal first is much faster for ``re``).
_STARTS_DIRTY = re.compile(r"\x00[\s\xa0\u202f\u2007\u200b\ufeff]")
_DIRTY_ANYWHERE = ("\t", "\r", "\n", "\xa0", "\u202f", "\u2007", "\u200b", "\ufeff", "  ")


def _clean_column(values: list[str], nul_free: bool) -> list[str]:
    """``clean_text`` of every value, checking the whole column at once for values to clean."""
    if nul_free:
        joined = "\x00" + "\x00".join(values) + "\x00"
        if not (any(d in joined for d in _DIRTY_ANYWHERE) or _STARTS_DIRTY.search(joined)
                or _STARTS_DIRTY.search(joined[::-1])):
            return values   # nothing clean_text would change
    unique = set(values)
    if 2 * len(unique) < len(values):   # repeated values (territory names): clean each once
        cleaned = {v: clean_text(v) for v in unique}
        return list(map(cleaned.__getitem__, values))
    return [clean_text(v) for v in values]


def _positions(keys: list[str], wanted: list[str], aliases: dict[str, str]) -> dict[str, int]:
    """Column name -> field position; of two headers meaning one column, the canonical one (else
    the first) wins."""
    position: dict[str, int] = {}
    for pos, key in enumerate(keys):
        name = aliases.get(key, key)
        if name in wanted and (name not in position or (key == name and keys[position[name]] != name)):
            position[name] = pos
    return position


MAX_SHOWN_COLUMNS = 12


def _missing_columns(path: Path, line: int, missing: list[str], required, optional, keys, sep) -> InputFormatError:
    """The missing-column error; the found headers are foreign content: each quoted and cut short."""
    expected = ", ".join(list(required) + list(optional))
    found = ", ".join(shown(k) if k else "(empty)" for k in keys[:MAX_SHOWN_COLUMNS])
    more = f" and {len(keys) - MAX_SHOWN_COLUMNS} more" if len(keys) > MAX_SHOWN_COLUMNS else ""
    return InputFormatError(
        f"{path}:{line}: missing column(s) {', '.join(missing)}; expected {expected}"
        f" (optional: {', '.join(optional) or 'none'}); found {found}{more} (separator {sep!r})")


def _check_widths(path: Path, rows: list[list[str]], lines: list[int], width: int, header_line: int,
                  sep: str) -> list[list[str]]:
    """Rows padded to the header's width; a row with a non-empty field beyond it is an error."""
    lengths = set(map(len, rows))
    if lengths and max(lengths) > width:
        for line, fields in zip(lines, rows):
            if len(fields) > width and any(f.strip(_WS) for f in fields[width:]):
                raise InputFormatError(f"{path}:{line}: {len(fields)} fields but the header (line "
                                       f"{header_line}) has {width}; quote values that contain the "
                                       f"separator {sep!r}")
    if lengths and min(lengths) < width:   # short rows (blank lines too) are padded
        rows = [f if len(f) >= width else f + [""] * (width - len(f)) for f in rows]
    return rows


def _used_rows(columns: dict[str, list[str]], lines: list[int]) -> tuple[dict[str, list[str]], list[int]]:
    """Drop the rows with nothing in any kept column."""
    if all("" in values for values in columns.values()):
        used = [i for i, values in enumerate(zip(*columns.values())) if any(values)]
        if len(used) < len(lines):
            columns = {c: [values[i] for i in used] for c, values in columns.items()}
            lines = [lines[i] for i in used]
    return columns, lines


def read_csv(path: Path, required: list[str], optional: tuple[str, ...] | list[str] = (),
             aliases: dict[str, str] | None = None, limits: Limits = DEFAULT_LIMITS) -> pd.DataFrame:
    """Read a CSV as strings with normalised headers, cleaned values and a ``_line`` column.

    ``aliases`` maps alternative header names (normalised, see :func:`header_key`) to the canonical
    name. Missing required columns raise one error naming the expected and the found columns.
    When two headers mean the same column, the one spelled canonically (else the first) is used.
    A file without any data row is an error. Values are stripped (non-breaking spaces included);
    a row shorter than the header is padded with empty values; a longer one is an error unless the
    extra fields are empty (a trailing separator).
    """
    text = decode_text(read_bytes(path, limits.table_bytes), path)
    sep, text, offset = _separator(text)
    records, record_lines, error = _records(text, sep, path, offset)
    start = next((i for i, fields in enumerate(records) if any(f.strip(_WS) for f in fields)), None)
    if start is None:
        if error:
            raise error
        expected = ", ".join(list(required) + list(optional))
        raise InputFormatError(f"{path}: empty file, expected a header line with columns {expected}")
    header_line, header = record_lines[start], records[start]
    keys = [header_key(h) for h in header]
    wanted = list(dict.fromkeys(list(required) + list(optional)))
    position = _positions(keys, wanted, aliases or {})
    missing = [c for c in required if c not in position]
    if missing:
        raise _missing_columns(path, header_line, missing, required, optional, keys, sep)
    lines = record_lines[start + 1:]
    rows = records[start + 1:]
    rows = _check_widths(path, rows, lines, len(header), header_line, sep)   # before a later error
    if error:
        raise error
    nul_free = "\x00" not in text
    columns = {c: _clean_column(list(map(itemgetter(position[c]), rows)), nul_free)
               for c in wanted if c in position}
    columns, lines = _used_rows(columns, lines)
    if not lines:
        raise InputFormatError(f"{path}: no data row after the header (line {header_line})")
    frame = pd.DataFrame(columns, dtype=object)   # plain str objects: fast to iterate and map
    frame["_line"] = lines
    frame.attrs["source"] = str(path)
    return frame


def normalise_insee(code: str) -> str:
    """Restore a commune code that lost its leading zero (``1001`` -> ``01001``); keep 2A/2B."""
    code = re.sub(r"[\s\xa0\u202f\u2007\u200b\ufeff]+", "", str(code or "")).upper()
    if code.endswith(".0") and code[:-2].isdigit():   # a number that went through a float
        code = code[:-2]
    if re.fullmatch(r"[1-9]\d{3}", code):   # no commune code starts with 00
        return "0" + code
    return code


_INSEE_AS_IS = re.compile(r"\d{5}|2[AB]\d{3}")
_INSEE_LINES = re.compile(r"(?:(?:\d{5}|2[AB]\d{3})\n)*(?:\d{5}|2[AB]\d{3})")   # codes joined by \n


def all_str(values: list) -> bool:
    """Whether every value is a ``str`` (no missing value): joined, they can be checked at once."""
    return set(map(type, values)) <= {str}


def normalise_insee_series(values: pd.Series) -> pd.Series:
    """:func:`normalise_insee` of every value; well-formed codes (nearly all) are kept as they are."""
    codes = values.tolist()
    if not (codes and all_str(codes) and _INSEE_LINES.fullmatch("\n".join(codes))):
        as_is = _INSEE_AS_IS.fullmatch
        codes = [v if isinstance(v, str) and as_is(v) else normalise_insee(v) for v in codes]
    return pd.Series(codes, index=values.index, name=values.name)


def normalise_siren(code: str) -> str:
    """Remove spaces, undo a float (``.0``) and restore a lost leading zero of a SIREN."""
    code = re.sub(r"[\s\xa0\u202f\u2007\u200b\ufeff]+", "", str(code or ""))
    if code.endswith(".0") and code[:-2].isdigit():
        code = code[:-2]
    if re.fullmatch(r"[1-9]\d{7}", code):
        return "0" + code
    return code


def in_set(column: pd.Series, allowed) -> np.ndarray:
    """``column.isin(allowed).to_numpy()`` of a string column for a large collection, without pandas' cost.

    pandas' Arrow-backed string columns turn each allowed value into an Arrow scalar in Python:
    0.6 s for 70,000 commune codes (three COG years), where a set lookup per row takes 10 ms
    (measured with py-spy on `python -m pipeline build --phase all`, and on synthetic codes).
    As with ``isin``, a missing value matches only when ``allowed`` holds a missing value too.
    """
    allowed = allowed if isinstance(allowed, (set, frozenset, dict)) else set(allowed)
    found = np.fromiter((v in allowed for v in column.tolist()), dtype=bool, count=len(column))
    if any(_missing(v) for v in allowed):
        found |= column.isna().to_numpy()
    return found


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)
