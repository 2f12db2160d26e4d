"""Light variants for web maps: the territories simplified as one coverage.

Each zone (metropole, each overseas departement) is projected to its metric CRS and simplified
with ``shapely.coverage_simplify`` (tolerance in meters), so borders shared by two territories
are simplified once and stay shared: no gap, no overlap appears between neighbours. Coordinates
are then rounded to fewer decimals than the full file (5 for 100 m, 4 for 1 km), which is far
below the tolerance.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely

from ..errors import PublishError
from .zones import metric_epsg, zone_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LightVariant:
    """One simplified variant: file suffix, tolerance (m) and coordinate decimals."""

    suffix: str
    tolerance_m: float
    decimals: int


VARIANTS = (LightVariant("100m", 100.0, 5), LightVariant("1km", 1000.0, 4))


def zones(frame: gpd.GeoDataFrame) -> np.ndarray:
    """The zone of each row (``metropole``, ``971``...), read from its ``departements``."""
    return np.array([zone_of(deps, i) for deps, i in zip(frame["departements"], frame["id_ti"])], dtype=object)


def simplify_coverage(frame: gpd.GeoDataFrame, tolerance_m: float) -> np.ndarray:
    """EPSG:4326 geometries of ``frame`` simplified as one coverage per zone at ``tolerance_m``."""
    out = np.empty(len(frame), dtype=object)
    zone = zones(frame)
    for z in dict.fromkeys(zone):
        mask = zone == z
        part = frame.geometry[mask].to_crs(metric_epsg(z))
        simplified = shapely.coverage_simplify(part.values.to_numpy(), tolerance_m, simplify_boundary=True)
        back = gpd.GeoSeries(simplified, crs=part.crs, index=part.index).to_crs(4326)
        out[mask] = back.values.to_numpy()
    invalid = ~shapely.is_valid(out)
    if invalid.any():  # only when the input was not a clean coverage
        bad = frame["id_ti"][invalid].tolist()
        log.warning("simplifying at %g m made %s invalid; repaired with make_valid", tolerance_m, ", ".join(bad))
        out[invalid] = [_polygonal(shapely.make_valid(g)) for g in out[invalid]]
    return out


def _polygonal(geom):
    polys = [p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(polys) if polys else geom


def coverage_valid_by_zone(frame: gpd.GeoDataFrame, geoms) -> dict[str, bool]:
    """Zone -> whether ``geoms`` (EPSG:4326, aligned with ``frame``) form a valid coverage there."""
    geoms = np.asarray(geoms, dtype=object)
    zone = zones(frame)
    return {z: bool(shapely.coverage_is_valid(geoms[zone == z])) for z in dict.fromkeys(zone)}


def check_light(frame: gpd.GeoDataFrame, light_geoms, tolerance_m: float,
                source_valid: dict[str, bool] | None = None) -> dict:
    """Raise PublishError if a zone that was a valid coverage is not one any more; return facts.

    ``source_valid`` is :func:`coverage_valid_by_zone` of the source geometries, when known already.
    """
    before = coverage_valid_by_zone(frame, frame.geometry.values) if source_valid is None else source_valid
    after = coverage_valid_by_zone(frame, light_geoms)
    broken = [z for z in before if before[z] and not after[z]]
    if broken:
        raise PublishError(
            f"light variant {tolerance_m:g} m: the territories of {', '.join(broken)} no longer form a "
            "valid coverage (overlaps or mismatched shared borders)"
        )
    return {"coverage_valid": all(after.values()), "source_coverage_valid": all(before.values())}
