"""What a transfer can end with, and how a body is decoded, without an HTTP client.

The mirror mode and the checks of a file's content use these; :mod:`.http` (``requests``) uses
them too, and is imported only where something is downloaded or probed.
"""

from __future__ import annotations

import zlib

CHUNK = 1 << 20
MiB = 1 << 20


class Transient(Exception):
    """A fault worth another attempt (network, 429, 5xx, body cut short)."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class Permanent(Exception):
    """A fault another attempt will not fix (4xx, wrong content, checksum mismatch)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class GzipStream:
    """Incremental gzip decoder (multi-member aware) that knows whether the stream ended cleanly.

    ``decompress`` raises ``zlib.error`` on corrupt data (bad header, bad CRC); ``complete`` is False
    when the data stopped inside a member (a truncated file).
    """

    def __init__(self) -> None:
        self._d = zlib.decompressobj(wbits=31)
        self._fed = False          # the current member has received bytes but not ended
        self.members = 0

    def pieces(self, data: bytes):
        """Yield the decoded bytes of ``data`` in pieces of at most CHUNK bytes (a bomb is never
        expanded whole: the caller can stop between pieces)."""
        full = False
        while data or full:
            self._fed = True
            out = self._d.decompress(data, CHUNK)
            full = len(out) == CHUNK
            if out:
                yield out
            if self._d.eof:
                self.members += 1
                data = self._d.unused_data
                self._d = zlib.decompressobj(wbits=31)
                self._fed = full = False
            else:
                data = self._d.unconsumed_tail

    def decompress(self, data: bytes) -> bytes:
        return b"".join(self.pieces(data))

    @property
    def complete(self) -> bool:
        return self.members > 0 and not self._fed


GZIP_MAGIC = b"\x1f\x8b"


def gunzip_head(data: bytes, limit: int = 4096) -> bytes:
    """The first ``limit`` decoded bytes of a (possibly truncated) gzip head, b"" if undecodable."""
    try:
        return zlib.decompressobj(wbits=31).decompress(data, limit)
    except zlib.error:
        return b""
