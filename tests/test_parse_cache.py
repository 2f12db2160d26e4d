"""The parse cache of reference tables: same frames as a fresh parse, reparsed when anything changes."""

from __future__ import annotations

import dataclasses
import logging

import pandas as pd
import pytest

from pipeline.errors import ReconciliationError
from pipeline.settings import Settings
from pipeline.sources.catalog import load_catalog
from pipeline.sources.parse_cache import cache_key, cached_frames
from pipeline.steps import sequence as build


def _frame(n: int) -> dict[str, pd.DataFrame]:
    frame = pd.DataFrame({"pop": pd.array([1, None][:n], dtype="Int64")})
    frame["code"] = pd.Series(["01001", None][:n], dtype=object)
    return {"t": frame}


def test_second_call_reads_the_cache_and_gives_identical_frames(tmp_path):
    calls = []

    def parse():
        calls.append(1)
        return _frame(2)

    first = cached_frames(tmp_path, "k", "a" * 64, ("t",), parse)
    second = cached_frames(tmp_path, "k", "a" * 64, ("t",), parse)
    assert len(calls) == 1
    pd.testing.assert_frame_equal(first["t"], second["t"])
    assert second["t"]["code"].iloc[1] is None          # nulls and dtypes come back exactly
    assert [p.name for p in tmp_path.iterdir()] == [cache_key("k", "a" * 64) + ".pickle"]


def test_another_input_is_parsed_again_and_the_old_entry_dropped(tmp_path):
    cached_frames(tmp_path, "k", "a" * 64, ("t",), lambda: _frame(2))
    got = cached_frames(tmp_path, "k", "b" * 64, ("t",), lambda: _frame(1))
    assert len(got["t"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == [cache_key("k", "b" * 64) + ".pickle"]


def test_corrupt_or_unwritable_cache_never_fails_the_parse(tmp_path, caplog):
    key = cache_key("k", "a" * 64)
    (tmp_path / f"{key}.pickle").write_bytes(b"not a pickle")
    with caplog.at_level(logging.WARNING, logger="pipeline.sources.parse_cache"):
        got = cached_frames(tmp_path, "k", "a" * 64, ("t",), lambda: _frame(2))
    assert len(got["t"]) == 2 and "unreadable" in caplog.text
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder should be")
    assert len(cached_frames(blocked, "k", "a" * 64, ("t",), lambda: _frame(1))["t"]) == 1
    # without a folder or a checksum nothing is cached
    assert len(cached_frames(None, "k", "a" * 64, ("t",), lambda: _frame(1))["t"]) == 1
    assert len(cached_frames(tmp_path / "new", "k", "", ("t",), lambda: _frame(1))["t"]) == 1
    assert not (tmp_path / "new").exists()


def test_real_references_from_the_cache_equal_a_fresh_parse(mirror, tmp_path, monkeypatch):
    settings = Settings(mirror_dir=mirror, raw_dir=tmp_path / "raw", output_dir=tmp_path / "out")
    catalog = load_catalog(settings)
    fetched = build.fetch_sources(settings, catalog, build.phase_sources(catalog, "2023-2027"))
    cache = settings.raw_dir / "parsed"
    fresh_changes = build.load_changes(fetched, cache)
    fresh_admin = build.load_admin(catalog, fetched, 2024, cache)

    def refuse(*_a, **_k):
        raise AssertionError("parsed again although cached")

    monkeypatch.setattr(build, "read_admin", refuse)
    monkeypatch.setattr(build, "read_commune_changes", refuse)
    pd.testing.assert_frame_equal(build.load_changes(fetched, cache), fresh_changes)
    cached = build.load_admin(catalog, fetched, 2024, cache)
    pd.testing.assert_frame_equal(cached.communes, fresh_admin.communes)
    pd.testing.assert_frame_equal(cached.members, fresh_admin.members)
    assert len(cached.communes) > 34_000
    # another COG year is another entry: parsed (and refused here)
    with pytest.raises(AssertionError, match="parsed again"):
        build.load_admin(catalog, fetched, 2023, cache)


def _current_phase_inputs(mirror, tmp_path):
    """Settings on the mirror, the catalog, the 2023-2027 files and the boundary file's codes."""
    settings = Settings(mirror_dir=mirror, raw_dir=tmp_path / "raw", output_dir=tmp_path / "out")
    catalog = load_catalog(settings)
    fetched = build.fetch_sources(settings, catalog, build.phase_sources(catalog, "2023-2027"))
    files = build.phase_files(catalog, "2023-2027", fetched)
    return settings, catalog, files, build.boundary_codes(files[build.BOUNDARIES].path)


def _count_calls(monkeypatch, name: str, arg: int | None, module=build) -> list:
    """Replace ``<module>.<name>`` by itself recording its positional argument ``arg`` (or the
    whole call, with None) at each call."""
    calls: list = []
    real = getattr(module, name)

    def counted(*a, **k):
        calls.append(a if arg is None else a[arg])
        return real(*a, **k)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_a_reconciliation_is_read_back_while_nothing_it_depends_on_changes(mirror, tmp_path, monkeypatch):
    settings, catalog, files, codes = _current_phase_inputs(mirror, tmp_path)
    fresh = build.reconcile_phase(settings, catalog, "2023-2027", files, codes)
    calls = _count_calls(monkeypatch, "phase_membership", 1)
    again = build.reconcile_phase(settings, catalog, "2023-2027", files, codes)
    assert calls == []
    for got, want in ((again.membership, fresh.membership), (again.previous, fresh.previous)):
        pd.testing.assert_frame_equal(got.members, want.members)
        pd.testing.assert_frame_equal(got.territories, want.territories)
        assert got.summary() == want.summary() and got.reconciled == want.reconciled
    pd.testing.assert_frame_equal(again.references.communes, fresh.references.communes)
    pd.testing.assert_frame_equal(again.boundary_admin.communes, fresh.boundary_admin.communes)
    # other boundary codes, another list file or other limits: reconciled again
    build.reconcile_phase(settings, catalog, "2023-2027", files, codes - {sorted(codes)[0]})
    assert calls == ["2023-2027", "2018-2022"]
    name = catalog.phases["2023-2027"].communes
    moved = {**files, name: dataclasses.replace(files[name], sha256="0" * 64)}
    build.reconcile_phase(settings, catalog, "2023-2027", moved, codes)
    assert len(calls) == 4
    limited = Settings(mirror_dir=mirror, raw_dir=tmp_path / "raw", output_dir=tmp_path / "out",
                       max_commune_vertices=settings.max_commune_vertices + 1)
    build.reconcile_phase(limited, catalog, "2023-2027", files, codes)
    assert len(calls) == 6


def test_a_reconciliation_that_fails_is_not_kept(mirror, tmp_path, monkeypatch):
    settings, catalog, files, codes = _current_phase_inputs(mirror, tmp_path)

    def refuse(*_a, **_k):
        raise ReconciliationError("refused")

    with monkeypatch.context() as patch:
        patch.setattr(build, "phase_membership", refuse)
        with pytest.raises(ReconciliationError, match="refused"):
            build.reconcile_phase(settings, catalog, "2023-2027", files, codes)
    assert not list((settings.raw_dir / "parsed").glob("reconcile-*"))


def test_a_boundary_scan_is_read_back_while_the_file_and_limits_are_the_same(mirror, tmp_path, monkeypatch):
    """The scan (every polygon checked, the report, bounds and repaired polygons) of a boundary
    file is kept by sha256, path, limits and code; a later process reads it back and decodes the
    same polygons from the file."""
    import numpy as np
    import shapely

    settings, _, files, _ = _current_phase_inputs(mirror, tmp_path)
    parsed = tmp_path / "raw" / "parsed"
    monkeypatch.setattr(build, "_LAST_SCAN", {})
    fresh = build.scan_commune_boundaries(files, settings.limits, parsed)
    calls = _count_calls(monkeypatch, "scan_boundaries", 0)
    monkeypatch.setattr(build, "_LAST_SCAN", {})       # as in another process
    again = build.scan_commune_boundaries(files, settings.limits, parsed)
    assert calls == [] and again is not fresh
    assert again.codes.tolist() == fresh.codes.tolist() and np.array_equal(again.bounds, fresh.bounds)
    assert again.report == fresh.report
    pd.testing.assert_frame_equal(again.communes, fresh.communes)
    keep = np.zeros(len(fresh.codes), dtype=bool)
    keep[::25] = True
    keep[[int(np.flatnonzero(fresh.codes == c)[0]) for c in fresh.report.repaired]] = True
    assert shapely.equals_exact(again.load(keep), fresh.load(keep), tolerance=0).all()
    # the polygons come back from the scan's WKB store, without reading the boundary file again,
    # as a scan without a store decodes them from the file
    from pipeline.sources import boundaries as sources

    plain = sources.scan_boundaries(files[build.BOUNDARIES].path, settings.limits, in_memory_bytes=0)
    opened = _count_calls(monkeypatch, "_open_parquet", None, module=sources)
    stored = again.geometries(np.flatnonzero(keep))
    assert opened == [] and shapely.equals_exact(stored, plain.geometries(np.flatnonzero(keep)), tolerance=0).all()
    store = next(parsed.glob("scan-*.wkb"))
    assert store.with_suffix(".pickle").is_file()
    with open(store, "r+b") as fh:       # a store cut short is not used: the file is read instead
        fh.truncate(store.stat().st_size - 1)
    assert shapely.equals_exact(again.geometries(np.flatnonzero(keep)), stored, tolerance=0).all()
    assert opened
    # another content of the file, or other limits: scanned again
    moved = {**files, build.BOUNDARIES: dataclasses.replace(files[build.BOUNDARIES], sha256="0" * 64)}
    monkeypatch.setattr(build, "_LAST_SCAN", {})
    build.scan_commune_boundaries(moved, settings.limits, parsed)
    assert len(calls) == 1
    monkeypatch.setattr(build, "_LAST_SCAN", {})
    build.scan_commune_boundaries(files, dataclasses.replace(settings.limits, commune_vertices=10**6), parsed)
    assert len(calls) == 2
    assert len(list(parsed.glob("scan-*.pickle"))) == 1    # one entry per file: the older ones go
    assert [p.stem for p in parsed.glob("scan-*.wkb")] == [p.stem for p in parsed.glob("scan-*.pickle")]


def test_the_codes_are_read_ahead_of_the_scan_only_when_the_scan_is_not_kept(mirror, tmp_path, monkeypatch):
    """A build reads the boundary codes from the file's attribute columns, so that the lists are
    reconciled during a long scan, only when it must scan: a scan read back from the parse cache,
    or made already by this process, is quicker than that read, which also leaves Arrow's buffers
    in the process. The territories are the same either way."""
    settings, catalog, files, _ = _current_phase_inputs(mirror, tmp_path)
    fetched = build.fetch_sources(settings, catalog, build.phase_sources(catalog, "2023-2027"))
    parsed = settings.raw_dir / "parsed"
    monkeypatch.setattr(build, "_LAST_SCAN", {})
    assert not build.scan_is_kept(files, settings.limits, parsed)
    reads = _count_calls(monkeypatch, "boundary_codes", 0)
    first = build.build_phase(settings, catalog, "2023-2027", fetched, checks=False)
    assert reads == [files[build.BOUNDARIES].path]
    assert build.scan_is_kept(files, settings.limits, parsed)             # in this process
    monkeypatch.setattr(build, "_LAST_SCAN", {})                          # as in another process
    assert build.scan_is_kept(files, settings.limits, parsed)             # in the parse cache
    assert not build.scan_is_kept(files, settings.limits, None)
    unknown = {**files, build.BOUNDARIES: dataclasses.replace(files[build.BOUNDARIES], sha256="")}
    assert not build.scan_is_kept(unknown, settings.limits, parsed)       # nothing says which content
    again = build.build_phase(settings, catalog, "2023-2027", fetched, checks=False)
    assert len(reads) == 1
    a, b = first.territories, again.territories
    pd.testing.assert_frame_equal(a.drop(columns="geometry"), b.drop(columns="geometry"))
    assert list(a.geometry.to_wkb()) == list(b.geometry.to_wkb())
    monkeypatch.setattr(build, "_LAST_SCAN", {})
    for entry in parsed.glob("scan-*.pickle"):                            # no scan kept: read again
        entry.unlink()
    build.build_phase(settings, catalog, "2023-2027", fetched, checks=False)
    assert len(reads) == 2
