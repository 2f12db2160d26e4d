"""Coverage cleaning and dissolve: synthetic edge cases and the real sample of three departements."""

from __future__ import annotations

import geopandas as gpd
import pandas as pd
import pytest
import shapely
from shapely.geometry import box

from pipeline.boundaries import read_boundaries
from pipeline.geometry import dissolve, holes, zone_crs


def _communes(rows, crs=2154):
    frame = gpd.GeoDataFrame(
        {"code_insee": [r[0] for r in rows], "departement": [r[1] for r in rows]},
        geometry=[r[2] for r in rows], crs=crs)
    return frame.to_crs(4326)


def test_gap_inside_a_territory_is_filled_and_enclave_is_kept():
    x0, y0 = 700_000, 6_600_000
    ring = shapely.Polygon(box(x0, y0, x0 + 3000, y0 + 3000).exterior,
                           [box(x0 + 1000, y0 + 1000, x0 + 2000, y0 + 2000).exterior.coords[::-1]])
    # West half and east half of the ring are two member communes; the centre square is an enclave
    # commune outside the territory; a 50 m x 50 m gap in the west half is covered by nobody.
    west = ring.intersection(box(x0, y0, x0 + 1500, y0 + 3000)).difference(box(x0 + 200, y0 + 200, x0 + 250, y0 + 250))
    east = ring.intersection(box(x0 + 1500, y0, x0 + 3000, y0 + 3000))
    enclave = box(x0 + 1000, y0 + 1000, x0 + 2000, y0 + 2000)
    communes = _communes([("01001", "01", west), ("01002", "01", east), ("01003", "01", enclave)])
    members = pd.DataFrame({"id_ti": ["ti-1", "ti-1"], "insee_com": ["01001", "01002"]})
    out, stats = dissolve(communes, members)
    assert len(out) == 1 and out.geom_type.iloc[0] == "MultiPolygon" and out.is_valid.all()
    assert stats.gaps_filled == 1 and stats.gaps_filled_m2 == pytest.approx(2500, rel=0.02)
    kept = holes(out.geometry.iloc[0])
    assert len(kept) == 1                              # the enclave, not the gap
    # area: 9 km2 minus the 1 km2 enclave, in Lambert-93
    assert out["area_km2"].iloc[0] == pytest.approx(8.0, rel=1e-3)


def test_overlapping_communes_are_cleaned_before_dissolve():
    x0, y0 = 700_000, 6_600_000
    a = box(x0, y0, x0 + 1010, y0 + 1000)        # overlaps b by 10 m
    b = box(x0 + 1000, y0, x0 + 2000, y0 + 1000)
    c = box(x0 + 2000, y0, x0 + 3000, y0 + 1000)
    communes = _communes([("01001", "01", a), ("01002", "01", b), ("01003", "01", c)])
    members = pd.DataFrame({"id_ti": ["ti-1", "ti-2", "ti-2"], "insee_com": ["01001", "01002", "01003"]})
    out, _ = dissolve(communes, members)
    t1, t2 = out.set_index("id_ti").geometry
    # after cleaning the two territories share a border but do not overlap
    overlap = gpd.GeoSeries([t1.intersection(t2)], crs=4326).to_crs(2154).area.iloc[0]
    assert overlap < 1.0
    assert out["area_km2"].sum() == pytest.approx(3.0, rel=1e-3)


def test_overseas_communes_use_their_own_metric_crs():
    assert zone_crs("971") == 5490 and zone_crs("974") == 2975 and zone_crs("976") == 4471
    assert zone_crs("973") == 2972 and zone_crs("2A") == 2154
    sq = box(650_000, 1_780_000, 652_000, 1_781_000)      # 2 km2 in UTM 20N (Guadeloupe)
    communes = _communes([("97101", "971", sq)], crs=5490)
    out, stats = dissolve(communes, pd.DataFrame({"id_ti": ["ti-0101"], "insee_com": ["97101"]}))
    assert out["area_km2"].iloc[0] == pytest.approx(2.0, rel=1e-4)
    assert "EPSG:5490" in stats.zones


def test_real_sample_dissolves_into_valid_multipolygons(mirror):
    communes, _ = read_boundaries(mirror / "boundaries" / "communes_cog2024_sample_dep01_dep23_dep971.geojson")
    ti = pd.read_csv(mirror / "territoires_industrie" / "ti2023_communes_anct_20231107.csv", dtype=str)
    members = ti[ti["insee_com"].isin(set(communes["code_insee"]))].rename(columns={})[["id_ti", "insee_com"]]
    out, stats = dissolve(communes, members)
    assert set(out["id_ti"]) == set(members["id_ti"])
    assert (out.geom_type == "MultiPolygon").all() and out.is_valid.all()
    assert {"EPSG:2154", "EPSG:5490"} <= set(stats.zones)
    ratio = out["area_km2"] / out["communes_area_km2"]
    assert ((ratio - 1).abs() < 0.005).all()


def test_gap_between_two_territories_goes_to_the_longest_border():
    x0, y0 = 700_000, 6_600_000
    # ti-1 (west, 2 km tall) and ti-2 (east, 2 km tall) around a 30 m wide slit; ti-1's commune
    # wraps the slit on three sides (longer shared border), so the slit goes to ti-1.
    slit = box(x0 + 1000, y0 + 500, x0 + 1030, y0 + 1500)
    west = box(x0, y0, x0 + 1030, y0 + 2000).difference(slit)
    # same vertices on both sides of the shared edge (as in a real coverage)
    east = shapely.Polygon([(x0 + 1030, y0), (x0 + 2000, y0), (x0 + 2000, y0 + 2000), (x0 + 1030, y0 + 2000),
                            (x0 + 1030, y0 + 1500), (x0 + 1030, y0 + 500)])
    communes = _communes([("01001", "01", west), ("01002", "01", east)])
    members = pd.DataFrame({"id_ti": ["ti-1", "ti-2"], "insee_com": ["01001", "01002"]})
    out, stats = dissolve(communes, members)
    assert stats.gaps_between_filled == 1 and stats.gaps_between_m2 == pytest.approx(30_000, rel=0.02)
    areas = out.set_index("id_ti")["area_km2"]
    assert areas["ti-1"] == pytest.approx(1.03 * 2, rel=1e-3) and areas["ti-2"] == pytest.approx(0.97 * 2, rel=1e-3)
    assert all(len(holes(g)) == 0 for g in out.geometry)


def test_large_hole_between_territories_is_not_filled():
    x0, y0 = 700_000, 6_600_000
    # a 2 km x 2 km area missing between two territories (e.g. a commune without polygon)
    missing = box(x0 + 1000, y0 + 1000, x0 + 3000, y0 + 3000)
    west = box(x0, y0, x0 + 2000, y0 + 4000).difference(missing)
    east = box(x0 + 2000, y0, x0 + 4000, y0 + 4000).difference(missing)
    communes = _communes([("01001", "01", west), ("01002", "01", east)])
    members = pd.DataFrame({"id_ti": ["ti-1", "ti-2"], "insee_com": ["01001", "01002"]})
    out, stats = dissolve(communes, members)
    assert stats.gaps_between_filled == 0 and stats.gaps_between_left == 1
    assert out["area_km2"].sum() == pytest.approx(16 - 4, rel=1e-3)
