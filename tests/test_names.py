"""An identity has one name (issue #18): one name per id within a list, renames between the two
lists reported (the most recent list wins), names moving between ids stopped by the change guard."""

from __future__ import annotations

import pandas as pd
import pytest
from http_server import require_shared_data
from hypothesis import given
from hypothesis import strategies as st
from source_fixtures import COMMUNES, GROUPEMENTS

from pipeline.errors import CheckFailedError, InputFormatError
from pipeline.publish import guard
from pipeline.publish.changes import compare, label_changes, render_markdown
from pipeline.sources.names import moved_names, names_of, renames
from pipeline.sources.readers import read_ti_communes, read_ti_groupements

DATA = require_shared_data()
REAL_RENAMES = {"ti-4421", "ti-8412"}


def _list(rows: list[tuple[str, str]], source="l.csv") -> pd.DataFrame:
    frame = pd.DataFrame([{"id_ti": t, "lib_ti": n, "_line": i + 2} for i, (t, n) in enumerate(rows)])
    frame.attrs["source"] = source
    return frame


def test_an_id_under_two_names_in_one_list_is_refused_with_both_names_and_lines():
    frame = _list([("ti-0101", "Basse-Terre"), ("ti-0102", "X"), ("ti-0101", "Basse-Terre\xa0"),
                   ("ti-0101", "Cap Excellence")])
    with pytest.raises(InputFormatError, match=r"^l.csv: territory ti-0101 has two names: 'Basse-Terre' \(line 2\) "
                                               r"and 'Cap Excellence' \(line 5\); an id has one name$"):
        names_of(frame)


def test_a_real_list_with_one_id_given_a_second_name_is_refused(tmp_path):
    lines = (DATA / GROUPEMENTS).read_text(encoding="utf-8").splitlines(keepends=True)
    other = next(line for line in lines if line.startswith("ti-0102,"))
    lines.append("ti-0101,Guadeloupe," + other.split(",", 2)[2])
    path = tmp_path / "g.csv"
    path.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(InputFormatError, match=rf"{path}: territory ti-0101 has two names: 'Basse-Terre' \(line 2\) "
                                               rf"and 'Guadeloupe' \(line {len(lines)}\)"):
        read_ti_groupements(path)     # refused when the list is read


def test_the_real_lists_rename_two_territories_and_move_no_name():
    communes, groupements = (names_of(read(DATA / f)[0]) for read, f in ((read_ti_communes, COMMUNES),
                                                                         (read_ti_groupements, GROUPEMENTS)))
    assert {r["id_ti"] for r in renames(communes, groupements)} == REAL_RENAMES
    assert moved_names(communes, groupements) == []


@given(st.permutations([f"name {i}" for i in range(5)]))
def test_a_permutation_of_names_moves_every_name_it_changes(order):
    before = {f"ti-{i}": f"name {i}" for i in range(5)}
    after = dict(zip(before, order))
    changed = {t for t in before if before[t] != after[t]}
    assert len(moved_names(before, after)) == len(changed)
    assert {r["id_ti"] for r in renames(before, after)} == changed


def test_the_real_build_reports_the_renames_between_the_lists(real_build):
    renamed = real_build.membership.renamed_between_lists
    assert {r["id_ti"] for r in renamed} == REAL_RENAMES
    assert all((r["old_list"], r["new_list"]) == ("communes", "groupements") for r in renamed)
    names = dict(zip(real_build.territories["id_ti"], real_build.territories["lib_ti"]))
    assert all(names[r["id_ti"]] == r["new"] for r in renamed)       # the most recent list wins
    assert real_build.membership.names_moved_between_lists == []
    assert real_build.membership.summary()["renamed_between_lists"] == 2


def _frame(names: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame([{"id_ti": t, "lib_ti": n, "insee_communes": ["01001"], "siren_groupements": [],
                          "area_km2": 10.0} for t, n in names.items()])


def test_the_guard_stops_names_swapped_against_the_published_release_until_accepted(tmp_path):
    before = {"ti-0301": "Nord", "ti-0302": "Sud", "ti-0303": "Est"}
    path = tmp_path / "t.parquet"
    _frame(before).to_parquet(path)
    renamed = guard.check_changes(_frame({**before, "ti-0303": "Ouest"}), path, [], False, "2023-2027")
    assert renamed["changes"] == {}                                    # a rename is not stopped
    swapped = {**before, "ti-0301": "Sud", "ti-0302": "Nord"}
    with pytest.raises(CheckFailedError, match=r"2 names moved between territories: 'Nord' ti-0301 -> ti-0302, "
                                               r"'Sud' ti-0302 -> ti-0301; if these changes"):
        guard.check_changes(_frame(swapped), path, [], False, "2023-2027")
    report = guard.check_changes(_frame(swapped), path, [], True, "2023-2027")
    assert report["accepted"] is True


def test_the_guard_stops_names_moved_between_the_lists_even_on_a_first_build():
    moved = ["'Nord' ti-0301 -> ti-0302"]
    with pytest.raises(CheckFailedError, match=r"1 names moved between the lists: 'Nord' ti-0301 -> ti-0302"):
        guard.check_changes(_frame({"ti-0302": "Nord"}), None, [], False, "2023-2027", moved)


def test_changes_report_renames_between_lists_and_labels_changed():
    rows = {"ti-1": {"id_ti": "ti-1", "lib_ti": "A", "insee_communes": [], "area_km2": 1.0}}
    lock = {"ti": {"file": "a-2023.csv", "cog": 2023, "release": "2024-07-04", "date": "2024-07-04"}}
    before = {"build_id": "b1", "inputs": [{"source": "ti", "sha256": "ab", "cog": 2023}], "lock": lock}
    after = {"build_id": "b2", "phase": "2023-2027", "inputs": [{"source": "ti", "sha256": "ab", "cog": 2023}],
             "lock": {"ti": {**lock["ti"], "file": "a-2025.csv"}},
             "extra": {"renamed_between_lists": [{"id_ti": "ti-1", "old": "Z", "new": "A", "old_list": "communes",
                                                  "new_list": "groupements"}]}}
    report = compare(before, rows, after, rows)
    assert report["sources"] == [] and report["labels_changed"][0]["new_file"] == "a-2025.csv"
    assert report["renamed_between_lists"][0]["id_ti"] == "ti-1"
    text = render_markdown(report)
    assert "ti: file a-2023.csv -> a-2025.csv" in text and "- ti-1: 'Z' (communes) -> 'A' (groupements)" in text
    assert label_changes({"x": {"sha256": "1", "file": "a"}}, {"x": {"sha256": "2", "file": "b"}}) == []


@pytest.mark.parametrize("rel", [GROUPEMENTS, COMMUNES])
def test_a_duplicated_row_under_another_name_is_refused_not_merged_away(tmp_path, rel):
    lines = (DATA / rel).read_text(encoding="utf-8").splitlines(keepends=True)
    lines.append(lines[1].replace("Basse-Terre", "Guadeloupe", 1))     # the same (id, code), another name
    path = tmp_path / "list.csv"
    path.write_text("".join(lines), encoding="utf-8")
    reader = read_ti_groupements if rel == GROUPEMENTS else read_ti_communes
    with pytest.raises(InputFormatError, match=rf"{path}: territory ti-0101 has two names: 'Basse-Terre' \(line 2\) "
                                               rf"and 'Guadeloupe' \(line {len(lines)}\)"):
        reader(path)
