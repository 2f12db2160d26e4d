"""The boundary file's polygons as plain WKB in the parse cache, read back by row.

A GeoParquet file is compressed page by page, so reading a few of its polygons again means
reading and decompressing its whole geometry column (about 0.27 s at 16x, each time). The scan
writes each polygon's WKB, as it checks it, one after the other into ``parsed/scan-<key>.wkb``
(:class:`StoreWriter`); the boundary set keeps the byte ranges (:class:`WkbStore`) and reads back
only the bytes of the polygons asked for, in runs of nearby ones, keeping nothing in memory. The
file sits beside the scan's pickle and is trusted like it; one whose size is not the one written
is not used (the boundary file is read instead).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np

from .. import atomic

log = logging.getLogger(__name__)
RUN_BYTES = 4 << 20     # bytes read at once at most (bounds the reader's memory, like BATCH_BYTES)
GAP_BYTES = 64 << 10    # polygons closer than this in the file are read in one run (the gap is read too)


class WkbStore:
    """Where each row's WKB is in the store file: ``starts`` and ``ends`` by row of the boundary file."""

    def __init__(self, path: Path, starts: np.ndarray, ends: np.ndarray):
        self.path, self.starts, self.ends = Path(path), starts, ends
        self.size = int(ends.max()) if len(ends) else 0

    def usable(self) -> bool:
        """Whether the file is there with the size written (else the boundary file is read instead)."""
        try:
            return self.path.stat().st_size == self.size
        except OSError:
            return False

    def read(self, rows: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(indices into ``rows``, their WKB) run by run, each run at most ``RUN_BYTES`` long."""
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(self.starts[rows], kind="stable")
        starts, ends = self.starts[rows[order]], self.ends[rows[order]]
        with open(self.path, "rb") as fh:
            first = 0
            while first < len(order):
                last = first + 1
                while (last < len(order) and starts[last] - ends[last - 1] <= GAP_BYTES
                       and ends[last] - starts[first] <= RUN_BYTES):
                    last += 1
                low = int(starts[first])
                data = os.pread(fh.fileno(), int(ends[last - 1]) - low, low)
                if len(data) != int(ends[last - 1]) - low:
                    raise OSError(f"{self.path}: shorter than written")
                wkb = np.empty(last - first, dtype=object)
                wkb[:] = [data[a - low:b - low] for a, b in zip(starts[first:last].tolist(), ends[first:last].tolist())]
                yield order[first:last], wkb
                first = last


class StoreWriter:
    """Writes the WKB of a file's rows, batch by batch in file order, to a new store file.

    The file appears only once the block ends without error (:attr:`done` is then its
    :class:`WkbStore`); when writing fails, the scan goes on without a store (a warning is logged).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._stack = contextlib.ExitStack()
        self._fh: BinaryIO | None = None
        self._starts: list[np.ndarray] = []
        self._ends: list[np.ndarray] = []
        self._size = 0      # bytes written
        self._rows = 0      # file rows covered
        self.done: WkbStore | None = None

    def __enter__(self) -> StoreWriter:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._stack.enter_context(atomic.writing(self.path))
            self._fh = self._stack.enter_context(open(tmp, "wb"))
        except OSError as err:
            self._failed(err)
        return self

    def add(self, first: int, count: int, rows: np.ndarray, wkb: np.ndarray) -> None:
        """The WKB of ``rows`` (file rows, increasing) of the batch of ``count`` rows from row ``first``."""
        if self._fh is None:
            return
        lengths = np.fromiter((len(w) for w in wkb), dtype=np.int64, count=len(wkb))
        ends = self._size + np.cumsum(lengths)
        try:
            self._fh.write(b"".join(wkb.tolist()))
        except OSError as err:
            self._failed(err)
            return
        starts = np.full(first + count - self._rows, self._size, dtype=np.int64)   # empty ranges
        stops = starts.copy()
        starts[rows - self._rows] = ends - lengths
        stops[rows - self._rows] = ends
        self._starts.append(starts)
        self._ends.append(stops)
        self._rows = first + count
        self._size += int(lengths.sum())

    def _failed(self, err: BaseException) -> None:
        log.warning("parse cache %s not written (%s): the boundary file is read again when needed", self.path, err)
        self._fh = None
        with contextlib.suppress(OSError):
            self._stack.__exit__(type(err), err, err.__traceback__)    # the temp file goes

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        if self._fh is None:
            return
        if kind is not None:
            self._stack.__exit__(kind, err, tb)
            return
        try:
            self._stack.close()         # flushed to disk and renamed onto the store's path
        except OSError as failure:
            log.warning("parse cache %s not written (%s)", self.path, failure)
            return
        empty = np.zeros(0, dtype=np.int64)
        self.done = WkbStore(self.path, np.concatenate(self._starts or [empty]), np.concatenate(self._ends or [empty]))
