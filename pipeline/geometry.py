"""Repair the commune coverage and dissolve it into one MultiPolygon per territory.

Work happens in a metric CRS per zone (Lambert-93 for the metropole, a local CRS for each overseas
departement): the coverage of each zone is cleaned once (``shapely.coverage_clean``: overlaps
removed, shared edges made identical), then each territory is a coverage union of its communes.
A hole left inside a territory that no other commune covers is a gap of the source coverage and
is filled; a hole covered by other communes is a real enclave and is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

WGS84 = "EPSG:4326"
METRO_CRS = 2154
OVERSEAS_CRS = {"971": 5490, "972": 5490, "973": 2972, "974": 2975, "976": 4471}
SMALL_PART_M2 = 10_000          # parts under 1 ha are reported
GAP_MIN_M2 = 1.0                # uncovered areas under 1 m2 inside a hole are numerical noise


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
    noise_filled: int = 0               # uncovered bits of holes under 1 m2 (numerical noise)
    small_parts: int = 0                # polygon parts under 1 ha in the result
    parts: int = 0

    def as_dict(self) -> dict:
        return {
            "communes_cleaned": self.communes_cleaned, "zones": self.zones,
            "holes_kept": self.holes_kept, "gaps_filled": self.gaps_filled,
            "gaps_filled_ha": round(self.gaps_filled_m2 / 1e4, 2), "noise_filled": self.noise_filled,
            "small_parts": self.small_parts,
            "parts": self.parts,
        }


def clean_zone(geoms: np.ndarray) -> np.ndarray:
    """Clean one zone's commune polygons (metric CRS) into a valid coverage."""
    return shapely.coverage_clean(geoms)


def _fill_gaps(territory: shapely.Geometry, zone: "ZoneCoverage", inside: set[str],
               stats: DissolveStats) -> shapely.Geometry:
    """Fill the parts of holes that no other commune covers."""
    fills = []
    for part in shapely.get_parts(territory):
        for ring in part.interiors:
            hole = shapely.Polygon(ring)
            idx = [i for i in zone.tree.query(hole, predicate="intersects") if zone.codes[i] not in inside]
            cover = shapely.union_all(zone.geoms[idx]) if idx else shapely.Polygon()
            uncovered = hole.difference(cover)
            if not uncovered.is_empty and uncovered.area > 0:
                fills.append(uncovered)
                if uncovered.area > GAP_MIN_M2:
                    stats.gaps_filled += 1
                    stats.gaps_filled_m2 += uncovered.area
                else:
                    stats.noise_filled += 1
    if not fills:
        return territory
    return shapely.union_all([territory, *fills])


def _as_multipolygon(geom: shapely.Geometry) -> shapely.MultiPolygon:
    parts = [p for p in shapely.get_parts(geom) if isinstance(p, shapely.Polygon) and not p.is_empty]
    return shapely.MultiPolygon(parts)


@dataclass
class ZoneCoverage:
    """The cleaned communes of one metric zone."""

    crs: int
    codes: np.ndarray
    geoms: np.ndarray
    tree: shapely.STRtree
    index: dict[str, int]


@dataclass
class CleanCoverage:
    zones: dict[int, ZoneCoverage]
    zone_of: dict[str, int]          # commune code -> EPSG of its zone

    @property
    def communes(self) -> int:
        return sum(len(z.codes) for z in self.zones.values())


def clean_coverage(communes: gpd.GeoDataFrame, codes: set[str] | None = None) -> CleanCoverage:
    """Project each zone to its metric CRS and clean it once.

    ``communes``: code_insee, departement, geometry (EPSG:4326). With ``codes``, zones without any of
    these communes are skipped.
    """
    frame = communes[["code_insee", "departement", "geometry"]].copy()
    frame["crs"] = frame["departement"].map(zone_crs)
    zones = {}
    for crs, zone in frame.groupby("crs", sort=True):
        if codes is not None and not zone["code_insee"].isin(codes).any():
            continue
        projected = zone.to_crs(crs)
        cleaned = clean_zone(projected.geometry.values)
        zcodes = projected["code_insee"].to_numpy()
        zones[int(crs)] = ZoneCoverage(int(crs), zcodes, cleaned, shapely.STRtree(cleaned),
                                       {c: i for i, c in enumerate(zcodes)})
    return CleanCoverage(zones, dict(zip(frame["code_insee"], frame["crs"].astype(int))))


def dissolve_clean(coverage: CleanCoverage, members: pd.DataFrame) -> tuple[gpd.GeoDataFrame, DissolveStats]:
    """Dissolve member communes of a cleaned coverage into territories (see :func:`dissolve`)."""
    stats = DissolveStats(communes_cleaned=coverage.communes,
                          zones={f"EPSG:{c}": len(z.codes) for c, z in coverage.zones.items()})
    members = members.assign(crs=members["insee_com"].map(coverage.zone_of))
    results = []
    for crs, zone_members in members.groupby("crs", sort=True):
        zone = coverage.zones[int(crs)]
        for tid, grp in zone_members.groupby("id_ti", sort=True):
            inside = set(grp["insee_com"])
            idx = [zone.index[c] for c in inside]
            union = shapely.coverage_union_all(zone.geoms[idx])
            union = _as_multipolygon(_fill_gaps(union, zone, inside, stats))
            results.append((tid, int(crs), union.area / 1e6, float(shapely.area(zone.geoms[idx]).sum()) / 1e6,
                            union))
    frame = pd.DataFrame(results, columns=["id_ti", "crs", "area_km2", "communes_area_km2", "geometry"])
    for geom in frame["geometry"]:
        for part in shapely.get_parts(geom):
            stats.parts += 1
            stats.holes_kept += len(part.interiors)
            stats.small_parts += int(part.area < SMALL_PART_M2)
    parts = [gpd.GeoSeries(grp["geometry"].to_numpy(), index=grp.index, crs=crs).to_crs(WGS84)
             for crs, grp in frame.groupby("crs")]
    frame["geometry"] = pd.concat(parts).reindex(frame.index) if parts else None
    # A territory spanning two zones (not the case in the official lists) is merged here.
    out = (gpd.GeoDataFrame(frame, geometry="geometry", crs=WGS84)
           .groupby("id_ti", sort=True)
           .agg({"area_km2": "sum", "communes_area_km2": "sum",
                 "geometry": lambda s: _as_multipolygon(shapely.union_all(s.to_numpy()))}))
    out = gpd.GeoDataFrame(out.reset_index(), geometry="geometry", crs=WGS84)
    out["geometry"] = out.geometry.make_valid().map(_as_multipolygon)
    return out, stats


def dissolve(communes: gpd.GeoDataFrame, members: pd.DataFrame) -> tuple[gpd.GeoDataFrame, DissolveStats]:
    """Dissolve member communes into territories.

    ``communes``: code_insee, departement, geometry (EPSG:4326), one row per boundary commune.
    ``members``: id_ti, insee_com (boundary codes). Returns a frame id_ti, area_km2,
    communes_area_km2, geometry (MultiPolygon, EPSG:4326), ordered by id_ti.
    """
    return dissolve_clean(clean_coverage(communes, set(members["insee_com"])), members)


def holes(geom: shapely.Geometry) -> list[shapely.Polygon]:
    """The holes of a (Multi)Polygon as polygons."""
    return [shapely.Polygon(r) for p in shapely.get_parts(geom) for r in p.interiors]
