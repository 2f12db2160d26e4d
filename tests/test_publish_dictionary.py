"""The data dictionary (docs/DATA_DICTIONARY.md) is generated from the code and lists every column."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.publish import column_descriptions, render_data_dictionary
from pipeline.publish.columns import FORMAT_TYPES, declared_columns
from pipeline.publish.dictionary import DICTIONARY_PATH as _DICTIONARY_REL
from pipeline.schema import TERRITORY_COLUMNS
from pipeline.sources.plans import PLAN_COLUMNS

DICTIONARY_PATH = Path(__file__).resolve().parents[1] / _DICTIONARY_REL


def test_data_dictionary_file_is_up_to_date():
    assert DICTIONARY_PATH.read_text(encoding="utf-8") == render_data_dictionary(), (
        "docs/DATA_DICTIONARY.md is stale: run `python -m pipeline.publish` and commit it"
    )


def _documented_columns() -> dict[str, list[str]]:
    rows = {}
    for line in DICTIONARY_PATH.read_text(encoding="utf-8").splitlines():
        if line.startswith("## Membership tables"):   # the territories' columns end here
            break
        m = re.match(r"^\| `([^`]+)` \| (.*) \|$", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in m.group(2).split(" | ")]
    return rows


def test_every_schema_and_plan_column_is_documented_with_a_meaning():
    documented = _documented_columns()
    expected = [c.name for c in TERRITORY_COLUMNS] + [c.name for c in PLAN_COLUMNS]
    assert set(expected) | {"bbox"} == set(documented)
    for name in expected:
        *types, meaning = documented[name]
        assert len(types) == 4 and all(types) and len(meaning) > 10, name


def test_column_descriptions_cover_every_declared_column():
    desc = column_descriptions()
    assert list(desc) == [c.name for c in declared_columns()]
    assert all(isinstance(v, str) and v for v in desc.values())
    assert desc["lib_ti"] == next(c.description for c in TERRITORY_COLUMNS if c.name == "lib_ti")
    assert {c.kind for c in declared_columns()} <= set(FORMAT_TYPES)


@pytest.fixture(scope="module")
def published_parquet(mirror, tmp_path_factory):
    from publish_fixtures import cached_territories

    from pipeline.publish import publish_release
    from pipeline.settings import Settings

    frame = cached_territories(mirror)
    frame = frame[frame["id_ti"].str.startswith("ti-01")]
    out = tmp_path_factory.mktemp("dictionary")
    publish_release(frame, Settings(output_dir=out), build_id="dict", inputs=[], checks=[])
    return out / "territoires-industrie.parquet"


def test_every_published_column_is_in_the_dictionary(published_parquet):
    published = set(pq.read_schema(published_parquet).names)
    assert published == set(_documented_columns())
