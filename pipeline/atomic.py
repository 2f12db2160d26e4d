"""The one way the project replaces a file: write a uniquely named temp file beside it, then rename.

A temp file is named ``.<target name>.<random>.ti-tmp``. It is created empty (exclusively) and
recorded in the caller's list, when one is given, *before* anything is written to it; it is
removed when anything fails, and renamed onto the target only when the writer succeeded. So a
reader sees the old file or the new one, never half of one, and a crash (or a full disk) leaves at
worst such names behind, which :func:`leftovers` lists for the start-up clean-up.
:func:`replacing_folder` does the same for a folder of files that must change together.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

TMP_SUFFIX = ".ti-tmp"


def temp_path(target: Path) -> Path:
    """A fresh hidden name beside ``target`` (not created)."""
    target = Path(target)
    return target.with_name(f".{target.name}.{secrets.token_hex(6)}{TMP_SUFFIX}")


def fsync_file(path: Path) -> None:
    """Flush a written file to the disk (so a rename after a crash never exposes an empty file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def writing(target: Path, record: list[Path] | None = None, *, rename: bool = True) -> Iterator[Path]:
    """Yield a new empty temp file beside ``target`` to write to.

    When the block ends without error the file is flushed to disk and renamed onto ``target``
    (``rename=False``: it is left for the caller, e.g. a swap of several files at once, who then
    owns it through ``record``). When the block raises, the temp file is removed.
    """
    tmp = temp_path(target)
    if record is not None:
        record.append(tmp)
    tmp.touch(exist_ok=False)
    try:
        yield tmp
        fsync_file(tmp)
        if rename:
            os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def replacing_folder(target: Path) -> Iterator[Path]:
    """Yield a new empty folder beside ``target`` to fill; when the block ends without error, it
    takes ``target``'s place.

    The old folder is moved aside, the new one renamed in, then the old one deleted (moved back if
    the second rename fails). A reader sees the old folder or the new one, never files of both; a
    process killed between the two renames leaves no ``target`` and the old folder under a temp
    name. When the block raises, the new folder is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    new, old = temp_path(target), temp_path(target)
    new.mkdir()
    try:
        yield new
        if target.exists():
            target.rename(old)
        try:
            new.rename(target)
        except BaseException:
            if old.exists():
                old.rename(target)
            raise
    finally:
        shutil.rmtree(new, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def write_bytes(target: Path, data: bytes, record: list[Path] | None = None) -> None:
    """Replace ``target`` with ``data`` atomically."""
    with writing(target, record) as tmp:
        tmp.write_bytes(data)


def write_text(target: Path, text: str, record: list[Path] | None = None) -> None:
    """Replace ``target`` with ``text`` (UTF-8) atomically."""
    write_bytes(target, text.encode("utf-8"), record)


def copy_beside(source: Path, target: Path, record: list[Path] | None = None) -> Path:
    """A flushed temp copy of ``source`` beside ``target``, not yet renamed (see :func:`writing`)."""
    with writing(target, record, rename=False) as tmp:
        shutil.copyfile(source, tmp)
    return tmp


def backup(target: Path, record: list[Path]) -> Path:
    """A hard link (else a copy) of the existing ``target`` beside it, under a temp name recorded in
    ``record`` before anything is written (a copy that fills the disk is removed; the caller removes
    the backup once it is no longer needed, whatever happens)."""
    tmp = temp_path(target)
    record.append(tmp)
    try:
        os.link(target, tmp)
    except OSError:
        try:
            shutil.copy2(target, tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return tmp


def leftovers(folder: Path) -> list[Path]:
    """Temp files an interrupted writer left in ``folder`` (regular files only)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f".*{TMP_SUFFIX}") if p.is_file() and not p.is_symlink())
