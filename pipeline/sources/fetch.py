"""Fetch one source: from the mirror directory (offline) or its live URL, into the download cache.

Mirror mode (``TI_MIRROR_DIR``): the mirror file is read in place, never copied.

Live mode: ``spec.url`` is downloaded into ``<raw_dir>/<source>/<file name>`` (see
:func:`cache_path`) with timeouts, bounded retries and backoff (:mod:`pipeline.sources.http`). The body is
streamed to a temp file in the same folder and checked before it replaces the cached copy with an
atomic rename: Content-Length, gzip integrity (when the body is gzip), the expected format (an HTML
page served with 200 is refused, parquet must start with ``PAR1``, json with ``{`` or ``[``), and the
catalog's sha256 pin. A refused body never touches the cached copy and leaves no temp file.

A sidecar ``<file>.meta.json`` records url, etag, last_modified, sha256, size, fetched_at; the next
fetch sends ``If-None-Match`` / ``If-Modified-Since`` and reuses the cached file on 304
(``changed=False``), as it does when a 200 body has the same sha256 as the cached one.

:func:`probe_source` is the cheap "has it changed?" version string used by sensors.
"""

from __future__ import annotations

import json
import os
import re
import stat
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from .. import atomic, documents
from ..checksums import sha256_file
from ..errors import SourceError
from ..regular_files import shown
from ..settings import Settings
from . import transfer
from .catalog import SourceSpec

if TYPE_CHECKING:   # the HTTP client is imported where something is downloaded or probed (not in mirror mode)
    import requests

    from . import http

HEAD_BYTES = 64 * 1024
SHOWN_BYTES = 80


@dataclass
class FetchResult:
    source: str              # logical name in the catalog
    path: Path               # local file to read
    origin: str              # URL, or mirror path
    mode: str                # "live" or "mirror"
    sha256: str
    size: int
    release: str             # release label from the catalog
    cog: int
    etag: str | None = None
    last_modified: str | None = None
    fetched_at: str = ""
    changed: bool = True     # False when the cached copy was reused (304 / same sha256)
    attempts: int = 1
    lock: dict | None = None  # the release resolved (pipeline.sources.resolve), for the manifest's lock


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------------
# mirror mode

def mirror_file(spec: SourceSpec, settings: Settings) -> Path:
    """The mirror file of ``spec``, confined to TI_MIRROR_DIR; SourceError naming the path and the
    catalog entry if it is missing, escapes the mirror (``..``, an absolute path, a symlink out),
    is not a regular file or is larger than TI_MAX_SOURCE_MB."""
    assert settings.mirror_dir is not None
    entry = f"catalog entry mirror = {shown(spec.mirror, 120)}"
    relative = PurePosixPath(str(spec.mirror).replace("\\", "/"))
    if not str(spec.mirror).strip() or relative.is_absolute() or ".." in relative.parts or ":" in relative.parts[0]:
        raise SourceError(f"source {spec.name}: the mirror path must be relative, inside TI_MIRROR_DIR, "
                          f"without '..' ({entry})")
    root = Path(settings.mirror_dir).resolve()
    path = spec.mirror_path(settings.mirror_dir)
    if not path.exists() and not path.is_symlink():
        hint = "" if root.is_dir() else " (that directory does not exist)"
        raise SourceError(f"source {spec.name}: mirror file not found: {path} "
                          f"(TI_MIRROR_DIR={settings.mirror_dir}{hint}; {entry})")
    if not path.resolve().is_relative_to(root):
        raise SourceError(f"source {spec.name}: mirror file {path} is a link out of TI_MIRROR_DIR "
                          f"({settings.mirror_dir}); refused ({entry})")
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise SourceError(f"source {spec.name}: mirror path {path} is {kind} ({entry})")
    limit = settings.max_source_mb * transfer.MiB
    if path.stat().st_size > limit:
        raise SourceError(f"source {spec.name}: mirror file {path} is larger than {settings.max_source_mb} MiB "
                          "(TI_MAX_SOURCE_MB)")
    return path


def _fetch_mirror(spec: SourceSpec, settings: Settings) -> FetchResult:
    path = mirror_file(spec, settings)
    return FetchResult(spec.name, path, str(path), "mirror", sha256_file(path), path.stat().st_size,
                       spec.mirror_release, spec.cog, fetched_at=_now(), attempts=0)


# --------------------------------------------------------------------------------------------------
# cache layout and sidecar

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,150}")


def cache_path(spec: SourceSpec, settings: Settings) -> Path:
    """``<raw_dir>/<source>/<last URL segment>`` when it looks like a file name (has a suffix),
    else ``<raw_dir>/<source>/<source>.<format>`` (e.g. data.gouv.fr ``/datasets/r/<uuid>`` links)."""
    segment = unquote(urlparse(spec.url).path.rstrip("/").rsplit("/", 1)[-1])
    if _SAFE_NAME.fullmatch(segment) and "." in segment.strip(".") and not segment.endswith(".meta.json"):
        name = segment
    else:
        name = f"{spec.name}.{spec.format}"
    return Path(settings.raw_dir) / spec.name / name


def meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


def read_meta(path: Path) -> dict | None:
    """The sidecar of a cached file, or None when it is missing, unreadable or does not match the file."""
    try:   # a regular file of at most 1 MiB: the cache is not trusted more than any input
        meta = json.loads(documents.read_bounded(meta_path(path), "download sidecar", 1 << 20))
        if not isinstance(meta, dict) or not path.is_file() or path.stat().st_size != meta.get("size"):
            return None
        return meta
    except (OSError, ValueError):
        return None


def _write_meta(path: Path, meta: dict) -> None:
    atomic.write_text(meta_path(path), json.dumps(meta, indent=2, sort_keys=True) + "\n")


def _valid_cache(spec: SourceSpec, path: Path) -> dict | None:
    """Sidecar of the cached copy if the copy is intact (sha256 re-checked) and fits the pin."""
    meta = read_meta(path)
    if meta is None:
        return None
    sha = sha256_file(path)
    if sha != meta.get("sha256") or (spec.sha256 and sha != spec.sha256.lower()):
        return None
    return meta


# --------------------------------------------------------------------------------------------------
# content checks

_MARKUP = (b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml", b"<!--", b"<title")


def _shown(head: bytes) -> str:
    return shown(head, SHOWN_BYTES)


def check_content(path: Path, fmt: str, content_type: str = "", max_bytes: int | None = None) -> None:
    """Check a downloaded file against the expected format; raise transfer.Permanent/Transient.

    The checks look through one gzip layer: a gzip body must decode completely (else Transient,
    a truncated transfer), within ``max_bytes`` once decoded, and its decoded head must fit ``fmt``.
    """
    with open(path, "rb") as fh:
        raw_head = fh.read(HEAD_BYTES)
    if not raw_head:
        raise transfer.Permanent("empty body")
    is_gzip = raw_head.startswith(transfer.GZIP_MAGIC)
    head = transfer.gunzip_head(raw_head) if is_gzip else raw_head[:4096]
    if is_gzip and not head:
        check_gzip(path, max_bytes)            # names the corruption; a valid gzip here holds nothing
        raise transfer.Permanent("empty body (gzip of zero bytes)")
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    lowered = text[:64].lower()
    ctype = f", Content-Type {content_type}" if content_type else ""
    if any(lowered.startswith(tag) for tag in _MARKUP):
        kind = "an XML document" if lowered.startswith(b"<?xml") else "an HTML page"
        raise transfer.Permanent(f"expected {fmt} but the server sent {kind} with status 200{ctype}; "
                             f"first bytes: {_shown(text)}")
    if fmt == "parquet" and not head.startswith(b"PAR1"):
        raise transfer.Permanent(f"expected parquet (starting with b'PAR1'){ctype}; first bytes: {_shown(head)}")
    if fmt in ("json", "geojson") and text[:1] not in (b"{", b"["):
        raise transfer.Permanent(f"expected {fmt} (starting with '{{' or '['){ctype}; first bytes: {_shown(head)}")
    if fmt == "csv" and (b"\x00" in head or text[:1] == b"<"):
        raise transfer.Permanent(f"expected csv text{ctype}; first bytes: {_shown(head)}")
    if is_gzip:
        check_gzip(path, max_bytes)
    elif fmt == "parquet":
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - 4))
            if fh.read(4) != b"PAR1":
                raise transfer.Transient("parquet body has no PAR1 footer (truncated)")


def check_gzip(path: Path, max_bytes: int | None = None) -> None:
    """A gzip file decodes completely (streamed, never held whole) to at most ``max_bytes``."""
    decoder = transfer.GzipStream()
    size = 0
    with open(path, "rb") as fh:
        try:
            for chunk in iter(lambda: fh.read(transfer.CHUNK), b""):
                for piece in decoder.pieces(chunk):
                    size += len(piece)
                    if max_bytes is not None and size > max_bytes:
                        raise transfer.Permanent(f"gzip body expands past {max_bytes / transfer.MiB:g} MiB "
                                             "(TI_MAX_SOURCE_MB); refused")
        except zlib.error as exc:
            raise transfer.Permanent(f"gzip body is corrupt ({exc})") from None
    if not decoder.complete:
        raise transfer.Transient(
            f"gzip body is truncated ({path.stat().st_size} bytes end inside a gzip member)")


# --------------------------------------------------------------------------------------------------
# live mode

@dataclass
class _Downloaded:
    tmp: Path | None           # temp file holding the new body (None on 304)
    status: int
    sha256: str
    size: int
    etag: str | None
    last_modified: str | None


def conditional_headers(previous: dict | None, url: str) -> dict[str, str]:
    """If-None-Match / If-Modified-Since from the cached copy's sidecar, only for the same URL."""
    headers: dict[str, str] = {}
    if previous is not None and previous.get("url") == url:
        if previous.get("etag"):
            headers["If-None-Match"] = previous["etag"]
        if previous.get("last_modified"):
            headers["If-Modified-Since"] = previous["last_modified"]
    return headers


def _get(session: requests.Session, url: str, settings: Settings, headers: dict[str, str]) -> requests.Response:
    """A streamed GET whose redirects are checked (:func:`http.request`)."""
    from . import http

    return http.request(session, "GET", url, headers={"Accept-Encoding": http.ACCEPT_ENCODING, **headers},
                        stream=True, timeout=settings.http_timeout)


def _download(spec: SourceSpec, resp: requests.Response, target: Path, settings: Settings,
              limits: http.Limits, temps: list[Path]) -> _Downloaded:
    """Stream a 200 body into a temp file beside ``target`` and check it (content, size, pin)."""
    from . import http

    with atomic.writing(target, temps, rename=False) as tmp:   # renamed by _keep once it is kept
        with open(tmp, "wb") as fh:
            body = http.read_body(resp, fh, settings.http_timeout, limits)
        check_content(tmp, spec.format, resp.headers.get("Content-Type", ""), limits.max_bytes)
        if spec.sha256 and body.sha256 != spec.sha256.lower():
            raise transfer.Permanent(
                f"sha256 mismatch: the catalog pins {spec.sha256.lower()}, the body "
                f"({body.size} bytes) has {body.sha256}; the body was refused")
    return _Downloaded(tmp, 200, body.sha256, body.size, resp.headers.get("ETag"), resp.headers.get("Last-Modified"))


def _keep(got: _Downloaded, previous: dict | None, target: Path, url: str) -> tuple[bool, str, str]:
    """Put the download in place (or keep the cached copy); write its sidecar.
    Returns (changed, fetched_at, now)."""
    now = _now()
    if got.tmp is None:                                  # 304: reuse the cached copy (a conditional GET: previous)
        changed, fetched_at = False, (previous or {}).get("fetched_at", now)
    elif previous is not None and previous.get("sha256") == got.sha256:
        changed, fetched_at = False, now                 # same bytes again: keep the old file
        got.tmp.unlink()
    else:
        changed, fetched_at = True, now
        os.replace(got.tmp, target)
    _write_meta(target, {"url": url, "etag": got.etag, "last_modified": got.last_modified,
                         "sha256": got.sha256, "size": got.size, "fetched_at": fetched_at, "checked_at": now})
    return changed, fetched_at, now


def _fetch_live(spec: SourceSpec, settings: Settings, session: requests.Session) -> FetchResult:
    from . import http

    url = spec.url
    target = cache_path(spec, settings)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SourceError(f"source {spec.name}: cannot create the cache folder {target.parent}: {exc}") from None
    previous = _valid_cache(spec, target)
    conditional = conditional_headers(previous, url)
    limits = http.Limits.from_settings(settings)
    temps: list[Path] = []

    def attempt(n: int) -> _Downloaded:
        with _get(session, url, settings, conditional) as resp:
            if resp.status_code == 304:
                if not conditional or previous is None:
                    raise transfer.Permanent("HTTP 304 Not Modified to a request that was not conditional")
                return _Downloaded(None, 304, previous["sha256"], previous["size"],
                                   resp.headers.get("ETag") or previous.get("etag"),
                                   resp.headers.get("Last-Modified") or previous.get("last_modified"))
            http.check_status(resp)
            if resp.status_code != 200:
                raise transfer.Permanent(f"unexpected {http.describe_status(resp)} (expected 200)")
            return _download(spec, resp, target, settings, limits, temps)

    try:
        got, attempts = http.run_with_retries(spec.name, url, settings, attempt, limits=limits)
        changed, _fetched_at, now = _keep(got, previous, target, url)
    except OSError as exc:
        raise SourceError(f"source {spec.name}: cannot write the download cache {target}: {exc}") from None
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
    return FetchResult(spec.name, target, url, "live", got.sha256, got.size, spec.live_release, spec.cog,
                       etag=got.etag, last_modified=got.last_modified, fetched_at=now,
                       changed=changed, attempts=attempts)


def fetch_source(spec: SourceSpec, settings: Settings, session=None) -> FetchResult:
    """Return the local file of one source: the mirror file in place, or the verified download."""
    if settings.mirror_dir is not None:
        return _fetch_mirror(spec, settings)
    from . import http  # live mode only

    if session is not None:
        return _fetch_live(spec, settings, session)
    with http.make_session() as own:
        return _fetch_live(spec, settings, own)


# --------------------------------------------------------------------------------------------------
# probe

def version_from_headers(headers) -> str | None:
    """``etag:<ETag>``, else ``last-modified:<date>``, else ``length:<Content-Length>``, else None."""
    if headers.get("ETag"):
        return f"etag:{headers['ETag']}"
    if headers.get("Last-Modified"):
        return f"last-modified:{headers['Last-Modified']}"
    length = (headers.get("Content-Length") or "").strip()
    if length.isdigit() and int(length) > 0:
        return f"length:{length}"
    return None


def probe_source(spec: SourceSpec, settings: Settings, session=None) -> str:
    """A version string of a source, fetching as little as possible; SourceError on failure.

    * mirror mode: ``sha256:<hex>`` of the mirror file (content hash: immune to ``touch``/copies);
    * live mode: a HEAD gives ``etag:...``, else ``last-modified:...``, else ``length:...``; if HEAD is
      refused (403/405/501) or gives none of these, a (conditional) GET whose headers are read and the
      body left unread; on 304 the cached validators are used; if the server gives no validator at
      all the body is streamed and hashed (``sha256:<hex>``, the same hash :func:`fetch_source`
      records), without being stored.
    """
    if settings.mirror_dir is not None:
        return f"sha256:{sha256_file(mirror_file(spec, settings))}"
    from . import http  # live mode only

    if session is not None:
        return _probe_live(spec, settings, session)
    with http.make_session() as own:
        return _probe_live(spec, settings, own)


def _probe_live(spec: SourceSpec, settings: Settings, session: requests.Session) -> str:
    from . import http

    url = spec.url

    def head(n: int) -> str | None:
        with http.request(session, "HEAD", url, headers={"Accept-Encoding": http.ACCEPT_ENCODING},
                          timeout=settings.http_timeout) as resp:
            if resp.status_code in (403, 405, 501):
                return None
            http.check_status(resp)
            return version_from_headers(resp.headers)

    limits = http.Limits.from_settings(settings)      # one deadline for the HEAD and the GET
    version, _ = http.run_with_retries(spec.name, url, settings, head, what="probe (HEAD)", limits=limits)
    if version:
        return version

    previous = read_meta(cache_path(spec, settings))
    conditional = conditional_headers(previous, url)

    def get(n: int) -> str:
        with _get(session, url, settings, conditional) as resp:
            if resp.status_code == 304 and conditional and previous is not None:
                merged = {"ETag": resp.headers.get("ETag") or previous.get("etag"),
                          "Last-Modified": resp.headers.get("Last-Modified") or previous.get("last_modified")}
                return version_from_headers(merged) or f"sha256:{previous['sha256']}"
            http.check_status(resp)
            if resp.status_code != 200:
                raise transfer.Permanent(f"unexpected {http.describe_status(resp)} (expected 200)")
            found = version_from_headers(resp.headers)
            if found:
                return found
            return f"sha256:{http.read_body(resp, None, settings.http_timeout, limits).sha256}"

    probed, _ = http.run_with_retries(spec.name, url, settings, get, what="probe (GET)", limits=limits)
    return probed
