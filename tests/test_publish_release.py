"""Release mechanics: atomic swap, failures (a writer raising, a full disk), retention, phases.

Uses a subset of the realistic territories (Guadeloupe, Martinique, Guyane, Mayotte, La Reunion
plus Centre-Val de Loire) and, since these tests are about the release mechanics, draws the preview
once per module and reuses its bytes (the preview itself is tested in test_publish_formats.py).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import geopandas as gpd
import jsonschema
import pytest
from publish_fixtures import cached_territories

from pipeline import atomic
from pipeline.errors import PipelineError, PublishError
from pipeline.publish import STABLE_NAMES, publish_release, release_dir, stable_paths, webmap
from pipeline.publish import geojson as geojson_mod
from pipeline.publish import gpkg as gpkg_mod
from pipeline.publish import preview as preview_mod
from pipeline.publish import release as release_mod
from pipeline.settings import ASSETS_DIR, Settings

INPUTS = [{"source": "s", "origin": "/m/s.csv", "sha256": "0" * 64, "size": 1, "release": "2023-11-07"}]


@pytest.fixture(scope="module")
def small(mirror) -> gpd.GeoDataFrame:
    frame = cached_territories(mirror)
    keep = frame["id_ti"].str.startswith(("ti-01", "ti-02", "ti-03", "ti-04", "ti-06", "ti-24"))
    return frame[keep].reset_index(drop=True)


@pytest.fixture(scope="module")
def preview_png(small) -> bytes:
    return preview_mod.render_preview_bytes(small)


@pytest.fixture(autouse=True)
def _preview_drawn_once(preview_png, monkeypatch):
    def render_preview(territories, path, title=None, projected=None):
        path.write_bytes(preview_png)
        return path

    monkeypatch.setattr(preview_mod, "render_preview", render_preview)


def _publish(frame, out, build_id, **kw):
    settings = Settings(output_dir=out, keep_releases=kw.pop("keep", 5))
    return publish_release(frame, settings, build_id=build_id, inputs=INPUTS, checks=[], **kw)


def _snapshot(out) -> dict[str, bytes]:
    """Every stable file (not the releases) as bytes."""
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".publish.lock"}


def _assert_untouched_and_readable(out, before, build_id):
    assert _snapshot(out) == before
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["build_id"] == "good"
    assert len(gpd.read_parquet(out / STABLE_NAMES["geoparquet"])) == manifest["outputs"][0]["rows"]
    assert not release_dir(out, build_id).exists()  # the failed release folder was cleaned
    leftovers = [p.name for p in out.rglob("*") if "staging" in p.name or p.name.endswith(atomic.TMP_SUFFIX)]
    assert leftovers == []


def test_publish_writes_every_stable_file_and_the_release(small, tmp_path):
    manifest = _publish(small, tmp_path, "good")
    for name, path in stable_paths(tmp_path).items():
        if name.startswith("membership_"):   # written only from a build's Membership (test_publish_real_build.py)
            assert not path.exists(), name
            continue
        assert path.is_file(), name
        assert (release_dir(tmp_path, "good") / path.name).read_bytes() == path.read_bytes()
        assert (tmp_path / "phase=2023-2027" / path.name).read_bytes() == path.read_bytes()
    assert manifest["outputs"][0]["rows"] == len(small)


def test_a_failing_writer_leaves_previous_files_byte_identical(small, tmp_path, monkeypatch):
    _publish(small, tmp_path, "good")
    before = _snapshot(tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("simulated writer bug")

    monkeypatch.setattr(gpkg_mod, "write_gpkg", broken)
    with pytest.raises(PublishError) as info:
        _publish(small.iloc[::-1], tmp_path, "bad")
    message = str(info.value)
    assert "territoires-industrie.gpkg" in message and "simulated writer bug" in message
    assert "previous files left unchanged" in message
    assert isinstance(info.value, PipelineError)
    _assert_untouched_and_readable(tmp_path, before, "bad")


def test_disk_full_while_writing_leaves_previous_files_byte_identical(small, tmp_path, monkeypatch):
    _publish(small, tmp_path, "good")
    before = _snapshot(tmp_path)
    real = geojson_mod.write_geojson

    def full_disk(frame, path, *args, **kwargs):
        if "regional" in str(path):  # a late output: six files already written
            with open(path, "wb") as fh:
                fh.write(b'{"type":"FeatureCollection","features":[')
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(frame, path, *args, **kwargs)

    monkeypatch.setattr(geojson_mod, "write_geojson", full_disk)
    with pytest.raises(PublishError, match="No space left on device") as info:
        _publish(small, tmp_path, "full")
    assert "territoires-industrie-regional.geojson" in str(info.value)
    _assert_untouched_and_readable(tmp_path, before, "full")


def test_disk_full_while_staging_the_swap_leaves_previous_files_byte_identical(small, tmp_path, monkeypatch):
    """The temporary copies beside the stable paths can fail too; nothing is replaced then."""
    _publish(small, tmp_path, "good")
    before = _snapshot(tmp_path)
    real = shutil.copyfile
    calls = []

    def copy_then_full(src, dst):        # the third copy fills the disk half-way through
        calls.append(Path(src).name)
        if len(calls) == 3:
            Path(dst).write_bytes(Path(src).read_bytes()[:100])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real(src, dst)

    monkeypatch.setattr(atomic.shutil, "copyfile", copy_then_full)
    with pytest.raises(PublishError, match="No space left on device") as info:
        _publish(small, tmp_path, "full2")
    assert calls[2] in str(info.value)
    _assert_untouched_and_readable(tmp_path, before, "full2")


def test_a_failing_verification_is_reported_and_nothing_swapped(small, tmp_path, monkeypatch):
    _publish(small, tmp_path, "good")
    before = _snapshot(tmp_path)
    real = gpkg_mod.gpkg_frame
    monkeypatch.setattr(gpkg_mod, "gpkg_frame", lambda frame: real(frame).iloc[:-1])  # drops a row
    with pytest.raises(PublishError, match=r"territoires-industrie\.gpkg.*features instead of"):
        _publish(small, tmp_path, "short")
    _assert_untouched_and_readable(tmp_path, before, "short")


def test_a_successful_publish_replaces_every_stable_file(small, tmp_path):
    _publish(small, tmp_path, "good")
    first = _snapshot(tmp_path)
    manifest = _publish(small.iloc[:-1], tmp_path, "second")
    second = _snapshot(tmp_path)
    same = {webmap.SCRIPT_NAME, webmap.STYLE_NAME}     # the page's own code: the same in every build
    assert all(first[name] != second[name] for name in first if not name.endswith(".png") and name not in same)
    assert all(first[name] == second[name] for name in same)
    assert set(first) == set(second)
    assert json.loads(second["manifest.json"])["build_id"] == "second"
    assert manifest["outputs"][0]["rows"] == len(small) - 1


def _validate(doc: dict, schema_name: str) -> None:
    schema = json.loads((ASSETS_DIR / "schemas" / schema_name).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(doc)


def _release_ids(out) -> list[str]:
    return sorted(p.name for p in (out / "releases").iterdir() if p.is_dir())


def test_retention_keeps_the_latest_of_each_content(small, tmp_path):
    for i in range(4):   # the same content four times: the latest and the `keep` latest stay
        _publish(small, tmp_path, f"b{i}", keep=2)
    assert _release_ids(tmp_path) == ["b2", "b3"]
    assert json.loads((tmp_path / "manifest.json").read_text())["build_id"] == "b3"
    _publish(small.iloc[:-1], tmp_path, "c0", keep=1)   # new content: b3 stays, the latest of the first
    _publish(small.iloc[:-1], tmp_path, "c1", keep=1)   # same content as c0: c0 goes
    assert _release_ids(tmp_path) == ["b3", "c1"]
    index = json.loads((tmp_path / "releases" / "index.json").read_text(encoding="utf-8"))
    assert [r["build_id"] for r in index["releases"]] == ["c1", "b3"]
    _validate(index, "releases-index.schema.json")
    report = json.loads((tmp_path / "changes.json").read_text(encoding="utf-8"))   # c1 against c0
    assert report["first_release"] is False and report["previous_build_id"] == "c0"
    _validate(report, "changes.schema.json")
    with pytest.raises(jsonschema.ValidationError):
        _validate(dict(report, territories_added=None), "changes.schema.json")
    for r in index["releases"]:
        for f in r["files"]:
            assert (tmp_path / f["path"]).stat().st_size == f["bytes"], f


def test_retention_counts_releases_per_phase(small, tmp_path):
    other = small.assign(phase="2018-2022")
    for i in range(3):
        _publish(small, tmp_path, f"a{i}", keep=2)
        _publish(other, tmp_path, f"o{i}", keep=2, phase="2018-2022")
    _publish(other, tmp_path, "a2", keep=2, phase="2018-2022")  # same build id as a 2023-2027 release
    releases = tmp_path / "releases"
    assert _release_ids(tmp_path) == ["a1", "a2", "o2"]
    assert (releases / "a2" / "phase=2023-2027" / "manifest.json").is_file()  # the 2023-2027 part of a2 is kept
    assert (releases / "a2" / "phase=2018-2022" / "manifest.json").is_file()
    assert not (releases / "a1" / "phase=2018-2022").exists()


def _unpublished_copy(out, of: str, build_id: str, built_at: str) -> None:
    """A release folder with a valid manifest (``of``'s, renamed) that was never published
    (what a publish killed before its swap leaves)."""
    manifest = json.loads((release_dir(out, of) / "manifest.json").read_text(encoding="utf-8"))
    folder = release_dir(out, build_id)
    folder.mkdir(parents=True)
    manifest.update(build_id=build_id, built_at=built_at, release_path=f"releases/{build_id}/phase=2023-2027")
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_retention_never_deletes_the_current_release(small, tmp_path):
    _publish(small, tmp_path, "old", keep=5)
    # a release folder of the same content that looks newer than the one being published
    _unpublished_copy(tmp_path, "old", "zz-future", "2999-01-01T00:00:00Z")
    _publish(small, tmp_path, "now", keep=1)
    # a folder built after the release being published was never published (a publish killed
    # mid-way): it is removed, never kept in place of a published release
    assert "now" in _release_ids(tmp_path) and "zz-future" not in _release_ids(tmp_path)


def test_other_phase_is_published_under_its_own_folder(small, tmp_path):
    _publish(small, tmp_path, "b1")
    main_before = _snapshot(tmp_path)
    other = small.assign(phase="2018-2022")
    manifest = _publish(other, tmp_path, "b1", phase="2018-2022")
    assert _snapshot(tmp_path) == main_before  # the 2023-2027 files are untouched
    for name, path in stable_paths(tmp_path, "2018-2022").items():
        if name.startswith("membership_"):
            continue
        assert path.parent == tmp_path / "phase=2018-2022" and path.is_file(), name
    assert {o["path"] for o in manifest["outputs"]} == {
        f"phase=2018-2022/{STABLE_NAMES[n]}" for n in STABLE_NAMES if n != "manifest" and not n.startswith("membership_")}
    assert manifest["release_path"] == "releases/b1/phase=2018-2022"
    assert (tmp_path / "releases" / "b1" / "phase=2023-2027" / "manifest.json").is_file()  # the 2023-2027 release is kept


def test_bad_input_is_refused_with_a_clear_message(small, tmp_path):
    cases = [
        (small.to_crs(2154), "EPSG:4326"),
        (small.drop(columns="regions"), "regions"),
        (small.assign(id_ti="ti-0101"), "unique"),
        (small.assign(phase="2018-2022"), "phase"),
        (small.assign(bbox=1), "bbox"),
    ]
    for frame, words in cases:
        with pytest.raises(PublishError, match=words):
            _publish(frame, tmp_path, "x")
    with pytest.raises(PublishError, match="build id"):
        _publish(small, tmp_path, "../escape")
    assert not (tmp_path / "manifest.json").exists()


def test_the_same_build_id_cannot_be_published_twice(small, tmp_path):
    _publish(small, tmp_path, "once")
    before = _snapshot(tmp_path)
    with pytest.raises(PublishError, match="already exists"):
        _publish(small, tmp_path, "once")
    assert _snapshot(tmp_path) == before


# ---------------------------------------------------------------- the swap as one verified set (pipeline.publish.swap)
from pipeline.publish import swap as swap_mod  # noqa: E402


def _leftovers(out) -> list[str]:
    return [p.name for p in out.rglob("*") if p.name.endswith(atomic.TMP_SUFFIX) or "staging" in p.name]


def test_a_directory_where_a_stable_file_should_be_stops_before_any_rename(small, tmp_path):
    _publish(small, tmp_path, "good")
    gpkg = tmp_path / STABLE_NAMES["gpkg"]
    gpkg.unlink()
    gpkg.mkdir()
    before = _snapshot(tmp_path)
    with pytest.raises(PublishError, match=rf"{gpkg} is a directory; move it away"):
        _publish(small.iloc[:-1], tmp_path, "blocked")
    assert _snapshot(tmp_path) == before and _leftovers(tmp_path) == []
    assert not release_dir(tmp_path, "blocked").exists()
    gpkg.rmdir()
    assert _publish(small.iloc[:-1], tmp_path, "after")["build_id"] == "after"   # works again


def test_a_rename_failing_mid_swap_puts_every_previous_file_back(small, tmp_path, monkeypatch):
    _publish(small, tmp_path, "good")
    before = _snapshot(tmp_path)
    real, renamed, restored = os.replace, [], []

    def fourth_fails(src, dst):
        if str(src).endswith(atomic.TMP_SUFFIX) and "releases" not in Path(dst).parts:
            if len(renamed) < 4:         # the swap's renames onto stable paths, until the fourth fails
                renamed.append(dst)
                if len(renamed) == 4:
                    raise OSError(errno.EIO, os.strerror(errno.EIO), str(dst))
            else:                        # then the backups put back
                restored.append(dst)
        return real(src, dst)

    monkeypatch.setattr(swap_mod.os, "replace", fourth_fails)
    with pytest.raises(PublishError, match=r"could not replace .*the previous files were put back"):
        _publish(small.iloc[:-1], tmp_path, "broken")
    monkeypatch.undo()
    assert set(renamed[:3]) <= set(restored)                 # the three files renamed were put back
    assert _snapshot(tmp_path) == before and _leftovers(tmp_path) == []
    assert not release_dir(tmp_path, "broken").exists()     # a release never published is not kept
    assert _publish(small.iloc[:-1], tmp_path, "after")["build_id"] == "after"


def test_a_set_mixed_by_a_killed_swap_is_seen_and_repaired(small, tmp_path):
    from pipeline.publish.repair import repair_published
    from pipeline.steps.since_published import changes_since_manifest

    _publish(small, tmp_path, "good")
    released = _snapshot(tmp_path)
    parquet = tmp_path / STABLE_NAMES["geoparquet"]
    data = bytearray(parquet.read_bytes())
    data[100] ^= 0xFF                                        # same size, other bytes (a half-done swap)
    parquet.write_bytes(bytes(data))
    settings = Settings(output_dir=tmp_path)
    reasons = changes_since_manifest(settings, "2023-2027", {"s": "0" * 64})
    assert f"published file missing or altered: {parquet}" in reasons
    assert repair_published(settings) == [f"published file {parquet.name} did not match manifest.json "
                                          "(an interrupted publish): restored from its release folder"]
    assert _snapshot(tmp_path) == released and _leftovers(tmp_path) == []
    assert repair_published(settings) == []


def test_a_mixed_set_without_an_intact_release_is_said_and_the_next_publish_replaces_it(small, tmp_path):
    from pipeline.publish.repair import repair_published

    _publish(small, tmp_path, "good")
    (tmp_path / STABLE_NAMES["geojson"]).write_bytes(b"{}")
    (release_dir(tmp_path, "good") / STABLE_NAMES["geojson"]).write_bytes(b"{}")
    [line] = repair_published(Settings(output_dir=tmp_path))
    assert "cannot repair them" in line and line.endswith("the next publish replaces the whole set")
    assert _leftovers(tmp_path) == []
    _publish(small, tmp_path, "next")
    assert swap_mod.mismatched(tmp_path, json.loads((tmp_path / "manifest.json").read_text())) == []


@pytest.mark.parametrize("name", [".publish.lock", "releases"])
def test_a_lock_or_releases_link_out_of_the_output_folder_is_refused(small, tmp_path, name):
    out, outside = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    (out / name).symlink_to(outside if name == "releases" else outside / "keep.txt")
    with pytest.raises(PublishError, match=rf"{out / name} is a symbolic link; refused"):
        _publish(small, out, "b1")
    assert [p.name for p in outside.iterdir()] == ["keep.txt"] and (outside / "keep.txt").read_text() == "keep"
    (out / name).unlink()
    assert _publish(small, out, "b1")["build_id"] == "b1"


def test_retention_never_deletes_through_a_link(small, tmp_path):
    out, outside = tmp_path / "out", tmp_path / "elsewhere"
    _publish(small, out, "b1")
    (outside / "phase=2023-2027").mkdir(parents=True)
    (outside / "phase=2023-2027" / "manifest.json").write_text(json.dumps({"built_at": "2000-01-01T00:00:00Z"}))
    (out / "releases" / "a-link").symlink_to(outside)
    _publish(small, out, "b2", keep=1)
    assert (outside / "phase=2023-2027" / "manifest.json").is_file()
    assert "a-link" in [p.name for p in (out / "releases").iterdir()]


def test_a_release_never_published_is_not_counted_as_kept(small, tmp_path):
    _publish(small, tmp_path, "a", keep=2)
    _publish(small, tmp_path, "b", keep=2)
    _unpublished_copy(tmp_path, "b", "zz-killed", "2999-01-01T00:00:00Z")   # a publish killed after its release folder
    _publish(small, tmp_path, "c", keep=2)
    assert _release_ids(tmp_path)[-2:] == ["b", "c"] and "zz-killed" not in _release_ids(tmp_path)


def test_an_unwritable_output_folder_is_one_clear_error(small, tmp_path, monkeypatch):
    _publish(small, tmp_path, "good")
    before = _snapshot(tmp_path)
    real = os.open

    def read_only(path, flags, *args, **kwargs):
        if str(path).startswith(str(tmp_path)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(release_mod.os, "open", read_only)
    with pytest.raises(PublishError, match=r"cannot open the lock file .*Read-only file system.*is the folder writable"):
        _publish(small, tmp_path, "ro")
    monkeypatch.undo()
    assert _snapshot(tmp_path) == before
