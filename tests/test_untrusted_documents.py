"""Locks, manifests and the release index are read back bounded and validated before use (issue #18).

Each damaged or hostile document ends in one line and exit 2 (no traceback), and the previous
published files stay byte-identical.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from pipeline import documents
from pipeline.cli import main

SHA = "a" * 64
ENTRY = {"source": "ti2023_communes", "mode": "mirror", "mirror": "territoires_industrie/x.csv", "cog": 2023,
         "sha256": SHA, "checksum": None, "date": "2023-11-07", "release": "2023-11-07"}


def run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, err.getvalue()


def _build_with_lock(mirror: Path, tmp_path: Path, lock: Path) -> tuple[int, str]:
    return run(["build", "--offline", "--mirror", str(mirror), "--output", str(tmp_path / "out"), "--lock", str(lock)])


@pytest.mark.parametrize(("change", "where"), [
    ({"cog": "abc"}, "lock/ti2023_communes/cog"),
    ({"cog": None}, "lock/ti2023_communes/cog"),
    ({"checksum": "zzz"}, "lock/ti2023_communes/checksum"),
    ({"checksum": {"type": "sha1", "value": "zzz"}}, "lock/ti2023_communes/checksum"),
    ({"sha256": "zzz"}, "lock/ti2023_communes/sha256"),
    ({"phase": "../../../tmp/evil"}, "phase"),
])
def test_a_lock_with_a_bad_field_is_one_line_exit_2(mirror, tmp_path, change, where):
    entry = {k: v for k, v in {**ENTRY, **change}.items() if k != "phase"}
    lock = tmp_path / "manifest.json"
    lock.write_text(json.dumps({"phase": change.get("phase", "2023-2027"), "lock": {"ti2023_communes": entry}}))
    code, err = _build_with_lock(mirror, tmp_path, lock)
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"lock file {lock} is invalid at {where}" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.parquet"))


@pytest.mark.parametrize("mirror_path", ["../../../etc/passwd", "/etc/passwd", "a/./b.csv"])
def test_a_lock_whose_mirror_path_leaves_the_mirror_is_refused_as_it_is_read(mirror, tmp_path, mirror_path):
    lock = tmp_path / "manifest.json"
    lock.write_text(json.dumps({"phase": "2023-2027", "lock": {"ti2023_communes": {**ENTRY, "mirror": mirror_path}}}))
    code, err = _build_with_lock(mirror, tmp_path, lock)
    assert code == 2 and err.count("\n") == 1, err
    assert f"lock file {lock}: ti2023_communes: mirror: path {mirror_path!r} must be relative, normalised" in err


@pytest.mark.parametrize("kind", ["device", "directory", "huge"])
def test_a_lock_that_is_not_a_small_regular_file_is_refused_unread(mirror, tmp_path, monkeypatch, kind):
    if kind == "device":
        lock = Path("/dev/zero")
    elif kind == "directory":
        lock = tmp_path
    else:
        monkeypatch.setattr(documents, "MAX_DOCUMENT_BYTES", 1000)
        lock = tmp_path / "big.json"
        lock.write_text(json.dumps({"lock": {"ti2023_communes": ENTRY}, "pad": "x" * 2000}))
    monkeypatch.setenv("TI_LOCK", str(lock))
    code, err = run(["build", "--offline", "--mirror", str(mirror), "--output", str(tmp_path / "out")])
    assert code == 2 and err.count("\n") == 1, err
    expected = {"device": "is not a regular file", "directory": "is a directory", "huge": "larger than"}[kind]
    assert f"lock file {lock}" in err and expected in err


@pytest.mark.parametrize("relative", ["../escape/x.parquet", "/tmp/x.parquet", "a/../../x", "./a", "", "a\\b",
                                      "c:/x", 3])
def test_a_path_read_from_a_file_must_stay_inside_its_root(tmp_path, relative):
    with pytest.raises(documents.InvalidDocument, match="refused"):
        documents.confined(tmp_path, relative, "manifest.json")


def test_a_link_out_of_the_root_is_refused(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "out").symlink_to(tmp_path)
    assert documents.confined(tmp_path / "root", "a/b.parquet", "m") == tmp_path / "root" / "a" / "b.parquet"
    with pytest.raises(documents.InvalidDocument, match="leads out of"):
        documents.confined(tmp_path / "root", "out/x.parquet", "m")
