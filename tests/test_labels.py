"""Labels are claims (issue #18): the dates of file names, API fields and locks are real and not in the
future, and the COG year a list is labelled with is the one its codes fit."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest
from http_server import require_shared_data
from hypothesis import given
from hypothesis import strategies as st
from source_fixtures import COMMUNES, GROUPEMENTS, scratch_mirror

from pipeline.errors import InputFormatError, ReconciliationError
from pipeline.settings import Settings
from pipeline.sources.catalog import load_catalog
from pipeline.sources.labels import FUTURE_DAYS, checked_date, cog_misfit, groupement_misfit
from pipeline.sources.resolve import fetch_one, resolve_source
from pipeline.steps import sequence as core

DATA = require_shared_data()
PHASE = "2023-2027"


def _settings(mirror, tmp_path, **kw) -> Settings:
    return Settings(mirror_dir=mirror, raw_dir=tmp_path / "raw", output_dir=tmp_path / "out", **kw)


@given(st.dates(min_value=date(1900, 1, 1), max_value=datetime.now(UTC).date()))
def test_a_real_past_date_is_kept(day):
    assert checked_date(day.strftime("%Y%m%d"), "x") == day.isoformat()
    assert checked_date(day.isoformat() + "T09:18:48", "x") == day.isoformat()


@pytest.mark.parametrize("text", ["99999999", "20250230", "20251301", "2025-02-30", "abc", "2025010"])
def test_a_date_that_is_not_a_calendar_date_is_refused(text):
    with pytest.raises(InputFormatError, match=rf"^where: date '{text}' is not a real calendar date"):
        checked_date(text, "where")


def test_a_date_in_the_future_is_refused_past_the_tolerance():
    soon = datetime.now(UTC).date() + timedelta(days=FUTURE_DAYS)
    assert checked_date(soon.strftime("%Y%m%d"), "x") == soon.isoformat()
    late = soon + timedelta(days=1)
    with pytest.raises(InputFormatError, match=rf"^x: date {late.isoformat()} lies in the future"):
        checked_date(late.strftime("%Y%m%d"), "x")


@pytest.mark.parametrize("stamp", ["99999999", "20250231", "20991231"])
def test_a_mirror_file_with_an_impossible_date_is_refused_naming_it(tmp_path, stamp):
    name = f"territoires_industrie/liste-ti-com2023-{stamp}.csv"
    mirror = scratch_mirror(tmp_path, DATA, {name: (DATA / COMMUNES).read_bytes()})
    settings = _settings(mirror, tmp_path)
    catalog = load_catalog(settings)
    with pytest.raises(InputFormatError, match=rf"^source ti2023_communes: mirror file {mirror / name}: date"):
        resolve_source(catalog.source("ti2023_communes"), settings, catalog)


def test_a_lock_whose_date_is_not_real_is_refused(tmp_path):
    settings = _settings(DATA, tmp_path)
    catalog = load_catalog(settings)
    entry = fetch_one(settings, catalog, "ti2023_communes").lock
    lock = tmp_path / "lock.json"
    lock.write_text(json.dumps({"lock": {"ti2023_communes": {**entry, "date": "9999-99-99"}}}), encoding="utf-8")
    locked = _settings(DATA, tmp_path, lock_path=lock)
    with pytest.raises(InputFormatError, match=r"^source ti2023_communes: the lock .*: date '9999-99-99' is not a real"):
        fetch_one(locked, load_catalog(locked), "ti2023_communes")


# ---------------------------------------------------------------- COG year against the codes
@given(st.sets(st.sampled_from("abcdefgh"), min_size=1), st.sets(st.sampled_from("abcdefgh")))
def test_a_list_fits_its_claim_unless_another_year_knows_more_of_its_codes(codes, other):
    known = {2023: set("abcd"), 2025: other}
    why = cog_misfit(codes, 2023, known)
    fits_claim = codes <= known[2023]
    better = len(codes - other) < len(codes - known[2023])
    assert (why is None) == (fits_claim or not better)


@given(st.sets(st.sampled_from("abcdefgh")), st.dictionaries(st.sampled_from([2023, 2024, 2025]),
                                                           st.sets(st.sampled_from("abcdefgh")), min_size=1))
def test_a_year_is_judged_by_the_listed_codes_it_knows_only(codes, known):
    # check_labels keeps, per year, only the listed codes that year knows (not its 35,000 codes)
    for claimed in (2023, 2024, 2025):
        assert cog_misfit(codes, claimed, {y: codes & k for y, k in known.items()}) == \
            cog_misfit(codes, claimed, known)


def test_groupement_fit_prefers_the_claim_on_ties():
    assert groupement_misfit({2023: 5, 2025: 5}, 2025) is None
    assert "its content is of COG 2023" in groupement_misfit({2023: 4, 2025: 5}, 2025)


def _reconcile(tmp_path, added: dict[str, bytes]):
    mirror = scratch_mirror(tmp_path, DATA, added)
    settings = _settings(mirror, tmp_path)
    catalog = load_catalog(settings)
    fetched = core.fetch_sources(settings, catalog, core.phase_sources(catalog, PHASE))
    files = core.phase_files(catalog, PHASE, fetched)
    return core.reconcile_phase(settings, catalog, PHASE, files, core.boundary_codes(files[core.BOUNDARIES].path))


@pytest.mark.parametrize(("name", "body", "claimed", "fits"), [
    ("liste-ti-grpt2025-20250101.csv", GROUPEMENTS, 2025, 2023),    # the issue's case
    ("liste-ti-grpt2024-20250101.csv", GROUPEMENTS, 2024, 2023),
    ("liste-ti-com2025-20250101.csv", COMMUNES, 2025, 2023),
])
def test_a_list_whose_label_and_codes_disagree_is_refused(tmp_path, name, body, claimed, fits):
    source = "ti2023_groupements" if "grpt" in name else "ti2023_communes"
    with pytest.raises(ReconciliationError, match=rf"^{PHASE}: source {source} \(.*{name}\) is labelled COG {claimed} "
                                                  rf"but .*its content is of COG {fits}; the label and the content"):
        _reconcile(tmp_path, {f"territoires_industrie/{name}": (DATA / body).read_bytes()})


def test_a_new_label_that_the_content_fits_builds(tmp_path):
    renamed = "territoires_industrie/liste-ti-grpt2023-20250101.csv"
    lists = _reconcile(tmp_path, {renamed: (DATA / GROUPEMENTS).read_bytes()})
    assert lists.membership.summary()["territories"] == 183 and not lists.membership.errors


def test_the_same_content_under_a_new_label_is_a_change_not_nothing(tmp_path, monkeypatch):
    from pipeline import CONTRACT_VERSION, __version__
    from pipeline.code_version import build_code_version
    from pipeline.publish import manifest as manifests
    from pipeline.publish import swap
    from pipeline.steps.since_published import changes_since_manifest

    label = {"file": "ti2023_groupements_anct_20240704.csv", "cog": 2023, "release": "2024-07-04",
             "date": "2024-07-04", "how": "newest"}
    published = {"pipeline_version": __version__, "contract_version": CONTRACT_VERSION,
                 "extra": {"code_fingerprint": build_code_version()}, "outputs": [],
                 "inputs": [{"source": "ti", "sha256": "ab"}], "lock": {"ti": label}}
    monkeypatch.setattr(manifests, "read_manifest", lambda path: published)   # the published manifest, as read
    monkeypatch.setattr(swap, "mismatched", lambda out, manifest: [])
    settings = Settings(output_dir=tmp_path)
    phase = "2018-2022"
    assert changes_since_manifest(settings, phase, {"ti": "ab"}, {"ti": {**label, "how": "pinned"}}) == []
    relabelled = {**label, "file": "liste-ti-grpt2025-20250101.csv", "cog": 2025, "date": "2025-01-01"}
    assert changes_since_manifest(settings, phase, {"ti": "ab"}, {"ti": relabelled}) == [
        "input ti: same content, new label: file ti2023_groupements_anct_20240704.csv -> "
        "liste-ti-grpt2025-20250101.csv, cog 2023 -> 2025, date 2024-07-04 -> 2025-01-01"]


def test_the_issues_relabelled_groupement_list_stops_the_cli_in_one_line_and_nothing_changes(published_out, tmp_path):
    """The 2023 groupement list renamed liste-ti-grpt2025-20250101.csv: refused even with --force."""
    import contextlib
    import io
    import shutil

    from pipeline.cli import main

    mirror = scratch_mirror(tmp_path / "m", DATA, {f"{GROUPEMENTS.rsplit('/', 1)[0]}/liste-ti-grpt2025-20250101.csv":
                                                   (DATA / GROUPEMENTS).read_bytes()})
    out = tmp_path / "data_out"
    shutil.copytree(published_out, out, symlinks=True)
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.name != ".publish.lock"}
    for extra in ([], ["--force"]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["build", "--offline", "--mirror", str(mirror), "--output", str(out), *extra])
        last = err.getvalue().strip().splitlines()[-1]
        assert code == 2 and "Traceback" not in err.getvalue(), err.getvalue()[-2000:]
        assert last.startswith("error: 2023-2027: source ti2023_groupements (") and "is labelled COG 2025 but" in last
        assert "same content, new label: file ti2023_groupements_anct_20240704.csv -> liste-ti-grpt2025" in err.getvalue()
        assert {p: p.read_bytes() for p in sorted(out.rglob("*"))
                if p.is_file() and p.name != ".publish.lock"} == before
