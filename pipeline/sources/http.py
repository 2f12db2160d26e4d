"""HTTP plumbing for the download layer: a session, a bounded retry loop, Retry-After, body streaming.

The retry loop is explicit (not urllib3 ``Retry``) because a body cut short or stalled half-way must
be retried too, ``Retry-After`` must be capped, and the attempts must be counted for the metadata.

* Every request carries ``timeout=settings.http_timeout`` (connect and each read).
* Transient faults -- connection errors, timeouts, 429, 5xx, a body cut short -- are retried
  ``settings.http_retries`` times, waiting ``http_backoff * 2**(n-1)`` seconds after attempt n, or the
  server's ``Retry-After`` capped at ``settings.http_max_retry_after``.
* Other 4xx and any wrong content are permanent: no retry.
* Bounds, since the server is not trusted: a body (as sent and as decoded) larger than
  ``TI_MAX_SOURCE_MB`` is refused; one download, retries and waits included, ends at
  ``TI_HTTP_DEADLINE`` seconds (a body sent one byte a second cannot last for ever): a
  :class:`Watchdog` shuts the connection down at the deadline, since socket timeouts bound each
  read only and headers sent one byte at a time would pass them for ever; no wait is
  longer than :data:`MAX_WAIT` seconds whatever ``Retry-After`` or the settings say; redirects are
  followed by hand, only to http(s) on the same host and port or to :data:`REDIRECT_HOSTS`.
* Failures end in one :class:`~pipeline.errors.SourceError` naming the source, the URL, what went
  wrong and every attempt made; when only transient faults were seen it has ``retryable = True``
  (the Dagster layer lets its RetryPolicy try again later; other SourceErrors are not retried).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
import socket
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import IO, TypeVar
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .. import __version__
from ..errors import SourceError
from ..settings import Settings
from .transfer import CHUNK, GzipStream, MiB, Permanent, Transient

USER_AGENT = f"territoires-industrie/{__version__} (python-requests {requests.__version__})"
# Only gzip is advertised: it is the one transfer encoding decoded (and integrity-checked) here.
ACCEPT_ENCODING = "gzip"

# Indirection so tests can record the delays instead of waiting (``monkeypatch.setattr``).
sleep = time.sleep
MAX_WAIT = 3600.0          # no single wait between attempts is longer, whatever the settings say
MAX_REDIRECTS = 5
# An API answer is parsed whole: data.gouv.fr's for a dataset is ~100 KiB, so this is generous and
# keeps an endless answer far from the memory a build may use, whatever TI_MAX_SOURCE_MB says.
MAX_API_BYTES = 64 * MiB
# Hosts the official sources redirect to (data.gouv.fr's /datasets/r/<id> links point to its
# static file host); any other host must be the one of the URL asked for, with the same port.
REDIRECT_HOSTS = frozenset({"www.data.gouv.fr", "data.gouv.fr", "static.data.gouv.fr", "object.files.data.gouv.fr",
                            "etalab-datasets.geo.data.gouv.fr", "www.insee.fr"})

T = TypeVar("T")


class Watchdog:
    """Shuts down, at ``deadline`` (``time.monotonic``), every connection the calling thread reads
    from while it is active (``with Watchdog(deadline):``): a read blocked in the headers or the
    body then ends at once, whatever the socket timeout. ``fired`` tells that it did."""

    _local = threading.local()

    def __init__(self, deadline: float | None):
        self.deadline = deadline
        self.fired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = None if deadline is None else threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        if self._timer is not None:
            self._timer.daemon = True

    def __enter__(self) -> Watchdog:
        self._outer = getattr(self._local, "watch", None)
        self._local.watch = self
        if self._timer is not None:
            self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._local.watch = self._outer

    @classmethod
    def current(cls) -> Watchdog | None:
        return getattr(cls._local, "watch", None)

    def add(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._socks.append(sock)
            if self.fired:
                _shut(sock)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            for sock in self._socks:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):      # already closed
        sock.shutdown(socket.SHUT_RDWR)


class _Watched:
    """A connection that hands its socket to the thread's :class:`Watchdog` before each response."""

    sock: socket.socket | None

    def getresponse(self, *args, **kwargs):
        watch = Watchdog.current()
        if watch is not None:
            watch.add(self.sock)
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTP(_Watched, HTTPConnection):
    pass


class _WatchedHTTPS(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTP


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPS


class WatchedAdapter(HTTPAdapter):
    """The requests adapter whose connections :class:`Watchdog` can shut down."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


def watch(session: requests.Session) -> requests.Session:
    """Mount :class:`WatchedAdapter` on ``session`` (once) for http and https."""
    if not isinstance(session.get_adapter("http://x/"), WatchedAdapter):
        session.mount("http://", WatchedAdapter())
        session.mount("https://", WatchedAdapter())
    return session


def make_session() -> requests.Session:
    """A plain session (no adapter-level retries: :func:`run_with_retries` does them)."""
    session = watch(requests.Session())
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
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def _finite(value: float, ceiling: float = MAX_WAIT) -> float:
    """``value`` within [0, ceiling]; NaN counts as 0, infinity as the ceiling."""
    return 0.0 if math.isnan(value) else min(max(value, 0.0), ceiling)


def backoff_delay(settings: Settings, attempt: int, retry_after: float | None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based), never over :data:`MAX_WAIT`."""
    if retry_after is not None:
        return _finite(min(retry_after, _finite(settings.http_max_retry_after)))
    return _finite(settings.http_backoff * (2.0 ** min(attempt - 1, 64)))


@dataclass(frozen=True)
class Limits:
    """What one download may take: bytes (as sent and decoded) and an absolute ``time.monotonic`` end."""

    max_bytes: int
    deadline: float
    cap: str = "TI_MAX_SOURCE_MB"       # what sets ``max_bytes``, for the message

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(settings.max_source_mb * MiB, time.monotonic() + settings.http_deadline)

    @classmethod
    def for_api(cls, settings: Settings) -> Limits:
        """An API answer (JSON held whole to be parsed): TI_MAX_SOURCE_MB, at most :data:`MAX_API_BYTES`."""
        if settings.max_source_mb * MiB <= MAX_API_BYTES:
            return cls.from_settings(settings)
        return cls(MAX_API_BYTES, time.monotonic() + settings.http_deadline, "the cap on API answers")

    def check_time(self, what: str) -> None:
        if time.monotonic() > self.deadline:
            raise Permanent(f"download deadline passed {what} (TI_HTTP_DEADLINE)")

    def check_size(self, size: int, what: str) -> None:
        if size > self.max_bytes:
            raise Permanent(f"{what} larger than {self.max_bytes / MiB:g} MiB ({self.cap}); refused")


def redirect_refused(url: str, location: str) -> str | None:
    """Why a redirect from ``url`` to ``location`` (already absolute) is refused, None if allowed."""
    old, new = urlsplit(url), urlsplit(location)
    if new.scheme not in ("http", "https"):
        return f"redirect to a {new.scheme or 'relative'} URL refused (only http/https)"
    try:
        ports = (old.port or _DEFAULT_PORT[old.scheme], new.port or _DEFAULT_PORT[new.scheme])
    except (ValueError, KeyError):
        return "redirect with an invalid port refused"
    if (new.hostname or "").lower() in REDIRECT_HOSTS and new.port in (None, 443, 80):
        return None
    if new.hostname == old.hostname and (ports[0] == ports[1] or ({old.scheme, new.scheme} == {"http", "https"}
                                         and new.port is None)):
        return None
    return f"redirect to another host or port refused: {location[:120]!r}"


_DEFAULT_PORT = {"http": 80, "https": 443}


def _connect_within_deadline(kwargs: dict) -> dict:
    """The connect timeout cut to what is left of the active :class:`Watchdog`'s deadline (the
    watchdog can only shut a socket down once it is connected)."""
    watchdog, timeout = Watchdog.current(), kwargs.get("timeout")
    if watchdog is None or watchdog.deadline is None or not isinstance(timeout, (int, float)):
        return kwargs
    left = max(0.001, watchdog.deadline - time.monotonic())
    return {**kwargs, "timeout": (min(float(timeout), left), timeout)}


def request(session: requests.Session, method: str, url: str, **kwargs) -> requests.Response:
    """``session.request`` following at most :data:`MAX_REDIRECTS` redirects by hand, each checked by
    :func:`redirect_refused` (Permanent when refused). The final response is returned open."""
    watch(session)
    for _ in range(MAX_REDIRECTS + 1):
        resp = session.request(method, url, allow_redirects=False, **_connect_within_deadline(kwargs))
        if resp.status_code not in (301, 302, 303, 307, 308) or "Location" not in resp.headers:
            return resp
        location = urljoin(url, resp.headers["Location"])
        resp.close()
        why = redirect_refused(url, location)
        if why:
            raise Permanent(why)
        url = location
    raise Permanent(f"more than {MAX_REDIRECTS} redirects")


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


def classify(exc: BaseException, timeout: float) -> Transient | Permanent:
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
                     what: str = "download", limits: Limits | None = None) -> tuple[T, int]:
    """Call ``attempt(n)`` until it returns; return (its value, number of attempts made).

    ``attempt`` raises :class:`Transient` (retried with backoff) or :class:`Permanent` (stop now);
    network exceptions escaping it are classified. Ends in one SourceError listing every attempt.
    No wait goes past ``limits.deadline``: the attempts end there.
    """
    total = max(0, int(settings.http_retries)) + 1
    history: list[str] = []
    for n in range(1, total + 1):
        watchdog = Watchdog(limits.deadline if limits is not None else None)
        try:
            with watchdog:
                return attempt(n), n
        except _NETWORK_ERRORS as exc:
            fault: Transient | Permanent = classify(exc, settings.http_timeout)
        except (Transient, Permanent) as exc:
            fault = exc
        if watchdog.fired and "TI_HTTP_DEADLINE" not in fault.reason:   # whatever the read that was cut said
            fault = Permanent(f"download deadline of {settings.http_deadline:g} s passed (TI_HTTP_DEADLINE); "
                              "connection closed")
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
        if limits is not None and time.monotonic() + delay > limits.deadline:
            history.append(f"attempt {n}: {fault.reason}; the next would start after the download "
                           "deadline (TI_HTTP_DEADLINE)")
            raise SourceError(f"source {name}: {what} of {url} failed: {'; '.join(history)}") from None
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


def _decoded(decoder: GzipStream | None, chunk: bytes):
    """The pieces of a received chunk as decoded (itself without a Content-Encoding)."""
    if decoder is None:
        yield chunk
        return
    try:
        yield from decoder.pieces(chunk)
    except zlib.error as exc:
        raise Permanent(f"corrupt gzip Content-Encoding: {exc}") from None


@dataclass
class Body:
    """What :func:`read_body` saw: sha256 and size of the decoded body, wire bytes, declared length."""

    sha256: str
    size: int
    wire_bytes: int
    content_length: int | None
    content_encoding: str


def read_body(resp: requests.Response, sink: IO[bytes] | None, timeout: float,
              limits: Limits | None = None) -> Body:
    """Stream a response body into ``sink`` (or just hash it), decoding a gzip Content-Encoding.

    Raises Transient when the connection breaks, stalls, or delivers fewer bytes than Content-Length
    (or a truncated gzip transfer encoding); Permanent for an unsupported or corrupt encoding, and
    when the body passes ``limits`` (its size as sent or decoded, or the deadline).
    """
    encoding = resp.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip"):
        raise Permanent(f"unsupported Content-Encoding {encoding!r} (only gzip is accepted)")
    decoder = GzipStream() if encoding in ("gzip", "x-gzip") else None
    declared = resp.headers.get("Content-Length", "").strip()
    expected = int(declared) if declared.isdigit() else None
    if limits is not None and expected is not None:
        limits.check_size(expected, f"declared body (Content-Length {expected})")
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
        if limits is not None:
            limits.check_time(f"after {wire} bytes of body")
        for piece in _decoded(decoder, chunk):
            h.update(piece)
            size += len(piece)
            if limits is not None:
                limits.check_size(max(wire, size), f"body (after {wire} bytes received)")
            if sink is not None:
                sink.write(piece)
    if expected is not None and wire != expected:
        raise Transient(f"body cut short: received {wire} of {expected} bytes (Content-Length)")
    if decoder is not None and not decoder.complete:
        raise Transient(f"gzip Content-Encoding truncated after {wire} bytes")
    return Body(h.hexdigest(), size, wire, expected, encoding or "identity")
