"""Published releases under hostile conditions (issue #18): retention in publish order, the index
repaired at start-up and validated, manifest paths confined to the output folder, no temp file
left by a full disk during the swap."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import geopandas as gpd
import pytest
from publish_fixtures import cached_territories

from pipeline import atomic
from pipeline.errors import PublishError
from pipeline.publish import STABLE_NAMES, publish_release, release_dir
from pipeline.publish import preview as preview_mod
from pipeline.publish import release as release_mod
from pipeline.publish import swap as swap_mod
from pipeline.publish.repair import repair_published
from pipeline.settings import Settings

INPUTS = [{"source": "s", "origin": "/m/s.csv", "sha256": "0" * 64, "size": 1, "release": "2023-11-07"}]


@pytest.fixture(scope="module")
def small(mirror) -> gpd.GeoDataFrame:
    frame = cached_territories(mirror)
    return frame[frame["id_ti"].str.startswith(("ti-01", "ti-02", "ti-03"))].reset_index(drop=True)


@pytest.fixture(autouse=True)
def _preview_drawn_once(monkeypatch):
    def render_preview(territories, path, title=None, projected=None):
        path.write_bytes(b"\\x89PNG stand-in")
        return path

    monkeypatch.setattr(preview_mod, "render_preview", render_preview)
    monkeypatch.setattr(preview_mod, "verify_png", lambda path: {"format": "PNG", "media_type": "image/png"})


@pytest.fixture(scope="module")
def published_once(small, tmp_path_factory) -> Path:
    """An output folder with one published release "a" (copied by each test that changes it)."""
    out = tmp_path_factory.mktemp("once") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(preview_mod, "render_preview", lambda t, p, title=None, projected=None: p.write_bytes(b"png"))
        mp.setattr(preview_mod, "verify_png", lambda path: {"format": "PNG", "media_type": "image/png"})
        _publish(small, out, "a")
    return out


def _publish(frame, out, build_id, keep=5):
    return publish_release(frame, Settings(output_dir=out, keep_releases=keep), build_id=build_id, inputs=INPUTS,
                           checks=[])


def _copy(published_once, tmp_path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(published_once, out, symlinks=True)
    return out


def _index(out) -> list[tuple[int, str]]:
    doc = json.loads((out / "releases" / "index.json").read_text(encoding="utf-8"))
    return [(r.get("sequence"), r["build_id"]) for r in doc["releases"]]


def _stable(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".publish.lock"}


def test_a_release_built_in_the_future_never_makes_retention_delete_a_published_one(small, tmp_path, monkeypatch):
    out = tmp_path / "out"
    with monkeypatch.context() as mp:        # a clock ahead (or a restored backup): built_at in the future
        mp.setattr(release_mod, "utc_now", lambda: "2999-01-01T00:00:00Z")
        _publish(small, out, "ahead", keep=1)
    _publish(small.iloc[:-1], out, "later", keep=1)       # published after it, by a clock put right
    assert (release_dir(out, "ahead") / "manifest.json").is_file()
    assert _index(out) == [(2, "later"), (1, "ahead")]
    _publish(small.iloc[:-1], out, "last", keep=1)        # same content as "later": "later" goes, not "ahead"
    assert sorted(p.name for p in (out / "releases").iterdir() if p.is_dir()) == ["ahead", "last"]
    assert _index(out) == [(3, "last"), (1, "ahead")]


def test_a_kill_right_after_the_swap_leaves_an_index_the_next_run_rebuilds(small, published_once, tmp_path):
    out = _copy(published_once, tmp_path)
    index_before = (out / "releases" / "index.json").read_bytes()
    _publish(small.iloc[:-1], out, "b")
    (out / "releases" / "index.json").write_bytes(index_before)   # killed before the index was written
    assert [b for _, b in _index(out)] == ["a"]
    lines = repair_published(Settings(output_dir=out))
    assert lines == ["releases/index.json did not match the release folders (an interrupted publish, or an index "
                     "written before publish sequences): rebuilt from them"]
    assert _index(out) == [(2, "b"), (1, "a")]
    assert repair_published(Settings(output_dir=out)) == []


@pytest.mark.parametrize(("damage", "message"), [
    ("schema", r"release index .*index.json is invalid at releases: 'x' is not of type 'array'"),
    ("device", r"release index .*index.json is not a regular file; refused"),
    ("json", r"release index .*index.json is not valid UTF-8 JSON"),
])
def test_an_index_that_is_not_valid_is_one_line_and_nothing_changes(published_once, tmp_path, damage, message):
    out = _copy(published_once, tmp_path)
    index = out / "releases" / "index.json"
    index.unlink()
    if damage == "device":
        index.symlink_to("/dev/zero")
    else:
        index.write_text('{"generated_at": "2024-01-01T00:00:00Z", "retention": "", "releases": "x"}'
                         if damage == "schema" else '{"releases": [')
    before = _stable(out)
    with pytest.raises(PublishError, match=message) as info:
        repair_published(Settings(output_dir=out))
    assert "\n" not in str(info.value) and "rebuilt from the release folders" in str(info.value)
    assert _stable(out) == before


@pytest.mark.parametrize(("key", "value"), [
    ("path", "../escape/x.parquet"),
    ("path", "{escape}/abs.parquet"),
    ("release_path", "{escape}/x.parquet"),
])
def test_paths_in_a_manifest_never_lead_the_repair_out_of_the_output_folder(published_once, tmp_path, key, value):
    out = _copy(published_once, tmp_path)
    escape = tmp_path / "escape"
    escape.mkdir()
    (escape / "x.parquet").write_bytes(b"keep")
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    manifest["outputs"][0][key] = value.format(escape=escape)
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (out / STABLE_NAMES["geoparquet"]).write_bytes(b"altered")       # something for the repair to do
    [line] = repair_published(Settings(output_dir=out))
    assert ("must be relative, normalised and inside" in line and "refused" in line) or "does not match '^releases/'" in line
    assert sorted(p.name for p in escape.iterdir()) == ["x.parquet"] and (escape / "x.parquet").read_bytes() == b"keep"


def test_a_full_disk_while_backing_up_the_stable_files_leaves_no_temp_file(small, published_once, tmp_path,
                                                                            monkeypatch):
    out = _copy(published_once, tmp_path)
    before = _stable(out)

    def no_link(src, dst):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    def copy_then_full(src, dst):          # the backup copy fills the disk half-way through
        Path(dst).write_bytes(Path(src).read_bytes()[:10])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    monkeypatch.setattr(atomic.os, "link", no_link)
    monkeypatch.setattr(atomic.shutil, "copy2", copy_then_full)
    with pytest.raises((PublishError, OSError)):
        _publish(small.iloc[:-1], out, "full")
    assert [p.name for p in out.rglob(f"*{atomic.TMP_SUFFIX}")] == []
    assert _stable(out) == before
    assert swap_mod.mismatched(out, json.loads((out / "manifest.json").read_text(encoding="utf-8"))) == []


def test_an_index_written_before_sequences_is_numbered_in_its_order(published_once, tmp_path):
    out = _copy(published_once, tmp_path)
    path = out / "releases" / "index.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    for entry in doc["releases"]:
        del entry["sequence"]
    path.write_text(json.dumps(doc), encoding="utf-8")
    assert len(repair_published(Settings(output_dir=out))) == 1
    assert _index(out) == [(1, "a")]


def test_retention_never_removes_the_release_the_stable_files_come_from(small, published_once, tmp_path):
    from pipeline.publish import retention

    out = _copy(published_once, tmp_path)
    _publish(small, out, "b")                            # same content as "a"; the stable files are b's
    # whatever the order says (here b ranked below a, and keep=1), b stays: the stable files come from it
    order = {("a", "2023-2027"): 3, ("b", "2023-2027"): 2}
    assert retention.apply_retention(out, 1, "a", "2023-2027", order) == []
    assert (release_dir(out, "b") / "manifest.json").is_file()
