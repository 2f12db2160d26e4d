"""The plan table on the real build: the empty template and a synthetic table, published."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace

import geopandas as gpd
import pandas as pd
import pyogrio

from pipeline.sources.plans import PLAN_COLUMN_NAMES, TEMPLATE_PATH
from pipeline.steps.sequence import publish_build

SYNTHETIC = (
    "id_ti;axe_transition_ecologique;axe_innovation;axe_competences;axe_foncier;plan_date_adoption;"
    "plan_nb_actions_foncier;plan_url;plan_statut\n"
    "ti-8418;oui;non;x;;15/03/2024;4;https://example.org/plan-8418.pdf;adopté\n"
    "TI-0101;1;0;1;1;2024-06-30;;;en cours\n"
)


def test_template_publishes_null_plan_columns(real_build, mirror_settings, tmp_path):
    settings = replace(mirror_settings, output_dir=tmp_path / "out", plans_path=TEMPLATE_PATH)
    manifest = publish_build(real_build, settings)
    t = gpd.read_parquet(tmp_path / "out" / "territoires-industrie.parquet")
    assert len(t) == 183
    for col in PLAN_COLUMN_NAMES:
        assert col in t.columns and t[col].isna().all(), col
    assert manifest["extra"]["plans"]["source"]["rows"] == 0


def test_synthetic_plan_table_is_published_in_every_format(real_build, mirror_settings, tmp_path):
    plans = tmp_path / "plans.csv"
    plans.write_bytes(SYNTHETIC.encode("cp1252"))          # Windows-1252, ';' separated
    settings = replace(mirror_settings, output_dir=tmp_path / "out", plans_path=plans)
    manifest = publish_build(real_build, settings)
    out = tmp_path / "out"
    t = gpd.read_parquet(out / "territoires-industrie.parquet").set_index("id_ti")
    row = t.loc["ti-8418"]
    assert row["axe_transition_ecologique"] == True and row["axe_innovation"] == False  # noqa: E712
    assert row["axe_competences"] == True  # noqa: E712  ("x" means yes)
    assert pd.isna(row["axe_foncier"])      # blank means unknown, not "no"
    assert row["plan_date_adoption"] == dt.date(2024, 3, 15)
    assert row["plan_nb_actions_foncier"] == 4 and row["plan_statut"] == "adopté"
    assert t.loc["ti-0101", "axe_foncier"] == True and t.loc["ti-0101", "plan_statut"] == "en cours"  # noqa: E712
    others = t.drop(index=["ti-8418", "ti-0101"])
    assert others[PLAN_COLUMN_NAMES].isna().all().all()           # nothing invented for the rest
    features = {f["properties"]["id_ti"]: f["properties"]
                for f in json.loads((out / "territoires-industrie.geojson").read_text())["features"]}
    assert features["ti-8418"]["plan_date_adoption"] == "2024-03-15"
    assert features["ti-8418"]["axe_foncier"] is None and features["ti-8418"]["axe_competences"] is True
    gpkg = pyogrio.read_dataframe(out / "territoires-industrie.gpkg").set_index("id_ti")
    assert gpkg.loc["ti-8418", "plan_url"] == "https://example.org/plan-8418.pdf"
    assert manifest["extra"]["plans"]["source"]["rows"] == 2
    assert manifest["extra"]["plans"]["source"]["sha256"]
