"""Read commune boundaries (GeoParquet, GeoJSON, GeoPackage, Shapefile) into one tidy frame."""

from __future__ import annotations

import contextlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import shapely

from .. import runtime
from ..errors import InputFormatError
from ..limits import DEFAULT_LIMITS, Limits
from .csv_tables import INSEE_RE, normalise_insee
from .wkb_store import StoreWriter, WkbStore

CODE_ALIASES = ["code_insee", "code", "insee_com", "codgeo", "insee"]
DEP_ALIASES = ["departement", "code_departement", "insee_dep", "dep", "code_dep"]
NAME_ALIASES = ["nom", "nom_officiel", "libelle", "name"]
POP_ALIASES = ["population_municipale", "population", "pmun"]
# Columns that mark sub-communal units some files carry beside the communes: Etalab's
# contours-administratifs set ``commune`` (the parent code) on arrondissements municipaux of
# Paris, Lyon and Marseille; other files have a ``type`` (COM, ARM, COMD, COMA).
SUBUNIT_COLUMNS = ["commune", "type"]
# Lon/lat bounds that any French commune (metropole and DROM) falls into.
FRANCE_LONLAT = (-62.0, -22.0, 56.0, 52.0)
# Polygons under this area in square degrees (about 0.01 m2) are degenerate (zero area); the
# smallest French commune is about 4e-6 square degrees.
DEGENERATE_DEG2 = 1e-12


@dataclass
class BoundaryReport:
    rows: int
    repaired: list[str]        # codes whose polygon was invalid and was repaired (make_valid)
    empty: list[str]           # codes with an empty or missing geometry (dropped)
    duplicates: list[str]      # codes present more than once (first kept)
    crs: str
    sub_communal: list[str] = field(default_factory=list)   # arrondissements etc. left out


def _pick(columns: list[str], aliases: list[str]) -> str | None:
    lower = {c.lower(): c for c in columns}
    return next((lower[a] for a in aliases if a in lower), None)


def _read_geoparquet(path: Path) -> gpd.GeoDataFrame:
    """The needed columns of a GeoParquet file, decoded batch by batch.

    geopandas.read_parquet holds the whole WKB column and the shapely objects at once; decoding
    in batches keeps only one batch of WKB beside the geometries (measured on 17 M vertices:
    peak 0.68 GB instead of 1.68 GB, 1.2 s instead of 3.7 s).
    """
    parquet = _open_parquet(path)
    geom_col, encoding, crs_meta = _geo_meta(parquet)
    if not _wkb_geometry(parquet, geom_col, encoding):
        return gpd.read_parquet(path, columns=_wanted(parquet.schema_arrow.names))
    columns = _read_columns(parquet, geom_col)
    geoms, attrs = [], []
    for batch in _iter_batches(parquet, geom_col, columns, None):
        geoms.append(shapely.from_wkb(batch.column(geom_col).to_numpy(zero_copy_only=False)))
        attrs.append(batch.drop_columns([geom_col]).to_pandas())
    crs = _crs_of(crs_meta)
    frame = pd.concat(attrs, ignore_index=True) if attrs else pd.DataFrame(columns=columns[:-1])
    return gpd.GeoDataFrame(frame, geometry=np.concatenate(geoms) if geoms else [], crs=crs)


def _wanted(columns: list[str]) -> list[str]:
    """The columns this reader uses (only those are loaded: the files may carry many more)."""
    lower = {c.lower() for c in CODE_ALIASES + DEP_ALIASES + NAME_ALIASES + POP_ALIASES + SUBUNIT_COLUMNS}
    return [c for c in columns if c.lower() in lower or c in ("geometry", "geom", "wkb_geometry")]


def departement_of(code: str) -> str:
    return code[:3] if code.startswith("97") else code[:2]


def read_boundaries(path: Path, limits: Limits = DEFAULT_LIMITS) -> tuple[gpd.GeoDataFrame, BoundaryReport]:
    """Columns code_insee, nom, departement, population (Int64, may be null), geometry (EPSG:4326).

    Invalid polygons are repaired (``make_valid``, polygon parts kept) and listed in
    ``report.repaired``; empty, missing or zero-area geometries are dropped and listed in
    ``report.empty``; duplicated codes keep their first row. A file without CRS, with coordinates
    outside France once in EPSG:4326 (a wrong declared CRS), with non-polygon geometries or with
    values that are not commune codes raises :class:`InputFormatError`.
    """
    path = Path(path)
    frame = _read_any(path, limits)
    out, repaired, empty, sub_communal = _validate(frame, path, limits)
    out, repaired, empty = _to_wgs84(out, path, repaired, empty)
    _check_extent(shapely.total_bounds(out.geometry.values), path, out.crs if frame.crs is None else frame.crs)
    keep, duplicates = _first_of_each_code(out["code_insee"])
    out = out.iloc[keep].reset_index(drop=True)
    report = BoundaryReport(rows=len(out), repaired=repaired, empty=empty, duplicates=duplicates,
                            crs=_crs_name(frame.crs), sub_communal=sub_communal)
    return out, report


def _read_any(path: Path, limits: Limits) -> gpd.GeoDataFrame:
    import pyogrio  # GDAL (about 30 MB resident): only for files other than GeoParquet

    try:
        magic = _magic(path)
        if magic == b"PAR1":
            frame = _read_geoparquet(path)
        else:
            if magic[:2] == b"\x1f\x8b":
                _check_gzip_size(path, limits)
            name = f"/vsigzip/{path}" if magic[:2] == b"\x1f\x8b" else str(path)
            fields = pyogrio.read_info(name)["fields"].tolist()
            frame = gpd.read_file(name, engine="pyogrio", columns=_wanted(fields))
    except (OSError, ValueError, pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as err:
        raise InputFormatError(f"{path}: cannot read commune boundaries ({err})") from None
    if len(frame) == 0:
        raise InputFormatError(f"{path}: no commune polygon in the file")
    return frame


def _validate(frame: gpd.GeoDataFrame, path: Path, limits: Limits, offset: int = 0
              ) -> tuple[gpd.GeoDataFrame, list[str], list[str], list[str]]:
    """Tidy columns, repaired geometries, dropped empty ones (in the file's CRS).

    ``offset``: index of the frame's first feature in the file (for messages when read in batches).
    The result keeps the frame's index (rows of the input), so callers can map rows back.
    """
    code_col = _pick(list(frame.columns), CODE_ALIASES)
    if code_col is None:
        raise InputFormatError(f"{path}: no commune code column; expected one of {', '.join(CODE_ALIASES)}; "
                               f"found {', '.join(map(str, frame.columns))}")
    if frame.crs is None:
        raise InputFormatError(f"{path}: the boundaries have no CRS; declare one (EPSG:4326 expected)")
    frame, sub_communal = _drop_sub_communal(frame, code_col)
    raw = frame[code_col]
    codes = _normalise_codes(raw)
    bad = np.flatnonzero(~codes.str.fullmatch(INSEE_RE.pattern).fillna(False).to_numpy())
    if len(bad):
        shown = ", ".join(f"feature {offset + frame.index[i] + 1}: {codes.iloc[i]!r}" for i in bad[:5])
        raise InputFormatError(f"{path}: column {code_col}: {len(bad)} value(s) are not INSEE commune codes "
                               f"({shown})")
    out = gpd.GeoDataFrame({"code_insee": codes.to_numpy()}, geometry=frame.geometry.values, crs=frame.crs,
                           index=frame.index)
    name_col = _pick(list(frame.columns), NAME_ALIASES)
    out["nom"] = frame[name_col].astype("string").to_numpy() if name_col else pd.NA
    dep_col = _pick(list(frame.columns), DEP_ALIASES)
    out["departement"] = (frame[dep_col].astype(str).to_numpy() if dep_col
                          else out["code_insee"].map(departement_of))
    pop_col = _pick(list(frame.columns), POP_ALIASES)
    out["population"] = pd.array(pd.to_numeric(frame[pop_col], errors="coerce"), dtype="Int64") if pop_col \
        else pd.array([pd.NA] * len(out), dtype="Int64")
    geoms = out.geometry.values
    present = ~(out.geometry.isna() | out.geometry.is_empty).to_numpy()
    _check_coordinates(geoms[present], out["code_insee"].to_numpy()[present], path, limits.commune_vertices)
    if shapely.has_z(geoms[present]).any():
        out.loc[present, "geometry"] = shapely.force_2d(geoms[present])
    # Repair invalid polygons (self-intersections...) before anything else; keep polygon parts.
    invalid = present & ~out.geometry.is_valid.to_numpy()
    repaired = sorted(out.loc[invalid, "code_insee"])
    if invalid.any():
        fixed = shapely.make_valid(out.geometry.values[invalid])
        fixed = [shapely.MultiPolygon([p for p in shapely.get_parts(g) if p.geom_type == "Polygon"]) for g in fixed]
        out.loc[invalid, "geometry"] = fixed
    # Empty, missing or degenerate (zero-area) geometries are dropped and reported.
    empty_mask = out.geometry.isna() | out.geometry.is_empty
    types = set(out.loc[~empty_mask].geom_type)
    if not types <= {"Polygon", "MultiPolygon"}:
        raise InputFormatError(f"{path}: commune geometries must be polygons, found {', '.join(sorted(types))}")
    empty = list(out.loc[empty_mask, "code_insee"])
    out = out[~empty_mask]
    return out, repaired, empty, sub_communal


def _check_gzip_size(path: Path, limits: Limits) -> None:
    """A gzipped boundary file decodes, in steps, to at most TI_MAX_SOURCE_MB (GDAL's GeoJSON
    driver would expand a gzip bomb whole in memory)."""
    from . import transfer
    from .fetch import check_gzip

    try:
        check_gzip(path, limits.source_bytes)
    except (transfer.Permanent, transfer.Transient) as err:
        raise InputFormatError(f"{path}: {err.reason}") from None


def _check_coordinates(geoms: np.ndarray, codes: np.ndarray, path: Path, limit: int) -> None:
    """Refuse a commune with more than ``limit`` vertices (TI_MAX_COMMUNE_VERTICES: its repair and the
    coverage cleaning would need gigabytes: 5 million vertices peaked at 5 GiB) or a NaN coordinate."""
    counts = shapely.get_num_coordinates(geoms)
    big = np.flatnonzero(counts > limit)
    if len(big):
        i = big[0]
        raise InputFormatError(f"{path}: commune {codes[i]} has {counts[i]:,} vertices, more than the "
                               f"{limit:,} allowed (TI_MAX_COMMUNE_VERTICES)")
    coords = shapely.get_coordinates(geoms)   # x, y (z is dropped anyway)
    nan = np.isnan(coords).any(axis=1)
    if nan.any():
        i = int(np.searchsorted(np.cumsum(counts), np.argmax(nan), side="right"))
        raise InputFormatError(f"{path}: commune {codes[i]} has a NaN (not a number) coordinate")


def _normalise_codes(values: pd.Series) -> pd.Series:
    """Commune codes as strings, a lost leading zero restored (only the odd values go through Python)."""
    codes = values.astype("string")
    odd = ~codes.str.fullmatch(INSEE_RE.pattern).fillna(False)
    if odd.any():
        codes = codes.copy()
        fixed = ["" if v is None or v is pd.NA or v != v else normalise_insee(str(v)) for v in values[odd.to_numpy()]]
        codes[odd.to_numpy()] = pd.Series(fixed, index=codes.index[odd.to_numpy()], dtype="string")
    return codes.fillna("")


def _to_wgs84(out: gpd.GeoDataFrame, path: Path, repaired: list[str], empty: list[str]):
    """Reprojected to EPSG:4326 if needed; degenerate (zero-area) polygons dropped into ``empty``.

    Coordinates that fit in degrees under a projected CRS are refused first: reprojected as metres
    they would shrink to points, be dropped as degenerate and surface later as a wrong count."""
    if out.crs.is_projected and len(out):
        minx, miny, maxx, maxy = shapely.total_bounds(out.geometry.values)
        if max(abs(minx), abs(maxx)) <= 180 and max(abs(miny), abs(maxy)) <= 90:
            raise InputFormatError(
                f"{path}: coordinates ({minx:.1f}, {miny:.1f}, {maxx:.1f}, {maxy:.1f}) are too small for the "
                f"metres of a projected CRS: the declared CRS ({_crs_name(out.crs)}) is probably wrong; "
                "they look like degrees of longitude/latitude (EPSG:4326)")
    if out.crs.to_epsg() != 4326:
        try:
            out = out.to_crs(4326)
        except (ValueError, RuntimeError) as err:  # pyproj.exceptions.* derive from RuntimeError
            raise InputFormatError(f"{path}: cannot reproject from {out.crs} to EPSG:4326 ({err})") from None
    degenerate = (shapely.area(out.geometry.values) < DEGENERATE_DEG2)
    empty = sorted(empty + list(out.loc[degenerate, "code_insee"]))
    repaired = [c for c in repaired if c not in set(empty)]
    return out[~degenerate], repaired, empty


def _check_extent(bounds, path: Path, crs) -> None:
    minx, miny, maxx, maxy = bounds
    fx0, fy0, fx1, fy1 = FRANCE_LONLAT
    if minx < fx0 or maxx > fx1 or miny < fy0 or maxy > fy1:
        hint = (" they look like metres of a projected CRS (Lambert-93 is EPSG:2154)"
                if max(abs(minx), abs(maxx), abs(miny), abs(maxy)) > 1000 else "")
        raise InputFormatError(
            f"{path}: coordinates ({minx:.1f}, {miny:.1f}, {maxx:.1f}, {maxy:.1f}) fall outside France "
            f"in EPSG:4326: the declared CRS ({_crs_name(crs)}) is probably wrong;{hint or ' check it'}")


def _drop_sub_communal(frame: gpd.GeoDataFrame, code_col: str) -> tuple[gpd.GeoDataFrame, list[str]]:
    """Leave out arrondissements municipaux and other sub-communal units (they overlap their commune)."""
    keep = pd.Series(True, index=frame.index)
    parent = _pick(list(frame.columns), ["commune"])
    if parent is not None and parent != code_col:
        keep &= frame[parent].isna() | (frame[parent].astype(str).str.strip().isin(["", "None", "nan"]))
    kind = _pick(list(frame.columns), ["type"])
    if kind is not None and frame[kind].astype(str).str.upper().eq("COM").any():
        keep &= frame[kind].astype(str).str.upper().eq("COM")
    if keep.all():
        return frame, []
    dropped = sorted(frame.loc[~keep, code_col].astype(str))
    return frame[keep.to_numpy()], dropped


def _crs_name(crs) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()


class BoundarySet:
    """The communes of a boundary file, with polygons decoded only for the communes that need them.

    :func:`scan_boundaries` reads every polygon once, batch by batch, to check and report it like
    :func:`read_boundaries`, but keeps only the attributes, the bounds and the few repaired polygons
    (and, with a parse cache, writes the polygons' WKB to its store: :mod:`.wkb_store`).
    :meth:`load` and :meth:`geometries` then decode the polygons asked for, from the store (only
    their bytes are read), else from the file again (its whole geometry column); :meth:`near`
    finds the communes around a place (enclaves, gaps), and :meth:`prefetch` keeps in memory the
    WKB of those around several places, read at once; :meth:`release` forgets decoded polygons
    once used (they are read again if asked for). A small file without a store keeps every WKB in
    memory instead of being read again. :attr:`reads_cheaply` says whether reading a polygon
    again costs little: the build then decodes each polygon only while a step uses it.
    """

    def __init__(self, communes: pd.DataFrame, report: BoundaryReport, bounds: np.ndarray, crs,
                 geoms: np.ndarray | None = None, path: Path | None = None, rows: np.ndarray | None = None,
                 repaired: dict[int, object] | None = None, has_z: bool = False, batch_size: int | None = None,
                 wkb: np.ndarray | None = None):
        self.communes = communes          # code_insee, nom, departement, population; sorted by code
        self.report = report
        self.bounds = bounds              # (n, 4) lon/lat bounds, same order as communes
        self.crs = crs
        n = len(communes)
        self._geoms = np.full(n, None, dtype=object) if geoms is None else np.asarray(geoms, dtype=object)
        # with ``wkb`` (a small file), every polygon's WKB stays in memory and the file is not read again
        self._in_memory = wkb is not None
        self._wkb = np.asarray(wkb, dtype=object) if wkb is not None else np.full(n, None, dtype=object)
        self._path, self._rows, self._repaired, self._has_z = path, rows, repaired or {}, has_z
        self._batch_size = batch_size
        self._store: WkbStore | None = None   # the polygons' WKB in the parse cache (set by the scan)
        self._loaded = np.zeros(n, dtype=bool) if geoms is None else np.ones(n, dtype=bool)
        self._released = np.zeros(n, dtype=bool)
        self._trees: tuple | None = None
        self._boxes: np.ndarray | None = None
        self._codes: np.ndarray | None = None

    @classmethod
    def from_frame(cls, frame: gpd.GeoDataFrame, report: BoundaryReport | None = None) -> BoundarySet:
        """The communes of ``frame`` (code_insee, departement, ..., geometry in EPSG:4326), held as
        in-memory WKB like a small GeoParquet file, none decoded yet: :meth:`load` decodes the
        members and their neighbours, and :meth:`near` finds the others (a commune far from every
        member still makes an enclave). :func:`scan_boundaries` gives this for a file read whole."""
        report = report or BoundaryReport(rows=len(frame), repaired=[], empty=[], duplicates=[],
                                          crs=_crs_name(frame.crs))
        geoms = frame.geometry.values
        return cls(pd.DataFrame(frame.drop(columns="geometry")), report, shapely.bounds(geoms), frame.crs,
                   wkb=shapely.to_wkb(geoms))

    @property
    def codes(self) -> np.ndarray:
        """Commune codes (object array of str, communes order)."""
        if self._codes is None:
            self._codes = np.asarray(self.communes["code_insee"].tolist(), dtype=object)
        return self._codes

    def load(self, keep: np.ndarray, hold: np.ndarray | None = None) -> np.ndarray:
        """Decode the polygons of the communes where ``keep`` (bool, communes order) is true; returns them.

        ``hold``: of those, the communes the set keeps decoded (default: all). The others are
        decoded in the same read and returned only: the set forgets them, as if never decoded
        (:meth:`near` and :meth:`prefetch` find them among the others)."""
        keep = np.asarray(keep, dtype=bool)
        hold = keep if hold is None else keep & np.asarray(hold, dtype=bool)
        todo = keep & ~self._loaded
        passing = np.full(len(keep), None, dtype=object)
        if todo.any():
            self._read(todo, np.zeros(len(keep), dtype=bool), hold, passing)
            self._trees = None
        return np.where(self._loaded[keep], self._geoms[keep], passing[keep])

    @property
    def boxes(self) -> np.ndarray:
        """The communes' bounding boxes as polygons (communes order), made once for every tree
        built on them (about 15 MB for 35,000 communes: dropped by :meth:`trim`)."""
        if self._boxes is None:
            self._boxes = shapely.box(*self.bounds.T)
        return self._boxes

    def trim(self) -> None:
        """Drop what the set keeps only to answer queries faster (the boxes and the search trees,
        the WKB read ahead by :meth:`prefetch`): made or read again when next needed."""
        self._boxes = None
        self._trees = None
        if not self._in_memory:
            self._wkb[:] = None

    @property
    def reads_cheaply(self) -> bool:
        """Whether a polygon read again costs little: its WKB is in memory or in the parse cache's
        store (:mod:`.wkb_store`), not only in the compressed file."""
        return self._in_memory or (self._store is not None and self._store.usable())

    def wkb_bytes(self, positions) -> np.ndarray | None:
        """The size of the WKB of each commune at ``positions`` (what decoding it costs, about 1.5
        times in memory), from the WKB in memory or the store; None when neither holds them."""
        positions = np.asarray(positions, dtype=int)
        if self._in_memory:
            return np.fromiter((0 if w is None else len(w) for w in self._wkb[positions]), dtype=np.int64,
                               count=len(positions))
        if self._store is not None and self._store.usable() and self._rows is not None:
            rows = self._rows[positions]
            return (self._store.ends[rows] - self._store.starts[rows]).astype(np.int64)
        return None

    def undecoded(self, keep: np.ndarray) -> gpd.GeoDataFrame:
        """The communes where ``keep`` as :meth:`frame` gives them, with no polygon decoded (None)."""
        keep = np.asarray(keep, dtype=bool)
        out = self.communes[keep].reset_index(drop=True)
        return gpd.GeoDataFrame(out, geometry=np.full(len(out), None, dtype=object), crs=self.crs)

    def _wkb_to_read(self, want: np.ndarray | None, todo: np.ndarray) -> np.ndarray:
        """Where ``want``, the communes whose WKB is neither in memory nor decoded (nor released)."""
        out = np.zeros(len(self._loaded), dtype=bool)
        if want is None or self._in_memory:
            return out
        out[np.asarray(want, dtype=bool) & ~todo & ~self._loaded & ~self._released] = True
        idx = np.flatnonzero(out)
        out[idx[self._has_wkb(idx)]] = False
        return out

    def geometries(self, positions) -> np.ndarray:
        """Polygons of the communes at ``positions`` (decoded now for those not loaded; not kept)."""
        positions = np.asarray(positions, dtype=int)
        out = self._geoms[positions].copy()
        lazy = ~self._loaded[positions]
        if lazy.any():
            out[lazy] = self._read_rows(positions[lazy])
        return out

    def prefetch(self, geoms) -> int:
        """Keep in memory the WKB of the communes never decoded whose bounds meet these geometries.

        :meth:`near` then finds them without reading the file: one pass over the file for all the
        places a step will look at (the territories' holes) instead of one per place. Returns how
        many were read (none for a file kept in memory)."""
        if self._in_memory:
            return 0
        _, _, off, off_tree = self._built_trees()
        geoms = [g for g in geoms if g is not None]
        if off_tree is None or not geoms:
            return 0
        want = np.zeros(len(self.codes), dtype=bool)
        want[off[np.unique(off_tree.query(geoms)[1])]] = True
        none = np.zeros(len(self.codes), dtype=bool)
        wkb = self._wkb_to_read(want, none)
        if wkb.any():
            self._read(none, wkb, none, np.empty(0, dtype=object))
        return int(wkb.sum())

    def near(self, geom, loaded: bool = True, released: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Positions and polygons of the communes intersecting ``geom``.

        ``loaded``: include the decoded communes; ``released``: include the communes whose
        polygons were :meth:`release`-d (read from the file again).
        """
        return self.near_many([geom], loaded, released)[0]

    def _built_trees(self) -> tuple:
        """Positions of the decoded communes and a tree of their polygons; positions of the others
        and a tree of their bounds (built again after a load or a release)."""
        if self._trees is None:
            on = np.flatnonzero(self._loaded)
            off = np.flatnonzero(~self._loaded)
            self._trees = (on, shapely.STRtree(self._geoms[on]) if len(on) else None,
                           off, shapely.STRtree(self.boxes[off]) if len(off) else None)
        return self._trees

    def near_many(self, geoms, loaded: bool = True, released: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`near` for several geometries, with at most one read of the file for them all."""
        on, on_tree, off, off_tree = self._built_trees()
        geoms = np.asarray(geoms, dtype=object)
        cands = [off[off_tree.query(g)] if off_tree is not None else np.zeros(0, dtype=int) for g in geoms]
        if not released:
            cands = [c[~self._released[c]] for c in cands]
        fetch = np.unique(np.concatenate(cands)) if cands else np.zeros(0, dtype=int)
        fetched = dict(zip(fetch.tolist(), self._read_rows(fetch))) if len(fetch) else {}
        out = []
        for g, cand in zip(geoms, cands):
            pos, found = [], []
            if loaded and on_tree is not None:
                hit = on[on_tree.query(g, predicate="intersects")]
                pos.append(hit)
                found.append(self._geoms[hit])
            if len(cand):
                lazy = np.empty(len(cand), dtype=object)
                lazy[:] = [fetched[int(p)] for p in cand]
                ok = shapely.intersects(lazy, g)
                pos.append(cand[ok])
                found.append(lazy[ok])
            out.append((np.concatenate(pos), np.concatenate(found)) if pos
                       else (np.zeros(0, dtype=int), np.zeros(0, dtype=object)))
        return out

    def release(self, codes, keep_near=()) -> int:
        """Forget the decoded polygons of these communes (they are read from the file again if asked for).

        Communes whose bounds meet one of the ``keep_near`` geometries (the territories' holes,
        which the checks look at) stay decoded. Returns how many were released. Only for a file
        read lazily (see :func:`scan_boundaries`).
        """
        if self._path is None:
            return 0
        codes = codes if isinstance(codes, (set, frozenset)) else set(codes)
        mask = self._loaded & np.fromiter((c in codes for c in self.codes), dtype=bool, count=len(self.codes))
        keep_near = [g for g in keep_near if g is not None]
        if keep_near and mask.any():
            cand = np.flatnonzero(mask)
            hit = shapely.STRtree(keep_near).query(self.boxes[cand])[0]
            mask[cand[np.unique(hit)]] = False
        if mask.any():
            self._geoms[mask] = None
            self._loaded[mask] = False
            self._released[mask] = True
            self._trees = None
        return int(mask.sum())

    def _has_wkb(self, positions: np.ndarray) -> np.ndarray:
        """Whether the WKB of each commune at ``positions`` is in memory."""
        return np.fromiter((w is not None for w in self._wkb[positions]), dtype=bool, count=len(positions))

    def _read_rows(self, positions: np.ndarray) -> np.ndarray:
        """Polygons of the communes at ``positions`` not decoded: from their WKB in memory, else
        read from the file in one pass (not kept)."""
        positions = np.asarray(positions, dtype=int)
        out = np.empty(len(positions), dtype=object)
        in_memory = self._has_wkb(positions)
        if in_memory.any():
            out[in_memory] = self._decode(self._wkb[positions[in_memory]])
        if in_memory.all():
            return out
        assert self._rows is not None, "a file read lazily has its row numbers"
        want = np.zeros(len(self._rows), dtype=np.bool_)
        want[positions[~in_memory]] = True
        found: dict[int, object] = {}
        for pos, wkb in self._batches(want):
            found.update(zip(pos.tolist(), self._decode(wkb)))
        for p in positions[~in_memory].tolist():
            if p in self._repaired:
                found[p] = self._repaired[p]
        out[~in_memory] = [found[p] for p in positions[~in_memory].tolist()]
        return out

    def _batches(self, want: np.ndarray):
        """(positions, WKB) of the wanted communes, batch by batch from the store, else the file."""
        assert self._rows is not None and self._path is not None, "a file read lazily has its path and rows"
        if self._store is not None and self._store.usable():
            at = np.flatnonzero(want)
            for found, wkb in self._store.read(self._rows[at]):
                yield at[found], wkb
            return
        position = np.full(int(self._rows.max()) + 1, -1, dtype=np.int64)
        position[self._rows] = np.arange(len(self._rows))
        parquet = _open_parquet(self._path)
        geom_col = _geo_meta(parquet)[0]
        start = 0
        for batch in _iter_batches(parquet, geom_col, [geom_col], self._batch_size):
            pos = position[start:start + batch.num_rows]
            start += batch.num_rows
            use = np.flatnonzero(pos >= 0)
            use = use[want[pos[use]]]
            if len(use):
                yield pos[use], batch.column(0).take(use).to_numpy(zero_copy_only=False)

    def frame(self, keep: np.ndarray | None = None, hold: np.ndarray | None = None) -> gpd.GeoDataFrame:
        """The loaded communes (or those where ``keep``) as a GeoDataFrame, like :func:`read_boundaries`
        (``hold``: see :meth:`load`)."""
        keep = self._loaded if keep is None else np.asarray(keep, dtype=bool)
        geoms = self.load(keep, hold)
        out = self.communes[keep].reset_index(drop=True)
        return gpd.GeoDataFrame(out, geometry=geoms, crs=self.crs)

    def _decode(self, wkb: np.ndarray) -> np.ndarray:
        geoms = shapely.from_wkb(wkb)
        return shapely.force_2d(geoms) if self._has_z else geoms

    def _read(self, todo: np.ndarray, keep_wkb: np.ndarray, hold: np.ndarray, passing: np.ndarray) -> None:
        """Decode the communes where ``todo`` and keep the WKB of those where ``keep_wkb``, in one
        read of the file; the others stay in the file. Of the decoded communes, those where
        ``hold`` are kept; the others are put in ``passing`` (communes order) and forgotten."""
        def put(positions: np.ndarray, geoms: np.ndarray) -> None:
            held = hold[positions]
            self._geoms[positions[held]] = geoms[held]
            self._loaded[positions[held]] = True
            self._released[positions[held]] = False
            passing[positions[~held]] = geoms[~held]

        if self._in_memory:
            idx = np.flatnonzero(todo & ~self._loaded)
            put(idx, self._decode(self._wkb[idx]))
            return
        for pos, wkb in self._batches(todo | keep_wkb):
            decode = todo[pos]
            if decode.any():
                put(pos[decode], self._decode(wkb[decode]))
            self._wkb[pos[~decode]] = wkb[~decode]
        for p, geom in self._repaired.items():     # repaired polygons replace the file's
            if todo[p]:
                one = np.empty(1, dtype=object)
                one[0] = geom
                put(np.array([p]), one)
            elif keep_wkb[p]:
                self._wkb[p] = shapely.to_wkb(geom)
        self._wkb[self._loaded] = None             # decoded ones need no WKB any more


IN_MEMORY_BYTES = 64 << 20  # GeoParquet geometry columns up to this size keep their WKB in memory (no 2nd read)
BATCH_BYTES = 4 << 20      # geometry bytes per batch when reading GeoParquet (bounds the reader's memory)


def _batch_rows(parquet: pq.ParquetFile, column: str, batch_size: int | None) -> int:
    """Rows per batch so that a batch holds about BATCH_BYTES of WKB (Arrow reads a batch's pages at once)."""
    if batch_size:
        return batch_size
    size = _column_bytes(parquet, column)
    return int(min(max(256, BATCH_BYTES * max(parquet.metadata.num_rows, 1) // max(size, 1)), 65_536))


def _column_bytes(parquet: pq.ParquetFile, column: str) -> int:
    """Uncompressed size of a column over all row groups."""
    meta = parquet.metadata
    index = parquet.schema_arrow.get_field_index(column)
    return sum(meta.row_group(i).column(index).total_uncompressed_size for i in range(meta.num_row_groups))


def _iter_batches(parquet: pq.ParquetFile, geom_col: str, columns: list[str], batch_size: int | None):
    """Batches of ``columns`` sized by :func:`_batch_rows`, read on the calling thread."""
    return parquet.iter_batches(batch_size=_batch_rows(parquet, geom_col, batch_size), columns=columns,
                                use_threads=False)


def _open_parquet(path: Path) -> pq.ParquetFile:
    # buffered stream reading: pages are read as needed, not the whole column chunk at once
    return pq.ParquetFile(path, buffer_size=4 << 20, pre_buffer=False)


def _magic(path: Path) -> bytes:
    """The first four bytes of a file (``PAR1`` for Parquet; gzip starts with 1f 8b)."""
    with open(path, "rb") as fh:
        return fh.read(4)


def _read_columns(parquet: pq.ParquetFile, geom_col: str) -> list[str]:
    """The :func:`_wanted` columns to read, the geometry column last."""
    return [c for c in _wanted(parquet.schema_arrow.names) if c != geom_col] + [geom_col]


def _wkb_geometry(parquet: pq.ParquetFile, geom_col: str, encoding: str) -> bool:
    """Whether the primary geometry column is present and WKB (else geopandas reads the file whole)."""
    return geom_col in parquet.schema_arrow.names and encoding.upper() == "WKB"


def _crs_of(crs_meta):
    """The pyproj CRS of the GeoParquet ``crs`` metadata (None if the file declares none)."""
    from pyproj import CRS

    return None if crs_meta is None else CRS.from_user_input(crs_meta)


def _geo_meta(parquet: pq.ParquetFile) -> tuple[str, str, object]:
    """Primary geometry column, its encoding and its CRS (GeoParquet metadata)."""
    import json

    meta = json.loads((parquet.schema_arrow.metadata or {}).get(b"geo", b"{}"))
    geom_col = meta.get("primary_column", "geometry")
    column = meta.get("columns", {}).get(geom_col, {})
    return geom_col, str(column.get("encoding", "WKB")), column.get("crs", "OGC:CRS84")


def scan_boundaries(path: Path, limits: Limits = DEFAULT_LIMITS, batch_size: int | None = None,
                    in_memory_bytes: int | None = None, store: Path | None = None) -> BoundarySet:
    """Check every commune of a boundary file like :func:`read_boundaries`, keep polygons for later.

    GeoParquet files in EPSG:4326 (the published boundaries) are read batch by batch and no
    polygon is kept; other files are read whole (all polygons loaded). ``in_memory_bytes``: the
    geometry column size up to which every WKB stays in memory (default ``IN_MEMORY_BYTES``).
    ``store``: a file of the parse cache where the polygons' WKB are written as they are checked
    (:mod:`.wkb_store`); the set then reads them back from there, and keeps none in memory.
    """
    path = Path(path)
    source = _lazy_source(path)
    if source is None:
        frame, report = read_boundaries(path, limits)
        return BoundarySet.from_frame(frame, report)
    parquet, geom_col, crs = source
    limit = IN_MEMORY_BYTES if in_memory_bytes is None else in_memory_bytes
    in_memory = store is None and _column_bytes(parquet, geom_col) <= limit
    with contextlib.ExitStack() as stack:   # a file the scan rejects leaves no store behind
        writer = stack.enter_context(StoreWriter(store)) if store is not None else None
        parts = _check_batches(parquet, path, geom_col, crs, batch_size, in_memory, limits, writer)
        scanned = _boundary_set(parts, path, crs, batch_size, in_memory)
    if writer is not None:
        scanned._store = writer.done
    return scanned


def _lazy_source(path: Path) -> tuple[pq.ParquetFile, str, object] | None:
    """The GeoParquet file, its geometry column and CRS when it can be read batch by batch (WKB
    geometries in EPSG:4326); None when the file must be read whole."""
    try:
        if _magic(path) != b"PAR1":
            return None
        parquet = _open_parquet(path)
        geom_col, encoding, crs_meta = _geo_meta(parquet)
        crs = _crs_of(crs_meta)
        lazy = _wkb_geometry(parquet, geom_col, encoding) and crs is not None and crs.to_epsg() == 4326
    except (OSError, ValueError) as err:
        raise InputFormatError(f"{path}: cannot read commune boundaries ({err})") from None
    return (parquet, geom_col, crs) if lazy else None


class _CheckedBatch(NamedTuple):
    """What is kept of one checked batch (its polygons are not, except the repaired ones)."""

    communes: pd.DataFrame      # tidy attributes, indexed by row in the file
    bounds: np.ndarray          # (n, 4) lon/lat bounds of those communes
    repaired: list[str]
    empty: list[str]
    sub_communal: list[str]
    fixed: dict[int, object]    # repaired polygons by row in the file
    has_z: bool
    wkb: np.ndarray | None      # the communes' WKB when the file is kept in memory


@dataclass
class _ScanParts:
    """The checked batches gathered in file order, and the number of rows read."""

    communes: list[pd.DataFrame] = field(default_factory=list)
    bounds: list[np.ndarray] = field(default_factory=list)
    wkbs: list[np.ndarray | None] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    sub_communal: list[str] = field(default_factory=list)
    fixed: dict[int, object] = field(default_factory=dict)
    has_z: bool = False
    rows_read: int = 0

    def add(self, batch: _CheckedBatch) -> None:
        self.wkbs.append(batch.wkb)
        self.communes.append(batch.communes)
        self.bounds.append(batch.bounds)
        self.repaired.extend(batch.repaired)
        self.empty.extend(batch.empty)
        self.sub_communal.extend(batch.sub_communal)
        self.fixed.update(batch.fixed)
        self.has_z = self.has_z or batch.has_z


def _check_batches(parquet: pq.ParquetFile, path: Path, geom_col: str, crs, batch_size: int | None,
                   in_memory: bool, limits: Limits, writer: StoreWriter | None = None) -> _ScanParts:
    """Every batch of the file checked by :func:`_check_batch`; each batch is dropped once checked
    (its WKB written by ``writer`` first, when given)."""
    columns = _read_columns(parquet, geom_col)
    parts = _ScanParts()
    try:
        # batches are checked on runtime.threads() threads (GEOS releases the GIL), as many in flight
        threads = runtime.threads()
        with ThreadPoolExecutor(threads) as pool:
            pending: deque = deque()
            keep_wkb = in_memory or writer is not None

            def add(first: int, count: int, checked: _CheckedBatch) -> None:
                if writer is not None and checked.wkb is not None:
                    writer.add(first, count, checked.communes.index.to_numpy(), checked.wkb)
                    if not in_memory:
                        checked = checked._replace(wkb=None)
                parts.add(checked)

            for batch in _iter_batches(parquet, geom_col, columns, batch_size):
                pending.append((parts.rows_read, batch.num_rows,
                                pool.submit(_check_batch, batch, parts.rows_read, path, geom_col, crs, keep_wkb,
                                            limits)))
                parts.rows_read += batch.num_rows
                if len(pending) >= threads:
                    first, count, checking = pending.popleft()
                    add(first, count, checking.result())
            while pending:
                first, count, checking = pending.popleft()
                add(first, count, checking.result())
    except (OSError, ValueError) as err:
        raise InputFormatError(f"{path}: cannot read commune boundaries ({err})") from None
    return parts


def _check_batch(batch, first: int, path: Path, geom_col: str, crs, in_memory: bool,
                 limits: Limits) -> _CheckedBatch:
    """One batch (``first``: its first row in the file) decoded, checked and repaired like
    :func:`read_boundaries`."""
    raw = batch.column(geom_col).to_numpy(zero_copy_only=False)
    geoms = shapely.from_wkb(raw)
    frame = gpd.GeoDataFrame(batch.drop_columns([geom_col]).to_pandas(), geometry=geoms, crs=crs)
    frame.index = pd.RangeIndex(first, first + len(frame))
    out, rep, emp, sub = _validate(frame, path, limits)
    out, rep, emp = _to_wgs84(out, path, rep, emp)
    g = out.geometry.values
    fixed = {}
    if rep:
        is_rep = out["code_insee"].isin(rep).to_numpy()
        fixed = dict(zip(out.index[is_rep], g[is_rep]))
    return _CheckedBatch(pd.DataFrame(out.drop(columns="geometry")), shapely.bounds(g), rep, emp, sub, fixed,
                         bool(shapely.has_z(geoms).any()), raw[out.index.to_numpy() - first] if in_memory else None)


def _boundary_set(parts: _ScanParts, path: Path, crs, batch_size: int | None, in_memory: bool) -> BoundarySet:
    """The scanned communes checked as a whole (extent, duplicates), sorted by code, with their report."""
    if not parts.rows_read:
        raise InputFormatError(f"{path}: no commune polygon in the file")
    communes = pd.concat(parts.communes)
    bounds = np.concatenate(parts.bounds)
    parts.communes.clear()      # the pieces are copies: drop them before sorting
    parts.bounds.clear()
    if not len(communes):
        raise InputFormatError(f"{path}: every commune geometry is empty")
    _check_extent((bounds[:, 0].min(), bounds[:, 1].min(), bounds[:, 2].max(), bounds[:, 3].max()), path, crs)
    rows = communes.index.to_numpy()
    keep, duplicates = _first_of_each_code(communes["code_insee"])
    communes = communes.iloc[keep].reset_index(drop=True)
    rows, bounds = rows[keep], bounds[keep]
    position = {int(r): i for i, r in enumerate(rows)}
    repaired_geoms = {position[int(r)]: g for r, g in parts.fixed.items() if int(r) in position}
    wkb = None
    if in_memory:
        wkbs = [w for w in parts.wkbs if w is not None]   # every batch keeps its WKB in memory then
        wkb = np.concatenate(wkbs)[keep] if wkbs else np.zeros(0, dtype=object)
        for p, g in repaired_geoms.items():
            wkb[p] = shapely.to_wkb(g)
    report = BoundaryReport(rows=len(communes), repaired=sorted(parts.repaired), empty=sorted(parts.empty),
                            duplicates=duplicates, crs=_crs_name(crs), sub_communal=sorted(parts.sub_communal))
    return BoundarySet(communes, report, bounds, crs, path=path, rows=rows, repaired=repaired_geoms,
                       has_z=parts.has_z, batch_size=batch_size, wkb=wkb)


def _first_of_each_code(codes: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Positions of the first row of each code, in code order, and the codes present more than once."""
    dup = codes.duplicated().to_numpy()
    duplicates = sorted(set(codes[dup]))
    order = np.argsort(codes.to_numpy()[~dup], kind="stable")
    return np.flatnonzero(~dup)[order], duplicates


def boundary_codes(path: Path) -> set[str] | None:
    """The commune codes of a GeoParquet boundary file from its attribute columns alone (fast).

    The same codes as :func:`scan_boundaries` unless some polygons are empty or degenerate, so a
    caller can start with them and check against the scan. None for other formats or any doubt.
    """
    try:
        if _magic(path) != b"PAR1":
            return None
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
        code_col = _pick(names, CODE_ALIASES)
        if code_col is None:
            return None
        extra = [c for c in (_pick(names, ["commune"]), _pick(names, ["type"])) if c and c != code_col]
        frame = parquet.read(columns=[code_col, *extra], use_threads=False).to_pandas()
        frame, _ = _drop_sub_communal(frame, code_col)
        codes = _normalise_codes(frame[code_col])
        return set(codes.tolist()) if codes.str.fullmatch(INSEE_RE.pattern).all() else None
    except Exception:   # noqa: BLE001 - only a shortcut: the scan reports any problem properly
        return None
