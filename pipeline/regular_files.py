"""Reading a file whose name comes from outside (a setting, a document, a user): one way, bounded.

Only a regular file is read, never a device such as ``/dev/zero`` (endless), a FIFO (blocks) or
a directory, and never more than a cap: at most ``max_bytes + 1`` bytes are read, so an oversized
file is refused without being read whole. Callers turn :class:`RefusedFile` into their own
one-line error naming the file and the setting that sets the cap (:func:`read_raw`: an
InputFormatError); :func:`shown` quotes a bit of such foreign content in a message. Light on
purpose (no pandas): the source catalog and the mirror checks use it on every run.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import InputFormatError
from .limits import MiB


class RefusedFile(Exception):
    """``path`` is not a readable regular file within the cap; ``kind`` says why, ``why`` in words."""

    def __init__(self, kind: str, why: str):
        super().__init__(why)
        self.kind = kind        # "directory", "special", "unreadable" or "too_large"
        self.why = why


def read_regular(path: Path | str, max_bytes: int) -> bytes:
    """The bytes of ``path``, a regular file of at most ``max_bytes``.

    FileNotFoundError when it is absent (each caller decides what a missing file means),
    :class:`RefusedFile` otherwise. The type is checked on the opened descriptor, so a file
    swapped for a device between a check and the read is still refused.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)   # O_NONBLOCK: opening a FIFO never blocks
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise RefusedFile("directory", "it is a directory") from None
    except OSError as err:
        raise RefusedFile("unreadable", f"it cannot be read ({err.strerror or err})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise RefusedFile("directory", "it is a directory")
        raise RefusedFile("special", "it is not a regular file")
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read(max_bytes + 1)
        except OSError as err:
            raise RefusedFile("unreadable", f"it cannot be read ({err.strerror or err})") from None
    if len(data) > max_bytes:
        raise RefusedFile("too_large", f"it is larger than {max_bytes:,} bytes")
    return data


def size_text(limit: int) -> str:
    """A byte cap in words: ``16 MiB``, ``100 bytes``."""
    return f"{limit / MiB:g} MiB" if limit >= MiB else f"{limit} bytes"


def read_raw(path: Path, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (``Limits.table_bytes``)."""
    try:
        return read_regular(path, limit)
    except FileNotFoundError as err:
        raise InputFormatError(f"{path}: cannot read {what} ({err.strerror or err})") from None
    except RefusedFile as err:
        if err.kind == "too_large":
            raise InputFormatError(f"{path}: {what} larger than {size_text(limit)} (raise TI_MAX_TABLE_MB to read it)") \
                from None
        raise InputFormatError(f"{path}: cannot read {what}: {err.why}") from None


SHOWN_CHARS = 40        # foreign content quoted in a message: at most this many characters, as repr()


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``repr`` of at most ``limit`` characters (or bytes) of foreign content, marked when cut."""
    cut = value[:limit] if isinstance(value, (str, bytes)) else value
    return repr(cut) + ("..." if isinstance(value, (str, bytes)) and len(value) > limit else "")
