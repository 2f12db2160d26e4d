"""Membership tables on small synthetic memberships: every ``how``, shared communes, CSV safety."""

from __future__ import annotations

import pandas as pd

from pipeline.publish import membership_tables as mt
from pipeline.reconcile.membership import Membership
from pipeline.sources.readers import AdminRef


def _membership(perimeter_source: str) -> Membership:
    members = pd.DataFrame({
        "id_ti": ["ti-1", "ti-1", "ti-1", "ti-1", "ti-2", "ti-2"],
        "insee_com": ["01001", "01002", "01003", "01004", "01001", "01005"],
        "codes_list": [["01001"], ["01009"], ["01003"], ["01004"], ["01001"], ["01005"]],
        "status": ["matched", "reconciled", "reconciled", "matched", "matched", "matched"],
    })
    territories = pd.DataFrame({"id_ti": ["ti-1", "ti-2"], "lib_ti": ["=Un", "Deux, et trois"],
                                "siren_groupements": [["200000001"], ["200000002"]],
                                "perimeter_source": [perimeter_source] * 2})
    return Membership(
        members=members, territories=territories, list_cog=2023, boundary_cog=2024,
        reconciled=[{"id_ti": "ti-1", "code_list": "01009", "codes_boundary": ["01002"], "how": "merger"},
                    {"id_ti": "ti-1", "code_list": "01003", "codes_boundary": ["01003", "01006"], "how": "split"}],
        absorbed_outside=[{"id_ti": "ti-1", "successor": "01004", "absorbed": ["01007"]}])


def _admin(cog: int) -> AdminRef:
    codes = ["01001", "01002", "01003", "01004", "01005", "01009"]
    communes = pd.DataFrame({"code": codes, "nom": [f"@Nom {c}" if c == "01005" else f"Nom {c}" for c in codes],
                             "departement": "01", "region": "84", "siren": [f"2101{c}" for c in codes],
                             "population": 1, "zone": "metro"})
    members = pd.DataFrame({"siren_groupement": ["200000001"] * 4 + ["200000002", "200000002", "200000009"],
                            "nom_groupement": ["CC Un"] * 4 + ["CA Deux", "CA Deux", "EPT Neuf"],
                            "type_groupement": ["CC"] * 4 + ["CA", "CA", "EPT"],
                            "insee_com": ["01001", "01009", "01003", "01004", "01001", "01005", "01005"]})
    return AdminRef(cog=cog, communes=communes, members=members)


def test_every_reason_and_a_commune_in_two_territories():
    m = _membership("groupements")
    refs = mt.references(m, _admin(2023), _admin(2024))
    table = mt.commune_table(m, refs, "2023-2027").set_index(["id_ti", "insee_com"])
    assert len(table) == len(m.members)   # 01001 is in both territories: two rows
    assert table.loc[("ti-1", "01002"), ["how", "from_codes"]].tolist() == ["successor", "01009"]
    assert table.loc[("ti-1", "01003"), ["how", "from_codes"]].tolist() == ["split_part", "01003"]
    assert table.loc[("ti-1", "01004"), ["how", "absorbed_outside"]].tolist() == ["successor_absorbing_outside", "01007"]
    assert table.loc[("ti-1", "01001"), ["how", "siren_groupement"]].tolist() == ["groupement", "200000001"]
    assert table.loc[("ti-2", "01001"), "siren_groupement"] == "200000002"
    assert table.loc[("ti-2", "01005"), ["siren_epci", "nom_epci"]].tolist() == ["200000009", "EPT Neuf"]  # EPT first
    assert table.loc[("ti-1", "01002"), "siren_groupement"] == "200000001"   # through its listed code 01009
    listed = mt.commune_table(_membership("communes"), refs, "2023-2027").set_index(["id_ti", "insee_com"])
    assert listed.loc[("ti-1", "01001"), ["how", "siren_groupement"]].tolist() == ["listed", ""]
    groupements = mt.groupement_table(m, refs, "2023-2027")
    assert groupements[["siren_groupement", "id_ti", "n_communes_list"]].values.tolist() == [
        ["200000001", "ti-1", 4], ["200000002", "ti-2", 2]]


def test_csv_is_spreadsheet_safe_and_reads_back_like_the_parquet(tmp_path):
    m = _membership("groupements")
    table = mt.commune_table(m, mt.references(m, _admin(2023), _admin(2024)), "2023-2027")
    mt.write_parquet(table, tmp_path / "t.parquet", {"build_id": "b"})
    mt.write_csv(table, tmp_path / "t.csv")
    text = (tmp_path / "t.csv").read_text(encoding="utf-8")
    assert text.splitlines()[0] == ",".join(mt.COMMUNE_COLUMNS)
    assert "'=Un" in text and "'@Nom 01005" in text and '"Deux, et trois"' in text
    assert mt.verify(tmp_path / "t.parquet", tmp_path / "t.csv", table)["rows"] == len(table)
    assert mt.parquet_metadata(tmp_path / "t.parquet") == {"build_id": "b"}
    back = pd.read_csv(tmp_path / "t.csv", dtype=str, keep_default_na=False)
    assert list(back["insee_com"]) == list(table["insee_com"])   # leading zeros kept
