"""The one atomic writer (pipeline/atomic.py): a reader sees the old file or the new one, and a
failed write leaves neither a half file nor a temp file behind."""

from __future__ import annotations

import errno
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import atomic


@settings(max_examples=60, deadline=None)
@given(old=st.binary(max_size=2000), new=st.binary(max_size=2000), fail_after=st.integers(0, 2000) | st.none())
def test_the_target_holds_the_old_or_the_new_bytes_and_nothing_is_left(tmp_path_factory, old, new, fail_after):
    folder = tmp_path_factory.mktemp("atomic")
    target = folder / "file.bin"
    target.write_bytes(old)
    recorded: list = []
    if fail_after is None:
        atomic.write_bytes(target, new, recorded)
        assert target.read_bytes() == new
    else:
        with pytest.raises(OSError), atomic.writing(target, recorded) as tmp:
            tmp.write_bytes(new[:fail_after])        # a disk that fills half-way
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
        assert target.read_bytes() == old
    assert len(recorded) == 1 and recorded[0].name.endswith(atomic.TMP_SUFFIX)   # recorded before writing
    assert atomic.leftovers(folder) == [] and sorted(p.name for p in folder.iterdir()) == ["file.bin"]


def test_temp_names_are_unique_hidden_and_beside_the_target(tmp_path):
    names = {atomic.temp_path(tmp_path / "x.json") for _ in range(200)}
    assert len(names) == 200
    assert all(p.parent == tmp_path and p.name.startswith(".x.json.") for p in names)


def test_a_copy_left_for_a_swap_is_listed_as_a_leftover_until_renamed(tmp_path):
    source = tmp_path / "src.txt"
    source.write_text("new")
    target = tmp_path / "out" / "dst.txt"
    target.parent.mkdir()
    tmp = atomic.copy_beside(source, target)
    assert tmp.read_text() == "new" and not target.exists()
    assert atomic.leftovers(target.parent) == [tmp]     # what a kill -9 here would leave: start-up removes it
    os.replace(tmp, target)
    assert atomic.leftovers(target.parent) == []


@settings(max_examples=30, deadline=None)
@given(data=st.binary(min_size=1, max_size=2000), fail_after=st.integers(0, 2000) | st.none())
def test_a_backup_is_recorded_before_it_is_written_and_a_full_disk_leaves_none(tmp_path_factory, monkeypatch_module,
                                                                              data, fail_after):
    folder = tmp_path_factory.mktemp("backup")
    target = folder / "file.bin"
    target.write_bytes(data)
    recorded: list = []

    def no_link(src, dst):            # another file system: the backup is a copy
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    def copy_then_full(src, dst):     # the copy fills the disk after fail_after bytes
        assert recorded and recorded[-1] == dst          # recorded before a byte is written
        with open(dst, "wb") as fh:
            fh.write(data[:fail_after])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    monkeypatch_module.setattr(atomic.os, "link", no_link)
    monkeypatch_module.setattr(atomic.shutil, "copy2", copy_then_full if fail_after is not None else atomic.shutil.copy2)
    try:
        if fail_after is None:
            backup = atomic.backup(target, recorded)
            assert recorded == [backup] and backup.read_bytes() == data
        else:
            with pytest.raises(OSError):
                atomic.backup(target, recorded)
            assert atomic.leftovers(folder) == [] and target.read_bytes() == data
    finally:
        monkeypatch_module.undo()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@settings(max_examples=30, deadline=None)
@given(old=st.dictionaries(st.sampled_from("abcde"), st.binary(max_size=200), max_size=4),
       new=st.dictionaries(st.sampled_from("abcde"), st.binary(max_size=200), max_size=4),
       fail_after=st.integers(0, 4) | st.none())
def test_a_replaced_folder_holds_the_old_files_or_the_new_ones_never_a_mix(tmp_path_factory, old, new, fail_after):
    parent = tmp_path_factory.mktemp("folder")
    target = parent / "value"
    target.mkdir()
    for name, data in old.items():
        (target / name).write_bytes(data)
    try:
        with atomic.replacing_folder(target) as fresh:
            for i, (name, data) in enumerate(new.items()):
                if i == fail_after:
                    raise OSError(errno.ENOSPC, "No space left on device")
                (fresh / name).write_bytes(data)
    except OSError:
        expected = old
    else:
        expected = new
    assert {p.name: p.read_bytes() for p in target.iterdir()} == expected
    assert [p.name for p in parent.iterdir()] == ["value"]
