"""``datapackage.json``: published with every phase, valid for frictionless (files, sizes, sha256,
and the CSV tables against their Table Schema), made from the column declarations; and what it
changes for a pandas reader (``01`` stays ``01``)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from pipeline.lookup import csv_dtypes
from pipeline.publish import datapackage
from pipeline.publish.membership_tables import CONSTRAINTS, HOW, PRIMARY_KEYS, TABLES

frictionless = pytest.importorskip("frictionless", reason="pip install '.[test]' (frictionless)")


def _validate(path):
    report = frictionless.validate(str(path))
    return report, {task.name: task for task in report.tasks}


@pytest.mark.parametrize("folder", [".", "phase=2023-2027", "phase=2018-2022"])
def test_each_published_folder_has_a_valid_package_of_its_files(published_out, folder):
    base = published_out / folder
    package = json.loads((base / datapackage.NAME).read_text(encoding="utf-8"))
    manifest = json.loads((base / "manifest.json").read_text(encoding="utf-8"))
    listed = {o["name"]: o for o in manifest["outputs"]}
    assert "datapackage" in listed          # published and swapped like the other files
    described = {o["name"].replace("_", "-") for o in manifest["outputs"] if o["name"] != "datapackage"}
    assert {r["name"] for r in package["resources"]} == described
    report, tasks = _validate(base / datapackage.NAME)
    assert report.valid, report.flatten(["type", "note", "message"])[:5]
    phase = manifest["phase"]
    communes = pd.read_parquet(base / "territoires-industrie-communes.parquet")
    assert tasks["membership-communes-csv"].stats["rows"] == len(communes) > 10_000
    assert tasks["membership-communes-csv"].type == "table" and tasks["geoparquet"].type == "file"
    assert package["name"] == f"territoires-industrie-{phase}"
    assert package["territoires_industrie"]["build_id"] == manifest["build_id"]


def test_frictionless_catches_an_altered_file_and_a_code_that_lost_its_zero(published_out, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(published_out / "phase=2023-2027", out)
    csv_path = out / "territoires-industrie-communes.csv"
    text = csv_path.read_text(encoding="utf-8")
    assert ",971,01," in text
    csv_path.write_text(text.replace(",971,01,", ",971,1,", 1), encoding="utf-8")   # what a spreadsheet does
    report, tasks = _validate(out / datapackage.NAME)
    assert not report.valid
    types = {e.type for e in tasks["membership-communes-csv"].errors}
    assert {"hash-count", "constraint-error"} <= types, types
    assert tasks["geoparquet"].valid


def test_the_schema_is_made_from_the_column_declarations():
    for table, columns in TABLES.items():
        schema = datapackage.table_schema(table)
        assert [f["name"] for f in schema["fields"]] == list(columns)
        assert {f["name"]: f["type"] for f in schema["fields"]} == {
            n: "integer" if kind == "int" else "string" for n, (kind, _) in columns.items()}
        assert schema["primaryKey"] == list(PRIMARY_KEYS[table]) and schema["missingValues"] == [""]
        assert set(CONSTRAINTS[table]) <= set(columns)
        assert csv_dtypes(table) == {f["name"]: "Int64" if f["type"] == "integer" else "string"
                                     for f in schema["fields"]}
    how = next(f for f in datapackage.table_schema("communes")["fields"] if f["name"] == "how")
    assert how["constraints"]["enum"] == list(HOW)


def test_pandas_guided_by_the_schema_keeps_codes(published_out):
    """The recipe of docs/USING.md, in short: dtypes from datapackage.json, not from guessing."""
    package = json.loads((published_out / datapackage.NAME).read_text(encoding="utf-8"))
    resource = next(r for r in package["resources"] if r["name"] == "membership-communes-csv")
    dtype = {f["name"]: "Int64" if f["type"] == "integer" else "string" for f in resource["schema"]["fields"]}
    table = pd.read_csv(published_out / resource["path"], dtype=dtype, keep_default_na=False,
                        na_values=resource["schema"]["missingValues"])
    assert table.loc[table["insee_com"] == "97104", "region"].item() == "01"
    assert table.loc[table["insee_com"] == "49160", "absorbed_outside"].item() == "49321"
    assert table["list_cog"].dtype == "Int64" and table["from_codes"].isna().sum() > 18_000
    plain = pd.read_csv(published_out / resource["path"])       # the problem the schema solves
    assert plain.loc[plain["insee_com"] == "97104", "region"].item() == 1
    assert plain.loc[plain["insee_com"] == "49160", "absorbed_outside"].item() == 49321.0
