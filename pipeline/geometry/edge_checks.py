"""Which communes have invalid coverage edges, remembered by neighbourhood so a check is done once.

``shapely.coverage_invalid_edges`` was most of the repair's time: ``geometry.clean_coverage``
took 1.10 s at 1x and 7.79 s at 16x before, 0.47 s and 1.40 s with the answers kept (the per-step
table of ``python bench/run.py``, bench/RESULTS.md). GEOS checks each polygon
against the polygons whose bounds meet its own, and nothing else, so its answer for one polygon
is a function of that neighbourhood. :func:`neighbourhoods` names it: a digest of the polygon's
commune code and its bbox neighbours' codes. Within one boundary file (the same polygons for a
code), two coverages that give a commune the same neighbourhood give it the same answer: the
second phase of a build and every later build on the same file (:class:`EdgeChecks`, kept in the
parse cache by the build) check only the communes whose neighbourhood is new, together with
their neighbours, and read the others' answers back. The answers are exactly those of a check of
the whole coverage (tests/test_edge_checks.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import shapely

KEY = np.dtype("S16")      # a 128-bit digest per neighbourhood: collisions are out of reach
# A table past this many answers (16 MiB of keys: about 30 builds on lists that all differ) starts
# again from the answers of the build under way, so the parse cache stays small whatever the lists do.
MAX_ANSWERS = 1 << 20
# Bytes of WKB checked at once when the polygons are decoded for the check only: about 8 M
# coordinates at 16 bytes each, about 200 MB once decoded (GEOS keeps 24-25 bytes per coordinate,
# bench/README.md). A first build at 64 times the shared data's vertices decoded its 24,260
# communes at once for the check: the step peaked at 1437 MB, and at 543 MB in batches
# (`python bench/jobs.py ours` on an empty cache, the step table of its report). Smaller inputs
# (the shared data's, 4 times its vertices) are checked in one go, as before.
CHECK_BUDGET = 128 << 20


def neighbourhoods(codes: np.ndarray, tree: shapely.STRtree, geoms: np.ndarray) -> np.ndarray | None:
    """One key per polygon (``KEY``): its code and the codes of the polygons whose bounds meet its
    own (what GEOS compares it with), in code order. None when a code repeats (a key would not
    name one polygon)."""
    own = [str(c).encode() for c in codes.tolist()]
    if len(set(own)) != len(own):
        return None
    names = np.asarray(own, dtype=bytes)     # fixed width
    in_order = bool((names[1:] > names[:-1]).all())    # the boundary set's communes are sorted by code
    rank = np.arange(len(names)) if in_order else np.argsort(np.argsort(names, kind="stable"))
    left, right = tree.query(geoms)          # bbox pairs, each polygon with itself included
    order = np.lexsort((rank[right], left))
    around = names[right[order]].tobytes()   # each polygon's neighbours, one after the other
    starts = (np.searchsorted(left[order], np.arange(len(geoms) + 1)) * names.itemsize).tolist()
    return np.array([hashlib.blake2b(own[i] + b"|" + around[starts[i]:starts[i + 1]], digest_size=16).digest()
                     for i in range(len(geoms))], dtype=KEY)


class EdgeChecks:
    """Answers of the coverage check by neighbourhood key: sorted ``keys`` and their ``flags``.

    The table is replaced whole (one attribute), so a lookup never sees keys of one version and
    flags of another.
    """

    def __init__(self, keys: np.ndarray | None = None, flags: np.ndarray | None = None):
        self._table = (np.zeros(0, dtype=KEY) if keys is None else keys,
                       np.zeros(0, dtype=bool) if flags is None else flags)
        self.added = 0          # answers learnt since this was read (the build keeps them when > 0)

    def __len__(self) -> int:
        return len(self._table[0])

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(known, flags) for each key: whether an answer is kept, and that answer."""
        table, flags = self._table
        if not len(table):
            return np.zeros(len(keys), dtype=bool), np.zeros(len(keys), dtype=bool)
        pos = np.minimum(np.searchsorted(table, keys), len(table) - 1)
        known = table[pos] == keys
        return known, known & flags[pos]

    def add(self, keys: np.ndarray, flags: np.ndarray) -> None:
        keys, first = np.unique(keys, return_index=True)
        new = ~self.lookup(keys)[0]
        if not new.any():
            return
        table, known = self._table
        if len(table) + int(new.sum()) > MAX_ANSWERS:
            table, known = table[:0], known[:0]
        merged = np.concatenate([table, keys[new]])
        order = np.argsort(merged, kind="stable")
        self._table = (merged[order], np.concatenate([known, np.asarray(flags, dtype=bool)[first][new]])[order])
        self.added += int(new.sum())

    def as_arrays(self) -> dict[str, np.ndarray]:
        keys, flags = self._table
        return {"keys": keys, "flags": flags}

    @classmethod
    def from_arrays(cls, arrays) -> EdgeChecks:
        """The inverse of :meth:`as_arrays`; ValueError when the arrays are not such a table."""
        keys, flags = np.asarray(arrays["keys"]), np.asarray(arrays["flags"])
        if keys.dtype != KEY or flags.dtype != bool or keys.shape != flags.shape or keys.ndim != 1 \
                or (len(keys) > 1 and not (keys[1:] > keys[:-1]).all()):
            raise ValueError("not a table of coverage-edge answers (sorted unique 16-byte keys, booleans)")
        return cls(keys, flags)


def known_invalid(geoms: np.ndarray, tree: shapely.STRtree, codes: np.ndarray | None, checks: EdgeChecks | None,
                  check: Callable[[np.ndarray, shapely.STRtree], np.ndarray],
                  take: Callable[[np.ndarray], np.ndarray] | None = None,
                  peek: Callable[[np.ndarray], np.ndarray] | None = None, weights: np.ndarray | None = None,
                  budget: int = CHECK_BUDGET) -> np.ndarray:
    """``check(geoms, tree)`` (which polygons have invalid coverage edges), asking ``check`` only
    about the polygons whose neighbourhood ``checks`` has no answer for, with their neighbours;
    the new answers are added to ``checks``. With ``take`` (positions -> polygons), ``geoms`` and
    ``tree`` need only have the polygons' bounding boxes: only the polygons checked are taken.
    With ``peek`` (positions -> polygons, decoded for this call only) and ``weights`` (each
    polygon's size, e.g. its WKB bytes), polygons to check that weigh more than ``budget`` are
    checked in batches of about ``budget``, west to east, each among its bbox neighbours: one
    batch's polygons are held at a time, and the answers are the same."""
    def polygons(idx: np.ndarray) -> np.ndarray:
        return geoms[idx] if take is None else take(idx)

    everything = np.arange(len(geoms))
    keys = neighbourhoods(codes, tree, geoms) if codes is not None and checks is not None else None
    if keys is None or checks is None:
        known, flags = np.zeros(len(geoms), dtype=bool), np.zeros(len(geoms), dtype=bool)
    else:
        known, flags = checks.lookup(keys)
    todo = np.flatnonzero(~known)
    parts = _batches(todo, geoms, weights, budget) if peek is not None and weights is not None else [todo]
    if peek is not None and len(parts) > 1:
        for part in parts:
            flags[part] = _among_neighbours(part, geoms, tree, check, peek)
    elif len(todo) and len(todo) == len(geoms):
        flags = check(polygons(everything), tree)
    elif len(todo):
        flags[todo] = _among_neighbours(todo, geoms, tree, check, polygons)
    if keys is not None and checks is not None and len(todo):
        checks.add(keys[todo], flags[todo])
    return flags


def _batches(todo: np.ndarray, geoms: np.ndarray, weights: np.ndarray, budget: int) -> list[np.ndarray]:
    """``todo`` in runs west to east (by bbox centre), each sorted, each weighing at most
    ``budget`` plus its last polygon's weight; one run when the whole weighs no more."""
    weight = np.asarray(weights, dtype=np.int64)[todo]
    if not len(todo) or int(weight.sum()) <= budget:
        return [todo]
    centre = shapely.bounds(geoms[todo])[:, [0, 2]].mean(axis=1)
    order = np.argsort(centre, kind="stable")
    run = (np.cumsum(weight[order]) - weight[order]) // max(budget, 1)    # the run each polygon starts in
    return [np.sort(part) for part in np.split(todo[order], np.flatnonzero(np.diff(run)) + 1)]


def _among_neighbours(idx: np.ndarray, geoms: np.ndarray, tree: shapely.STRtree,
                      check: Callable[[np.ndarray, shapely.STRtree], np.ndarray],
                      polygons: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """The answers for the polygons at ``idx`` (sorted), checked among their bbox neighbours only:
    a polygon's answer depends on them alone."""
    context = np.union1d(idx, tree.query(geoms[idx])[1])
    around = polygons(context)
    answers = check(around, shapely.STRtree(around))
    return answers[np.searchsorted(context, idx)]
