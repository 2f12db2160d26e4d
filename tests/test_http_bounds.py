"""Every HTTP read is bounded in bytes and time (issue #18): the API's JSON answer is streamed under
TI_MAX_SOURCE_MB, and TI_HTTP_DEADLINE holds while the headers drip in, enforced by a watchdog."""

from __future__ import annotations

import dataclasses
import resource as rlimit
import time

import pytest
from http_server import FaultServer, Reply, require_shared_data
from source_fixtures import API_PATH, loopback_catalog

from pipeline.errors import SourceError
from pipeline.settings import Settings
from pipeline.sources.catalog import load_catalog
from pipeline.sources.fetch import fetch_source
from pipeline.sources.resolve import resolve_source

require_shared_data()


@pytest.fixture
def server():
    with FaultServer() as srv:
        yield srv


def live_settings(tmp_path, server, **kw) -> Settings:
    return Settings(**{"raw_dir": tmp_path / "raw", "output_dir": tmp_path / "out", "http_timeout": 5,
                       "http_retries": 1, "http_backoff": 0.01, "catalog_path": loopback_catalog(tmp_path, server),
                       **kw})


def test_an_endless_json_answer_of_the_api_is_cut_at_the_size_cap(tmp_path, server):
    # blanks are valid JSON padding: only a cap stops this body (64 KiB sent 10**6 times, no length)
    server.route(API_PATH, b" " * 65536, content_type="application/json", send_length=False)
    server.script(API_PATH, Reply(send_length=False, repeat=10**6))
    settings = live_settings(tmp_path, server, max_source_mb=2, http_deadline=60)
    catalog = load_catalog(settings)
    peak = rlimit.getrusage(rlimit.RUSAGE_SELF).ru_maxrss
    with pytest.raises(SourceError, match=r"source ti2023_communes: resolution \(data.gouv.fr API\) of .* failed: "
                                          r"body \(after \d+ bytes received\) larger than 2 MiB \(TI_MAX_SOURCE_MB\)"):
        resolve_source(catalog.source("ti2023_communes"), settings, catalog)
    assert rlimit.getrusage(rlimit.RUSAGE_SELF).ru_maxrss - peak < 200 * 1024   # KiB: nothing near the whole body
    assert len(server.hits(API_PATH)) == 1                                     # a cap is not retried
    server.script(API_PATH, Reply(send_length=False, repeat=10**6))
    with pytest.raises(SourceError, match=r"larger than 64 MiB \(the cap on API answers\)"):  # whatever the setting
        resolve_source(catalog.source("ti2023_communes"), dataclasses.replace(settings, max_source_mb=2048), catalog)


def test_headers_sent_one_byte_at_a_time_end_at_the_deadline(tmp_path, server):
    settings = live_settings(tmp_path, server, http_deadline=2, http_retries=3)
    catalog = load_catalog(settings)
    spec = catalog.source("ti2023_communes")
    path = "/" + spec.url.split("/", 3)[3]
    server.route(path, b"x")
    server.script(path, Reply(header_drip=0.5))
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=r"download deadline of 2 s passed \(TI_HTTP_DEADLINE\)"):
        fetch_source(spec, settings)
    assert time.monotonic() - t0 < 4


def test_an_api_answer_dripping_its_headers_ends_at_the_deadline(tmp_path, server):
    server.route(API_PATH, b"{}", content_type="application/json")
    server.script(API_PATH, Reply(header_drip=0.5))
    settings = live_settings(tmp_path, server, http_deadline=2)
    catalog = load_catalog(settings)
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=r"deadline of 2 s passed"):
        resolve_source(catalog.source("ti2023_communes"), settings, catalog)
    assert time.monotonic() - t0 < 4


def test_the_connect_timeout_never_runs_past_the_deadline():
    from pipeline.sources import http

    assert http._connect_within_deadline({"timeout": 30.0}) == {"timeout": 30.0}   # no watchdog: unchanged
    with http.Watchdog(time.monotonic() + 2):
        connect, read = http._connect_within_deadline({"timeout": 30.0})["timeout"]
    assert 1 < connect <= 2 and read == 30.0


def test_a_download_sidecar_that_is_a_device_is_ignored_unread(tmp_path, server):
    from pipeline.sources.fetch import cache_path, meta_path

    settings = live_settings(tmp_path, server)
    spec = load_catalog(settings).source("ti2023_communes")
    server.route("/" + spec.url.split("/", 3)[3], b"id_ti,insee_com\nti-0101,01001\n", content_type="text/csv")
    first = fetch_source(spec, settings)
    sidecar = meta_path(cache_path(spec, settings))
    sidecar.unlink()
    sidecar.symlink_to("/dev/zero")          # read whole, this would never end
    again = fetch_source(spec, settings)     # no usable sidecar: downloaded again, sidecar rewritten
    assert again.sha256 == first.sha256 and sidecar.is_file() and not sidecar.is_symlink()


def test_a_probe_whose_headers_drip_ends_at_the_deadline(tmp_path, server):
    from pipeline.sources.fetch import probe_source

    settings = live_settings(tmp_path, server, http_deadline=2)
    spec = load_catalog(settings).source("ti2023_communes")
    path = "/" + spec.url.split("/", 3)[3]
    server.route(path, b"x")
    server.script(path, Reply(header_drip=0.5))
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=r"probe \(HEAD\) of .* deadline of 2 s passed"):
        probe_source(spec, settings)
    assert time.monotonic() - t0 < 4
