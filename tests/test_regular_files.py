"""The one bounded reader of files named from outside: regular files only, never past the cap."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.regular_files import RefusedFile, read_regular


@settings(max_examples=60, deadline=None)
@given(content=st.binary(max_size=300), cap=st.integers(min_value=0, max_value=300))
def test_a_regular_file_is_read_whole_within_the_cap_and_refused_past_it(tmp_path_factory, content, cap):
    path = tmp_path_factory.mktemp("f") / "x"
    path.write_bytes(content)
    if len(content) <= cap:
        assert read_regular(path, cap) == content
    else:
        with pytest.raises(RefusedFile) as err:
            read_regular(path, cap)
        assert err.value.kind == "too_large" and f"{cap:,} bytes" in err.value.why


def test_devices_fifos_and_directories_are_refused_unread(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)          # nobody writes: reading it would block for ever
    for path, kind in (("/dev/zero", "special"), (fifo, "special"), (tmp_path, "directory")):
        with pytest.raises(RefusedFile) as err:
            read_regular(path, 10)
        assert err.value.kind == kind, path


def test_an_absent_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_regular(tmp_path / "absent", 10)
