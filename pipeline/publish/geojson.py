"""GeoJSON (RFC 7946) writer and its read-back check.

Written feature by feature with ``orjson`` (coordinates serialised straight from numpy arrays)
for full control: lon/lat (CRS84), no ``crs`` member,
exterior rings counterclockwise and holes clockwise, coordinates snapped to a decimal grid with
``shapely.set_precision`` (which keeps every geometry valid) and printed with at most that many
decimals, list attributes as JSON arrays, dates as ISO strings, nulls as ``null``.

The file is streamed: geometries are snapped and oriented in chunks of about
:data:`CHUNK_COORDS` coordinates, the next chunks on worker threads (shapely releases the GIL)
while the current one is written, so that memory holds a few chunks, never a second copy of
every geometry. The bytes are the same as for one vectorised call (each geometry is processed
on its own).
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import orjson
import pandas as pd
import shapely

from ..errors import PublishError
from .columns import to_multipolygons
from .provenance import KEY

DEFAULT_DECIMALS = 6
CHUNK_COORDS = 100_000  # coordinates per chunk of geometries snapped at once
WORKERS = min(4, os.cpu_count() or 1)  # threads snapping chunks ahead of the writer
# the layout of the written file: a header line (the type, then any foreign member such as the
# build's metadata, then the opening of "features"), one feature per line (",{...}" after the
# first), the footer line; the read-back check reads such a file one feature at a time
_HEADER_START = b'{"type":"FeatureCollection",'
_HEADER_END = b'"features":[\n'
_HEADER = _HEADER_START + _HEADER_END   # the header line without foreign members
_FOOTER = b"]}\n"


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
    polys: list[shapely.Polygon] = []
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


def chunk_bounds(geoms, chunk_coords: int = CHUNK_COORDS) -> list[tuple[int, int]]:
    """``(start, stop)`` row ranges holding about ``chunk_coords`` coordinates each (at least one row)."""
    counts = np.cumsum(shapely.get_num_coordinates(np.asarray(geoms, dtype=object)))
    bounds, start = [], 0
    while start < len(counts):
        done = counts[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(counts, done + chunk_coords, side="right")))
        bounds.append((start, stop))
        start = stop
    return bounds


def iter_rfc7946_geometries(geoms, decimals: int = DEFAULT_DECIMALS, chunk_coords: int | None = None,
                            workers: int | None = None):
    """:func:`rfc7946_geometries` of ``geoms`` one by one, computed chunk by chunk, ahead on threads.

    ``chunk_coords`` and ``workers`` default to :data:`CHUNK_COORDS` and :data:`WORKERS`.
    """
    geoms = np.asarray(geoms, dtype=object)
    workers = WORKERS if workers is None else workers
    bounds = chunk_bounds(geoms, CHUNK_COORDS if chunk_coords is None else chunk_coords)
    if workers <= 1 or len(bounds) <= 1:
        for start, stop in bounds:
            yield from rfc7946_geometries(geoms[start:stop], decimals)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="geojson") as pool:
        pending: deque = deque()
        try:
            for start, stop in bounds:  # at most `workers` chunks computed ahead of the writer
                pending.append(pool.submit(rfc7946_geometries, geoms[start:stop], decimals))
                if len(pending) > workers:
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _features(frame: gpd.GeoDataFrame, decimals: int, geoms):
    geoms = iter_rfc7946_geometries(frame.geometry.values if geoms is None else geoms, decimals)
    columns = [c for c in frame.columns if c != frame.geometry.name]
    records = frame[columns].astype(object).to_dict("records")
    for rec, geom in zip(records, geoms):
        yield {
            "type": "Feature",
            "properties": {k: json_value(v) for k, v in rec.items()},
            "geometry": geometry_json(geom, decimals, False),
        }


def _header(members: dict | None) -> bytes:
    extra = b"".join(orjson.dumps(k) + b":" + orjson.dumps(v) + b"," for k, v in (members or {}).items())
    return _HEADER_START + extra + _HEADER_END


def write_geojson(frame: gpd.GeoDataFrame, path: Path, decimals: int = DEFAULT_DECIMALS, geoms=None,
                  metadata: dict | None = None) -> Path:
    """Write ``frame`` as RFC 7946 GeoJSON (UTF-8, compact, one feature per line), streamed.

    ``metadata`` (the build's, see ``provenance.py``) is written as the foreign member
    ``territoires_industrie`` of the FeatureCollection (RFC 7946 section 6.1).
    """
    with open(path, "wb") as fh:
        fh.write(_header({KEY: metadata} if metadata is not None else None))
        for i, feat in enumerate(_features(frame, decimals, geoms)):
            fh.write((b"," if i else b"") + orjson.dumps(feat, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
        fh.write(_FOOTER)
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


def more_decimals_than(coords: np.ndarray, decimals: int) -> bool:
    """Whether some of ``coords`` need more than ``decimals`` decimals (same answer as
    ``max_decimals(coords) > decimals``, without printing every value).

    A value is on the 10^-decimals grid when it is the double nearest to k / 10^decimals for an
    integer k (IEEE division rounds correctly, like parsing the decimal text), and then its shortest
    repr has at most ``decimals`` decimals; only the values off the grid are printed and counted.
    """
    values = np.unique(np.asarray(coords, dtype=float).ravel())
    if 0 <= decimals <= 15:
        scale = float(10 ** decimals)
        values = values[values != np.rint(values * scale) / scale]
    return len(values) > 0 and max_decimals(values) > decimals


def _header_members(line: bytes) -> dict | None:
    """The members of a header line of this writer's layout (without "features"), else None."""
    if not (line.startswith(_HEADER_START) and line.endswith(_HEADER_END)):
        return None
    try:
        doc = orjson.loads(line[: -len(_HEADER_END)] + b'"features":[]}')
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _feature_lines(path: Path):
    """(foreign members, features) of a file in this writer's layout, parsed one line at a time;
    None otherwise.

    Header line, then one JSON object per line (after a comma from the second one on), then the
    footer line and nothing else: such a file is a valid FeatureCollection with exactly these
    features and the header's members. Any other text, even valid GeoJSON, gives None.
    """
    with open(path, "rb") as fh:
        members = _header_members(fh.readline())
        if members is None:
            return None
        members = {k: v for k, v in members.items() if k not in ("type", "features")}
        feats: list[tuple[dict, Any]] = []
        for i, line in enumerate(fh):
            if line == _FOOTER:
                return (members, feats) if fh.read(1) == b"" else None
            if not line.endswith(b"\n") or (i > 0) != line.startswith(b","):
                return None
            try:
                feat = orjson.loads(line[1 if i else 0:])
            except orjson.JSONDecodeError:
                return None
            if not isinstance(feat, dict):
                return None
            feats.append((feat, shapely.from_geojson(orjson.dumps(feat.pop("geometry")))))
    return None


def _read(path: Path) -> tuple[dict, list[dict], np.ndarray]:
    """(the collection's members other than type and features, the features without geometry,
    their geometries), in file order.

    A file in this writer's layout is parsed one feature at a time (the JSON tree of a whole file
    is about ten times its size); any other file as one document.
    """
    parsed = _feature_lines(path)
    if parsed is not None:
        members, feats = parsed
        geoms = np.empty(len(feats), dtype=object)
        geoms[:] = [g for _, g in feats]
        return members, [f for f, _ in feats], geoms
    with open(path, "rb") as fh:
        doc = orjson.loads(fh.read())
    feats = doc.get("features", [])
    texts = np.array([orjson.dumps(f["geometry"]) for f in feats], dtype=object)
    geoms = np.asarray(shapely.from_geojson(texts), dtype=object).reshape(len(feats))
    members = {k: v for k, v in doc.items() if k not in ("type", "features")}
    return members, [{k: v for k, v in f.items() if k != "geometry"} for f in feats], geoms


def file_metadata(path: Path) -> dict | None:
    """The build's metadata written by :func:`write_geojson` (None if absent)."""
    with open(path, "rb") as fh:
        members = _header_members(fh.readline())
    if members is None:
        members = _read(path)[0]
    return members.get(KEY)


def read_geometries(path: Path) -> np.ndarray:
    """The geometries of a GeoJSON file, in file order."""
    return _read(path)[2]


def _geometry_problems(geoms: np.ndarray, decimals: int) -> list[str]:
    """What is wrong with the geometries read back, checked chunk by chunk (copies of one chunk at a time)."""
    not_multi = unoriented = out_of_range = too_precise = False
    invalid, reason = 0, None
    for start, stop in chunk_bounds(geoms):
        part = geoms[start:stop]
        not_multi |= not (shapely.get_type_id(part) == 6).all()
        bad = ~shapely.is_valid(part)
        if bad.any():
            invalid += int(bad.sum())
            reason = reason or shapely.is_valid_reason(part[bad][0])
        unoriented |= not shapely.equals_exact(part, shapely.orient_polygons(part), tolerance=0).all()
        coords = shapely.get_coordinates(part)
        out_of_range |= bool((np.abs(coords[:, 0]) > 180).any() or (np.abs(coords[:, 1]) > 90).any())
        too_precise = too_precise or more_decimals_than(coords, decimals)
    problems = []
    if not_multi:
        problems.append("a geometry is not a MultiPolygon")
    if invalid:
        problems.append(f"{invalid} invalid geometries, e.g. {reason}")
    if unoriented:
        problems.append("rings are not oriented (exterior counterclockwise, holes clockwise)")
    if out_of_range:
        problems.append("coordinates outside [-180,180]x[-90,90]")
    if too_precise:
        problems.append(f"coordinates with more than {decimals} decimals")
    return problems


def verify_geojson(path: Path, expected: gpd.GeoDataFrame, decimals: int = DEFAULT_DECIMALS) -> dict:
    """Re-read the file; raise PublishError unless it is RFC 7946 and has the expected rows."""
    return verify_and_read(path, expected, decimals)[0]


def verify_and_read(path: Path, expected: gpd.GeoDataFrame, decimals: int = DEFAULT_DECIMALS) -> tuple[dict, np.ndarray]:
    """:func:`verify_geojson`, and the geometries read back (for further checks without a second read)."""
    members, feats, geoms = _read(path)
    problems = []
    if "crs" in members:
        problems.append("has a 'crs' member")
    if len(feats) != len(expected):
        problems.append(f"{len(feats)} features instead of {len(expected)}")
    ids = [f["properties"].get("id_ti") for f in feats]
    if ids != list(expected["id_ti"]):
        problems.append("id_ti values or order differ from the source frame")
    rows = len(feats)
    if len(geoms):
        problems += _geometry_problems(geoms, decimals)
    if problems:
        raise PublishError(f"{path}: GeoJSON check failed: {'; '.join(problems)}")
    return {"rows": rows, "format": "GeoJSON RFC 7946", "media_type": "application/geo+json",
            "coordinate_decimals": decimals}, geoms
