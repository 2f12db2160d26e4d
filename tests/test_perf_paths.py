"""The shortcuts of issue #19 answer like the plain code they replace: the set lookup of large code
collections (``csv_tables.in_set``) like ``Series.isin``, and a boundary scan reused by the next
phase of a run like a fresh scan."""

from __future__ import annotations

import pandas as pd
from http_server import require_shared_data
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.phases import CURRENT_PHASE, PREVIOUS_PHASE
from pipeline.settings import Settings
from pipeline.sources.csv_tables import in_set
from pipeline.steps import sequence as steps

CODES = st.sampled_from(["01001", "01002", "2A004", "97101", "75056", "", None])


@settings(max_examples=200, deadline=None)
@given(values=st.lists(CODES, max_size=30), allowed=st.lists(CODES | st.just(float("nan")), max_size=10),
       dtype=st.sampled_from(["str", "string"]))
def test_in_set_is_isin(values, allowed, dtype):
    column = pd.Series(values, dtype=dtype)
    assert in_set(column, set(allowed)).tolist() == column.isin(set(allowed)).to_numpy().tolist()


IDS = st.sampled_from(["ti-1", "ti-2", "ti-3", None])


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(IDS, CODES | st.just(float("nan"))), min_size=1, max_size=30),
       dtype=st.sampled_from(["str", "string", "object"]))
def test_grouping_per_territory_is_groupby_agg(rows, dtype):
    frame = pd.DataFrame({"id_ti": pd.Series([r[0] for r in rows], dtype=dtype),
                          "v": pd.Series([r[1] for r in rows], dtype=object)})
    for combine in (steps._sorted_unique, len):
        want = frame.groupby("id_ti", sort=True)["v"].agg(lambda s, f=combine: f(s.tolist()))
        got = steps._per_territory(frame["id_ti"].tolist(), frame["v"].tolist(), combine)
        assert got.sort_index().to_dict() == want.to_dict()


def test_the_next_phase_reuses_the_scan_and_builds_the_same_territories(tmp_path):
    data = require_shared_data()
    settings_ = Settings(mirror_dir=data, raw_dir=tmp_path / "raw", output_dir=tmp_path / "out")
    steps._LAST_SCAN.clear()
    steps.build_territories(settings_, phase=CURRENT_PHASE)
    scanned = next(iter(steps._LAST_SCAN.values()))
    reused = steps.build_territories(settings_, phase=PREVIOUS_PHASE)
    assert next(iter(steps._LAST_SCAN.values())) is scanned          # the first phase's scan, used as it was left
    steps._LAST_SCAN.clear()
    fresh = steps.build_territories(settings_, phase=PREVIOUS_PHASE)
    assert reused.timings["scan_boundaries"] < fresh.timings["scan_boundaries"]
    a, b = reused.territories, fresh.territories
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    assert list(a.geometry.to_wkb()) == list(b.geometry.to_wkb())
    assert reused.dissolve_stats.as_dict() == fresh.dissolve_stats.as_dict()
