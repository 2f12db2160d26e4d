"""The shortcuts of issue #19 answer like the plain code they replace: the set lookup of large code
collections (``csv_tables.in_set``) like ``Series.isin``, and a boundary scan reused by the next
phase of a run like a fresh scan; publishing's light files found with fewer simplifications like the
bisection, and the commune table without a pandas lookup per member."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from http_server import require_shared_data
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import PublishError
from pipeline.phases import CURRENT_PHASE, PREVIOUS_PHASE
from pipeline.publish.light import TOLERANCES_M, LightVariant, remove_probes, write_to_target
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


# ------------------------------------------------------------------ publishing (issue #19)
def _bisection(sizes: list[int], max_bytes: int) -> int | None:
    """The plain bisection the light files' search replaces: smallest index whose size meets the target."""
    lo, hi, best = 0, len(sizes) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        if sizes[mid] <= max_bytes:
            best, hi = mid, mid - 1
        else:
            lo = mid + 1
    return best


class _CountingSimplifier:
    """Stands in for ``light.Simplifier``: the tolerances simplified (each once), nothing simplified."""

    def __init__(self, done=()):
        self.done: set[float] = set(done)

    def __contains__(self, tolerance):
        return tolerance in self.done

    def __call__(self, tolerance):
        self.done.add(tolerance)
        return tolerance


@settings(max_examples=100, deadline=None)
@given(steps=st.lists(st.integers(0, 400_000), min_size=len(TOLERANCES_M), max_size=len(TOLERANCES_M)),
       targets=st.lists(st.integers(1, 3_000_000), min_size=1, max_size=3), tiles=st.booleans(),
       share_files=st.booleans())
def test_the_light_search_answers_like_a_bisection_and_shares_its_sizes(tmp_path_factory, steps, targets, tiles,
                                                                          share_files):
    # any size decreasing with the tolerance (not strictly), any targets, variants sharing their
    # sizes, and their candidate files or not
    sizes_by_index = list(reversed(np.cumsum(steps).tolist()))
    size_of = dict(zip(TOLERANCES_M, sizes_by_index))
    folder = tmp_path_factory.mktemp("light")
    simplify = _CountingSimplifier([2000.0, 400.0] if tiles else [])
    shared: dict[float, int] = {}
    probes: dict[float, Path] | None = {} if share_files else None
    written: list[str] = []
    writes: list[float] = []

    def write(p, decimals, geom):
        writes.append(geom)
        p.write_bytes(b"x" * size_of[geom])

    for k, target in enumerate(targets):
        path = folder / f"v{k}.geojson"
        expected = _bisection(sizes_by_index, target)
        variant = LightVariant(f"v{k}", target, "a test")
        if expected is None:
            with pytest.raises(PublishError, match="is over"):
                write_to_target(None, path, variant, simplify, write, shared, probes)
        else:
            facts = write_to_target(None, path, variant, simplify, write, shared, probes)
            assert facts["simplification_m"] == TOLERANCES_M[expected]
            assert path.stat().st_size == sizes_by_index[expected]
            written.append(path.name)
        assert set(shared) <= simplify.done   # a size is measured on a simplified candidate only
        if probes is None:
            assert sorted(p.name for p in folder.iterdir()) == sorted(written)   # no candidate file left
        else:   # the candidates not chosen yet, kept for the next variant
            assert sorted(p.name for p in folder.iterdir()) == sorted(written + [p.name for p in probes.values()])
    if probes is not None:
        remove_probes(probes)
        assert sorted(p.name for p in folder.iterdir()) == sorted(written)
        # each candidate written once, except one chosen twice (renamed into place the first time)
        chosen = [TOLERANCES_M[i] for t in targets if (i := _bisection(sizes_by_index, t)) is not None]
        assert len(writes) <= len(set(writes)) + len(chosen) - len(set(chosen))


def test_the_light_files_of_the_real_data_simplify_few_tolerances(tmp_path):
    # the real frame's two variants, besides the tiles' bands (2000 m and 400 m): the bisection
    # simplified 5 more tolerances for 2023-2027 (700, 1250, 1000, 200, 300), the search 3
    from publish_fixtures import cached_territories, mirror_dir

    from pipeline.publish.columns import prepare_frame
    from pipeline.publish.geojson import write_geojson
    from pipeline.publish.light import VARIANTS, Simplifier, map_frame
    from pipeline.publish.tiles import band_tolerances

    frame = prepare_frame(cached_territories(mirror_dir()), CURRENT_PHASE)
    simplify = Simplifier(frame, planned=band_tolerances())   # the tiles' simplifications, not made yet
    projected = simplify._projected()
    shared: dict[float, int] = {}
    probes: dict[float, Path] = {}
    small = map_frame(frame)
    writes: list[int] = []

    def write(p, d, g):
        writes.append(1)
        write_geojson(small, p, d, geoms=g)

    chosen = [write_to_target(frame, tmp_path / f"{v.suffix}.geojson", v, simplify, write, shared,
                              probes)["simplification_m"]
              for v in VARIANTS]
    remove_probes(probes)
    assert chosen == [1250.0, 400.0]
    assert sorted(simplify._done) == [300.0, 400.0, 1000.0, 1250.0, 2000.0]
    assert len(writes) == len(shared) == 5    # the regional file is the overview's 400 m candidate, renamed
    assert simplify._zones is projected   # each zone projected once for every tolerance
    assert sorted(p.name for p in tmp_path.iterdir()) == ["overview.geojson", "regional.geojson"]


def test_the_commune_table_looks_up_no_pandas_cell_per_member(monkeypatch):
    # a pandas cell lookup (``.at``) per member cost seconds over the ~19,000 real members
    from pandas.core.indexing import _AtIndexer

    from pipeline.publish import membership_tables as mt
    from pipeline.reconcile.membership import Membership

    n = 2000
    members = pd.DataFrame({"id_ti": [f"ti-{i % 2}" for i in range(n)], "insee_com": [f"{i:05d}" for i in range(n)],
                            "codes_list": [[f"{i:05d}"] for i in range(n)], "status": "matched"})
    territories = pd.DataFrame({"id_ti": ["ti-0", "ti-1"], "lib_ti": ["Zero", "Un"],
                                "siren_groupements": [["200000001"], []],
                                "perimeter_source": ["groupements", "communes"]})
    membership = Membership(members=members, territories=territories, list_cog=2023, boundary_cog=2024,
                            reconciled=[], absorbed_outside=[])
    refs = mt.MembershipRefs(communes=pd.DataFrame(columns=["insee_com"]),
                             groupements=pd.DataFrame({"siren_groupement": ["200000001"], "insee_com": ["00000"]}))
    calls = []
    original = _AtIndexer.__getitem__
    monkeypatch.setattr(_AtIndexer, "__getitem__", lambda self, key: calls.append(key) or original(self, key))
    table = mt.commune_table(membership, refs, CURRENT_PHASE).set_index("insee_com")
    assert len(calls) < 10
    assert table.loc["00000", ["how", "siren_groupement"]].tolist() == ["groupement", "200000001"]
    assert table.loc["00002", "how"] == "listed" and table.loc["00001", "how"] == "listed"


def test_the_preview_is_rendered_once_and_as_before(monkeypatch):
    # geopandas asks for a draw after each layer: with pyplot's Agg canvas, each rendered the whole
    # figure (seven renders of the full-resolution map per preview); the PNG is the same without them
    from matplotlib.backend_bases import FigureCanvasBase
    from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
    from publish_fixtures import cached_territories, mirror_dir

    from pipeline.publish.preview import render_preview_bytes

    frame = cached_territories(mirror_dir())
    frame = frame[frame["id_ti"].str.startswith(("ti-01", "ti-02", "ti-97"))].reset_index(drop=True)
    renders: list[int] = []
    agg_draw = FigureCanvasAgg.draw
    monkeypatch.setattr(FigureCanvasAgg, "draw", lambda self, *a, **k: renders.append(1) or agg_draw(self, *a, **k))
    once = render_preview_bytes(frame, "t")
    assert len(renders) == 1    # savefig's

    def eager(self, *args, **kwargs):   # what the pyplot canvas did on each draw_idle
        fig = self.figure
        fig.draw(RendererAgg(*fig.bbox.size, fig.dpi))

    monkeypatch.setattr(FigureCanvasBase, "draw_idle", eager)
    assert render_preview_bytes(frame, "t") == once


def test_the_preview_draws_the_simplifiers_projection_without_pyplot():
    # the publish hands the preview the zones the Simplifier projected (no second projection), and
    # the preview draws without geopandas' plot, so pyplot is never imported: same PNG bytes either way
    import os
    import subprocess
    import sys

    code = """if True:
        import sys
        from publish_fixtures import cached_territories, mirror_dir
        from pipeline.publish.light import Simplifier
        from pipeline.publish.preview import render_preview_bytes, in_metric_crs
        frame = cached_territories(mirror_dir())
        frame = frame[frame["id_ti"].str.startswith(("ti-01", "ti-02", "ti-97"))].reset_index(drop=True)
        simplify = Simplifier(frame)
        shared = simplify.in_metric_crs()
        assert list(shared) == list(in_metric_crs(frame))
        assert render_preview_bytes(frame, "t", projected=shared) == render_preview_bytes(frame, "t")
        assert simplify._zones is not None and len(simplify._zones) == len(shared)
        assert "matplotlib.pyplot" not in sys.modules, "pyplot imported"
        print("ok")
    """
    tests = Path(__file__).parent
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(tests)})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_a_tolerance_asked_on_two_threads_at_once_is_simplified_once(monkeypatch):
    # the tiles and the light files share one Simplifier from two threads
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.publish.light import Simplifier

    calls: list[float] = []
    started = threading.Barrier(2, timeout=5)

    def slow(self, tolerance):
        calls.append(tolerance)
        time.sleep(0.2)
        return np.array([tolerance])

    monkeypatch.setattr(Simplifier, "_simplify", slow)
    simplify = Simplifier(None)

    def ask(tolerance):
        started.wait() if tolerance == 400.0 else None
        return simplify(tolerance)[0]

    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(ask, [400.0, 400.0, 2000.0, 2000.0, 2000.0]))
    assert got == [400.0, 400.0, 2000.0, 2000.0, 2000.0]
    assert sorted(calls) == [400.0, 2000.0]


def test_the_publish_tasks_go_to_whichever_thread_is_free(monkeypatch):
    # the first task waits for the third: it can only end if the second thread, once free, takes
    # the third (a fixed split of the tasks between two threads would wait forever)
    import threading

    from pipeline import runtime
    from pipeline.publish.release import _in_parallel

    monkeypatch.setattr(runtime, "threads", lambda: 2)
    third_ran = threading.Event()
    done: list[str] = []
    _in_parallel([lambda: done.append("first" if third_ran.wait(10) else "first, alone"),
                  lambda: done.append("second"), lambda: done.append("third") or third_ran.set()])
    assert done == ["second", "third", "first"]

    def fail():
        raise PublishError("x.geojson: broken")

    for threads in (1, 2):
        monkeypatch.setattr(runtime, "threads", lambda threads=threads: threads)
        with pytest.raises(PublishError, match=r"x\.geojson"):
            _in_parallel([lambda: None, fail, lambda: None])
