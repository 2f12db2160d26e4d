"""The boundary scan's WKB store: any rows read back are the bytes written, and a store that is
not whole, or cannot be written, is never used."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.sources import wkb_store
from pipeline.sources.wkb_store import StoreWriter

# batches of rows, each row None (not kept by the scan) or its bytes
batches = st.lists(st.lists(st.one_of(st.none(), st.binary(min_size=1, max_size=40)), min_size=1, max_size=8),
                   min_size=1, max_size=6)


def _write(path, rows_by_batch) -> StoreWriter:
    with StoreWriter(path) as writer:
        first = 0
        for batch in rows_by_batch:
            kept = np.array([i for i, w in enumerate(batch) if w is not None], dtype=np.int64)
            wkb = np.empty(len(kept), dtype=object)
            wkb[:] = [batch[i] for i in kept.tolist()]
            writer.add(first, len(batch), first + kept, wkb)
            first += len(batch)
    return writer


@settings(max_examples=60, deadline=None)
@given(rows_by_batch=batches, data=st.data(), run=st.integers(1, 64), gap=st.integers(0, 16))
def test_rows_read_back_are_the_bytes_written(tmp_path_factory, rows_by_batch, data, run, gap):
    path = tmp_path_factory.mktemp("store") / "scan.wkb"
    writer = _write(path, rows_by_batch)
    store = writer.done
    assert store is not None and store.usable()
    written = [w for batch in rows_by_batch for w in batch]
    kept = [i for i, w in enumerate(written) if w is not None]
    assert path.stat().st_size == sum(len(written[i]) for i in kept)
    asked = data.draw(st.lists(st.sampled_from(kept), unique=True) if kept else st.just([]))
    got: dict[int, bytes] = {}
    with pytest.MonkeyPatch.context() as patch:    # small runs: every way of grouping is met
        patch.setattr(wkb_store, "RUN_BYTES", run)
        patch.setattr(wkb_store, "GAP_BYTES", gap)
        for found, wkb in store.read(np.array(asked, dtype=np.int64)):
            assert len(found) == len(wkb) and not set(found.tolist()) & set(got)
            got.update(zip(found.tolist(), wkb.tolist()))
    assert got == {k: written[r] for k, r in enumerate(asked)}


def test_a_store_not_whole_is_not_used(tmp_path):
    store = _write(tmp_path / "s.wkb", [[b"abc", None, b"de"]]).done
    assert store is not None and store.usable()
    with open(store.path, "ab") as fh:
        fh.write(b"x")
    assert not store.usable()
    store.path.unlink()
    assert not store.usable()


def test_a_store_that_cannot_be_written_leaves_nothing_and_the_scan_goes_on(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING):
        writer = _write(blocker / "s.wkb", [[b"abc"]])      # its folder is a file
    assert writer.done is None and "not written" in caplog.text
    with pytest.raises(RuntimeError), StoreWriter(tmp_path / "t.wkb") as failing:
        failing.add(0, 1, np.array([0]), np.array([b"abc"], dtype=object))
        raise RuntimeError("the scan failed")
    assert failing.done is None and list(tmp_path.iterdir()) == [blocker]   # no store, no temp file


def test_a_failed_write_drops_the_store(tmp_path, monkeypatch, caplog):
    writer = StoreWriter(tmp_path / "s.wkb")
    with caplog.at_level(logging.WARNING), writer:
        writer.add(0, 1, np.array([0]), np.array([b"abc"], dtype=object))
        monkeypatch.setattr(writer._fh, "write", lambda data: (_ for _ in ()).throw(OSError(28, "No space left")))
        writer.add(1, 1, np.array([1]), np.array([b"de"], dtype=object))
    assert writer.done is None and "No space left" in caplog.text and list(tmp_path.iterdir()) == []


def test_a_boundary_file_the_scan_rejects_leaves_no_store(tmp_path):
    import geopandas as gpd
    from shapely.geometry import Polygon

    from pipeline.errors import InputFormatError
    from pipeline.sources.boundaries import scan_boundaries

    path = tmp_path / "b.parquet"
    gpd.GeoDataFrame({"code_insee": ["01001", "01002"], "departement": ["01", "01"]},
                     geometry=[Polygon(), Polygon()], crs=4326).to_parquet(path)
    store = tmp_path / "parsed" / "scan.wkb"
    with pytest.raises(InputFormatError, match="empty"):
        scan_boundaries(path, store=store)
    assert not store.exists() and not list(store.parent.glob("*"))    # nor a temp file


def test_the_set_tells_each_polygons_wkb_size_from_the_store_or_memory(tmp_path):
    """What the coverage check weighs its batches by: the bytes of each commune's WKB, the same
    from the store as from the WKB kept in memory, and nothing when only the file holds them."""
    import geopandas as gpd
    import shapely

    from pipeline.sources.boundaries import scan_boundaries

    path = tmp_path / "b.parquet"
    squares = [shapely.box(x, 45, x + 0.01 * (1 + x % 3), 45.01) for x in range(6)]
    squares[2] = shapely.Polygon([(2, 45), (2.005, 45.002), (2.01, 45), (2.01, 45.01), (2, 45.01)])
    gpd.GeoDataFrame({"code_insee": [f"0100{i}" for i in range(6)], "departement": ["01"] * 6},
                     geometry=squares, crs=4326).to_parquet(path)
    expected = [len(shapely.to_wkb(g)) for g in squares]
    some = np.array([4, 0, 2])
    stored = scan_boundaries(path, store=tmp_path / "parsed" / "scan.wkb", in_memory_bytes=0)
    held = scan_boundaries(path)
    read_again = scan_boundaries(path, in_memory_bytes=0)
    assert stored.reads_cheaply and held.reads_cheaply and not read_again.reads_cheaply
    for boundaries in (stored, held):
        assert boundaries.wkb_bytes(some).tolist() == [expected[i] for i in some]
    assert read_again.wkb_bytes(some) is None
