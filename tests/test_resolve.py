"""Resolution of each source's release (pipeline.sources.resolve): the newest file of a mirror, the
newest data.gouv.fr resource through the API (loopback server), pins, locks, checksums, and the
references a resolved COG year needs."""

from __future__ import annotations

import json

import pytest
from http_server import FaultServer, require_shared_data
from source_fixtures import COMMUNES, GROUPEMENTS, loopback_catalog, resource, scratch_mirror, serve_api

from pipeline.errors import ReconciliationError, SourceError
from pipeline.settings import Settings
from pipeline.sources.catalog import load_catalog
from pipeline.sources.resolve import fetch_one, fetch_sources, resolve_source

DATA = require_shared_data()
NEWER = "territoires_industrie/liste-ti-com2023-20250301.csv"


def mirror_settings(mirror, tmp_path, **kw) -> Settings:
    return Settings(mirror_dir=mirror, raw_dir=tmp_path / "raw", output_dir=tmp_path / "out", **kw)


def test_the_shared_mirror_resolves_to_its_known_files(tmp_path):
    settings = mirror_settings(DATA, tmp_path)
    catalog = load_catalog(settings)
    for spec in catalog.sources.values():
        resolved, _entry = resolve_source(spec, settings, catalog)
        assert (resolved.mirror, resolved.cog, resolved.mirror_release) == (spec.mirror, spec.cog, spec.mirror_release)
    boundaries, _ = resolve_source(catalog.boundaries(), settings, catalog)
    assert "sample" not in boundaries.mirror          # the small sample file is not a release


def test_a_newer_release_in_the_mirror_is_picked_by_its_file_name(tmp_path):
    body = (DATA / COMMUNES).read_bytes()
    mirror = scratch_mirror(tmp_path, DATA, {NEWER: body,
                                             "territoires_industrie/liste-ti-com2025-20240101.csv": body})
    settings = mirror_settings(mirror, tmp_path)
    catalog = load_catalog(settings)
    resolved, entry = resolve_source(catalog.source("ti2023_communes"), settings, catalog)
    assert (resolved.mirror, resolved.cog, resolved.mirror_release) == (NEWER, 2023, "2025-03-01")
    assert (entry["how"], entry["date"], entry["file"]) == ("newest", "2025-03-01", "liste-ti-com2023-20250301.csv")
    # a pin by date, by COG year or by file name keeps an older release
    for pin, file in (("20231107", "ti2023_communes_anct_20231107.csv"), ("2025", "liste-ti-com2025-20240101.csv"),
                      ("liste-ti-com2025-20240101.csv", "liste-ti-com2025-20240101.csv")):
        pinned = mirror_settings(mirror, tmp_path, pins={"ti2023_communes": pin})
        cat = load_catalog(pinned)
        resolved, entry = resolve_source(cat.source("ti2023_communes"), pinned, cat)
        assert (entry["file"], entry["how"], entry["pin"]) == (file, "pinned", pin)
    bad = mirror_settings(mirror, tmp_path, pins={"ti2023_communes": "19990101"})
    cat = load_catalog(bad)
    with pytest.raises(SourceError, match=r"source ti2023_communes: pin '19990101' \(TI_PIN_TI2023_COMMUNES or the "
                                          r"catalog's pin\) matches no release in the mirror folder .*releases "
                                          r"found: liste-ti-com2023-20250301.csv, liste-ti-com2025-20240101.csv, "
                                          r"ti2023_communes_anct_20231107.csv"):
        resolve_source(cat.source("ti2023_communes"), bad, cat)


def test_pins_come_from_the_environment():
    settings = Settings.from_env({"TI_PIN_TI2023_COMMUNES": " 20231107 ", "TI_LOCK": "m.json"})
    assert settings.pins == {"ti2023_communes": "20231107"} and settings.lock_path.name == "m.json"
    assert load_catalog(settings).source("ti2023_communes").pin == "20231107"


@pytest.fixture
def server():
    with FaultServer() as srv:
        yield srv


def live_settings(tmp_path, server, **kw) -> Settings:
    return Settings(raw_dir=tmp_path / "raw", output_dir=tmp_path / "out", http_timeout=5, http_retries=1,
                    http_backoff=0.01, catalog_path=loopback_catalog(tmp_path, server), **kw)


def test_the_api_gives_the_newest_matching_resource_and_its_checksum_is_verified(tmp_path, server):
    old, new = (DATA / COMMUNES).read_bytes(), (DATA / COMMUNES).read_bytes() + b"ti-0101,Basse-Terre,97105,x\n"
    grpt = (DATA / GROUPEMENTS).read_bytes()
    resources = [resource(server, "liste-ti-com2023-20231107.csv", old, "20231107-101010", "r-com-1"),
                 resource(server, "liste-ti-com2023-20240704.csv", new, "20240704-091848", "r-com-2"),
                 resource(server, "liste-ti-grpt2023-20240704.csv", grpt, "20240704-091848", "r-grpt-2"),
                 resource(server, "liste-ti-20240704.csv", b"id_ti,lib_ti\n", "20240704-091848", "r-list")]
    serve_api(server, resources)
    settings = live_settings(tmp_path, server)
    catalog = load_catalog(settings)
    result = fetch_one(settings, catalog, "ti2023_communes")
    assert result.path.read_bytes() == new and result.origin == resources[1]["url"]
    lock = result.lock
    assert (lock["resource_id"], lock["release"], lock["cog"], lock["how"]) == ("r-com-2", "2024-07-04", 2023, "newest")
    assert lock["checksum"] == resources[1]["checksum"] and lock["last_modified"] == resources[1]["last_modified"]
    assert lock["url"] == resources[1]["url"] and lock["sha256"] == result.sha256
    assert fetch_one(settings, catalog, "ti2023_groupements").lock["resource_id"] == "r-grpt-2"
    # the API's checksum does not match the file: refused, naming the resource
    resources[1]["checksum"]["value"] = "0" * 40
    serve_api(server, resources)
    with pytest.raises(SourceError, match=r"source ti2023_communes: .*liste-ti-com2023-20240704.csv: sha1 [0-9a-f]{40} "
                                          r"differs from the checksum the data.gouv.fr API gives \(0{40}, resource r-com-2\)"):
        fetch_one(settings, catalog, "ti2023_communes")


def test_an_api_without_a_matching_resource_is_named(tmp_path, server):
    serve_api(server, [resource(server, "liste-acv-com2025-20250704.csv", b"a,b\n", "20250924-154200", "r-acv")])
    settings = live_settings(tmp_path, server)
    with pytest.raises(SourceError, match=r"source ti2023_communes: no resource of the data.gouv.fr dataset "
                                          r"programme-territoires-dindustrie \(http://127.0.0.1:\d+/api/1/datasets/"
                                          r"programme-territoires-dindustrie/\) has a file name matching liste-ti-com"):
        fetch_one(settings, load_catalog(settings), "ti2023_communes")


def test_boundaries_take_the_newest_year_that_answers(tmp_path, server):
    body = (DATA / "boundaries/communes_cog2024_sample_dep01_dep23_dep971.geojson").read_bytes()
    path = "/contours-administratifs/{year}/geojson/communes-50m.geojson.gz"
    server.route(path.format(year=2024), body, content_type="application/geo+json")
    settings = live_settings(tmp_path, server)
    catalog = load_catalog(settings)
    resolved, entry = resolve_source(catalog.boundaries(), settings, catalog)
    assert (resolved.cog, entry["url"]) == (2024, server.url(path.format(year=2024)))
    # 2025 is the newest COG year the catalog's references cover: tried first, then 2024
    assert [h.path for h in server.log if h.method == "HEAD"] == [path.format(year=2025), path.format(year=2024)]
    server.route(path.format(year=2025), body, content_type="application/geo+json")
    assert resolve_source(catalog.boundaries(), settings, catalog)[0].cog == 2025
    pinned = live_settings(tmp_path, server, pins={"communes_boundaries": "2024"})
    cat = load_catalog(pinned)
    assert resolve_source(cat.boundaries(), pinned, cat)[1]["how"] == "pinned"


def test_a_lock_reads_exactly_its_files_and_refuses_another_body(tmp_path):
    mirror = scratch_mirror(tmp_path, DATA, {NEWER: (DATA / COMMUNES).read_bytes()})
    settings = mirror_settings(mirror, tmp_path)
    catalog = load_catalog(settings)
    locked = {"ti2023_communes": {**fetch_one(settings, catalog, "ti2023_communes").lock,
                                  "mirror": COMMUNES, "file": "x.csv",
                                  "sha256": fetch_one(settings, catalog, "ti2023_groupements").sha256}}
    (tmp_path / "manifest.json").write_text(json.dumps({"phase": "2023-2027", "lock": locked}))
    with_lock = mirror_settings(mirror, tmp_path, lock_path=tmp_path / "manifest.json")
    with pytest.raises(SourceError, match=rf"source ti2023_communes: {mirror / COMMUNES} has sha256 [0-9a-f]{{64}}, "
                                          r"but the lock pins [0-9a-f]{64}"):
        fetch_one(with_lock, catalog, "ti2023_communes")
    with pytest.raises(SourceError, match=r"source decoupage_2023_epci: not in the lock .*manifest.json \(it locks "
                                          r"ti2023_communes\)"):
        fetch_one(with_lock, catalog, "decoupage_2023_epci")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SourceError, match=r"lock file .*bad.json is invalid at \(top level\)"):
        fetch_one(mirror_settings(mirror, tmp_path, lock_path=tmp_path / "bad.json"), catalog, "ti2023_communes")


def test_a_list_of_a_cog_year_without_references_names_the_missing_one(tmp_path):
    grpt = (DATA / GROUPEMENTS).read_bytes()
    mirror = scratch_mirror(tmp_path, DATA, {"territoires_industrie/liste-ti-grpt2026-20261201.csv": grpt})
    settings = mirror_settings(mirror, tmp_path)
    catalog = load_catalog(settings)
    names = ["communes_boundaries", "insee_mvt_communes", "ti2023_communes", "ti2023_groupements"]
    with pytest.raises(ReconciliationError, match=r"no INSEE commune-change history for COG 2026: source "
                                                  r"insee_mvt_communes \(.*\) covers COG years up to 2025, needed by "
                                                  r"ti2023_groupements \(COG 2026\); add a newer release"):
        fetch_sources(settings, catalog, names)
    # with a change history said to reach 2026 (the same file under a newer name), the next gap is named
    history = (DATA / "admin/insee_mvtcommunes_1943-2025_via-COGiter-0.0.15.csv.gz").read_bytes()
    mirror = scratch_mirror(tmp_path / "b", DATA, {
        "territoires_industrie/liste-ti-grpt2026-20261201.csv": grpt,
        "admin/insee_mvtcommunes_1943-2026_via-COGiter-0.0.16.csv.gz": history})
    settings = mirror_settings(mirror, tmp_path)
    with pytest.raises(ReconciliationError, match=r"no decoupage-administratif reference for COG 2026 \(source "
                                                  r"decoupage_2026_communes is not in the catalog"):
        fetch_sources(settings, load_catalog(settings), names)
