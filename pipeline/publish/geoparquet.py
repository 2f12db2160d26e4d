"""GeoParquet 1.1 writer and its read-back check (metadata written by geopandas, never by hand)."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import PublishError
from .provenance import KEY

SCHEMA_VERSION = "1.1.0"


def write_geoparquet(frame: gpd.GeoDataFrame, path: Path, *, index: bool | None = False,
                     metadata: dict | None = None) -> Path:
    """Write ``frame`` (from :func:`~pipeline.publish.columns.prepare_frame`) as GeoParquet 1.1.

    zstd compression, a ``bbox`` covering column, exact ``geometry_types``, PROJJSON CRS; list
    columns are Arrow ``list<string>`` and dates ``date32``, row order kept (spatially sorted).
    ``index`` is passed to ``to_parquet`` (None: a RangeIndex is kept as metadata only).

    Arrow's allocator would keep the memory of the conversion and encoding buffers for reuse
    (130 MB for a 21 MB file at 16x vertex density); it is handed back to the system afterwards,
    so that the next writer does not pile its own peak on top of it. The file is unchanged.

    ``metadata`` (:func:`~pipeline.publish.provenance.file_metadata`) goes into the file metadata
    the way geopandas stores ``DataFrame.attrs`` (key ``PANDAS_ATTRS``, read back by
    ``gpd.read_parquet(path).attrs``); see :func:`file_metadata`.
    """
    if metadata is not None:
        frame = frame.copy(deep=False)
        frame.attrs = {KEY: metadata}
    try:
        frame.to_parquet(
            path, index=index, schema_version=SCHEMA_VERSION, write_covering_bbox=True, compression="zstd"
        )
    finally:
        pa.default_memory_pool().release_unused()
    return Path(path)


def geo_metadata(path: Path) -> dict:
    """The decoded ``geo`` key of a Parquet file's metadata."""
    meta = pq.read_metadata(path).metadata or {}
    if b"geo" not in meta:
        raise PublishError(f"{path}: no 'geo' key in the Parquet metadata")
    return json.loads(meta[b"geo"])


def file_metadata(path: Path) -> dict | None:
    """The build's metadata written by :func:`write_geoparquet` (None if absent)."""
    meta = pq.read_schema(path).metadata or {}
    attrs = json.loads(meta.get(b"PANDAS_ATTRS", b"{}"))
    return attrs.get(KEY)


def verify_geoparquet(path: Path, expected: gpd.GeoDataFrame) -> dict:
    """Re-read the file; raise PublishError unless it matches ``expected``. Returns facts for the manifest."""
    geo = geo_metadata(path)
    col = geo["columns"].get(geo.get("primary_column", ""), {})
    problems = []
    if geo.get("version") != SCHEMA_VERSION:
        problems.append(f"version {geo.get('version')!r} instead of {SCHEMA_VERSION}")
    if col.get("geometry_types") != ["MultiPolygon"]:
        problems.append(f"geometry_types {col.get('geometry_types')} instead of ['MultiPolygon']")
    if "bbox" not in col.get("covering", {}):
        problems.append("no bbox covering declared")
    if not isinstance(col.get("crs"), dict) or col["crs"].get("id", {}).get("code") != 4326:
        problems.append("CRS is not a PROJJSON EPSG:4326")
    back = gpd.read_parquet(path)
    if len(back) != len(expected):
        problems.append(f"{len(back)} rows read back instead of {len(expected)}")
    elif list(back["id_ti"]) != list(expected["id_ti"]):
        problems.append("id_ti values or order differ from the source frame")
    if problems:
        raise PublishError(f"{path}: GeoParquet check failed: {'; '.join(problems)}")
    return {"rows": len(back), "format": f"GeoParquet {SCHEMA_VERSION}", "media_type": "application/vnd.apache.parquet"}
