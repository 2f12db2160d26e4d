"""The change guard (pipeline.publish.guard): implausible changes against the published release stop
the build, unless accepted on purpose for one build."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
from http_server import link_or_copy
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from pipeline.cli import parser, settings_from_args
from pipeline.errors import CheckFailedError
from pipeline.publish import guard
from pipeline.publish.layout import stable_paths
from pipeline.sources.catalog import load_catalog
from pipeline.steps import sequence as steps

GROUPEMENTS = "territoires_industrie/ti2023_groupements_anct_20240704.csv"


def frame(rows: dict[str, tuple[list[str], list[str], float]]) -> pd.DataFrame:
    return pd.DataFrame([{"id_ti": t, "insee_communes": c, "siren_groupements": g, "area_km2": a}
                         for t, (c, g, a) in rows.items()])


BEFORE = {"ti-1": (["01001", "01002", "01003", "01004"], ["200000001"], 100.0),
          "ti-2": (["02001", "02002"], ["200000002", "200000003"], 50.0),
          "ti-3": (["03001"], [], 10.0)}


def published(tmp_path, rows=BEFORE):
    path = tmp_path / "territoires-industrie.parquet"
    frame(rows).to_parquet(path)
    return path


def test_the_same_territories_pass(tmp_path):
    report = guard.check_changes(frame(BEFORE), published(tmp_path), [], False, "2023-2027")
    assert report["changes"] == {} and report["accepted"] is False


def test_small_changes_and_new_territories_pass(tmp_path):
    after = dict(BEFORE, **{"ti-1": (["01001", "01002", "01003", "01004", "01005"], ["200000001"], 105.0),
                            "ti-4": (["04001"], [], 3.0)})
    report = guard.check_changes(frame(after), published(tmp_path), [], False, "2023-2027")
    assert report["changes"] == {"territories added": ["ti-4"]}


def test_implausible_changes_stop_the_build_listing_them(tmp_path):
    after = {"ti-1": (["01001", "01002"], ["200000001"], 100.0),       # half its communes lost
             "ti-2": (["02001", "02002"], [], 50.0)}                   # its groupements lost; ti-3 lost
    with pytest.raises(CheckFailedError) as err:
        guard.check_changes(frame(after), published(tmp_path), [], False, "2023-2027")
    assert str(err.value) == (
        "2023-2027: change guard: the build differs implausibly from the published release, nothing "
        "published: 1 territories lost: ti-3; 1 communes lost: ti-1 (2 of 4 communes); 1 groupements lost: "
        "ti-2 (2 of 2 groupements); if these changes are intended, publish this build with "
        "--accept-changes (or TI_ACCEPT_CHANGES=1)")


def test_an_area_change_past_the_threshold_stops_the_build(tmp_path):
    after = dict(BEFORE, **{"ti-3": (["03001"], [], 12.0)})
    with pytest.raises(CheckFailedError, match=r"1 area changed: ti-3 \(10.0 -> 12.0 km2\)"):
        guard.check_changes(frame(after), published(tmp_path), [], False, "2023-2027")


def test_accepted_changes_are_reported(tmp_path):
    after = {k: v for k, v in BEFORE.items() if k != "ti-3"}
    report = guard.check_changes(frame(after), published(tmp_path), [], True, "2023-2027")
    assert report["accepted"] is True and report["changes"] == {"territories lost": ["ti-3"]}


def test_accept_changes_flag_and_setting():
    args = parser().parse_args(["build", "--accept-changes"])
    assert settings_from_args(args, env={}).accept_changes is True
    assert settings_from_args(parser().parse_args(["build"]), env={"TI_ACCEPT_CHANGES": "1"}).accept_changes
    assert not settings_from_args(parser().parse_args(["build"]), env={}).accept_changes


# ---------------------------------------------------------------- on the real data
def test_a_truncated_groupement_list_is_not_published(real_build, mirror, mirror_settings, tmp_path):
    """The newest list cut at a line boundary: its missing territories would silently take their
    perimeter from the older commune list (every blocking check passes)."""
    lines = (mirror / GROUPEMENTS).read_bytes().splitlines(keepends=True)
    scratch = tmp_path / "mirror"
    for f in mirror.rglob("*"):
        if f.is_file():
            target = scratch / f.relative_to(mirror)
            target.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(f, target)
    (scratch / GROUPEMENTS).unlink()
    (scratch / GROUPEMENTS).write_bytes(b"".join(lines[:len(lines) * 2 // 3]))
    settings = dataclasses.replace(mirror_settings, mirror_dir=scratch, output_dir=tmp_path / "out")
    catalog = load_catalog(settings)
    fetched = steps.fetch_sources(settings, catalog, steps.phase_sources(catalog, "2023-2027"))
    parsed = mirror_settings.raw_dir / "parsed"
    membership = steps.phase_membership(catalog, "2023-2027", fetched, steps.load_admin(catalog, fetched, 2023, parsed),
                                        steps.load_changes(fetched, parsed), set(real_build.membership.members["insee_com"]))
    inputs = [steps.inputs_entry(r, catalog) for r in fetched.values()]
    truncated = dataclasses.replace(real_build, membership=membership, inputs=inputs)
    ids = sorted(set(real_build.territories["id_ti"]) - set(membership.territories.loc[
        membership.territories["perimeter_source"] == "groupements", "id_ti"]))
    assert 40 < len(ids) < 100
    with pytest.raises(CheckFailedError, match=rf"{len(ids)} missing from the most recent list: {ids[0]}, .*"
                                               rf"--accept-changes") as err:
        steps.publish_build(truncated, settings)
    assert "nothing published" in str(err.value)
    assert not stable_paths(settings.output_dir)["manifest"].exists()
    assert guard.guard_build(real_build, settings)["changes"] == {}    # the whole list passes


def test_lost_territories_against_the_published_release_stop_until_accepted(real_build, mirror_settings, tmp_path):
    settings = dataclasses.replace(mirror_settings, output_dir=tmp_path / "out", plans_path=None)
    steps.publish_build(real_build, settings)
    stable = list(stable_paths(settings.output_dir).values())
    before = {p: p.read_bytes() for p in stable}
    gone = sorted(real_build.territories["id_ti"])[:3]
    smaller = dataclasses.replace(real_build, territories=real_build.territories[
        ~real_build.territories["id_ti"].isin(gone)].reset_index(drop=True))
    with pytest.raises(CheckFailedError, match=rf"3 territories lost: {', '.join(gone)}; if these changes"):
        steps.publish_build(smaller, settings)
    assert {p: p.read_bytes() for p in stable} == before
    manifest = steps.publish_build(smaller, dataclasses.replace(settings, accept_changes=True))
    assert manifest["extra"]["change_guard"]["accepted"] is True
    assert manifest["extra"]["change_guard"]["changes"] == {"territories lost": gone}


@hypothesis_settings(max_examples=40, deadline=None)
@given(before=st.lists(st.one_of(st.none(), st.booleans()), min_size=3, max_size=3),
       after=st.lists(st.one_of(st.none(), st.booleans()), min_size=3, max_size=3))
def test_a_flip_between_new_and_continuing_stops_the_build_unless_accepted(tmp_path_factory, before, after):
    """is_new comes from the 2018-2022 list, which is history: a flip means that list changed
    (a damaged copy would otherwise change which territories are new, silently)."""
    tmp = tmp_path_factory.mktemp("g")
    old, new = frame(BEFORE), frame(BEFORE)
    old["is_new"], new["is_new"] = pd.array(before, dtype="boolean"), pd.array(after, dtype="boolean")
    old.to_parquet(tmp / "territoires-industrie.parquet")
    flipped = [t for t, b, a in zip(old["id_ti"], before, after) if b is not None and a is not None and b != a]
    if not flipped:
        assert guard.check_changes(new, tmp / "territoires-industrie.parquet", [], False, "2023-2027")["changes"] == {}
        return
    with pytest.raises(CheckFailedError, match=rf"{len(flipped)} new/continuing status flipped: {flipped[0]} "):
        guard.check_changes(new, tmp / "territoires-industrie.parquet", [], False, "2023-2027")
    report = guard.check_changes(new, tmp / "territoires-industrie.parquet", [], True, "2023-2027")
    assert report["accepted"] and len(report["changes"]["new/continuing status flipped"]) == len(flipped)
