"""CSV reading helpers (pipeline.sources.csv_tables): cleaning, code normalisation, error order, line numbers.

Bad-input cases seen through the list readers are in test_inputs_bad.py; these pin what the
column-wise reading must keep: the same values as ``clean_text`` / ``normalise_insee`` one by one,
and the first problem of the file reported, in file order.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.errors import InputFormatError
from pipeline.sources.csv_tables import clean_text, normalise_insee, normalise_insee_series, read_csv


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


@pytest.mark.parametrize("values", [
    ["01001", "2A004", "97101", "75056"],                                  # all well formed
    ["01001", "1001", "1002.0", "01 003", "2a004", " 2B033\xa0", "", "ABCDE", None, float("nan"), "٠١٠٠١"],
])
def test_normalise_insee_series_is_normalise_insee_of_each_value(values):
    series = pd.Series(values, dtype=object, index=range(10, 10 + len(values)), name="insee_com")
    expected = series.map(normalise_insee)
    got = normalise_insee_series(series)
    pd.testing.assert_series_equal(got, expected)
    assert got.tolist()[:2] == ["01001", "2A004" if values[1] == "2A004" else "01001"]


def test_values_are_cleaned_like_clean_text(tmp_path):
    raw = ["a\u3000b", "\u3000a", "a  b", "a\u202fb", "x\u200b", "\ufeffy", "plain", " z ", "a\x0bb"]
    path = write(tmp_path, "id,name,other\n" + "".join(f'{i},"{v}",same\n' for i, v in enumerate(raw)))
    frame = read_csv(path, ["id", "name", "other"])
    assert frame["name"].tolist() == [clean_text(v) for v in raw]
    assert frame["name"].tolist()[:5] == ["a\u3000b", "a", "a b", "a b", "x"]
    assert frame["other"].tolist() == ["same"] * len(raw) and frame["_line"].tolist() == list(range(2, 11))


@pytest.mark.parametrize("content, columns, message", [
    # a header without a required column, then a broken quote: the header is named
    ('a,b\n1,2\n"3,4\n', ["a", "c"], r":1: missing column\(s\) c;"),
    # a row with too many fields (line 3) before a broken quote (line 5)
    ('a,b\n1,2\n1,2,3\n1,2\n"3,4\n', ["a", "b"], r":3: 3 fields but the header \(line 1\) has 2"),
    # the broken quote first
    ('a,b\n"1"x,2\n1,2,3\n', ["a", "b"], r":2: malformed CSV \(',' expected after '\"'\)"),
    # a broken quote with no data row before it: the CSV error, not "no data row"
    ('\na,b\n"1\n', ["a", "b"], r":3: malformed CSV"),
], ids=["missing-column", "too-many-fields", "broken-quote", "quote-before-any-row"])
def test_the_first_problem_in_file_order_is_reported(tmp_path, content, columns, message):
    path = write(tmp_path, content)
    with pytest.raises(InputFormatError, match=message):
        read_csv(path, columns)


def test_line_numbers_after_records_spanning_lines_and_blank_lines(tmp_path):
    path = write(tmp_path, 'a,b\n\n1,"x\ny"\n2,z\n\n3,"\n\n"\n4,w\n')
    frame = read_csv(path, ["a", "b"])
    assert frame[["a", "_line"]].values.tolist() == [["1", 3], ["2", 5], ["3", 7], ["4", 10]]
    assert frame["b"].tolist() == ["x y", "z", "", "w"]


def test_separator_sniffed_after_a_long_blank_start(tmp_path):
    path = write(tmp_path, "\n" * 70_000 + "a;b\n1;2\n")
    frame = read_csv(path, ["a", "b"])
    assert frame[["a", "b", "_line"]].values.tolist() == [["1", "2", 70_002]]


def test_short_rows_are_padded_and_empty_rows_dropped(tmp_path):
    path = write(tmp_path, "a,b,c\n1\n,,\n2,,x\n , \xa0,\n")
    frame = read_csv(path, ["a", "b"], ["c"])
    assert frame.drop(columns="_line").values.tolist() == [["1", "", ""], ["2", "", "x"]]
    assert frame["_line"].tolist() == [2, 4]


# ---------------------------------------------------------------- one encoding per file, bounded reading
HEADER = "id_ti,lib_ti,insee_com\n"
UTF8_ROWS = "ti-5301,Laval Agglomération,53130\nti-5302,Pays de Château-Gontier,53062\n"
CP1252_ROW = "ti-8412,Pays de Gex – Terre Valserhône,01001\n".encode("cp1252")


@pytest.mark.parametrize("head, where", [(b"", "line 2 is UTF-8"), (b"\xef\xbb\xbf", "line 2 is UTF-8")])
def test_a_utf8_file_with_one_windows_1252_line_is_refused(tmp_path, head, where):
    path = tmp_path / "mixed.csv"
    path.write_bytes(head + (HEADER + UTF8_ROWS).encode() + CP1252_ROW)
    with pytest.raises(InputFormatError) as err:
        read_csv(path, ["id_ti", "insee_com"], ["lib_ti"])
    assert str(err.value) == (f"{path}:4: byte 0x96 is not UTF-8 but the file {where}: it mixes encodings; "
                              "save the whole file as UTF-8")


def test_a_bom_followed_by_windows_1252_text_is_refused(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + HEADER.encode() + CP1252_ROW)
    with pytest.raises(InputFormatError, match=rf"^{path}:2: .* the file starts with a UTF-8 BOM: it mixes"):
        read_csv(path, ["id_ti", "insee_com"], ["lib_ti"])


def test_a_whole_windows_1252_file_is_still_read(tmp_path):
    path = tmp_path / "cp.csv"
    path.write_bytes((HEADER + UTF8_ROWS).encode("cp1252") + CP1252_ROW)
    frame = read_csv(path, ["id_ti", "insee_com"], ["lib_ti"])
    assert frame["lib_ti"].tolist() == ["Laval Agglomération", "Pays de Château-Gontier",
                                        "Pays de Gex – Terre Valserhône"]


def test_a_gzip_bomb_is_refused_without_expanding_it(tmp_path):
    import gzip
    import tracemalloc

    from pipeline.sources.csv_tables import read_bytes

    path = tmp_path / "bomb.csv.gz"
    path.write_bytes(gzip.compress(HEADER.encode() + b"0" * (64 << 20), compresslevel=9))
    tracemalloc.start()
    try:
        with pytest.raises(InputFormatError, match=r"gzip data expands past 8 MiB \(raise TI_MAX_TABLE_MB"):
            read_bytes(path, limit=8 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 24 << 20          # the 64 MiB were never held
    assert len(read_bytes(path, limit=80 << 20)) == len(HEADER) + (64 << 20)


@pytest.mark.parametrize("target, message", [("/dev/zero", "it is not a regular file"), ("DIR", "it is a directory")])
def test_only_regular_files_are_read(tmp_path, target, message):
    path = tmp_path if target == "DIR" else Path(target)
    with pytest.raises(InputFormatError, match=rf"^{path}: cannot read file: {message}$"):
        read_csv(path, ["id_ti"])


def test_foreign_content_in_a_message_is_quoted_and_cut_short(tmp_path):
    secret = "root:$6$saltsaltsalt$" + "h" * 80 + ":19000:0:99999:7:::"
    path = tmp_path / "shadow"
    path.write_text(secret + "\n" + "daemon:*:19000:0:99999:7:::\n")
    with pytest.raises(InputFormatError) as err:
        read_csv(path, ["id_ti", "insee_com"])
    message = str(err.value)
    assert secret not in message and ":19000:0:99999" not in message
    assert "found 'root:$6$saltsaltsalt$hhhhhhhhhhhhhhhhhhh'..." in message
    assert len(message) < 300
