"""``territoires-industrie lookup`` and :mod:`pipeline.lookup` on the real published build (both phases,
published by the command line), plus synthetic cases: names, old codes, files of queries, bad inputs,
tables that cannot be trusted, and the exit codes."""

from __future__ import annotations

import contextlib
import csv
import doctest
import io
import json
import os
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pipeline.lookup
from pipeline.cli import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, main
from pipeline.lookup import LookupTableError, MembershipIndex, as_code, csv_dtypes, lookup, normalize_name
from pipeline.lookup_io import MAX_LINE_BYTES, read_queries, write_answers

COMMUNES = "territoires-industrie-communes"


def run(argv: list[str], stdin: bytes | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    patch = pytest.MonkeyPatch()
    if stdin is not None:
        patch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        patch.undo()
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def table(published_out) -> pd.DataFrame:
    return pd.read_parquet(published_out / f"{COMMUNES}.parquet")


# ------------------------------------------------------------------ every commune, the real table
def test_every_commune_of_the_table_is_answered_by_the_command(published_out, table, tmp_path):
    codes = tmp_path / "codes.txt"
    codes.write_text("\n".join(table["insee_com"]) + "\n", encoding="utf-8")
    code, out, err = run(["lookup", "--output", str(published_out), "--file", str(codes), "--csv"])
    assert code == EXIT_OK, err
    assert err == ""    # verified against the manifest: no warning
    answers = pd.read_csv(io.StringIO(out), dtype=str, keep_default_na=False)
    assert set(answers["found"]) == {"true"} and set(answers["match"]) == {"insee_com"}
    assert set(zip(answers["insee_com"], answers["id_ti"])) == set(zip(table["insee_com"], table["id_ti"]))
    assert (answers["query"] == answers["insee_com"]).all()
    assert len(answers) == table["insee_com"].map(table["insee_com"].value_counts()).sum()


def test_every_commune_of_the_table_is_answered_by_the_function(published_out, table):
    index = MembershipIndex.open(published_out)
    assert [t.verified for t in index.tables] == [True]
    expected = table.groupby("insee_com")["id_ti"].apply(set).to_dict()
    for code, ids in expected.items():
        answer = index.find(code)
        assert {r["id_ti"] for r in answer.rows} == ids and {r["match"] for r in answer.rows} == {"insee_com"}
    first = table.iloc[0]
    row = index.find(first["insee_com"]).rows[0]
    assert {k: row[k] for k in table.columns} == {k: (int(v) if k.endswith("_cog") else v) for k, v in first.items()}


def test_the_2018_2022_phase_and_all_phases(published_out):
    code, out, err = run(["lookup", "--output", str(published_out), "--phase", "2018-2022", "--json", "71076"])
    assert code == EXIT_OK, err
    answer = json.loads(out)
    assert [(r["phase"], r["lib_ti"]) for r in answer["rows"]] == [("2018-2022", "Grand Chalon")]
    code, out, _ = run(["lookup", "--output", str(published_out), "--phase", "all", "--json", "71076"])
    assert code == EXIT_OK
    assert sorted(r["phase"] for r in json.loads(out)["rows"]) == ["2018-2022", "2023-2027"]


def test_the_module_docstring_examples_run(published_out, monkeypatch):
    monkeypatch.chdir(published_out.parent)    # the examples read data_out/ of the working directory
    result = doctest.testmod(pipeline.lookup, verbose=False)
    assert result.attempted >= 6 and result.failed == 0


# ------------------------------------------------------------------ what a query can be
def test_names_codes_and_old_codes(published_out):
    index = MembershipIndex.open(published_out)
    assert [r["insee_com"] for r in index.find("CHALON-SUR-SAONE").rows] == ["71076"]
    assert [r["insee_com"] for r in index.find("  chalon sur saône ").rows] == ["71076"]
    saint_michel = index.find("Saint-Michel").rows   # a name shared by 8 member communes: all listed
    assert len({r["insee_com"] for r in saint_michel}) == 8 and {r["match"] for r in saint_michel} == {"nom_commune"}
    assert [(r["insee_com"], r["match"]) for r in index.find("08294").rows] == [("08053", "from_codes")]
    assert [(r["insee_com"], r["id_ti"], r["match"]) for r in index.find("49321").rows] == [
        ("49160", "ti-5201", "absorbed_outside")]
    assert [r["insee_com"] for r in index.find("85084").rows] == ["85084"]   # a split commune: itself first
    assert [r["insee_com"] for r in index.find("2a004").rows] == ["2A004"]
    assert index.find("8053").rows == index.find("08053").rows             # a code that lost its zero
    for nothing in ("99999", "", "---", "x" * 10_000, "Paris"):
        assert not index.find(nothing).found


def test_unknown_codes_exit_4_and_are_answered_too(published_out):
    code, out, err = run(["lookup", "--output", str(published_out), "71076", "99999", "75056"])
    assert code == EXIT_NOT_FOUND
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["query", "insee_com", "nom_commune"]
    assert lines[1].split()[:4] == ["71076", "71076", "Chalon-sur-Saône", "71"]
    assert lines[2].startswith("99999") and "in no territory (phase 2023-2027)" in lines[2]
    assert len(err.strip().splitlines()) == 1 and "2 of 3 queries found no commune" in err and "99999, 75056" in err
    code, out, _ = run(["lookup", "--output", str(published_out), "--json", "99999"])
    assert code == EXIT_NOT_FOUND and json.loads(out) == {"query": "99999", "found": False, "rows": []}
    code, out, _ = run(["lookup", "--output", str(published_out), "--csv", "=1+1"])
    assert code == EXIT_NOT_FOUND and out.splitlines()[1].startswith("'=1+1,false,")   # spreadsheet-safe echo


@given(st.text(min_size=1, max_size=40))
def test_name_comparison_ignores_case_accents_and_punctuation(name):
    key = normalize_name(name)
    assert normalize_name(key) == key
    assert normalize_name(name.upper()) == normalize_name(name.lower()) or not name.isascii()
    stripped = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
    assert normalize_name(stripped) == key
    assert normalize_name(f"-{name}  ") == key


@given(st.from_regex(r"[0-9][0-9ABab][0-9]{3}", fullmatch=True))
def test_every_code_form_is_a_code(code):
    assert as_code(f" {code} ") == code.upper()


# ------------------------------------------------------------------ files of queries
def test_a_file_of_queries_with_a_column_and_stdin(published_out, tmp_path):
    data = tmp_path / "sites.csv"
    data.write_text("\ufeffsite;code commune;note\nusine A;71076;x\nusine B;\"08294\";y\nvide;;\n", encoding="utf-8")
    code, out, err = run(["lookup", "--output", str(published_out), "--file", str(data), "--column", "code commune",
                          "--json"])
    assert code == EXIT_OK, err
    assert [json.loads(line)["rows"][0]["id_ti"] for line in out.splitlines()] == ["ti-2704", "ti-4407"]
    code, out, err = run(["lookup", "--output", str(published_out), "--file", "-", "--csv"],
                         stdin=b"# comment\n71076\r\n\n'2A004'\n")
    assert code == EXIT_OK, err
    assert [r["insee_com"] for r in csv.DictReader(io.StringIO(out))] == ["71076", "2A004"]


@pytest.mark.parametrize(("content", "column", "message"), [
    (b"71076\n\xff\xfe\n", None, r"queries\.txt:2: not UTF-8 text"),
    (b"71076\n" + b"7" * (MAX_LINE_BYTES + 5) + b"\n", None, rf"queries\.txt:2: line longer than {MAX_LINE_BYTES} bytes"),
    (b"site,commune\nA,71076\n", "insee", r"queries\.txt:1: no column 'insee' in the header \(columns: site, commune\)"),
    (b"", "insee", r"queries\.txt: empty file"),
])
def test_a_bad_file_of_queries_is_one_line_exit_2(published_out, tmp_path, content, column, message):
    import re

    path = tmp_path / "queries.txt"
    path.write_bytes(content)
    code, _, err = run(["lookup", "--output", str(published_out), "--file", str(path),
                        *(["--column", column] if column else [])])
    assert code == EXIT_FAILED
    assert len(err.strip().splitlines()) == 1 and re.search(message, err), err


def test_queries_are_answered_as_they_are_read(published_out):
    """A file of a million codes is never held in memory: each answer is written before the next
    query is read."""
    index = MembershipIndex.open(published_out)
    out = io.StringIO()

    def queries():
        yield from ("71076", "99999", "2A004")
        assert len(out.getvalue().splitlines()) == 3, "the answers so far are not written yet"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_answers(index, queries(), "json", out)
    lines = read_queries("-", stdin=io.BytesIO(b"71076\n" + b"x\xff\n"))   # read lazily: the bad
    assert next(lines) == "71076"                                            # line is not read yet


# ------------------------------------------------------------------ the table: trusted or said not to be
def test_no_published_table_is_one_line_exit_2(tmp_path):
    code, out, err = run(["lookup", "--output", str(tmp_path / "empty"), "71076"])
    assert code == EXIT_FAILED and out == ""
    assert err.startswith("error: no membership table at ") and "build and publish first" in err
    code, _, err = run(["lookup", "--output", str(tmp_path)])
    assert code == EXIT_FAILED and "nothing to look up" in err


def test_a_table_that_differs_from_its_manifest_is_refused(published_out, tmp_path, monkeypatch):
    out = tmp_path / "data_out"
    shutil.copytree(published_out, out, ignore=shutil.ignore_patterns("releases", "phase=*"))
    table = pd.read_parquet(out / f"{COMMUNES}.parquet")
    table.loc[table["insee_com"] == "71076", "id_ti"] = "ti-0000"      # an altered answer
    table.to_parquet(out / f"{COMMUNES}.parquet")
    monkeypatch.setattr(pipeline.lookup, "_RETRY_WAIT_S", 0.0)
    code, stdout, err = run(["lookup", "--output", str(out), "71076"])
    assert code == EXIT_FAILED and stdout == ""
    assert "its sha256 differs from the one" in err and "manifest.json lists" in err and "ti-0000" not in err
    with pytest.raises(LookupTableError, match="sha256 differs"):
        lookup("71076", out)


def test_a_copied_table_without_manifest_is_read_with_a_warning(published_out, tmp_path):
    for ext in ("parquet", "csv"):
        copy = tmp_path / f"copy.{ext}"
        shutil.copy(published_out / f"{COMMUNES}.{ext}", copy)
        code, out, err = run(["lookup", "--table", str(copy), "--json", "71076", "2A004"])
        assert code == EXIT_OK
        assert err.strip() == f"warning: {copy} is not checked against a manifest (no manifest.json beside it)"
        rows = [json.loads(line)["rows"][0] for line in out.splitlines()]
        assert [(r["insee_com"], r["region"], r["list_cog"]) for r in rows] == [("71076", "27", 2023),
                                                                                ("2A004", "94", 2023)]
    (tmp_path / "copy.parquet").write_bytes(b"PAR1 not parquet")
    code, _, err = run(["lookup", "--table", str(tmp_path / "copy.parquet"), "71076"])
    assert code == EXIT_FAILED and "copy.parquet: not a readable Parquet file" in err
    (tmp_path / "other.csv").write_text("code,name\n71076,x\n", encoding="utf-8")
    code, _, err = run(["lookup", "--table", str(tmp_path / "other.csv"), "71076"])
    assert code == EXIT_FAILED and "not a membership table: missing column(s) insee_com, nom_commune" in err


def test_the_installed_command_runs(published_out):
    """The console script users call (not main() in process): one code, JSON out, exit 0."""
    exe = Path(sys.executable).with_name("territoires-industrie")
    if not exe.exists():
        pytest.skip(f"{exe} not installed")
    env = {**os.environ, "TI_OUTPUT_DIR": str(published_out)}
    done = subprocess.run([str(exe), "lookup", "--json", "Chalon-sur-Saône"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"][0]["lib_ti"] == "Grand Chalon"
    done = subprocess.run([str(exe), "lookup", "00000"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == EXIT_NOT_FOUND == 4


def test_csv_dtypes_keep_codes_as_text(published_out):
    path = published_out / f"{COMMUNES}.csv"
    typed = pd.read_csv(path, dtype=csv_dtypes(), keep_default_na=False, na_values=[""])
    guessed = pd.read_csv(path)
    row = typed.set_index("insee_com").loc["49160"]
    assert row["absorbed_outside"] == "49321" and row["list_cog"] == 2023
    assert (typed.loc[typed["departement"] == "971", "region"] == "01").all()
    # what a guessing reader does (why the schema matters)
    assert guessed.loc[guessed["insee_com"] == "49160", "absorbed_outside"].item() == 49321.0
    assert 1 in set(guessed["region"]) and "01" not in set(guessed["region"].astype(str))
