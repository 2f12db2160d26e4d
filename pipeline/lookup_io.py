"""The ``lookup`` command's input and output: queries from a file, answers as a table, JSON or CSV.

Queries are read and answered as a stream (one line at a time), so a file of a million codes
takes the memory of the table plus one line. Lines are at most :data:`MAX_LINE_CHARS` long.

- input: one code or name per line (blank lines and ``#`` comments skipped), or, with a column
  name, a CSV file with a header (comma, semicolon or tab, the one whose header names the column);
  UTF-8, with or without a byte order mark; ``-`` is standard input;
- output ``table``: aligned columns for a terminal; ``json``: JSON Lines, one object per query
  ``{"query", "found", "rows": [...]}`` (one query gives one JSON document); ``csv``: one row per
  (query, row found), ``found`` false and empty cells for a query that found nothing.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, TextIO

from .errors import PipelineError
from .lookup import Answer, MembershipIndex

FORMATS = ("table", "json", "csv")
MAX_LINE_CHARS = 4096
_DELIMITERS = (",", ";", "\t")
_QUOTE = 40   # characters of foreign text quoted in a message
# table output: the columns shown, and the widest each may be (longer values end with "…")
_TABLE_COLUMNS = {"query": 24, "insee_com": 9, "nom_commune": 30, "departement": 3, "id_ti": 9, "lib_ti": 36,
                  "how": 27, "match": 16}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class LookupInputError(PipelineError):
    """A file of queries that cannot be read (it names the file and the line)."""


def _quote(text: str) -> str:
    return text if len(text) <= _QUOTE else text[:_QUOTE] + "…"


# ------------------------------------------------------------------ input
def _lines(stream: BinaryIO, name: str) -> Iterator[tuple[int, str]]:
    """(line number, text without its end of line), each line at most MAX_LINE_CHARS long."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    number = 0
    while True:
        number += 1
        try:
            line = text.readline(MAX_LINE_CHARS + 2)
        except UnicodeDecodeError:
            raise LookupInputError(f"{name}:{number}: not UTF-8 text") from None
        if not line:
            return
        if len(line) > MAX_LINE_CHARS and not line.endswith(("\n", "\r")):
            raise LookupInputError(f"{name}:{number}: line longer than {MAX_LINE_CHARS} characters")
        yield number, line.rstrip("\r\n")


def _plain(lines: Iterator[tuple[int, str]]) -> Iterator[str]:
    for _, line in lines:
        query = line.strip().strip("\"'").strip()
        if query and not query.startswith("#"):
            yield query


def _column(lines: Iterator[tuple[int, str]], name: str, column: str) -> Iterator[str]:
    """The values of ``column`` of a CSV file with a header."""
    first = next(lines, None)
    if first is None:
        raise LookupInputError(f"{name}: empty file, expected a header naming column {column!r}")
    header = first[1]
    delimiter = next((d for d in _DELIMITERS if column in next(csv.reader([header], delimiter=d))), None)
    if delimiter is None:
        fields = max((next(csv.reader([header], delimiter=d)) for d in _DELIMITERS), key=len)
        raise LookupInputError(f"{name}:1: no column {_quote(column)!r} in the header (columns: "
                               f"{_quote(', '.join(fields))})")
    position = next(csv.reader([header], delimiter=delimiter)).index(column)
    try:
        for row in csv.reader((line for _, line in lines), delimiter=delimiter):
            value = row[position].strip() if position < len(row) else ""
            if value:
                yield value
    except csv.Error as err:
        raise LookupInputError(f"{name}: not a readable CSV file ({err})") from None


def read_queries(path: str, column: str | None = None, stdin: BinaryIO | None = None) -> Iterator[str]:
    """Queries from the file ``path`` (``-``: ``stdin``, default standard input), lazily."""
    if path == "-":
        yield from _queries(stdin or sys.stdin.buffer, "<stdin>", column)
        return
    try:
        stream = open(path, "rb")
    except OSError as err:
        raise LookupInputError(f"{path}: cannot read the file of queries: {err.strerror or err}") from None
    with stream:
        yield from _queries(stream, path, column)


def _queries(stream: BinaryIO, name: str, column: str | None) -> Iterator[str]:
    lines = _lines(stream, name)
    return _column(lines, name, column) if column else _plain(lines)


# ------------------------------------------------------------------ output
@dataclass
class Summary:
    """What a run answered: queries, those that found nothing (the first few kept for the message)."""

    queries: int = 0
    not_found: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, answer: Answer) -> None:
        self.queries += 1
        if not answer.found:
            self.not_found += 1
            if len(self.examples) < 5:
                self.examples.append(_quote(answer.query))


def _safe(value: object) -> str:
    """A CSV cell a spreadsheet will not run as a formula (as the published CSV tables)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _cell(value: object, width: int) -> str:
    text = " ".join(("" if value is None else str(value)).split())
    return (text if len(text) <= width else text[:width - 1] + "…").ljust(width)


def _table_writer(index: MembershipIndex, out: TextIO):
    columns = dict(_TABLE_COLUMNS)
    if len(index.tables) > 1:
        columns["phase"] = 9
    widths = {c: max(len(c), min(w, max((len(str(r.get(c) or "")) for t in index.tables for r in t.rows),
                                        default=0))) for c, w in columns.items()}
    widths["query"], widths["match"] = columns["query"], columns["match"]   # not columns of the table
    print("  ".join(_cell(c, widths[c]) for c in columns).rstrip(), file=out)
    phases = ", ".join(sorted({str(r.get("phase")) for t in index.tables for r in t.rows[:1]}))

    def write(answer: Answer) -> None:
        for row in answer.rows:
            values = {**row, "query": answer.query}
            print("  ".join(_cell(values.get(c), widths[c]) for c in columns).rstrip(), file=out)
        if not answer.found:
            print(f"{_cell(answer.query, widths['query'])}  -  in no territory (phase {phases}): no commune "
                  "of the membership table has this code or name", file=out)
    return write


def _json_writer(out: TextIO):
    def write(answer: Answer) -> None:
        out.write(json.dumps({"query": answer.query, "found": answer.found, "rows": list(answer.rows)},
                             ensure_ascii=False) + "\n")
    return write


def _csv_writer(index: MembershipIndex, out: TextIO):
    columns = index.columns
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["query", "found", "match", *columns])

    def write(answer: Answer) -> None:
        for row in answer.rows:
            writer.writerow([_safe(answer.query), "true", row["match"], *(_safe(row.get(c)) for c in columns)])
        if not answer.found:
            writer.writerow([_safe(answer.query), "false", "", *("" for _ in columns)])
    return write


def write_answers(index: MembershipIndex, queries: Iterable[str], fmt: str, out: TextIO) -> Summary:
    """Answer ``queries`` one by one and write each in format ``fmt`` (see :data:`FORMATS`)."""
    write = {"table": lambda: _table_writer(index, out), "json": lambda: _json_writer(out),
             "csv": lambda: _csv_writer(index, out)}[fmt]()
    summary = Summary()
    for answer in index.find_all(queries):
        write(answer)
        summary.add(answer)
    return summary
