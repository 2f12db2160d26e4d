"""Light variants for web maps: the territories simplified as one coverage, sized by a target.

Each zone (metropole, each overseas departement) is projected to its metric CRS and simplified
with ``shapely.coverage_simplify`` (tolerance in meters), so borders shared by two territories
are simplified once and stay shared: no gap, no overlap appears between neighbours, and no
territory disappears (coverage simplification keeps every polygon).

A variant is defined by a size target, not by a tolerance: the source polygons are already
generalised (at 50 m), so a fixed small tolerance changes almost nothing. :func:`write_to_target`
picks the smallest tolerance of :data:`TOLERANCES_M` whose file meets the target (the size
decreases with the tolerance), simplifying as few tolerances as it can. Light files carry only :data:`MAP_COLUMNS`, what a map
shows; the full attributes are in the full files.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

from ..errors import PublishError
from .layout import LIGHT_SUFFIXES
from .zones import metric_epsg, zone_of

log = logging.getLogger(__name__)

# what a web map shows (also the attributes of the vector tiles)
MAP_COLUMNS = ("id_ti", "lib_ti", "phase", "is_new", "n_communes", "n_groupements", "population", "area_km2")
# candidate tolerances (m), increasing
TOLERANCES_M = (100.0, 150.0, 200.0, 300.0, 400.0, 500.0, 700.0, 1000.0, 1250.0, 1500.0, 2000.0, 3000.0,
                5000.0, 10000.0)


@dataclass(frozen=True)
class LightVariant:
    """One light GeoJSON: file suffix, size target (bytes) and its use."""

    suffix: str
    max_bytes: int
    use: str


_TARGETS = {"overview": (300_000, "a national overview map"), "regional": (1_000_000, "regional maps")}
VARIANTS = tuple(LightVariant(suffix, *_TARGETS[suffix]) for suffix in LIGHT_SUFFIXES)


def decimals_for(tolerance_m: float) -> int:
    """Coordinate decimals whose step (1 decimal of a degree ~ 11 km) is about a tenth of the tolerance."""
    return int(min(6, max(3, math.ceil(math.log10(111_000 * 10 / max(tolerance_m, 1.0))))))


def zones(frame: gpd.GeoDataFrame) -> np.ndarray:
    """The zone of each row (``metropole``, ``971``...), read from its ``departements``."""
    return np.array([zone_of(deps, i) for deps, i in zip(frame["departements"], frame["id_ti"])], dtype=object)


def simplify_coverage(frame: gpd.GeoDataFrame, tolerance_m: float) -> np.ndarray:
    """EPSG:4326 geometries of ``frame`` simplified as one coverage per zone at ``tolerance_m``."""
    return Simplifier(frame)(tolerance_m)


class Simplifier:
    """:func:`simplify_coverage` of one frame, each tolerance computed once (0: the geometries as they are).

    Each zone is projected to its metric CRS once, whatever the number of tolerances asked. Threads
    may share it: a tolerance asked on two threads at once is computed by one, the other waits.
    ``planned``: tolerances that will be asked anyway (the tiles'), counted as computed by ``in``,
    so that the light files' search (:func:`_next_probe`) takes the same path whichever thread
    computes them first.
    """

    def __init__(self, frame: gpd.GeoDataFrame, planned: tuple[float, ...] = ()):
        self.frame = frame
        self.planned = frozenset(planned)
        self._done: dict[float, np.ndarray] = {}
        self._zones: list[tuple[str, np.ndarray, gpd.GeoSeries]] | None = None   # (zone, rows, projected)
        self._guard = threading.Lock()
        self._locks: dict[float, threading.Lock] = {}

    def __contains__(self, tolerance_m: float) -> bool:
        """Whether ``tolerance_m`` is computed already or planned (asking for it costs nothing more)."""
        return not tolerance_m or tolerance_m in self._done or tolerance_m in self.planned

    def __call__(self, tolerance_m: float) -> np.ndarray:
        if not tolerance_m:
            return np.asarray(self.frame.geometry.values, dtype=object)
        with self._guard:
            lock = self._locks.setdefault(tolerance_m, threading.Lock())
        with lock:
            if tolerance_m not in self._done:
                self._done[tolerance_m] = self._simplify(tolerance_m)
        return self._done[tolerance_m]

    def _projected(self) -> list[tuple[str, np.ndarray, gpd.GeoSeries]]:
        with self._guard:
            if self._zones is None:
                zone = zones(self.frame)
                self._zones = [(z, mask, self.frame.geometry[mask].to_crs(metric_epsg(z)))
                               for z in dict.fromkeys(zone) for mask in [zone == z]]
            return self._zones

    def in_metric_crs(self) -> dict[str, np.ndarray]:
        """Zone -> the frame's geometries of that zone in its metric CRS, in row order (the
        projection the simplifications start from; the preview draws it)."""
        return {z: part.values.to_numpy() for z, _, part in self._projected()}

    def _simplify(self, tolerance_m: float) -> np.ndarray:
        out = np.empty(len(self.frame), dtype=object)
        for _, mask, part in self._projected():
            simplified = shapely.coverage_simplify(part.values.to_numpy(), tolerance_m, simplify_boundary=True)
            back = gpd.GeoSeries(simplified, crs=part.crs, index=part.index).to_crs(4326)
            out[mask] = back.values.to_numpy()
        invalid = ~shapely.is_valid(out)
        if invalid.any():  # only when the input was not a clean coverage
            bad = self.frame["id_ti"][invalid].tolist()
            log.warning("simplifying at %g m made %s invalid; repaired with make_valid", tolerance_m, ", ".join(bad))
            out[invalid] = [_polygonal(shapely.make_valid(g)) for g in out[invalid]]
        return out


def _polygonal(geom):
    polys = [p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(polys) if polys else geom


def map_frame(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """``frame`` with only :data:`MAP_COLUMNS` (those it has) and its geometry."""
    return frame[[c for c in MAP_COLUMNS if c in frame.columns] + [frame.geometry.name]]


def write_to_target(frame: gpd.GeoDataFrame, path: Path, variant: LightVariant, simplify: Simplifier,
                    write, sizes: dict[float, int] | None = None, probes: dict[float, Path] | None = None) -> dict:
    """Write the smallest-tolerance variant that meets ``variant.max_bytes``; return its facts.

    ``write(path, decimals, geoms)`` writes one candidate file. ``sizes`` (tolerance -> bytes of
    the candidate file) is filled as candidates are written: variants that write the same
    candidates share it, so that a size is measured once. The search keeps the bisection's
    answer (the size decreases with the tolerance) with fewer candidates: see :func:`_next_probe`.
    ``probes`` (tolerance -> candidate file not chosen yet) is shared the same way: a variant that
    chooses a candidate another one wrote renames it into place instead of writing it again; the
    caller then removes what is left with :func:`remove_probes`. Without it, this call removes its own.
    Raises PublishError when even the largest tolerance gives a file over the target.
    """
    path = Path(path)
    sizes = {} if sizes is None else sizes
    own = probes is None
    probes = {} if probes is None else probes    # candidates written, kept until one is chosen
    try:
        while True:
            lo, hi, best = _bracket(sizes, variant.max_bytes)
            if lo > hi:
                break
            tol = TOLERANCES_M[_next_probe(lo, hi, sizes, variant.max_bytes, simplify)]
            probe = probes[tol] = path.with_name(f".{path.name}.{tol:g}")
            write(probe, decimals_for(tol), simplify(tol))
            sizes[tol] = probe.stat().st_size
        if best is None:
            raise PublishError(f"{path}: light variant {variant.suffix!r} is over {variant.max_bytes} bytes even "
                               f"simplified at {TOLERANCES_M[-1]:g} m")
        tol = TOLERANCES_M[best]
        if tol in probes:
            probes.pop(tol).replace(path)
        else:   # measured by another variant, whose own file it became
            write(path, decimals_for(tol), simplify(tol))
    finally:
        if own:
            remove_probes(probes)
    return {"simplification_m": tol, "coordinate_decimals": decimals_for(tol), "max_bytes": variant.max_bytes}


def remove_probes(probes: dict[float, Path]) -> None:
    """Delete the candidate files :func:`write_to_target` wrote and no variant chose."""
    for probe in probes.values():
        probe.unlink(missing_ok=True)
    probes.clear()


def _bracket(sizes: dict[float, int], max_bytes: int) -> tuple[int, int, int | None]:
    """(lo, hi, best): indices of :data:`TOLERANCES_M` still to decide, and the smallest known to
    meet ``max_bytes`` (None: none yet), from the sizes measured so far."""
    fits = [i for i, t in enumerate(TOLERANCES_M) if t in sizes and sizes[t] <= max_bytes]
    over = [i for i, t in enumerate(TOLERANCES_M) if t in sizes and sizes[t] > max_bytes]
    best = min(fits) if fits else None
    return (max(over) + 1 if over else 0), (best - 1 if best is not None else len(TOLERANCES_M) - 1), best


def _next_probe(lo: int, hi: int, sizes: dict[float, int], max_bytes: int, simplify: Simplifier) -> int:
    """The index in [lo, hi] to try next.

    With two sizes known, the size is taken as a power of the tolerance through the two nearest the
    target (each side's when it has one) and the first tolerance at or above where it meets the
    target is tried: then usually its finer neighbour only (a coverage simplification costs about
    a second at 1x; writing a candidate much less). Before that, a tolerance already simplified
    (the tiles') nearest the middle, else the middle.
    """
    over = sorted((t, s) for t, s in sizes.items() if s > max_bytes)
    fits = sorted((t, s) for t, s in sizes.items() if s <= max_bytes)
    pair = ([over[-1], fits[0]] if over and fits else fits[:2] if len(fits) >= 2 else over[-2:])
    if len(pair) == 2:
        (t1, s1), (t2, s2) = pair
        if t1 != t2 and s1 != s2 and s1 > 0 and s2 > 0:
            slope = (math.log(s2) - math.log(s1)) / (math.log(t2) - math.log(t1))
            if slope < 0:
                wanted = math.log(t1) + (math.log(max_bytes) - math.log(s1)) / slope   # its log
                return next((i for i in range(lo, hi + 1) if math.log(TOLERANCES_M[i]) >= wanted), hi)
    mid = (lo + hi) // 2
    cached = [i for i in range(lo, hi + 1) if TOLERANCES_M[i] in simplify]
    return min(cached, key=lambda i: (abs(i - mid), i)) if cached else mid


def coverage_valid_by_zone(frame: gpd.GeoDataFrame, geoms) -> dict[str, bool]:
    """Zone -> whether ``geoms`` (EPSG:4326, aligned with ``frame``) form a valid coverage there."""
    geoms = np.asarray(geoms, dtype=object)
    zone = zones(frame)
    return {z: bool(shapely.coverage_is_valid(geoms[zone == z])) for z in dict.fromkeys(zone)}


def check_light(frame: gpd.GeoDataFrame, light_geoms, tolerance_m: float,
                source_valid: dict[str, bool] | None = None) -> dict:
    """Raise PublishError if a territory is empty or a zone that was a valid coverage is not one
    any more; return facts.

    ``source_valid`` is :func:`coverage_valid_by_zone` of the source geometries, when known already.
    """
    light_geoms = np.asarray(light_geoms, dtype=object)
    empty = frame["id_ti"][shapely.is_empty(light_geoms) | shapely.is_missing(light_geoms)].tolist()
    if empty:
        raise PublishError(f"light variant {tolerance_m:g} m: territories {', '.join(empty[:10])} disappeared")
    before = coverage_valid_by_zone(frame, frame.geometry.values) if source_valid is None else source_valid
    after = coverage_valid_by_zone(frame, light_geoms)
    broken = [z for z in before if before[z] and not after[z]]
    if broken:
        raise PublishError(
            f"light variant {tolerance_m:g} m: the territories of {', '.join(broken)} no longer form a "
            "valid coverage (overlaps or mismatched shared borders)"
        )
    return {"coverage_valid": all(after.values()), "source_coverage_valid": all(before.values()),
            "vertices": int(shapely.get_num_coordinates(light_geoms).sum())}
