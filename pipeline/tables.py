"""Robust reading of the CSV files third parties publish: encoding, BOM, separator, headers, codes."""

from __future__ import annotations

import csv
import gzip
import io
import re
from pathlib import Path

import pandas as pd

from .errors import InputFormatError

_WS = " \t\r\n\xa0\u202f\ufeff"
INSEE_RE = re.compile(r"^(?:\d{5}|2[AB]\d{3})$")
SIREN_RE = re.compile(r"^\d{9}$")


def clean_text(value: object) -> object:
    """Strip spaces including non-breaking ones, and fold inner runs of whitespace."""
    if not isinstance(value, str):
        return value
    return re.sub(r"[\s\xa0\u202f]+", " ", value).strip(_WS)


def read_bytes(path: Path) -> bytes:
    """Read a file, transparently un-gzipping it (by magic bytes, not by name)."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise InputFormatError(f"{path}: cannot read file ({err.strerror or err})") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise InputFormatError(f"{path}: corrupt gzip data ({err})") from None
    return data


def decode_text(data: bytes, path: Path) -> str:
    """UTF-8 (with or without BOM), else Windows-1252."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError as err:
            raise InputFormatError(f"{path}: neither UTF-8 nor Windows-1252 text ({err})") from None


def _sniff_separator(header: str) -> str:
    counts = {sep: header.count(sep) for sep in (",", ";", "\t", "|")}
    return max(counts, key=counts.get) if max(counts.values()) > 0 else ","


def read_csv(path: Path, required: list[str], optional: list[str] = (),
             aliases: dict[str, str] | None = None) -> pd.DataFrame:
    """Read a CSV as strings with normalised headers, cleaned values and a ``_line`` column.

    ``aliases`` maps alternative header names (lower case) to the canonical name. Missing required
    columns raise one error naming the expected and the found columns.
    """
    text = decode_text(read_bytes(path), path)
    if not text.strip():
        raise InputFormatError(f"{path}: empty file, expected columns {', '.join(required)}")
    first = text.splitlines()[0]
    sep = _sniff_separator(first)
    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False,
                            quoting=csv.QUOTE_MINIMAL, skip_blank_lines=True)
    except (pd.errors.ParserError, csv.Error) as err:
        raise InputFormatError(f"{path}: malformed CSV ({err})") from None
    aliases = aliases or {}
    names = []
    for col in frame.columns:
        key = clean_text(str(col)).lower().replace(" ", "_")
        names.append(aliases.get(key, key))
    frame.columns = names
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputFormatError(
            f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(list(required) + list(optional))}"
            f" (optional: {', '.join(optional) or 'none'}); found {', '.join(map(str, frame.columns))}"
        )
    keep = [c for c in list(required) + list(optional) if c in frame.columns]
    frame = frame[keep].copy()
    for col in keep:
        frame[col] = frame[col].map(clean_text)
    # Line numbers as a text editor shows them (header = 1). Quoted multi-line fields are rare here.
    frame["_line"] = range(2, len(frame) + 2)
    frame = frame[~(frame[keep] == "").all(axis=1)]
    return frame.reset_index(drop=True)


def normalise_insee(code: str) -> str:
    """Restore a commune code that lost its leading zero (``1001`` -> ``01001``); keep 2A/2B."""
    code = clean_text(code or "").upper()
    if re.fullmatch(r"\d{4}", code):
        return "0" + code
    if code.endswith(".0") and code[:-2].isdigit():   # a number that went through a float
        return normalise_insee(code[:-2])
    return code


def normalise_siren(code: str) -> str:
    code = clean_text(code or "").replace(" ", "")
    if code.endswith(".0") and code[:-2].isdigit():
        code = code[:-2]
    if re.fullmatch(r"\d{8}", code):
        return "0" + code
    return code
