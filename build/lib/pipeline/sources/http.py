"""HTTP plumbing for the download layer: a session, a bounded retry loop, Retry-After, body streaming.

The retry loop is explicit (not urllib3 ``Retry``) because a body cut short or stalled half-way must
be retried too, ``Retry-After`` must be capped, and the attempts must be counted for the metadata.

* Every request carries ``timeout=settings.http_timeout`` (connect and each read).
* Transient faults -- connection errors, timeouts, 429, 5xx, a body cut short -- are retried
  ``settings.http_retries`` times, waiting ``http_backoff * 2**(n-1)`` seconds after attempt n, or the
  server's ``Retry-After`` capped at ``settings.http_max_retry_after``.
* Other 4xx and any wrong content are permanent: no retry.
* Failures end in one :class:`~pipeline.errors.SourceError` naming the source, the URL, what went
  wrong and every attempt made; when only transient faults were seen it has ``retryable = True``
  (the Dagster layer lets its RetryPolicy try again later; other SourceErrors are not retried).
"""

from __future__ import annotations

import hashlib
import re
import time
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import IO, Callable, TypeVar

import requests
import urllib3

from .. import __version__
from ..errors import SourceError
from ..settings import Settings

USER_AGENT = f"territoires-industrie/{__version__} (python-requests {requests.__version__})"
CHUNK = 1 << 20
# Only gzip is advertised: it is the one transfer encoding decoded (and integrity-checked) here.
ACCEPT_ENCODING = "gzip"

# Indirection so tests can record the delays instead of waiting (``monkeypatch.setattr``).
sleep = time.sleep

T = TypeVar("T")


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


def make_session() -> requests.Session:
    """A plain session (no adapter-level retries: :func:`run_with_retries` does them)."""
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    session.headers["Accept-Encoding"] = ACCEPT_ENCODING
    return session


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Parse a ``Retry-After`` header (delta seconds or HTTP date) into seconds, None if absent/bad."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def backoff_delay(settings: Settings, attempt: int, retry_after: float | None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), settings.http_max_retry_after)
    return settings.http_backoff * (2 ** (attempt - 1))


def describe_status(resp: requests.Response) -> str:
    try:
        phrase = HTTPStatus(resp.status_code).phrase
    except ValueError:
        phrase = resp.reason or ""
    return f"HTTP {resp.status_code} {phrase}".rstrip()


def check_status(resp: requests.Response) -> None:
    """Raise Transient for 429/5xx (with Retry-After), Permanent for other 4xx and odd statuses."""
    code = resp.status_code
    if code == 429 or 500 <= code <= 599:
        retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
        extra = f", Retry-After: {resp.headers['Retry-After']}" if "Retry-After" in resp.headers else ""
        raise Transient(f"{describe_status(resp)}{extra}", retry_after)
    if 400 <= code <= 499:
        raise Permanent(f"{describe_status(resp)} (client error, not retried)")
    if code >= 300 and code != 304:
        raise Permanent(f"{describe_status(resp)} (redirect not followed; Location: "
                        f"{resp.headers.get('Location', '-')})")


_ERRNO = re.compile(r"\[Errno -?\d+\][^'\")\]]*")


def _short(exc: BaseException) -> str:
    text = str(exc)
    m = _ERRNO.search(text)
    if m:
        return m.group(0).strip()
    return text if len(text) <= 200 else text[:197] + "..."


def classify(exc: BaseException, timeout: float) -> Exception:
    """Turn a requests/urllib3/socket exception into Transient or Permanent, with a short reason."""
    rex = requests.exceptions
    if isinstance(exc, (rex.InvalidURL, rex.MissingSchema, rex.InvalidSchema, rex.InvalidHeader)):
        return Permanent(f"invalid URL: {_short(exc)}")
    if isinstance(exc, rex.TooManyRedirects):
        return Permanent("too many redirects")
    if isinstance(exc, rex.SSLError):
        return Permanent(f"TLS error: {_short(exc)}")
    if isinstance(exc, rex.ConnectTimeout):
        return Transient(f"connect timed out (timeout {timeout:g} s)")
    if isinstance(exc, (rex.ReadTimeout, urllib3.exceptions.ReadTimeoutError, TimeoutError)):
        return Transient(f"read timed out (no data for {timeout:g} s)")
    # urllib3 wraps a read timeout raised while streaming inside a requests ConnectionError
    if isinstance(exc, rex.ConnectionError) and "timed out" in str(exc).lower():
        return Transient(f"read timed out (no data for {timeout:g} s)")
    if isinstance(exc, (rex.ChunkedEncodingError, urllib3.exceptions.ProtocolError)):
        return Transient(f"connection broken: {_short(exc)}")
    if isinstance(exc, (rex.ConnectionError, ConnectionError)):
        return Transient(f"connection failed: {_short(exc)}")
    if isinstance(exc, (rex.RequestException, urllib3.exceptions.HTTPError)):
        return Transient(f"{type(exc).__name__}: {_short(exc)}")
    return Permanent(f"{type(exc).__name__}: {_short(exc)}")


_NETWORK_ERRORS = (
    requests.exceptions.RequestException,
    urllib3.exceptions.HTTPError,
    ConnectionError,
    TimeoutError,
)


def run_with_retries(name: str, url: str, settings: Settings, attempt: Callable[[int], T],
                     what: str = "download") -> tuple[T, int]:
    """Call ``attempt(n)`` until it returns; return (its value, number of attempts made).

    ``attempt`` raises :class:`Transient` (retried with backoff) or :class:`Permanent` (stop now);
    network exceptions escaping it are classified. Ends in one SourceError listing every attempt.
    """
    total = max(0, int(settings.http_retries)) + 1
    history: list[str] = []
    for n in range(1, total + 1):
        try:
            return attempt(n), n
        except _NETWORK_ERRORS as exc:
            fault = classify(exc, settings.http_timeout)
        except (Transient, Permanent) as exc:
            fault = exc
        if isinstance(fault, Permanent):
            history.append(f"attempt {n}: {fault.reason}")
            raise SourceError(
                f"source {name}: {what} of {url} failed: {fault.reason} "
                f"[{_plural(n, 'attempt')}: {'; '.join(history)}]"
            ) from None
        if n == total:
            history.append(f"attempt {n}: {fault.reason}")
            break
        delay = backoff_delay(settings, n, fault.retry_after)
        history.append(f"attempt {n}: {fault.reason}, retried after {delay:g} s")
        sleep(delay)
    err = SourceError(
        f"source {name}: {what} of {url} failed: gave up after {_plural(total, 'attempt')} "
        f"(TI_HTTP_RETRIES={settings.http_retries}): {'; '.join(history)}"
    )
    err.retryable = True     # transient faults only: a later attempt may succeed (4xx/content: no attribute)
    raise err


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


class GzipStream:
    """Incremental gzip decoder (multi-member aware) that knows whether the stream ended cleanly.

    ``decompress`` raises ``zlib.error`` on corrupt data (bad header, bad CRC); ``complete`` is False
    when the data stopped inside a member (a truncated file).
    """

    def __init__(self) -> None:
        self._d = zlib.decompressobj(wbits=31)
        self._fed = False          # the current member has received bytes but not ended
        self.members = 0

    def decompress(self, data: bytes) -> bytes:
        out = []
        while data:
            self._fed = True
            out.append(self._d.decompress(data))
            if self._d.eof:
                self.members += 1
                data = self._d.unused_data
                self._d = zlib.decompressobj(wbits=31)
                self._fed = False
            else:
                data = b""
        return b"".join(out)

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


def _raw_chunks(resp: requests.Response):
    """The undecoded body as it arrives (``read1``: what the socket has, so byte counts are exact)."""
    raw = resp.raw
    if not hasattr(raw, "read1"):                 # urllib3 < 2.3
        yield from raw.stream(CHUNK, decode_content=False)
        return
    while True:
        data = raw.read1(CHUNK, decode_content=False)
        if not data:
            return
        yield data


@dataclass
class Body:
    """What :func:`read_body` saw: sha256 and size of the decoded body, wire bytes, declared length."""

    sha256: str
    size: int
    wire_bytes: int
    content_length: int | None
    content_encoding: str


def read_body(resp: requests.Response, sink: IO[bytes] | None, timeout: float) -> Body:
    """Stream a response body into ``sink`` (or just hash it), decoding a gzip Content-Encoding.

    Raises Transient when the connection breaks, stalls, or delivers fewer bytes than Content-Length
    (or a truncated gzip transfer encoding); Permanent for an unsupported or corrupt encoding.
    """
    encoding = resp.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip"):
        raise Permanent(f"unsupported Content-Encoding {encoding!r} (only gzip is accepted)")
    decoder = GzipStream() if encoding in ("gzip", "x-gzip") else None
    declared = resp.headers.get("Content-Length", "").strip()
    expected = int(declared) if declared.isdigit() else None
    h = hashlib.sha256()
    wire = size = 0
    stream = _raw_chunks(resp)
    while True:
        try:
            chunk = next(stream)
        except StopIteration:
            break
        except _NETWORK_ERRORS as exc:
            fault = classify(exc, timeout)
            got = f"{wire} of {expected}" if expected is not None else f"{wire}"
            raise Transient(f"{fault.reason} after {got} bytes of body") from None
        wire += len(chunk)
        if decoder is not None:
            try:
                chunk = decoder.decompress(chunk)
            except zlib.error as exc:
                raise Permanent(f"corrupt gzip Content-Encoding: {exc}") from None
        h.update(chunk)
        size += len(chunk)
        if sink is not None:
            sink.write(chunk)
    if expected is not None and wire != expected:
        raise Transient(f"body cut short: received {wire} of {expected} bytes (Content-Length)")
    if decoder is not None and not decoder.complete:
        raise Transient(f"gzip Content-Encoding truncated after {wire} bytes")
    return Body(h.hexdigest(), size, wire, expected, encoding or "identity")
