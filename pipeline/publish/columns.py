"""Published columns: their logical kind, their type in each format, and the frame as published.

Every column has one *kind*: ``string``, ``int``, ``float``, ``bool``, ``date``, ``list`` (list of
strings) or ``geometry``. Kinds come from ``pipeline.schema.TERRITORY_COLUMNS`` and
``pipeline.sources.plans.PLAN_COLUMNS`` when the column is declared there, else from the pandas dtype and
the values (so any extra column is published generically). :func:`prepare_frame` checks the input
and returns the frame every writer starts from: columns in published order, dtypes normalised,
rows in Hilbert order of the territories' centroids.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import shapely
from pandas.api import types as ptypes

from ..errors import PublishError
from ..schema import TERRITORY_COLUMNS

KINDS = ("string", "int", "float", "bool", "date", "list", "geometry")

# kind -> (GeoParquet / Arrow, GeoJSON, GeoPackage, FlatGeobuf); the same in every phase
FORMATS = ("GeoParquet", "GeoJSON", "GeoPackage", "FlatGeobuf")
FORMAT_TYPES: dict[str, tuple[str, str, str, str]] = {
    "string": ("string", "string", "TEXT", "String"),
    "int": ("int64", "integer", "INTEGER (int64)", "Long (int64)"),
    "float": ("double", "number", "REAL", "Double"),
    "bool": ("bool", "boolean", "BOOLEAN (integer 0/1)", "Bool"),
    "date": ("date32", "string YYYY-MM-DD", "DATE", "DateTime (midnight)"),
    "list": ("list<string>", "array of strings", "TEXT, values joined by `;`", "String, values joined by `;`"),
    "geometry": ("binary WKB, MultiPolygon", "MultiPolygon geometry", "MULTIPOLYGON geometry", "MultiPolygon"),
}

_DTYPE_KINDS = {
    "string": "string", "str": "string", "object": "string",
    "int64": "int", "Int64": "int", "int32": "int", "Int32": "int",
    "float64": "float", "Float64": "float",
    "bool": "bool", "boolean": "bool",
    "list[str]": "list", "geometry": "geometry", "date": "date",
}
_PLAN_KINDS = {"boolean": "bool", "date": "date", "count": "int", "url": "string", "text": "string"}


@dataclass(frozen=True)
class ColumnInfo:
    """One published column."""

    name: str
    kind: str
    description: str
    source: str  # "schema", "plans" or "frame" (an undeclared extra column)


def plan_columns() -> list:
    """``pipeline.sources.plans.PLAN_COLUMNS`` if that module is importable, else an empty list."""
    try:
        from ..sources.plans import PLAN_COLUMNS
    except ImportError:
        return []
    return list(PLAN_COLUMNS)


def declared_columns() -> list[ColumnInfo]:
    """Schema columns (geometry last) then the plan columns, each with kind and description."""
    schema = [c for c in TERRITORY_COLUMNS if c.dtype != "geometry"]
    geometry = [c for c in TERRITORY_COLUMNS if c.dtype == "geometry"]
    out = [ColumnInfo(c.name, _DTYPE_KINDS[c.dtype], c.description, "schema") for c in schema]
    names = {c.name for c in out}
    for c in plan_columns():
        if c.name in names:
            continue
        kind = _PLAN_KINDS.get(getattr(c, "kind", ""), _DTYPE_KINDS.get(str(c.dtype), "string"))
        out.append(ColumnInfo(c.name, kind, c.description, "plans"))
    out += [ColumnInfo(c.name, "geometry", c.description, "schema") for c in geometry]
    return out


def _infer_kind(series: pd.Series) -> str:
    if isinstance(series, gpd.GeoSeries) or isinstance(series.dtype, gpd.array.GeometryDtype):
        return "geometry"
    dtype = series.dtype
    if ptypes.is_bool_dtype(dtype):
        return "bool"
    if ptypes.is_integer_dtype(dtype):
        return "int"
    if ptypes.is_float_dtype(dtype):
        return "float"
    if ptypes.is_datetime64_any_dtype(dtype):
        return "date"
    if isinstance(dtype, pd.ArrowDtype) and pa.types.is_date(dtype.pyarrow_dtype):
        return "date"
    values = [v for v in series if v is not None and not (np.isscalar(v) and _is_missing(v))]
    if values and all(isinstance(v, (list, tuple, np.ndarray)) for v in values):
        return "list"
    if values and all(isinstance(v, (dt.date, pd.Timestamp)) for v in values):
        return "date"
    if values and all(isinstance(v, (bool, np.bool_)) for v in values):
        return "bool"
    return "string"


def column_infos(frame: pd.DataFrame) -> list[ColumnInfo]:
    """The published columns of ``frame`` in published order (declared ones first, geometry last)."""
    declared = {c.name: c for c in declared_columns()}
    geometry_name = frame.geometry.name if isinstance(frame, gpd.GeoDataFrame) else "geometry"
    schema_names = [c.name for c in TERRITORY_COLUMNS if c.dtype != "geometry"]
    ordered = [n for n in schema_names if n in frame.columns]
    ordered += [n for n in frame.columns if n not in ordered and n != geometry_name]
    infos = []
    for name in ordered:
        if name in declared:
            infos.append(declared[name])
        else:
            infos.append(ColumnInfo(name, _infer_kind(frame[name]), "", "frame"))
    infos.append(ColumnInfo("geometry", "geometry", declared["geometry"].description, "schema"))
    return infos


def _is_missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, (list, tuple, np.ndarray)):
        return False
    return bool(pd.isna(value))


def _as_list(value, column: str, id_ti: str) -> np.ndarray:
    if _is_missing(value):
        return np.array([], dtype=str)
    if isinstance(value, str) or not isinstance(value, (list, tuple, np.ndarray)):
        raise PublishError(f"territory {id_ti}: column {column!r} must hold a list of strings, got {value!r}")
    items = [str(v) for v in value]
    bad = [v for v in items if ";" in v]
    if bad:
        raise PublishError(
            f"territory {id_ti}: column {column!r} holds {bad[0]!r}; list items may not contain ';' "
            "(the GeoPackage joins lists with ';')"
        )
    return np.array(items, dtype=str)


def _as_date(value):
    if _is_missing(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.date()
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def _normalise(series: pd.Series, kind: str, ids: pd.Series) -> pd.Series:
    name = series.name
    try:
        if kind == "string":
            return series.astype("string")
        if kind == "int":
            return series if ptypes.is_integer_dtype(series.dtype) and not isinstance(
                series.dtype, pd.api.extensions.ExtensionDtype) else series.astype("Int64")
        if kind == "float":
            return series.astype("float64")
        if kind == "bool":
            return series.astype("boolean")
        if kind == "date":
            values = pa.array([_as_date(v) for v in series], type=pa.date32())
            return pd.Series(values, dtype=pd.ArrowDtype(pa.date32()), index=series.index, name=name)
        if kind == "list":
            values = [_as_list(v, str(name), str(i)) for v, i in zip(series, ids)]
            return pd.Series(values, dtype=object, index=series.index, name=name)
    except PublishError:
        raise
    except (TypeError, ValueError) as err:
        raise PublishError(f"column {name!r} cannot be published as {kind}: {err}") from None
    raise AssertionError(kind)


def check_frame(territories: gpd.GeoDataFrame, phase: str) -> None:
    """Raise PublishError naming the problem when the frame is not publishable."""
    if not isinstance(territories, gpd.GeoDataFrame):
        raise PublishError(f"territories must be a GeoDataFrame, got {type(territories).__name__}")
    if territories.crs is None or territories.crs.to_epsg() != 4326:
        raise PublishError(f"territories must be in EPSG:4326 (lon/lat), got CRS {territories.crs}")
    required = [c.name for c in TERRITORY_COLUMNS if c.dtype != "geometry"]
    missing = [c for c in required if c not in territories.columns]
    if missing:
        raise PublishError(f"territories lack the schema column(s) {', '.join(missing)} (see pipeline/schema.py)")
    if "bbox" in territories.columns:
        raise PublishError("territories may not have a column named 'bbox' (reserved for the GeoParquet covering)")
    if len(territories) == 0:
        raise PublishError("territories frame is empty: nothing to publish")
    ids = territories["id_ti"]
    if ids.isna().any():
        raise PublishError("column 'id_ti' has null values")
    dup = ids[ids.duplicated()].unique().tolist()
    if dup:
        raise PublishError(f"column 'id_ti' must be unique, duplicated: {', '.join(map(str, dup[:10]))}")
    phases = set(territories["phase"].astype(str))
    if phases != {phase}:
        raise PublishError(f"column 'phase' holds {sorted(phases)} but the release is for phase {phase!r}")
    geoms = territories.geometry.values
    types = shapely.get_type_id(geoms)
    bad = ids[~np.isin(types, (3, 6)) | shapely.is_empty(geoms)].tolist()
    if bad:
        raise PublishError(f"territories {', '.join(map(str, bad[:10]))}: geometry is not a non-empty (Multi)Polygon")
    invalid = ids[~shapely.is_valid(geoms)].tolist()
    if invalid:
        reason = shapely.is_valid_reason(geoms[~shapely.is_valid(geoms)][0])
        raise PublishError(f"territories {', '.join(map(str, invalid[:10]))}: invalid geometry ({reason})")


def to_multipolygons(geoms) -> np.ndarray:
    """Wrap single Polygons as MultiPolygons (arrays of shapely geometries)."""
    geoms = np.asarray(geoms, dtype=object)
    out = geoms.copy()
    single = shapely.get_type_id(geoms) == 3
    out[single] = [shapely.MultiPolygon([g]) for g in geoms[single]]
    return out


def prepare_frame(territories: gpd.GeoDataFrame, phase: str) -> gpd.GeoDataFrame:
    """The frame as published: checked, dtypes normalised, MultiPolygons, Hilbert-sorted rows."""
    check_frame(territories, phase)
    infos = column_infos(territories)
    ids = territories["id_ti"].astype(str)
    frame = pd.DataFrame(
        {info.name: _normalise(territories[info.name], info.kind, ids) for info in infos[:-1]},
        index=territories.index,
    )
    geoms = to_multipolygons(territories.geometry.values)
    out = gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(geoms, index=territories.index, crs=4326), crs=4326)
    out = out.rename_geometry("geometry") if out.geometry.name != "geometry" else out
    # Spatial order: Hilbert distance of centroids, ties broken by id.
    centroids = gpd.GeoSeries(shapely.centroid(geoms), index=territories.index, crs=4326)
    out["_hilbert"] = centroids.hilbert_distance(total_bounds=(-180.0, -90.0, 180.0, 90.0))
    out = out.sort_values(["_hilbert", "id_ti"], kind="stable").drop(columns="_hilbert")
    return out.reset_index(drop=True)
