"""The ``lookup`` command's input and output: queries from a file, answers as a table, JSON or CSV.

Queries are read and answered as a stream (one line at a time), so a file of a million codes
takes the memory of the table plus one line. Lines are at most :data:`MAX_LINE_BYTES` long.

- input: one code or name per line (blank lines and ``#`` comments skipped), or, with a column
  name, a CSV file with a header (comma, semicolon or tab, the one whose header names the column);
  UTF-8, with or without a byte order mark; ``-`` is standard input;
- output ``table``: aligned columns for a terminal; ``json``: JSON Lines, one object per query
  ``{"query", "found", "rows": [...]}`` (one query gives one JSON document); ``csv``: one row per
  (query, row found), ``found`` false and empty cells for a query that found nothing.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO

from .errors import PipelineError
from .lookup import Answer, MembershipIndex

MAX_LINE_BYTES = 4096
_DELIMITERS = (",", ";", "\t")
_QUOTE = 40   # characters of foreign text quoted in a message
# table output: the columns shown, and the widest each may be (longer values end with "…")
_TABLE_COLUMNS = {"query": 24, "insee_com": 9, "nom_commune": 30, "departement": 3, "id_ti": 9, "lib_ti": 36,
                  "how": 27, "match": 16}
_TABLE_SAMPLE = 1000   # answers held to measure the table's columns
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class LookupInputError(PipelineError):
    """A file of queries that cannot be read (it names the file and the line)."""


def _quote(text: str) -> str:
    return text if len(text) <= _QUOTE else text[:_QUOTE] + "…"


# ------------------------------------------------------------------ input
def _lines(stream: BinaryIO, name: str) -> Iterator[tuple[int, str]]:
    """(line number, text without its end of line), each line at most MAX_LINE_BYTES long; each
    line decoded alone, so that an error names its line."""
    number = 0
    while True:
        number += 1
        raw = stream.readline(MAX_LINE_BYTES + 2)
        if not raw:
            return
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            raise LookupInputError(f"{name}:{number}: line longer than {MAX_LINE_BYTES} bytes")
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            raise LookupInputError(f"{name}:{number}: not UTF-8 text") from None
        yield number, text.rstrip("\r\n")


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
    if not Path(path).is_file():
        raise LookupInputError(f"{path}: no such file of queries")
    try:
        with open(path, "rb") as stream:
            yield from _queries(stream, path, column)
    except OSError as err:
        raise LookupInputError(f"{path}: cannot read the file of queries: {err.strerror or err}") from None


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


class _Rendered(dict):
    """Each table row as rendered once (a million queries name a few thousand rows), keyed by what
    identifies it: its match, phase, commune and territory; at most a few rows per table row."""

    def __init__(self, render):
        super().__init__()
        self.render = render

    def of(self, row: dict):
        key = (row["match"], row.get("phase"), row.get("insee_com"), row.get("id_ti"))
        if key not in self:
            self[key] = self.render(row)
        return self[key]


class _TableWriter:
    """Aligned columns, as wide as the values of the first answers need (at most the widths of
    ``_TABLE_COLUMNS``): the first :data:`_TABLE_SAMPLE` answers are held to measure them, the
    rest are written as they come, a longer value cut with "…"."""

    def __init__(self, index: MembershipIndex, out: TextIO):
        self.out = out
        self.columns = dict(_TABLE_COLUMNS)
        if len(index.tables) > 1:
            self.columns["phase"] = 9
        self.phases = ", ".join(sorted({str(r.get("phase")) for t in index.tables for r in t.rows[:1]}))
        self.held: list[Answer] | None = []
        self.widths: dict[str, int] = {}
        self.rendered = _Rendered(self._row)

    def _row(self, row: dict) -> str:
        return "  ".join(_cell(row.get(c), self.widths[c]) for c in list(self.columns)[1:]).rstrip()

    def __call__(self, answer: Answer) -> None:
        if self.held is None:
            self._write(answer)
            return
        self.held.append(answer)
        if len(self.held) >= _TABLE_SAMPLE:
            self.flush()

    def flush(self) -> None:
        """Measure the held answers, write the header and them; later answers go straight out."""
        if self.held is None:
            return
        held, self.held = self.held, None
        values = [{**row, "query": a.query} for a in held for row in a.rows] + [{"query": a.query} for a in held]
        self.widths = {c: max(len(c), min(w, max((len(str(v.get(c) or "")) for v in values), default=0)))
                       for c, w in self.columns.items()}
        self.out.write("  ".join(_cell(c, self.widths[c]) for c in self.columns).rstrip() + "\n")
        for answer in held:
            self._write(answer)

    def _write(self, answer: Answer) -> None:
        query = _cell(answer.query, self.widths["query"])
        for row in answer.rows:
            self.out.write(f"{query}  {self.rendered.of(row)}\n")
        if not answer.found:
            self.out.write(f"{query}  -  in no territory (phase {self.phases}): no commune of the membership "
                           "table has this code or name\n")


def _json_writer(out: TextIO):
    rendered = _Rendered(lambda row: json.dumps(row, ensure_ascii=False))

    def write(answer: Answer) -> None:
        rows = ", ".join(rendered.of(row) for row in answer.rows)
        out.write(f'{{"query": {json.dumps(answer.query, ensure_ascii=False)}, '
                  f'"found": {"true" if answer.found else "false"}, "rows": [{rows}]}}\n')
    return write


def _csv_writer(index: MembershipIndex, out: TextIO):
    columns = index.columns
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["query", "found", "match", *columns])
    rendered = _Rendered(lambda row: [row["match"], *(_safe(row.get(c)) for c in columns)])

    def write(answer: Answer) -> None:
        query = _safe(answer.query)
        for row in answer.rows:
            writer.writerow([query, "true", *rendered.of(row)])
        if not answer.found:
            writer.writerow([query, "false", "", *("" for _ in columns)])
    return write


def write_answers(index: MembershipIndex, queries: Iterable[str], fmt: str, out: TextIO) -> Summary:
    """Answer ``queries`` one by one and write each in format ``fmt`` (``table``, ``json`` or ``csv``)."""
    write = {"table": lambda: _TableWriter(index, out), "json": lambda: _json_writer(out),
             "csv": lambda: _csv_writer(index, out)}[fmt]()
    summary = Summary()
    for answer in index.find_all(queries):
        write(answer)
        summary.add(answer)
    if isinstance(write, _TableWriter):
        write.flush()
    return summary
