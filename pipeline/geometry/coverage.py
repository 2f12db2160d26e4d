"""Repair the commune coverage and dissolve it into one MultiPolygon per territory.

The coverage is repaired only where it is broken: ``shapely.coverage_invalid_edges`` finds the
communes with overlapping or mismatched edges, and ``shapely.coverage_clean`` runs on those
communes and their neighbours only (overlaps removed, shared edges made identical); the repaired patch is
checked against its surroundings and grown until the whole coverage is valid. Everything else
keeps its source polygons untouched. Each territory is then a coverage union of its communes. The check's answers are
remembered by commune neighbourhood (:mod:`.edge_checks`): a commune met again with the same
neighbours, in another phase or build on the same file, is not checked again.
A hole left inside a territory that no other commune covers is a gap of the source coverage and
is filled; a hole covered by other communes is a real enclave and is kept.

Geometry stays in EPSG:4326, the CRS of the source and of the outputs, so the result's vertices
are the source's own (no round trip through a projection, no precision drift). Areas are
computed in a metric CRS per zone (Lambert-93 for the metropole, a local CRS for each overseas
departement). The coverage check and the unions run on :func:`pipeline.runtime.threads` threads
(GEOS releases the GIL).

A build calls the steps in this order: :func:`clean_coverage` (repair), :func:`coverage_stats`,
:func:`union_territories` (one :class:`TerritoryShape` per territory, gaps inside a territory
filled), :func:`fill_gaps_between` and :func:`territories_frame`;
:func:`pipeline.steps.sequence.repair_and_dissolve` chains them. Between the union and the gaps between territories, the caller may drop the members'
polygons (:meth:`ZoneCoverage.without`): only the communes outside the territories are looked at.

Polygons may be decoded on demand: a zone holds None for a commune not decoded yet and reads it
through a function the caller gives when a step needs it. Its trees are built on bounding
boxes where a polygon is not decoded, which give the same candidates in the same order, so the
shapes do not depend on which polygons were decoded when (tests/test_geometry.py).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, cast

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import shapely

from .. import runtime
from .edge_checks import EdgeChecks, known_invalid

if TYPE_CHECKING:   # the type only: the geometry stage does not import the sources stage
    from ..sources.boundaries import BoundarySet

# Made at import, before any boundary file is read: PROJ answers a later "EPSG:4326" of the same
# thread from the CRS it read in a file (in the boundaries' own, older PROJJSON form), which
# would change the published GeoParquet's CRS metadata.
WGS84 = pyproj.CRS.from_epsg(4326)
METRO_CRS = 2154
OVERSEAS_CRS = {"971": 5490, "972": 5490, "973": 2972, "974": 2975, "976": 4471}
SMALL_PART_M2 = 10_000          # parts under 1 ha are reported
BETWEEN_GAP_MAX_M2 = 1e6        # gaps between territories above 1 km2 are not filled
GAP_MIN_M2 = 1.0                # uncovered areas under 1 m2 inside a hole are numerical noise
MAX_GROW = 6                    # rounds of growing a repaired patch before cleaning the whole zone
PARALLEL_MIN = 2000             # below this many polygons, one thread is enough


def zone_crs(departement: str) -> int:
    """EPSG code of the metric CRS used for a departement."""
    return OVERSEAS_CRS.get(str(departement), METRO_CRS)


@dataclass
class DissolveStats:
    communes_cleaned: int = 0
    zones: dict[str, int] = field(default_factory=dict)
    holes_kept: int = 0                 # real enclaves (covered by communes outside the territory)
    gaps_filled: int = 0                # holes (or parts of holes) no commune covers
    gaps_filled_m2: float = 0.0
    gaps_between_filled: int = 0        # gaps enclosed by several territories, given to one of them
    gaps_between_m2: float = 0.0
    gaps_between_left: int = 0          # gaps between territories too large to be slits (> 1 km2)
    noise_filled: int = 0               # uncovered bits of holes under 1 m2 (numerical noise)
    small_parts: int = 0                # polygon parts under 1 ha in the result
    parts: int = 0

    def as_dict(self) -> dict:
        return {
            "communes_cleaned": int(self.communes_cleaned), "zones": {k: int(v) for k, v in self.zones.items()},
            "holes_kept": int(self.holes_kept), "gaps_filled": int(self.gaps_filled),
            "gaps_between_filled": int(self.gaps_between_filled),
            "gaps_between_m2": round(float(self.gaps_between_m2), 1),
            "gaps_between_left": int(self.gaps_between_left),
            "gaps_filled_ha": round(float(self.gaps_filled_m2) / 1e4, 2), "noise_filled": int(self.noise_filled),
            "small_parts": int(self.small_parts), "parts": int(self.parts),
        }


@cache
def _to_metric(crs: int) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(4326, crs, always_xy=True)


def metric(geoms, crs: int):
    """Geometries (EPSG:4326) projected to the metric CRS ``crs``."""
    tr = _to_metric(int(crs))
    return shapely.transform(geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def _invalid(geoms: np.ndarray) -> np.ndarray:
    """Which polygons have invalid coverage edges."""
    return ~shapely.is_empty(shapely.coverage_invalid_edges(geoms))


def _invalid_split(geoms: np.ndarray, tree: shapely.STRtree) -> np.ndarray:
    """:func:`_invalid` on two halves (west / east, each with its neighbours) on two threads."""
    if runtime.threads() < 2 or len(geoms) < PARALLEL_MIN:
        return _invalid(geoms)
    b = shapely.bounds(geoms)
    cx = (b[:, 0] + b[:, 2]) / 2
    half = cx < np.median(cx)
    cores = [np.flatnonzero(half), np.flatnonzero(~half)]
    sets = [np.union1d(c, tree.query(geoms[c])[1]) for c in cores]   # a half and its neighbours
    with ThreadPoolExecutor(2) as pool:
        flags = list(pool.map(lambda s: _invalid(geoms[s]), sets))
    out = np.zeros(len(geoms), dtype=bool)
    for core, s, f in zip(cores, sets, flags):
        full = np.zeros(len(geoms), dtype=bool)
        full[s] = f
        out[core] = full[core]
    return out


def _clusters(geoms: np.ndarray) -> list[np.ndarray]:
    """Groups of polygons whose bounds touch, directly or through others (connected components)."""
    left, right = shapely.STRtree(geoms).query(geoms)
    parent = np.arange(len(geoms))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in zip(left.tolist(), right.tolist()):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([root(i) for i in range(len(geoms))])
    return [np.flatnonzero(roots == r) for r in np.unique(roots)]


def _clean_clusters(geoms: np.ndarray) -> np.ndarray:
    """``coverage_clean`` of each separate cluster of a patch (the repairs are scattered).

    Clusters share no edge, so this is the cleaning of the whole patch; GEOS's working memory
    (about 300 bytes per vertex) is then held for one cluster per thread, not for all of them
    (measured at 16x: +124 MB for a 714-commune patch in one call).
    """
    out = np.empty(len(geoms), dtype=object)

    def clean(idx: np.ndarray) -> None:
        out[idx] = shapely.coverage_clean(geoms[idx])

    clusters = _clusters(geoms)
    if runtime.threads() < 2 or len(clusters) < 2:
        for idx in clusters:
            clean(idx)
    else:   # independent clusters on two threads (GEOS releases the GIL), each writing its own rows
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(clean, clusters))
    return out


def clean_zone(geoms: np.ndarray, codes: np.ndarray | None = None, checks: EdgeChecks | None = None,
               envelopes: np.ndarray | None = None, read: Callable[[np.ndarray], np.ndarray] | None = None,
               sizes: np.ndarray | None = None) -> np.ndarray:
    """Repair one zone's commune polygons into a valid coverage, touching only the broken places.

    Returns a new array; untouched communes are the same objects as in ``geoms``. Source gaps are
    not merged here: holes inside a territory are filled (and counted) by the dissolve. With the
    polygons' commune ``codes`` and ``checks`` (answers of earlier checks of the same boundary
    file), only the communes whose neighbourhood is new are checked (see :mod:`.edge_checks`).
    ``geoms`` may hold None for polygons not decoded yet, with ``envelopes`` (:func:`_envelopes`):
    ``read(idx)`` decodes those the check or the repair looks at (they are put in ``geoms``), and
    no other; with each polygon's WKB ``sizes`` too, the check decodes a large zone in batches
    (:func:`~.edge_checks.known_invalid`) and keeps none of them.
    """
    geoms = np.asarray(geoms, dtype=object)
    envelopes = geoms if envelopes is None else envelopes
    tree = shapely.STRtree(envelopes)

    def take(idx: np.ndarray) -> np.ndarray:
        return _take(geoms, idx, read)

    def peek(idx: np.ndarray) -> np.ndarray:   # decoded for the check only, not kept in geoms
        return _decoded(geoms, idx, read)[0]

    bad = np.flatnonzero(known_invalid(envelopes, tree, codes, checks, _invalid_split, take,
                                       peek=None if read is None else peek, weights=sizes))
    if not len(bad):
        return geoms.copy()
    patch = bad
    for _ in range(MAX_GROW):
        near = np.unique(tree.query(envelopes[patch])[1])        # bbox neighbours of the patch
        work = np.union1d(patch, near)
        cleaned = _clean_clusters(take(work))
        around = np.union1d(work, tree.query(cleaned)[1])
        take(around)
        trial = geoms.copy()
        trial[work] = cleaned
        still = around[_invalid(trial[around])]
        if not len(still):
            return trial
        patch = np.union1d(work, still)
    return shapely.coverage_clean(take(np.arange(len(geoms))))


def _fill_gaps(territory: shapely.Geometry, zone: ZoneCoverage, inside: set[str],
               stats: DissolveStats) -> shapely.Geometry:
    """Fill the parts of holes that no other commune covers."""
    fills = []
    for part in shapely.get_parts(territory):
        for ring in part.interiors:
            hole = shapely.Polygon(ring)
            codes, geoms, _ = zone.near(hole)
            outside = geoms[[c not in inside for c in codes]] if len(codes) else geoms
            cover = shapely.union_all(outside) if len(outside) else shapely.Polygon()
            uncovered = hole.difference(cover)
            if not uncovered.is_empty and uncovered.area > 0:
                fills.append(uncovered)
                # each separate uncovered piece is one gap (a hole can hold several)
                for area in shapely.area(metric(shapely.get_parts(uncovered), zone.crs)):
                    if area > GAP_MIN_M2:
                        stats.gaps_filled += 1
                        stats.gaps_filled_m2 += float(area)
                    elif area > 0:
                        stats.noise_filled += 1
    if not fills:
        return territory
    return shapely.union_all([territory, *fills])


def fill_gaps_between(coverage: CleanCoverage, shapes: list[TerritoryShape], member_codes: set[str],
                      stats: DissolveStats) -> None:
    """Give each source gap enclosed by several territories to the one sharing its longest border.

    A gap inside one territory is already filled (:func:`union_territories`); here are the gaps
    whose border touches two or more territories (and no commune outside them), which a plain
    dissolve leaves as slits between territories. ``shapes`` are updated in place; only the
    communes outside ``member_codes`` are looked at.
    """
    for crs in sorted({s.crs for s in shapes}):
        _fill_zone_gaps_between(coverage.zones[crs], [s for s in shapes if s.crs == crs], member_codes, stats)


def _fill_zone_gaps_between(zone: ZoneCoverage, shapes: list[TerritoryShape], member_codes: set[str],
                            stats: DissolveStats) -> None:
    geoms = [s.geometry for s in shapes]
    if len(geoms) < 2:
        return
    try:
        union = shapely.coverage_union_all(geoms)
    except shapely.errors.GEOSException:
        union = shapely.union_all(geoms)
    tree = shapely.STRtree(geoms)
    fills: dict[int, list] = {}
    union_holes = holes(union)
    zone.prefetch(union_holes)
    for hole in union_holes:
        codes, near, areas = zone.near(hole)
        out = np.array([c not in member_codes for c in codes], dtype=bool)
        outside = near[out]
        # Most holes of the territories' union are exactly tiled by communes outside them
        # (real enclaves): their areas add up, so the costly difference is skipped.
        if len(outside) and hole.area - float(areas[out].sum()) <= max(1e-11, 1e-9 * hole.area):
            continue
        uncovered = hole.difference(shapely.union_all(outside)) if len(outside) else hole
        for piece in shapely.get_parts(uncovered):
            if piece.is_empty or piece.area <= 0:
                continue
            if len(outside) and shapely.length(shapely.intersection(piece.boundary, outside)).sum() > 0:
                continue   # it borders a commune outside the territories: not a slit between them
            area = float(shapely.area(metric(piece, zone.crs)))
            if area > BETWEEN_GAP_MAX_M2:   # not a slit: a missing commune, say; left visible
                stats.gaps_between_left += 1
                continue
            near = tree.query(piece, predicate="intersects")
            if not len(near):
                continue
            shared = shapely.length(shapely.intersection(piece.boundary, [geoms[k] for k in near]))
            fills.setdefault(int(near[int(np.argmax(shared))]), []).append(piece)
            if area > GAP_MIN_M2:
                stats.gaps_between_filled += 1
                stats.gaps_between_m2 += area
            else:
                stats.noise_filled += 1
    for k, pieces in fills.items():
        shape = shapes[k]
        shape.geometry = _as_multipolygon(shapely.union_all([shape.geometry, *pieces]))
        shape.area_km2 = float(shapely.area(metric(shape.geometry, zone.crs))) / 1e6


def _union_parts(parts: pd.Series) -> shapely.MultiPolygon:
    return _as_multipolygon(shapely.union_all(parts.to_numpy()))


def _as_multipolygon(geom: shapely.Geometry) -> shapely.MultiPolygon:
    parts = [p for p in shapely.get_parts(geom) if isinstance(p, shapely.Polygon) and not p.is_empty]
    return shapely.MultiPolygon(parts)


def _envelopes(geoms: np.ndarray, bounds: np.ndarray, boxes: np.ndarray | None = None) -> np.ndarray:
    """The polygons, or their bounding box where not decoded (None): a tree of these answers bbox
    queries exactly as a tree of the polygons (same envelopes, same order). ``boxes``: the
    boxes of ``bounds`` if made already (used instead of making them again)."""
    lazy = _not_decoded(geoms)
    if not lazy.any():
        return geoms
    out = geoms.copy()
    out[lazy] = boxes[lazy] if boxes is not None else shapely.box(*bounds[lazy].T)
    return out


def _take(geoms: np.ndarray, idx: np.ndarray, read: Callable[[np.ndarray], np.ndarray] | None) -> np.ndarray:
    """``geoms[idx]``, the polygons not decoded yet (None) read with ``read(positions)`` and put
    in ``geoms`` too. The array returned is the caller's own: a polygon dropped from ``geoms``
    meanwhile (another thread's :meth:`ZoneCoverage.drop`) stays in it."""
    out, lazy = _decoded(geoms, idx, read)
    if len(lazy):
        geoms[idx[lazy]] = out[lazy]
    return out


def _decoded(geoms: np.ndarray, idx: np.ndarray, read: Callable[[np.ndarray], np.ndarray] | None
             ) -> tuple[np.ndarray, np.ndarray]:
    """(``geoms[idx]`` with the polygons not decoded yet read with ``read(positions)``, the
    positions in it of those read); ``geoms`` is left as it was."""
    out = geoms[idx]
    lazy = np.flatnonzero(_not_decoded(out))
    if len(lazy):
        assert read is not None, "polygons not decoded come with a way to read them"
        out[lazy] = read(idx[lazy])
    return out, lazy


def _not_decoded(geoms: np.ndarray) -> np.ndarray:
    return np.fromiter((g is None for g in geoms), dtype=bool, count=len(geoms))


@dataclass
class ZoneCoverage:
    """The cleaned communes of one zone (EPSG:4326); ``crs`` is the zone's metric CRS.

    A commune the repair left as it was may be held undecoded (None in ``geoms``): :meth:`take`
    and :meth:`near` read it again through ``read`` (its ``rows``) when a step or a query needs
    it. Outside the territories, the zone holds the repaired polygons and those read around
    holes; with ``lazy_members``, the members' too are decoded for their union only (:meth:`drop`).
    """

    crs: int
    codes: np.ndarray
    geoms: np.ndarray                             # None where not decoded (see ``read``)
    bounds: np.ndarray                            # (n, 4) bounds of each commune's (cleaned) polygon
    index: dict[str, int]
    repaired: int = 0                             # communes whose polygon the cleaning changed
    others: BoundarySet | None = None             # the communes not loaded (their source polygons)
    rows: np.ndarray | None = None                # each commune's position for ``read``
    read: Callable[[np.ndarray], np.ndarray] | None = None   # positions -> polygons, for those not decoded
    _areas: np.ndarray | None = field(default=None, repr=False)
    changed: np.ndarray | None = None             # where the repair changed the polygon (never dropped)
    lazy_members: bool = False                    # members too are decoded only while used (see :meth:`drop`)
    envelopes: np.ndarray | None = field(default=None, repr=False)   # what the tree holds (:func:`_envelopes`)
    tree: shapely.STRtree = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.envelopes is None:
            self.envelopes = _envelopes(self.geoms, self.bounds)
        self.tree = shapely.STRtree(self.envelopes)

    def take(self, idx: np.ndarray) -> np.ndarray:
        """The polygons at ``idx``, decoding (and keeping) those not decoded yet."""
        read, rows = self.read, self.rows
        return _take(self.geoms, idx, None if read is None or rows is None else (lambda at: read(rows[at])))

    def positions(self, codes: list[str]) -> np.ndarray:
        return np.array([self.index[c] for c in codes], dtype=np.intp)

    def drop(self, idx: np.ndarray) -> None:
        """With ``lazy_members``, forget the polygons at ``idx`` the repair did not change (they
        are read again if a query needs them)."""
        if self.lazy_members and self.changed is not None:
            idx = idx[~self.changed[idx]]
            self.geoms[idx] = None

    def near(self, geom) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Codes, polygons and areas (square degrees) of the communes intersecting ``geom``.

        The zone's cleaned communes, plus the communes of the boundary file that were not loaded
        (far from every member: their source polygons, decoded for this query only).
        """
        cand = self.tree.query(geom)                  # bbox candidates, in the tree's order
        geoms = self.take(cand)
        hit = shapely.intersects(geoms, geom)
        idx = cand[hit]
        codes, geoms, areas = self.codes[idx], geoms[hit], self._areas_at(idx)
        if self.others is not None:
            pos, extra = self.others.near(geom, loaded=False, released=False)
            if len(pos):
                theirs = np.fromiter((c not in self.index for c in self.others.codes[pos].tolist()),
                                     dtype=bool, count=len(pos))   # the zone's own are above
                pos, extra = pos[theirs], extra[theirs]
                codes = np.concatenate([codes, self.others.codes[pos]])
                geoms = np.concatenate([geoms, extra])
                areas = np.concatenate([areas, shapely.area(extra)])
        return codes, geoms, areas

    def prefetch(self, geoms) -> None:
        """Read at once the communes not loaded that :meth:`near` will find around these geometries."""
        if self.others is not None:
            self.others.prefetch(geoms)

    def without(self, codes: set[str]) -> ZoneCoverage:
        """The same zone without these communes (their polygons can then be freed)."""
        keep = np.array([c not in codes for c in self.codes], dtype=bool)
        areas = None if self._areas is None else self._areas[keep]
        zcodes = self.codes[keep]
        return ZoneCoverage(self.crs, zcodes, self.geoms[keep], self.bounds[keep],
                            {c: i for i, c in enumerate(zcodes)}, self.repaired, self.others,
                            None if self.rows is None else self.rows[keep], self.read, areas,
                            None if self.changed is None else self.changed[keep], self.lazy_members,
                            None if self.envelopes is None else self.envelopes[keep])

    def _areas_at(self, idx: np.ndarray) -> np.ndarray:
        """Areas of the cleaned communes at ``idx`` (decoded) in square degrees (only compared
        with each other), each computed once."""
        if self._areas is None:
            self._areas = np.full(len(self.codes), np.nan)
        areas = self._areas[idx]
        todo = np.isnan(areas)
        if todo.any():
            areas[todo] = shapely.area(self.geoms[idx[todo]])
            self._areas[idx[todo]] = areas[todo]
        return areas


@dataclass
class CleanCoverage:
    zones: dict[int, ZoneCoverage]
    zone_of: dict[str, int]          # commune code -> EPSG of its zone

    @property
    def communes(self) -> int:
        return sum(len(z.codes) for z in self.zones.values())

    def without(self, codes: set[str]) -> CleanCoverage:
        """The same coverage without these communes (see :meth:`ZoneCoverage.without`)."""
        return CleanCoverage({crs: z.without(codes) for crs, z in self.zones.items()}, self.zone_of)


def clean_coverage(communes: gpd.GeoDataFrame, codes: set[str] | None = None, others=None,
                   checks: EdgeChecks | None = None, read: Callable[[np.ndarray], np.ndarray] | None = None,
                   bounds: np.ndarray | None = None, boxes: np.ndarray | None = None,
                   lazy_members: bool = False, sizes: np.ndarray | None = None) -> CleanCoverage:
    """Repair each zone's coverage once (see :func:`clean_zone`).

    ``communes``: code_insee, departement, geometry (EPSG:4326). With ``codes``, zones without any of
    these communes are skipped. ``others``: a :class:`~pipeline.sources.boundaries.BoundarySet` whose
    communes not in ``communes`` are looked up (uncleaned) around holes; ``communes`` must then
    hold every member commune and every commune whose bounds meet a member's. ``checks``: the
    answers of earlier coverage checks of the same boundary file (see :func:`clean_zone`).
    ``read``: the polygons of rows of ``communes``, decoded again. With it, a geometry may be None
    (not decoded yet; ``bounds`` then gives every row's bounds, ``boxes`` their bounding boxes
    if made already), and with ``codes``, the communes
    outside ``codes`` that the repair leaves as they were are dropped once it is done: they are
    read again only where a query needs them (:meth:`ZoneCoverage.near`). ``lazy_members``: the
    members too (reading them again costs little), decoded only while a step uses them.
    ``sizes``: with ``read``, the bytes of each row's WKB (see :func:`clean_zone`).
    """
    if communes.crs is not None and communes.crs.to_epsg() != 4326:
        communes = communes.to_crs(WGS84)
    all_codes = communes["code_insee"].to_numpy()
    departements, at = np.unique(communes["departement"].to_numpy(dtype=str), return_inverse=True)
    crs_of = np.array([zone_crs(d) for d in departements], dtype=int)[at]
    geoms = np.asarray(communes.geometry.values, dtype=object)
    zones = {}
    for crs in np.unique(crs_of):
        sel = np.flatnonzero(crs_of == crs)
        zcodes = all_codes[sel]
        if codes is not None and not any(c in codes for c in zcodes):
            continue
        source = geoms[sel]         # a copy, which the repair fills with the polygons it decodes
        zone_boxes = None if boxes is None else boxes[sel]
        envelopes = None if bounds is None else _envelopes(source, bounds[sel], zone_boxes)
        zone_read = None if read is None else (lambda at, sel=sel: read(sel[at]))
        cleaned = clean_zone(source, zcodes, checks, envelopes, zone_read, None if sizes is None else sizes[sel])
        changed = np.fromiter((a is not b for a, b in zip(cleaned, source)), dtype=bool, count=len(sel))
        if bounds is None:
            zone_bounds = shapely.bounds(cleaned)
        else:
            zone_bounds = bounds[sel].copy()
            zone_bounds[changed] = shapely.bounds(cleaned[changed])
        if read is not None and codes is not None:
            drop = ~changed if lazy_members else \
                np.fromiter((c not in codes for c in zcodes.tolist()), dtype=bool, count=len(sel)) & ~changed
            cleaned[drop] = None
        zones[int(crs)] = ZoneCoverage(int(crs), zcodes, cleaned, zone_bounds, {c: i for i, c in enumerate(zcodes)},
                                       int(changed.sum()), others, sel, read, changed=changed,
                                       lazy_members=lazy_members and read is not None,
                                       envelopes=_envelopes(cleaned, zone_bounds, zone_boxes))
    return CleanCoverage(zones, dict(zip(all_codes, crs_of.tolist())))


@dataclass
class TerritoryShape:
    """One territory's dissolved geometry (EPSG:4326), its areas and its own dissolve figures."""

    id_ti: str
    crs: int                         # EPSG of its zone's metric CRS
    area_km2: float
    communes_area_km2: float         # sum of its communes' cleaned areas (checked against area_km2)
    geometry: shapely.Geometry
    stats: DissolveStats


def _union(zone: ZoneCoverage, codes: list[str]) -> tuple[shapely.Geometry, float]:
    """The coverage union of these communes and the sum of their areas (m2); their polygons are
    decoded for it only, with ``lazy_members``."""
    at = zone.positions(codes)
    geoms = zone.take(at)
    union = shapely.coverage_union_all(geoms)
    communes_m2 = float(shapely.area(metric(geoms, zone.crs)).sum())
    zone.drop(at)
    return union, communes_m2


def _territory(zone: ZoneCoverage, tid: str, union: shapely.Geometry, communes_m2: float,
               codes: list[str]) -> TerritoryShape:
    """One territory from the coverage union of its communes (``codes``): holes no commune covers
    filled, parts, areas and figures."""
    stats = DissolveStats()
    union = _fill_gaps(union, zone, set(codes), stats)
    if not union.is_valid:
        union = shapely.make_valid(union)
    union = _as_multipolygon(union)
    part_areas = shapely.area(shapely.get_parts(metric(union, zone.crs)))
    noise = part_areas < GAP_MIN_M2     # degenerate slivers a local repair can leave (< 1 m2)
    if noise.any():
        stats.noise_filled += int(noise.sum())
        union = shapely.MultiPolygon(list(shapely.get_parts(union)[~noise]))
        part_areas = part_areas[~noise]
    stats.parts = len(part_areas)
    stats.small_parts = int((part_areas < SMALL_PART_M2).sum())
    stats.holes_kept = int(sum(len(p.interiors) for p in shapely.get_parts(union)))
    return TerritoryShape(tid, zone.crs, float(part_areas.sum()) / 1e6, communes_m2 / 1e6, union, stats)


def union_territories(coverage: CleanCoverage, members: pd.DataFrame) -> list[TerritoryShape]:
    """Each territory as the coverage union of its member communes, holes no commune covers filled.

    ``members``: id_ti, insee_com (boundary codes). One shape per (zone, territory), on
    :func:`pipeline.runtime.threads` threads. The unions come first: the communes around all
    their holes are then read at once (:meth:`ZoneCoverage.prefetch`), not one hole at a time.
    """
    crs_of = pd.Series([coverage.zone_of.get(c) for c in members["insee_com"].tolist()], index=members.index,
                       dtype=object)
    jobs = [(coverage.zones[int(str(crs))], str(tid), grp["insee_com"].tolist())
            for (crs, tid), grp in members.assign(crs=crs_of).groupby(["crs", "id_ti"], sort=True)]
    # A pyproj transformer is made again in each thread that uses it (about 35 ms per CRS and
    # thread): the territories of the zones other than the largest one run as one task, on one
    # thread, so that each of those CRS is made once and not in every thread.
    crs = [zone.crs for zone, _, _ in jobs]
    largest = max(set(crs), key=crs.count, default=None)
    small = [i for i, c in enumerate(crs) if c != largest]
    tasks = ([small] if small else []) + [[i] for i, c in enumerate(crs) if c == largest]
    unions: list[tuple[shapely.Geometry, float] | None] = [None] * len(jobs)
    shapes: list[TerritoryShape | None] = [None] * len(jobs)

    def unite(task: list[int]) -> None:
        for i in task:
            zone, _, codes = jobs[i]
            unions[i] = _union(zone, codes)

    def finish(task: list[int]) -> None:
        for i in task:
            zone, tid, codes = jobs[i]
            union, communes_m2 = cast(tuple, unions[i])
            shapes[i] = _territory(zone, tid, union, communes_m2, codes)
            unions[i] = None            # the union's memory goes as its territory is done

    with ThreadPoolExecutor(runtime.threads()) as pool:
        list(pool.map(unite, tasks))
        by_source: dict[int, tuple[ZoneCoverage, list]] = {}
        for (zone, _, _), done in zip(jobs, unions):
            by_source.setdefault(id(zone.others), (zone, []))[1].extend(holes(cast(tuple, done)[0]))
        for zone, found in by_source.values():
            zone.prefetch(found)
        list(pool.map(finish, tasks))
    return cast(list[TerritoryShape], shapes)


def coverage_stats(coverage: CleanCoverage) -> DissolveStats:
    """Dissolve figures started with the repaired coverage's size (before any polygon is dropped)."""
    return DissolveStats(communes_cleaned=coverage.communes,
                         zones={f"EPSG:{c}": len(z.codes) for c, z in coverage.zones.items()})


def territories_frame(shapes: list[TerritoryShape], stats: DissolveStats) -> tuple[gpd.GeoDataFrame, DissolveStats]:
    """The shapes as a frame id_ti, area_km2, communes_area_km2, geometry (by id_ti); ``stats`` completed."""
    for s in shapes:
        for name in ("gaps_filled", "gaps_filled_m2", "noise_filled", "small_parts", "parts", "holes_kept"):
            setattr(stats, name, getattr(stats, name) + getattr(s.stats, name))
    frame = pd.DataFrame({"id_ti": [s.id_ti for s in shapes], "area_km2": [s.area_km2 for s in shapes],
                          "communes_area_km2": [s.communes_area_km2 for s in shapes],
                          "geometry": [s.geometry for s in shapes]})
    if frame["id_ti"].duplicated().any():
        # A territory spanning two zones (not the case in the official lists) is merged here.
        frame = (frame.groupby("id_ti", sort=True)
                 .agg({"area_km2": "sum", "communes_area_km2": "sum", "geometry": _union_parts})
                 .reset_index())
    frame = frame.sort_values("id_ti").reset_index(drop=True)
    out = gpd.GeoDataFrame(frame[["id_ti", "area_km2", "communes_area_km2"]],
                           geometry=frame["geometry"].to_numpy(), crs=WGS84)
    return out, stats


def holes(geom: shapely.Geometry) -> list[shapely.Polygon]:
    """The holes of a (Multi)Polygon as polygons."""
    return [shapely.Polygon(r) for p in shapely.get_parts(geom) for r in p.interiors]


def holes_of(geoms) -> list[shapely.Polygon]:
    """The holes of several (Multi)Polygons."""
    return [h for g in geoms for h in holes(g)]
