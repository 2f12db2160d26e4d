"""Tests of the plan table reader (pipeline.sources.plans): encodings, separators, cells, validation, join.

Every plan file here is synthetic, written in tmp_path; the territory ids it uses are real ones,
read from the 2023-2027 ANCT list in TI_MIRROR_DIR.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import os
import re
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
import shapely

from pipeline.errors import PipelineError, PlanTableError
from pipeline.sources.plans import (
    AXIS_CODES,
    MAX_LISTED_PROBLEMS,
    NO_TABLE_WARNING,
    PLAN_COLUMN_NAMES,
    PLAN_COLUMNS,
    TEMPLATE_PATH,
    PlansResult,
    attach_plans,
    empty_plan_table,
    load_axes,
    read_plans,
)

TI_LIST = "territoires_industrie/ti2023_communes_anct_20231107.csv"
EXPECTED_DTYPES = {
    "axe_transition_ecologique": "boolean",
    "axe_innovation": "boolean",
    "axe_competences": "boolean",
    "axe_foncier": "boolean",
    "plan_date_adoption": "object",
    "plan_nb_actions_transition_ecologique": "Int64",
    "plan_nb_actions_innovation": "Int64",
    "plan_nb_actions_competences": "Int64",
    "plan_nb_actions_foncier": "Int64",
    "plan_url": "string",
    "plan_statut": "string",
    "plan_commentaire": "string",
}


@pytest.fixture(scope="module")
def valid_ids() -> list[str]:
    mirror = os.environ.get("TI_MIRROR_DIR")
    if not mirror:
        pytest.skip("TI_MIRROR_DIR is unset: the real 2023-2027 territory ids are read from the mirror")
    with open(Path(mirror) / TI_LIST, encoding="utf-8", newline="") as fh:
        ids = sorted({row["id_ti"] for row in csv.DictReader(fh)})
    assert len(ids) == 183
    return ids


@pytest.fixture(scope="module")
def a(valid_ids):
    assert "ti-8418" in valid_ids
    return "ti-8418"


@pytest.fixture(scope="module")
def b(valid_ids):
    assert "ti-0101" in valid_ids
    return "ti-0101"


def write(tmp_path: Path, text: str, encoding: str = "utf-8", name: str = "plans.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def error_of(path: Path, valid_ids) -> str:
    with pytest.raises(PlanTableError) as info:
        read_plans(path, valid_ids)
    return str(info.value)


# ---------------------------------------------------------------- referential and contract


def test_axes_referential_matches_plan_columns():
    axes = load_axes()
    assert [x.code for x in axes] == list(AXIS_CODES)
    assert [x.order for x in axes] == [1, 2, 3, 4]
    assert [x.column for x in axes] == [f"axe_{c}" for c in AXIS_CODES]
    assert all(x.column in PLAN_COLUMN_NAMES and x.count_column in PLAN_COLUMN_NAMES for x in axes)
    assert axes[0].label_fr == "Accélérer la transition écologique et énergétique"
    assert axes[3].label_fr.startswith("Mobiliser du foncier industriel")
    assert all(x.label_en and x.short_fr and x.description for x in axes)


def test_load_axes_rejects_a_wrong_referential(tmp_path):
    bad = tmp_path / "axes.toml"
    bad.write_text('[[axes]]\ncode = "foncier"\norder = 1\ncolumn = "axe_foncier"\n'
                   'label_fr = "x"\nlabel_en = "x"\nshort_fr = "x"\ndescription = "x"\n', encoding="utf-8")
    with pytest.raises(PipelineError, match="expected"):
        load_axes(bad)


def test_plan_columns_are_the_published_contract():
    assert {c.name: c.dtype for c in PLAN_COLUMNS} == EXPECTED_DTYPES
    assert list(EXPECTED_DTYPES) == PLAN_COLUMN_NAMES
    assert all(c.description for c in PLAN_COLUMNS)
    table = empty_plan_table()
    assert {k: str(v) for k, v in table.dtypes.items()} == EXPECTED_DTYPES
    assert table.index.name == "id_ti" and str(table.index.dtype) == "string"


def test_template_is_header_only_and_parses_to_an_empty_table(valid_ids):
    lines = TEMPLATE_PATH.read_text(encoding="utf-8").splitlines()
    assert lines == [",".join(["id_ti", *PLAN_COLUMN_NAMES])]
    result = read_plans(TEMPLATE_PATH, valid_ids)
    assert len(result.table) == 0
    assert list(result.table.columns) == PLAN_COLUMN_NAMES
    assert result.source["rows"] == 0


# ---------------------------------------------------------------- missing table / file


def test_no_table_gives_empty_table_and_warning(valid_ids):
    result = read_plans(None, valid_ids)
    assert len(result.table) == 0
    assert list(result.table.columns) == PLAN_COLUMN_NAMES
    assert result.warnings == [NO_TABLE_WARNING]
    assert NO_TABLE_WARNING == "no plan table (TI_PLANS_PATH unset): plan columns are null"
    assert result.source is None


def test_missing_file_names_the_path(tmp_path, valid_ids):
    path = tmp_path / "nope" / "plans.csv"
    message = error_of(path, valid_ids)
    assert str(path) in message and "not found" in message


def test_directory_is_refused(tmp_path, valid_ids):
    assert "not a file" in error_of(tmp_path, valid_ids)


def test_empty_file_is_refused(tmp_path, valid_ids):
    path = write(tmp_path, "\n  \n")
    assert "plan table is empty" in error_of(path, valid_ids)


def test_utf16_and_workbook_are_refused_clearly(tmp_path, valid_ids):
    utf16 = tmp_path / "u16.csv"
    utf16.write_bytes("id_ti\n".encode("utf-16"))
    assert "UTF-16" in error_of(utf16, valid_ids)
    xlsx = tmp_path / "plans.xlsx"
    xlsx.write_bytes(b"PK\x03\x04rest-of-zip")
    assert "export it as CSV" in error_of(xlsx, valid_ids)


# ---------------------------------------------------------------- encodings and separators


@pytest.mark.parametrize("encoding, reported", [("utf-8", "utf-8"), ("utf-8-sig", "utf-8"), ("cp1252", "cp1252")])
def test_encodings_keep_accents(tmp_path, valid_ids, a, encoding, reported):
    text = f"id_ti;plan_statut;plan_commentaire\n{a};Adopté;Délibération – été, coût 3 €\n"
    path = write(tmp_path, text, encoding)
    if encoding == "utf-8-sig":
        assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    result = read_plans(path, valid_ids)
    assert result.table.loc[a, "plan_statut"] == "Adopté"
    assert result.table.loc[a, "plan_commentaire"] == "Délibération – été, coût 3 €"
    assert result.source["encoding"] == reported
    assert result.source["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert result.source["rows"] == 1


@pytest.mark.parametrize("sep", [",", ";"])
def test_separators_and_quoted_fields(tmp_path, valid_ids, a, b, sep):
    other = ";" if sep == "," else ","
    text = (
        f"id_ti{sep}axe_foncier{sep}plan_commentaire{sep}plan_statut\n"
        f'{a}{sep}oui{sep}"avec {sep} et {other} dedans"{sep}"dit ""adopté"""\n'
        f'{b}{sep}non{sep}"deux\nlignes"{sep}x\n'
        f"ti-9999{sep}1{sep}{sep}\n"
    )
    path = write(tmp_path, text)
    message = error_of(path, valid_ids)
    # the quoted field spans lines 3-4, so the bad id is on line 5
    assert f"{path}:5: column id_ti: unknown territory id" in message
    path = write(tmp_path, text.rsplit("\n", 2)[0] + "\n")  # the same without the bad last row
    result = read_plans(path, valid_ids)
    assert result.source["separator"] == sep
    assert result.table.loc[a, "plan_commentaire"] == f"avec {sep} et {other} dedans"
    assert result.table.loc[a, "plan_statut"] == 'dit "adopté"'
    assert result.table.loc[b, "plan_commentaire"] == "deux\nlignes"


def test_a_multiline_record_is_reported_at_its_first_line(tmp_path, valid_ids, a, b):
    path = write(tmp_path, f'id_ti,plan_commentaire,axe_foncier\n{a},"un\ndeux\ntrois",peut-être\n{b},,nan\n')
    message = error_of(path, valid_ids)
    assert f"{path}:2: column axe_foncier: not a boolean" in message
    assert f"{path}:5: column axe_foncier: not a boolean" in message


def test_excel_sep_line_is_honoured_and_counted(tmp_path, valid_ids, a):
    path = write(tmp_path, f"sep=;\nid_ti;axe_foncier\n{a};peut-être\n")
    assert f"{path}:3: column axe_foncier: not a boolean" in error_of(path, valid_ids)


def test_header_with_both_separators_is_ambiguous(tmp_path, valid_ids):
    path = write(tmp_path, "id_ti;axe_foncier,plan_url\n")
    assert "cannot tell the separator" in error_of(path, valid_ids)


def test_malformed_quoting_names_the_line(tmp_path, valid_ids, a):
    path = write(tmp_path, f'id_ti,plan_statut\n{a},"ouvert"fermé\n')
    assert f"{path}:2: malformed CSV" in error_of(path, valid_ids)


def test_nbsp_and_whitespace_are_trimmed_in_headers_and_values(tmp_path, valid_ids, a, b):
    text = (
        "\xa0ID_Ti\xa0; Axe_Foncier\u202f;PLAN_URL\n"
        f"\xa0{a}\xa0;\xa0oui\xa0; https://example.org/plan.pdf\xa0\n"
        f"{b} ;\t ; \xa0\n"
    )
    result = read_plans(write(tmp_path, text), valid_ids)
    assert list(result.table.index) == [a, b]
    assert bool(result.table.loc[a, "axe_foncier"]) is True
    assert result.table.loc[a, "plan_url"] == "https://example.org/plan.pdf"
    assert pd.isna(result.table.loc[b, "axe_foncier"]) and pd.isna(result.table.loc[b, "plan_url"])


def test_blank_lines_are_skipped_but_counted(tmp_path, valid_ids, a):
    path = write(tmp_path, f"id_ti,plan_url\n\n;\n{a},nope\n".replace(";", ","))
    assert f"{path}:4: column plan_url:" in error_of(path, valid_ids)


# ---------------------------------------------------------------- cell values


@pytest.mark.parametrize(
    "spelling, expected",
    [("oui", True), ("OUI", True), ("non", False), ("Non", False), ("true", True), ("TRUE", True),
     ("false", False), ("vrai", True), ("Vrai", True), ("faux", False), ("yes", True), ("no", False),
     ("1", True), ("0", False), ("x", True), ("X", True), ("", None), ("  ", None)],
)
def test_boolean_spellings(tmp_path, valid_ids, a, spelling, expected):
    result = read_plans(write(tmp_path, f"id_ti,axe_innovation\n{a},{spelling}\n"), valid_ids)
    value = result.table.loc[a, "axe_innovation"]
    assert (pd.isna(value) if expected is None else bool(value) is expected)
    assert str(result.table["axe_innovation"].dtype) == "boolean"


@pytest.mark.parametrize("value", ["peut-être", "2", "o", "-", "oui/non"])
def test_bad_boolean(tmp_path, valid_ids, a, value):
    path = write(tmp_path, f"id_ti,axe_competences\n{a},{value}\n")
    assert f"{path}:2: column axe_competences: not a boolean" in error_of(path, valid_ids)
    assert f"({value})" in error_of(path, valid_ids)


@pytest.mark.parametrize("text, expected", [("2024-03-15", dt.date(2024, 3, 15)),
                                            ("15/03/2024", dt.date(2024, 3, 15)),
                                            ("1/2/2024", dt.date(2024, 2, 1))])
def test_dates_iso_and_french(tmp_path, valid_ids, a, text, expected):
    result = read_plans(write(tmp_path, f"id_ti,plan_date_adoption\n{a},{text}\n"), valid_ids)
    value = result.table.loc[a, "plan_date_adoption"]
    assert type(value) is dt.date and value == expected


@pytest.mark.parametrize("text, problem", [("31/02/2024", "not a real calendar date"),
                                           ("2024-13-01", "not a real calendar date"),
                                           ("03/15/24", "not a date"), ("15 mars 2024", "not a date"),
                                           ("2024-3-15", "not a date")])
def test_bad_dates(tmp_path, valid_ids, a, text, problem):
    path = write(tmp_path, f"id_ti,plan_date_adoption\n{a},{text}\n")
    assert f"{path}:2: column plan_date_adoption: {problem}" in error_of(path, valid_ids)


def test_action_counts(tmp_path, valid_ids, a):
    header = "id_ti," + ",".join(f"plan_nb_actions_{c}" for c in AXIS_CODES)
    result = read_plans(write(tmp_path, f"{header}\n{a},0,12,,+3\n"), valid_ids)
    row = result.table.loc[a]
    assert [row[f"plan_nb_actions_{c}"] for c in ("transition_ecologique", "innovation", "foncier")] == [0, 12, 3]
    assert pd.isna(row["plan_nb_actions_competences"])
    assert str(result.table["plan_nb_actions_innovation"].dtype) == "Int64"


@pytest.mark.parametrize("text, problem", [("-1", "negative action count"), ("-2.5", "negative action count"),
                                           ("2.5", "not a whole number"), ("3,0", "not a whole number"),
                                           ("1e3", "not a whole number"), ("trois", "not a number"),
                                           ("99999999999999999999", "too large")])
def test_bad_action_counts(tmp_path, valid_ids, a, text, problem):
    path = write(tmp_path, f'id_ti;plan_nb_actions_foncier\n{a};{text}\n')
    assert f"{path}:2: column plan_nb_actions_foncier: " in error_of(path, valid_ids)
    assert problem in error_of(path, valid_ids)


@pytest.mark.parametrize("url", ["https://www.example.org/plan.pdf", "http://example.org:8080/a?b=c#d",
                                 "HTTPS://EXAMPLE.ORG"])
def test_good_urls(tmp_path, valid_ids, a, url):
    result = read_plans(write(tmp_path, f"id_ti,plan_url\n{a},{url}\n"), valid_ids)
    assert result.table.loc[a, "plan_url"] == url


@pytest.mark.parametrize("url, problem", [("ftp://example.org/x", "must start with http"),
                                          ("www.example.org", "must start with http"),
                                          ("https://", "no host"), ("https://exa mple.org", "whitespace"),
                                          ("http://example.org:99999/", "not a valid URL")])
def test_bad_urls(tmp_path, valid_ids, a, url, problem):
    path = write(tmp_path, f"id_ti,plan_url\n{a},{url}\n")
    message = error_of(path, valid_ids)
    assert f"{path}:2: column plan_url: " in message and problem in message and f"({url})" in message


# ---------------------------------------------------------------- ids and header


def test_unknown_territory_id_with_suggestion(tmp_path, valid_ids):
    path = write(tmp_path, "id_ti,axe_foncier\nti-8419x,oui\n")
    message = error_of(path, valid_ids)
    assert f"{path}:2: column id_ti: unknown territory id" in message and "(ti-8419x)" in message
    assert "did you mean ti-" in message


def test_ids_match_case_insensitively_and_keep_the_official_spelling(tmp_path, valid_ids, a):
    result = read_plans(write(tmp_path, f"id_ti,axe_foncier\n{a.upper()},non\n"), valid_ids)
    assert list(result.table.index) == [a]


def test_duplicate_id_names_both_lines(tmp_path, valid_ids, a, b):
    path = write(tmp_path, f"id_ti,axe_foncier\n{a},oui\n{b},non\n{a.upper()},non\n")
    assert f"{path}:4: column id_ti: duplicate territory id, also on line 2 ({a})" in error_of(path, valid_ids)


def test_missing_id_value(tmp_path, valid_ids):
    path = write(tmp_path, "id_ti,axe_foncier\n,oui\n")
    assert f"{path}:2: column id_ti: missing territory id (empty)" in error_of(path, valid_ids)


def test_missing_id_column_names_expected_columns(tmp_path, valid_ids):
    path = write(tmp_path, "territoire,axe_foncier\nti-8418,oui\n")
    message = error_of(path, valid_ids)
    assert "no 'id_ti' column" in message
    assert "expected columns: id_ti, " + ", ".join(PLAN_COLUMN_NAMES) in message


def test_unknown_column_is_an_error_with_a_suggestion(tmp_path, valid_ids, a):
    path = write(tmp_path, f"id_ti,axe_foncer,plan_url\n{a},oui,\n")
    message = error_of(path, valid_ids)
    assert f"{path}:1: unknown column 'axe_foncer', did you mean axe_foncier?" in message
    assert "expected columns: id_ti, axe_transition_ecologique" in message


def test_duplicate_header_column(tmp_path, valid_ids):
    path = write(tmp_path, "id_ti,axe_foncier,AXE_FONCIER\n")
    assert "column 'axe_foncier' appears twice" in error_of(path, valid_ids)


def test_lib_ti_is_accepted_and_ignored(tmp_path, valid_ids, a):
    result = read_plans(write(tmp_path, f"id_ti,lib_ti,axe_foncier\n{a},Un nom,oui\n"), valid_ids)
    assert list(result.table.columns) == PLAN_COLUMN_NAMES
    assert bool(result.table.loc[a, "axe_foncier"]) is True


def test_values_beyond_the_header_or_under_unnamed_columns(tmp_path, valid_ids, a, b):
    path = write(tmp_path, f"id_ti,axe_foncier,\n{a},oui,\n{b},non,oops\n{a.replace('8', '7')},1,,extra\n")
    message = error_of(path, valid_ids)
    assert f"{path}:3: column 3: value under an unnamed column (oops)" in message
    assert f"{path}:4: column 4: value beyond the last header column (extra)" in message
    assert f"{path}:2:" not in message  # a trailing empty column (Excel) is harmless


def test_missing_plan_columns_are_null_with_a_warning(tmp_path, valid_ids, a):
    result = read_plans(write(tmp_path, f"id_ti,axe_foncier\n{a},oui\n"), valid_ids)
    assert list(result.table.columns) == PLAN_COLUMN_NAMES
    assert result.table.drop(columns="axe_foncier").isna().all(axis=None)
    assert any("left null: axe_transition_ecologique" in w for w in result.warnings)
    assert any("plan rows for 1 of 183 territories" in w for w in result.warnings)


def test_axis_false_with_actions_warns(tmp_path, valid_ids, a):
    path = write(tmp_path, f"id_ti,axe_foncier,plan_nb_actions_foncier\n{a},non,2\n")
    result = read_plans(path, valid_ids)
    assert f"{path}:2: column plan_nb_actions_foncier: 2 action(s) but axe_foncier is false" in result.warnings


# ---------------------------------------------------------------- several problems


def test_all_problems_are_reported_together_in_line_order(tmp_path, valid_ids, a, b):
    text = (
        "id_ti;axe_foncier;plan_date_adoption;plan_nb_actions_innovation;plan_url\n"
        f"{a};peut-être;2024-02-30;-1;ftp://x\n"
        f"ti-9999;oui;;;\n"
        f"{b};oui;01/02/2024;2;https://example.org\n"
        f"{a};non;;;\n"
    )
    path = write(tmp_path, text)
    message = error_of(path, valid_ids)
    expected = [
        f"{path}:2: column axe_foncier: not a boolean",
        f"{path}:2: column plan_date_adoption: not a real calendar date (2024-02-30)",
        f"{path}:2: column plan_nb_actions_innovation: negative action count (-1)",
        f"{path}:2: column plan_url: URL must start with http:// or https:// (ftp://x)",
        f"{path}:3: column id_ti: unknown territory id",
        f"{path}:5: column id_ti: duplicate territory id, also on line 2 ({a})",
    ]
    lines = message.splitlines()
    assert lines[0] == f"invalid plan table {path}: 6 problem(s)"
    assert len(lines) == 7
    for line, start in zip(lines[1:], expected):
        assert line.startswith(start)
    assert f"{path}:4:" not in message


def test_problem_list_is_capped(tmp_path, valid_ids):
    rows = "".join(f"ti-x{i:03d},oui\n" for i in range(MAX_LISTED_PROBLEMS + 7))
    path = write(tmp_path, "id_ti,axe_foncier\n" + rows)
    message = error_of(path, valid_ids)
    assert message.splitlines()[0].endswith(f"{MAX_LISTED_PROBLEMS + 7} problem(s)")
    assert len(re.findall(r"unknown territory id", message)) == MAX_LISTED_PROBLEMS
    assert message.rstrip().endswith("... and 7 more problem(s)")
    assert f"{path}:{MAX_LISTED_PROBLEMS + 1}: " in message
    assert f"{path}:{MAX_LISTED_PROBLEMS + 2}: " not in message


# ---------------------------------------------------------------- attach_plans


def _territories(ids: list[str]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"id_ti": pd.array(ids, dtype="string"), "lib_ti": [f"T{i}" for i in range(len(ids))]},
        geometry=[shapely.box(i, 0, i + 1, 1) for i in range(len(ids))],
        index=pd.Index([10 * i for i in range(len(ids))]),
        crs="EPSG:4326",
    )


def test_attach_plans_keeps_rows_order_geometry_and_nulls(tmp_path, valid_ids, a, b):
    ids = [valid_ids[5], b, valid_ids[-1], a]
    territories = _territories(ids)
    text = (
        "id_ti,axe_foncier,plan_date_adoption,plan_nb_actions_foncier,plan_url\n"
        f"{a},oui,15/03/2024,4,https://example.org/a\n{b},non,,0,\n"
    )
    plans = read_plans(write(tmp_path, text), valid_ids)
    out = attach_plans(territories, plans)
    assert isinstance(out, gpd.GeoDataFrame) and out.crs == territories.crs
    assert list(out.index) == list(territories.index)
    assert list(out["id_ti"]) == ids
    assert out.geometry.geom_equals(territories.geometry).all()
    assert list(out.columns) == ["id_ti", "lib_ti", "geometry", *PLAN_COLUMN_NAMES]
    assert {c: str(out[c].dtype) for c in PLAN_COLUMN_NAMES} == EXPECTED_DTYPES
    assert out["axe_foncier"].tolist() == [pd.NA, False, pd.NA, True]
    assert out["plan_nb_actions_foncier"].tolist() == [pd.NA, 0, pd.NA, 4]
    assert out["plan_date_adoption"].tolist() == [None, None, None, dt.date(2024, 3, 15)]
    assert out["plan_url"].tolist() == [pd.NA, pd.NA, pd.NA, "https://example.org/a"]
    assert "axe_foncier" not in territories.columns  # input untouched
    again = attach_plans(out, plans)  # re-attaching replaces, never duplicates
    assert list(again.columns) == list(out.columns)


def test_attach_without_table_gives_all_null_columns(valid_ids):
    out = attach_plans(_territories(valid_ids[:3]), read_plans(None, valid_ids))
    assert len(out) == 3
    assert out[PLAN_COLUMN_NAMES].isna().all(axis=None)
    assert {c: str(out[c].dtype) for c in PLAN_COLUMN_NAMES} == EXPECTED_DTYPES


def test_attach_requires_id_column():
    with pytest.raises(KeyError, match="id_ti"):
        attach_plans(pd.DataFrame({"x": [1]}), PlansResult(empty_plan_table()))


def test_attached_dates_are_written_as_parquet_dates(tmp_path, valid_ids, a):
    import pyarrow as pa
    import pyarrow.parquet as pq

    plans = read_plans(write(tmp_path, f"id_ti,plan_date_adoption\n{a},2024-03-15\n"), valid_ids)
    out = attach_plans(_territories([a, valid_ids[0]]), plans)
    target = tmp_path / "t.parquet"
    out.to_parquet(target)
    schema = pq.read_schema(target)
    assert schema.field("plan_date_adoption").type == pa.date32()
    assert schema.field("axe_foncier").type == pa.bool_()
    assert schema.field("plan_nb_actions_foncier").type == pa.int64()


# ---------------------------------------------------------------- hostile cells, bounded work
@pytest.mark.parametrize("char", ["\x01", "\x07", "\x1b", "\x7f", "\x85"])
def test_control_characters_are_refused(tmp_path, valid_ids, a, char):
    path = write(tmp_path, f"id_ti,plan_commentaire\n{a},avant{char}apres\n")
    assert (f"{path}:2: column plan_commentaire: control character {char!r} (U+{ord(char):04X}) in the value"
            in error_of(path, valid_ids))


@pytest.mark.parametrize("text", ["=HYPERLINK(\"http://x.test\",\"clic\")", "+33 1 23", "-1+2", "@SUM(A1:A2)"])
def test_formula_like_text_is_kept_as_data_and_never_written_to_csv_as_a_formula(tmp_path, valid_ids, a, text):
    from pipeline.publish.membership_tables import write_csv  # the project's one CSV writer

    path = write(tmp_path, f"id_ti,plan_statut\n{a},\"{text.replace(chr(34), chr(34) * 2)}\"\n")
    table = read_plans(path, valid_ids).table
    assert table.loc[a, "plan_statut"] == text            # the data is kept as supplied
    out = write_csv(table.reset_index()[["id_ti", "plan_statut"]], tmp_path / "out.csv")
    with open(out, encoding="utf-8", newline="") as fh:
        cell = next(iter(csv.DictReader(fh)))["plan_statut"]
    assert cell == "'" + text and not cell.startswith(("=", "+", "-", "@"))


def test_many_unknown_ids_list_fifty_and_look_for_hints_only_for_those(tmp_path, valid_ids, monkeypatch):
    import difflib

    calls = []
    real = difflib.get_close_matches
    monkeypatch.setattr(difflib, "get_close_matches", lambda *args, **kw: calls.append(1) or real(*args, **kw))
    rows = "".join(f"ti-x{i},oui\n" for i in range(20_000))
    path = write(tmp_path, "id_ti,axe_foncier\n" + rows)
    message = error_of(path, valid_ids)
    assert message.startswith(f"invalid plan table {path}: 20000 problem(s)\n")
    assert message.endswith(f"\n... and {20_000 - MAX_LISTED_PROBLEMS} more problem(s)")
    assert message.count("unknown territory id") == MAX_LISTED_PROBLEMS
    assert len(calls) == MAX_LISTED_PROBLEMS


def test_plan_table_that_is_a_device_is_refused(valid_ids):
    with pytest.raises(PlanTableError, match=r"^plan table is not a file: /dev/zero"):
        read_plans("/dev/zero", valid_ids)


def test_plan_table_mixing_encodings_is_refused(tmp_path, valid_ids, a, b):
    path = tmp_path / "plans.csv"
    path.write_bytes(f"\ufeffid_ti,plan_statut\n{a},adopté\n".encode() + f"{b},adopté\n".encode("cp1252"))
    assert error_of(path, valid_ids) == (f"{path}:3: byte 0xe9 is not UTF-8 but the file line 2 is UTF-8: "
                                         "it mixes encodings; save the whole file as UTF-8")
