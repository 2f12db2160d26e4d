"""GeoJSON (RFC 7946) writer and its read-back check.

Written feature by feature with ``orjson`` (coordinates serialised straight from numpy arrays)
for full control: lon/lat (CRS84), no ``crs`` member,
exterior rings counterclockwise and holes clockwise, coordinates snapped to a decimal grid with
``shapely.set_precision`` (which keeps every geometry valid) and printed with at most that many
decimals, list attributes as JSON arrays, dates as ISO strings, nulls as ``null``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import orjson
import pandas as pd
import shapely

from ..errors import PublishError
from .columns import to_multipolygons

DEFAULT_DECIMALS = 6


def rfc7946_geometries(geoms, decimals: int = DEFAULT_DECIMALS) -> np.ndarray:
    """Snap to a 10^-decimals grid keeping validity, orient rings RFC 7946 way, keep MultiPolygons."""
    grid = 10.0 ** -decimals
    snapped = shapely.set_precision(np.asarray(geoms, dtype=object), grid, mode="valid_output")
    if shapely.is_empty(snapped).any():
        raise PublishError(f"a territory vanished when its coordinates were rounded to {decimals} decimals")
    snapped = to_multipolygons(snapped)
    bad = shapely.get_type_id(snapped) != 6
    if bad.any():  # defensive: keep only the polygonal parts of any other result
        snapped[bad] = [_polygonal_part(g) for g in snapped[bad]]
    return shapely.orient_polygons(snapped, exterior_cw=False)


def _polygonal_part(geom) -> shapely.MultiPolygon:
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon")]
    polys = []
    for p in parts:
        polys.extend(shapely.get_parts(p) if p.geom_type == "MultiPolygon" else [p])
    return shapely.MultiPolygon(polys)


def _ring(ring, decimals: int) -> np.ndarray:
    return np.round(shapely.get_coordinates(ring), decimals)


def geometry_json(geom: shapely.MultiPolygon, decimals: int = DEFAULT_DECIMALS, as_lists: bool = True) -> dict:
    """A GeoJSON MultiPolygon dict with coordinates rounded to ``decimals`` (numpy rings if not as_lists)."""
    ring = (lambda r: _ring(r, decimals).tolist()) if as_lists else (lambda r: _ring(r, decimals))
    return {
        "type": "MultiPolygon",
        "coordinates": [[ring(p.exterior)] + [ring(r) for r in p.interiors] for p in geom.geoms],
    }


def json_value(value):
    """A JSON-ready Python value: lists of str, ISO dates, None for every kind of null."""
    if value is None:
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v) for v in value]
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (dt.datetime, pd.Timestamp)):
        return value.date().isoformat() if isinstance(value, pd.Timestamp) else value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return value


def _features(frame: gpd.GeoDataFrame, decimals: int, geoms, as_lists: bool):
    geoms = rfc7946_geometries(frame.geometry.values if geoms is None else geoms, decimals)
    columns = [c for c in frame.columns if c != frame.geometry.name]
    records = frame[columns].astype(object).to_dict("records")
    for rec, geom in zip(records, geoms):
        yield {
            "type": "Feature",
            "properties": {k: json_value(v) for k, v in rec.items()},
            "geometry": geometry_json(geom, decimals, as_lists),
        }


def feature_collection(frame: gpd.GeoDataFrame, decimals: int = DEFAULT_DECIMALS, geoms=None) -> dict:
    """The FeatureCollection dict of ``frame`` (``geoms`` overrides the geometry column)."""
    return {"type": "FeatureCollection", "features": list(_features(frame, decimals, geoms, True))}


def write_geojson(frame: gpd.GeoDataFrame, path: Path, decimals: int = DEFAULT_DECIMALS, geoms=None) -> Path:
    """Write ``frame`` as RFC 7946 GeoJSON (UTF-8, compact, one feature per line)."""
    with open(path, "wb") as fh:
        fh.write(b'{"type":"FeatureCollection","features":[\n')
        for i, feat in enumerate(_features(frame, decimals, geoms, False)):
            fh.write((b"," if i else b"") + orjson.dumps(feat, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
        fh.write(b"]}\n")
    return Path(path)


def max_decimals(coords: np.ndarray) -> int:
    """The largest number of decimals needed to print any of ``coords`` (shortest float repr)."""
    worst = 0
    for v in np.unique(coords.ravel()):
        text = repr(float(v))
        if "e" in text or "E" in text:
            mant, exp = text.lower().split("e")
            frac = mant.split(".")[1] if "." in mant else ""
            worst = max(worst, len(frac.rstrip("0")) - int(exp))
        elif "." in text:
            worst = max(worst, len(text.split(".")[1].rstrip("0")))
    return worst


def read_geometries(path: Path) -> np.ndarray:
    """The geometries of a GeoJSON file, in file order."""
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    return np.array([shapely.from_geojson(json.dumps(f["geometry"])) for f in doc.get("features", [])], dtype=object)


def verify_geojson(path: Path, expected: gpd.GeoDataFrame, decimals: int = DEFAULT_DECIMALS) -> dict:
    """Re-read the file; raise PublishError unless it is RFC 7946 and has the expected rows."""
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    problems = []
    if "crs" in doc:
        problems.append("has a 'crs' member")
    feats = doc.get("features", [])
    if len(feats) != len(expected):
        problems.append(f"{len(feats)} features instead of {len(expected)}")
    ids = [f["properties"].get("id_ti") for f in feats]
    if ids != list(expected["id_ti"]):
        problems.append("id_ti values or order differ from the source frame")
    geoms = np.array([shapely.from_geojson(json.dumps(f["geometry"])) for f in feats], dtype=object)
    if len(geoms):
        if not (shapely.get_type_id(geoms) == 6).all():
            problems.append("a geometry is not a MultiPolygon")
        invalid = ~shapely.is_valid(geoms)
        if invalid.any():
            problems.append(f"{int(invalid.sum())} invalid geometries, e.g. {shapely.is_valid_reason(geoms[invalid][0])}")
        if not shapely.equals_exact(geoms, shapely.orient_polygons(geoms), tolerance=0).all():
            problems.append("rings are not oriented (exterior counterclockwise, holes clockwise)")
        coords = shapely.get_coordinates(geoms)
        if (np.abs(coords[:, 0]) > 180).any() or (np.abs(coords[:, 1]) > 90).any():
            problems.append("coordinates outside [-180,180]x[-90,90]")
        if max_decimals(coords) > decimals:
            problems.append(f"coordinates with more than {decimals} decimals")
    if problems:
        raise PublishError(f"{path}: GeoJSON check failed: {'; '.join(problems)}")
    return {"rows": len(feats), "format": "GeoJSON RFC 7946", "media_type": "application/geo+json",
            "coordinate_decimals": decimals}
