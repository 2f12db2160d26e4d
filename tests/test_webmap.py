"""The web map's files without a browser: pinned libraries, page policy, code that never parses data
as HTML, the setting TI_WEB_LIBRARIES, the data the page reads (from the real build) and the
PMTiles metadata. The page itself is opened in chromium by tests/test_webmap_browser.py."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from publish_fixtures import cached_territories
from web_fixtures import WEB, local_libraries

from pipeline.errors import PublishError
from pipeline.publish import publish_release, stable_paths, tiles, weblibs, webmap
from pipeline.publish.light import MAP_COLUMNS
from pipeline.publish.provenance import ATTRIBUTION
from pipeline.settings import ASSETS_DIR, Settings, SettingsError

PINS = json.loads((ASSETS_DIR / "web" / "libraries.json").read_text(encoding="utf-8"))
CDN = "https://cdn.jsdelivr.net"


# ------------------------------------------------------------------ the pinned libraries
def test_pinned_hashes_are_those_of_the_npm_package_files(tmp_path_factory):
    """libraries.json is the one source of truth: each file's SRI hash is the hash of the file npm
    installs at the pinned version (so also of the CDN's copy, which serves npm files verbatim)."""
    modules = local_libraries(tmp_path_factory)
    for lib in PINS["libraries"]:
        installed = json.loads((modules / lib["package"] / "package.json").read_text(encoding="utf-8"))
        assert installed["version"] == lib["version"], lib["package"]
        for f in lib["files"]:
            assert weblibs.sri((modules / lib["package"] / f["path"]).read_bytes()) == f["integrity"], f["path"]


def test_the_npm_copy_for_ci_pins_the_same_versions():
    package = json.loads((WEB / "package.json").read_text(encoding="utf-8"))
    lock = json.loads((WEB / "package-lock.json").read_text(encoding="utf-8"))
    pinned = {lib["package"]: lib["version"] for lib in PINS["libraries"]}
    assert package["dependencies"] == pinned
    assert lock["packages"][""]["dependencies"] == pinned
    for name, version in pinned.items():
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
    assert weblibs.load_pins() == PINS


def test_library_files_follow_the_setting(tmp_path):
    default = weblibs.library_files(None)
    lib = default["maplibre_js"]
    assert lib.url == f"{CDN}/npm/maplibre-gl@{lib.version}/dist/maplibre-gl.mjs" and lib.local is None
    assert weblibs.origins(default) == [CDN]
    mirror = weblibs.library_files("https://example.org/npm/")
    assert mirror["pmtiles_js"].url.startswith("https://example.org/npm/pmtiles@")
    assert weblibs.origins(mirror) == ["https://example.org"]
    local = weblibs.library_files(str(tmp_path))
    assert local["maplibre_js"].url == "maplibre-gl.js" and local["maplibre_js"].local == tmp_path / "maplibre-gl/dist/maplibre-gl.mjs"
    assert weblibs.origins(local) == []
    bad = tmp_path / "libraries.json"
    bad.write_text(json.dumps({**PINS, "base_url": "http://cdn.example/"}), encoding="utf-8")
    with pytest.raises(PublishError, match=r"libraries\.json: not a valid library pin file .*https"):
        weblibs.load_pins(bad)


# ------------------------------------------------------------------ the setting
def test_web_libraries_setting(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({}).web_libraries is None
    assert Settings.from_env({"TI_WEB_LIBRARIES": "https://cdn.example/npm"}).web_libraries == "https://cdn.example/npm/"
    assert Settings.from_env({"TI_WEB_LIBRARIES": "tests/web/node_modules"}).web_libraries == str(
        tmp_path / "tests/web/node_modules")
    for bad in ("ftp://cdn.example/npm/", "javascript://x", "https://cdn.example/a b/", "https://x/';script-src *"):
        with pytest.raises(SettingsError, match=r"^TI_WEB_LIBRARIES=.*: expected a node_modules folder"):
            Settings.from_env({"TI_WEB_LIBRARIES": bad})


# ------------------------------------------------------------------ the page's policy and code
class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.inline: list[tuple[dict, str]] = []     # (attributes, text) of each script with content

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        if self.tags and self.tags[-1][0] == "script" and data.strip():
            self.inline.append((self.tags[-1][1], data))


def _policy(page: str) -> dict[str, list[str]]:
    meta = next(a for t, a in _parse(page).tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    return {d.split()[0]: d.split()[1:] for d in meta["content"].split("; ")}


def _parse(page: str) -> _Tags:
    tags = _Tags()
    tags.feed(page)
    return tags


@pytest.mark.parametrize("setting, origins", [(None, [CDN]), ("https://mirror.example/npm/", ["https://mirror.example"]),
                                              ("/srv/node_modules", [])])
def test_page_allows_only_its_own_scripts_and_the_pinned_libraries(setting, origins):
    libraries = weblibs.library_files(setting)
    page = webmap.render_page("2023-2027", 183, libraries)
    policy = _policy(page)
    assert policy["default-src"] == ["'none'"]
    tags = _parse(page)
    [(attrs, imports)] = tags.inline                  # the one inline script: the import map, allowed by its hash
    digest = base64.b64encode(hashlib.sha256(imports.encode()).digest()).decode()
    assert attrs == {"type": "importmap"}
    assert policy["script-src"] == ["'self'", *origins, f"'sha256-{digest}'"] and policy["style-src"] == ["'self'", *origins]
    lib = libraries["maplibre_js"]
    address = lib.url if origins else f"./{lib.url}"
    assert json.loads(imports) == {"imports": {"maplibre-gl": address}, "integrity": {address: lib.integrity}}
    assert policy["connect-src"] == ["'self'", *origins]
    assert policy["worker-src"] == ["blob:"] and policy["object-src"] == ["'none'"] and policy["base-uri"] == ["'none'"]
    assert not any("unsafe" in v for values in policy.values() for v in values)
    assert not any(k.startswith("on") or k == "style" for _, attrs in tags.tags for k in attrs)
    loaded = [a for t, a in tags.tags if (t == "script" and "src" in a) or (t == "link" and a.get("rel") == "stylesheet")]
    loaded += [a for t, a in tags.tags if t == "link" and a.get("rel") == "modulepreload"]
    third_party = [a for a in loaded if (a.get("src") or a.get("href")) not in (webmap.SCRIPT_NAME, webmap.STYLE_NAME)]
    assert len(third_party) == 3 and all(a["integrity"].startswith("sha384-") and a["crossorigin"] == "anonymous"
                                         for a in third_party)
    urls = {a.get("src") or a.get("href") for a in third_party}
    assert urls == {lib.url for lib in libraries.values() if lib.role != "maplibre_worker"}
    worker = next(a for t, a in tags.tags if a.get("id") == "lib-maplibre")
    assert worker["data-worker"] == libraries["maplibre_worker"].url
    assert worker["data-worker-integrity"] == libraries["maplibre_worker"].integrity
    assert '<html lang="fr">' in page


def test_page_code_never_parses_text_as_html():
    """The page's own script puts every text from the data files into the page as text."""
    code = (ASSETS_DIR / "web" / webmap.SCRIPT_NAME).read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                 "setHTMLUnsafe", "parseFromString", "createContextualFragment", "srcdoc"):
        assert sink not in code, sink
    assert re.search(r"setTimeout\(\s*['\"`]", code) is None
    # links built from data are checked first: only http(s) URLs and plain file names become hrefs
    assert "HTTP_URL.test" in code and "SAFE_NAME.test" in code


# ------------------------------------------------------------------ a local copy
def _fake_modules(root: Path, source: Path | None = None) -> Path:
    """A node_modules folder: copies of the pinned files (or files of other bytes without ``source``)."""
    for lib in PINS["libraries"]:
        for f in lib["files"]:
            target = root / lib["package"] / f["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            if source is None:
                target.write_text("// not the pinned file\n", encoding="utf-8")
            else:
                shutil.copyfile(source / lib["package"] / f["path"], target)
    return root


def test_a_local_copy_is_published_next_to_the_page(tmp_path, tmp_path_factory, mirror):
    modules = _fake_modules(tmp_path / "node_modules", local_libraries(tmp_path_factory))
    out = tmp_path / "out"
    small = cached_territories(mirror)
    small = small[small["id_ti"].str.startswith(("ti-01", "ti-02", "ti-27"))]
    manifest = publish_release(small, Settings(output_dir=out, web_libraries=str(modules)), build_id="local",
                               inputs=[], checks=[])
    names = {o["name"]: o for o in manifest["outputs"]}
    for role, lib in weblibs.library_files(str(modules)).items():
        entry = names[f"web_lib_{role}"]
        assert entry["path"] == lib.published_as and entry["integrity"] == lib.integrity
        assert (out / lib.published_as).read_bytes() == lib.local.read_bytes()
        assert (out / "phase=2023-2027" / lib.published_as).is_file() and (out / entry["release_path"]).is_file()
    page = (out / "index.html").read_text(encoding="utf-8")
    own, *hashes = _policy(page)["script-src"]          # no other origin: the libraries are beside the page
    assert own == "'self'" and len(hashes) == 1 and hashes[0].startswith("'sha256-")
    assert 'src="pmtiles.js"' in page and '{"maplibre-gl":"./maplibre-gl.js"}' in page


def test_a_local_copy_of_other_bytes_is_refused_and_nothing_changes(tmp_path, mirror):
    out = tmp_path / "out"
    small = cached_territories(mirror)
    small = small[small["id_ti"].str.startswith(("ti-01", "ti-02"))]
    publish_release(small, Settings(output_dir=out), build_id="good", inputs=[], checks=[])
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "releases" not in p.parts}
    modules = _fake_modules(tmp_path / "node_modules")
    with pytest.raises(PublishError, match=r"maplibre-gl\.mjs is not maplibre-gl 6\.20\.0 as pinned in "
                                           r"assets/web/libraries\.json \(its sha384 differs\); TI_WEB_LIBRARIES="):
        publish_release(small, Settings(output_dir=out, web_libraries=str(modules)), build_id="bad", inputs=[], checks=[])
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "releases" not in p.parts}
    assert after == before and not (out / "releases" / "bad").exists()
    with pytest.raises(PublishError, match=r"cannot read the web map library"):
        publish_release(small, Settings(output_dir=out, web_libraries=str(tmp_path / "none")), build_id="none",
                        inputs=[], checks=[])


# ------------------------------------------------------------------ the data the page reads
def test_search_index_over_its_target_is_refused(tmp_path):
    frame = cached_territories().iloc[:3]
    index = webmap.search_index(frame, None, phase="2023-2027", build_id="x")
    path = webmap.write_json(index, tmp_path / "search.json")
    facts = webmap.verify_search(path, frame)
    assert facts["rows"] == 3 and facts["communes"] == frame["n_communes"].sum()
    with pytest.raises(PublishError, match=r"search\.json: the search index is \d+ bytes \(\d+ gzipped\), over its target of 100"):
        webmap.verify_search(path, frame, max_bytes=100)


@pytest.fixture(scope="module")
def published_real(real_release):
    """The session's publish of the real build (tests/conftest.py: ``real_release``), read-only."""
    return real_release


def test_search_index_of_the_real_build_meets_its_size_targets(published_real):
    out, manifest = published_real
    raw = (out / webmap.SEARCH_NAME).read_bytes()
    entry = next(o for o in manifest["outputs"] if o["name"] == "web_search")
    assert len(raw) == entry["bytes"] <= webmap.SEARCH_MAX_BYTES
    assert len(gzip.compress(raw, 9)) == entry["gzip_bytes"] <= webmap.SEARCH_MAX_GZIP_BYTES
    index = json.loads(raw)
    rows = {t[0]: t for t in index["territories"]}
    assert len(rows) == 183 and entry["communes"] == sum(len(t[2]) for t in rows.values()) == 18659
    grand_chalon = rows["ti-2704"]
    assert grand_chalon[1] == "Grand Chalon"
    assert grand_chalon[3][grand_chalon[2].index("71076")] == "Chalon-sur-Saône"


def test_page_data_of_the_real_build(published_real):
    out, _ = published_real
    data = json.loads((out / webmap.DATA_NAME).read_text(encoding="utf-8"))
    assert data["territory_count"] == len(data["territories"]) == 183
    assert data["phases"] == ["2023-2027", "2018-2022"] and data["phase"] == data["current_phase"] == "2023-2027"
    assert data["files"]["pmtiles"] == "territoires-industrie.pmtiles"
    assert data["files"]["fallback"] == "territoires-industrie-regional.geojson"
    assert [c["value"] for c in data["legend"]["classes"]] == ["true", "false"]
    assert [z["label"] for z in data["zones"]] == ["France métropolitaine", "Guadeloupe", "Martinique", "Guyane",
                                                   "La Réunion", "Mayotte"]
    card = next(t for t in data["territories"] if t["id"] == "ti-2704")
    assert card["name"] == "Grand Chalon" and card["regions"] == ["27"] and card["zone"] == "metropole"
    assert data["regions"]["27"] == "Bourgogne-Franche-Comté"
    assert card["n_communes"] == 137 and card["population"] > 100_000 and card["plan"] == {}
    west, south, east, north = card["bbox"]
    assert west < 4.85 < east and south < 46.78 < north


def test_cards_carry_the_plan_columns_with_french_labels(mirror):
    frame = cached_territories(mirror)          # with generic plan values (tests/publish_fixtures.py)
    options = webmap.WebOptions(libraries=None, phases=("2023-2027", "2018-2022"), current_phase="2023-2027")
    data = webmap.map_data(frame, phase="2023-2027", build_id="x", options=options,
                           files={"layer": "territoires"}, fallback_simplification_m=None)
    labels = {f["name"]: f["label"] for f in data["fields"]}
    assert labels["axe_transition_ecologique"] == "Axe 1 : Transition écologique et énergétique"
    assert labels["plan_nb_actions_foncier"] == "Actions de l'axe 4 (Foncier industriel)"
    assert labels["plan_url"] == "Plan d'action"
    for card, (_, row) in zip(data["territories"], frame.sort_values("id_ti").iterrows()):
        for name in labels:
            assert (name in card["plan"]) == (not pd.isna(row[name])), name
        if "plan_date_adoption" in card["plan"]:
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", card["plan"]["plan_date_adoption"])
    json.dumps(data, allow_nan=False)           # plain JSON, no NaN


def test_pmtiles_header_centres_metropolitan_france_with_attribution(published_real):
    out, _ = published_real
    header, meta, _ = tiles.pmtiles_info(stable_paths(out)["pmtiles"])
    lon, lat = header["center_lon_e7"] / 1e7, header["center_lat_e7"] / 1e7
    assert -5.2 < lon < 9.6 and 41.3 < lat < 51.1 and header["center_zoom"] == tiles.CENTER_ZOOM
    assert header["min_lon_e7"] / 1e7 < -61 and header["max_lon_e7"] / 1e7 > 55   # the bounds keep the overseas
    assert meta["attribution"] == ATTRIBUTION and "ANCT" in meta["attribution"]
    assert meta["center"] == f"{lon:.4f},{lat:.4f},{tiles.CENTER_ZOOM}"
    assert "183 territories" in meta["description"] and meta["name"] == "Territoires d'industrie 2023-2027"
    layer = meta["vector_layers"][0]
    assert layer["id"] == tiles.LAYER and list(layer["fields"]) == list(MAP_COLUMNS)
    assert all(len(text) > 10 for text in layer["fields"].values())
