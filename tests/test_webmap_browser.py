"""The published web map, opened in a real headless browser (Debian's chromium, WebGL on SwiftShader).

One real build of both phases from a scratch copy of the shared mirror where the territory
``ti-2704`` (Grand Chalon, home of Chalon-sur-Saône, 71076) is named ``<img src=x onerror=alert(1)>``
in both lists, its libraries copied next to the page (``TI_WEB_LIBRARIES``: a local npm install,
offline). The folder is served twice: by a server that answers HTTP Range requests (the page draws
the PMTiles) and by ``python -m http.server`` (it does not: the page says so and draws the light
GeoJSON). Each test runs against both, in a new page, and checks that no console error and no
dialog occurred. Skipped without chromium or npm (``apt-get install -y chromium``), failed instead
in CI (``CI_REQUIRE_CHROMIUM=1``).
"""

from __future__ import annotations

import html
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import browser
import geopandas as gpd
import pytest
import shapely
from web_fixtures import PLAN, XSS_ID, XSS_NAME, local_libraries, publish_both_phases, unavailable, xss_mirror

from pipeline.publish import weblibs, webmap

SERVERS = ["range", "python"]
SEA = (-4.0, 44.5)           # Bay of Biscay: no territory there


@pytest.fixture(scope="module")
def libraries(tmp_path_factory):
    reason = browser.chromium_missing()
    if reason:
        unavailable(reason)
    return local_libraries(tmp_path_factory)


@pytest.fixture(scope="module")
def published(mirror, libraries, tmp_path_factory):
    root = tmp_path_factory.mktemp("webmap")
    out = root / "out"
    publish_both_phases(xss_mirror(root, mirror), out, libraries)
    return out


@pytest.fixture(scope="module")
def servers(published):
    with browser.range_server(published) as ranged, browser.python_http_server(published) as plain:
        yield {"range": ranged, "python": plain}


@pytest.fixture(scope="module")
def chromium(published):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = browser.launch(p)
        yield instance
        instance.close()


class Page:
    """A new browser page that records console errors, page errors and dialogs."""

    def __init__(self, chromium, base: str):
        self.base = base
        self.context = chromium.new_context(viewport={"width": 1280, "height": 800}, reduced_motion="reduce")
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", self._dialog)

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self, path: str = "index.html") -> Page:
        self.page.goto(self.base + path)
        assert browser.wait_ready(self.page) == "ready", self.page.inner_text("#notice")
        self.idle()
        return self

    def idle(self) -> None:
        self.page.evaluate("window.territoiresIndustrie.idle()")

    def js(self, expression: str, arg=None):
        return self.page.evaluate(expression, arg)

    def config(self) -> dict:
        return self.js("window.territoiresIndustrie.config")

    def search(self, text: str) -> None:
        self.page.fill("#q", text)
        self.page.press("#q", "Enter")
        self.page.wait_for_selector("#card:not([hidden])")
        self.idle()

    def card(self) -> str:
        return self.page.inner_text("#card-title")

    def position(self, lon: float, lat: float) -> tuple[float, float]:
        """The page position of (lon, lat), projected by the map itself."""
        return tuple(self.js("([lon, lat]) => { const m = window.territoiresIndustrie.map; const p = m.project([lon, lat]);"
                             " const r = m.getContainer().getBoundingClientRect(); return [r.left + p.x, r.top + p.y]; }",
                             [lon, lat]))

    def pixel(self, lon: float, lat: float) -> tuple[int, ...]:
        """The colour drawn at (lon, lat)."""
        from PIL import Image

        x, y = self.position(lon, lat)
        image = Image.open(io.BytesIO(self.page.screenshot())).convert("RGB")
        return image.getpixel((round(x), round(y)))

    def rendered_ids(self) -> set[str]:
        return set(self.js("[...new Set(window.territoiresIndustrie.map.queryRenderedFeatures({layers: ['ti-fill']})"
                           ".map((f) => f.properties.id_ti))]"))

    def close(self) -> None:
        assert not self.dialogs, f"a dialog opened: {self.dialogs}"
        assert not self.errors, f"console errors: {self.errors}"
        self.context.close()


@pytest.fixture(params=SERVERS)
def page(request, chromium, servers):
    opened = Page(chromium, servers[request.param])
    opened.kind = request.param
    yield opened
    opened.close()


def _blend(color: str, over: str, alpha: float) -> tuple[int, ...]:
    fg = [int(color[i:i + 2], 16) for i in (1, 3, 5)]
    bg = [int(over[i:i + 2], 16) for i in (1, 3, 5)]
    return tuple(round(alpha * f + (1 - alpha) * b) for f, b in zip(fg, bg))


def _near(got, want, tolerance=12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(got, want))


def _interiors(published: Path, phase_dir: str = "") -> gpd.GeoDataFrame:
    """Each territory's centre of its largest inscribed circle, and the circle's radius (degrees),
    from the regional light GeoJSON (what the fallback draws; the tiles are finer)."""
    frame = gpd.read_file(published / phase_dir / "territoires-industrie-regional.geojson")
    lines = shapely.maximum_inscribed_circle(frame.geometry.values, 0.001)
    frame["x"] = shapely.get_x(shapely.get_point(lines, 0))
    frame["y"] = shapely.get_y(shapely.get_point(lines, 0))
    frame["radius"] = shapely.length(lines)
    return frame.sort_values("radius", ascending=False)


def _metropole_ids(config: dict) -> set[str]:
    return {t["id"] for t in config["territories"] if t["zone"] == "metropole"}


# ------------------------------------------------------------------ drawing
def test_page_draws_every_territory_in_its_colour(page, published):
    page.open()
    config = page.config()
    assert page.js("document.documentElement.dataset.source") == ("pmtiles" if page.kind == "range" else "geojson")
    notice = page.page.locator("#notice")
    if page.kind == "python":   # the page says why it shows the light file
        assert notice.is_visible() and "HTTP Range" in notice.inner_text()
        assert "territoires-industrie-regional.geojson" in notice.inner_text()
    else:
        assert notice.is_hidden()
    assert page.rendered_ids() == _metropole_ids(config)          # every metropolitan territory drawn
    style, interiors = config["style"], _interiors(published)
    by_id = {t["id"]: t for t in config["territories"]}
    for item in config["legend"]["classes"]:                       # the largest territory of each class
        value = {"true": True, "false": False}[item["value"]]
        best = next(r for r in interiors.itertuples() if by_id[r.id_ti]["is_new"] is value
                    and by_id[r.id_ti]["zone"] == "metropole")
        color = page.pixel(best.x, best.y)
        assert _near(color, _blend(item["color"], style["background"], style["fill_opacity"])), (best.id_ti, color)
    color = page.pixel(*SEA)
    assert _near(color, _blend(style["background"], style["background"], 1.0), 3), color


# ------------------------------------------------------------------ search
def test_search_by_commune_name_and_code_opens_the_territory_card(page):
    page.open()
    page.page.fill("#q", "chalon-sur-saone")                       # no accent, no case
    first = page.page.locator("#results li.result").first
    assert first.locator(".main").inner_text() == "Chalon-sur-Saône (71076)"
    assert first.locator(".sub").inner_text() == f"Commune · {XSS_NAME}"   # a name from the lists, as text
    for query in ("Chalon-sur-Saône", "71076"):
        page.page.fill("#q", "")
        page.search(query)
        assert page.card() == XSS_NAME
        assert f"Identifiant\n{XSS_ID}" in page.page.inner_text("#card-body")
        assert page.page.locator("#card li.match").inner_text().startswith("Chalon-sur-Saône")
        assert page.js("location.hash") == "#commune=71076"
    bounds = page.js("window.territoiresIndustrie.map.getBounds().toArray()")
    assert bounds[0][0] < 4.85 < bounds[1][0] and bounds[0][1] < 46.78 < bounds[1][1]   # Chalon is in view


def test_search_by_territory_name_or_id(page):
    page.open()
    config = page.config()
    target = next(t for t in config["territories"] if t["id"] != XSS_ID and t["zone"] == "metropole")
    page.search(target["name"].upper())
    assert page.card() == target["name"] and page.js("location.hash") == f"#{target['id']}"
    page.search(target["id"])
    assert page.card() == target["name"]


# ------------------------------------------------------------------ click, keyboard
def test_click_on_a_territory_opens_its_card_and_escape_closes_it(page, published):
    page.open()
    config = page.config()
    names = {t["id"]: t["name"] for t in config["territories"]}
    covered = page.js("['#zones', '#legend', '.maplibregl-ctrl-top-right'].map((s) => {"
                      " const r = document.querySelector(s).getBoundingClientRect();"
                      " return [r.left - 10, r.top - 10, r.right + 10, r.bottom + 10]; })")
    for row in _interiors(published).itertuples():
        if row.id_ti == XSS_ID or names.get(row.id_ti) is None:
            continue
        x, y = page.position(row.x, row.y)
        if 100 < x < 1180 and 100 < y < 760 and not any(a <= x <= c and b <= y <= d for a, b, c, d in covered):
            break
    page.page.mouse.click(x, y)
    page.page.wait_for_selector("#card:not([hidden])")
    assert page.card() == names[row.id_ti] and page.js("location.hash") == f"#{row.id_ti}"
    page.page.keyboard.press("Escape")
    assert page.page.locator("#card").is_hidden()
    assert page.js("location.hash").startswith("#carte=")


# ------------------------------------------------------------------ phases, links
def test_phase_switch_shows_the_149_territories_of_2018_2022(page):
    page.open("index.html#carte=5.00/46.6000/2.4000")
    link = page.page.locator('#phases a[data-phase="2018-2022"]')
    assert link.get_attribute("href") == "phase=2018-2022/#carte=5.00/46.6000/2.4000"
    link.click()
    page.page.wait_for_url("**/phase=2018-2022/**")
    assert browser.wait_ready(page.page) == "ready"
    page.idle()
    config = page.config()
    assert page.page.inner_text("#count") == "149 territoires" and config["territory_count"] == 149
    assert len(config["territories"]) == 149 and config["phase"] == "2018-2022"
    assert page.rendered_ids() == _metropole_ids(config)
    back = page.page.locator('#phases a[data-phase="2023-2027"]')
    assert back.get_attribute("href") == "../phase=2023-2027/#carte=5.00/46.6000/2.4000"
    back.click()
    page.page.wait_for_url("**/phase=2023-2027/**")
    assert browser.wait_ready(page.page) == "ready" and page.page.inner_text("#count") == "183 territoires"


def test_release_folder_page_links_to_the_published_other_phase(page, published):
    manifest = json.loads((published / "manifest.json").read_text(encoding="utf-8"))
    page.open(f"{manifest['release_path']}/index.html#carte=6.00/45.0000/4.0000")
    assert page.config()["build_id"] == manifest["build_id"]
    link = page.page.locator('#phases a[data-phase="2018-2022"]')
    assert link.get_attribute("href") == "../../../phase=2018-2022/#carte=6.00/45.0000/4.0000"
    link.click()
    page.page.wait_for_url("**/phase=2018-2022/**")
    assert browser.wait_ready(page.page) == "ready" and page.page.inner_text("#count") == "149 territoires"


def test_deep_links_restore_the_view(page):
    page.open(f"index.html#{XSS_ID}")
    assert page.card() == XSS_NAME
    bbox = next(t["bbox"] for t in page.config()["territories"] if t["id"] == XSS_ID)
    bounds = page.js("window.territoiresIndustrie.map.getBounds().toArray()")
    assert bounds[0][0] <= bbox[0] and bounds[0][1] <= bbox[1] and bbox[2] <= bounds[1][0] and bbox[3] <= bounds[1][1]
    page.open("index.html#commune=71076")
    assert page.card() == XSS_NAME and page.page.locator("#card li.match").inner_text().startswith("Chalon-sur-Saône")
    page.open("index.html#carte=8.00/47.3200/5.0400")
    view = page.js("(() => { const m = window.territoiresIndustrie.map; const c = m.getCenter();"
                   " return [m.getZoom(), c.lat, c.lng]; })()")
    assert view == pytest.approx([8.0, 47.32, 5.04], abs=1e-3)
    page.page.fill("#q", "71076")                      # a view someone shares opens the same way
    page.page.press("#q", "Enter")
    page.idle()
    shared = page.page.url
    page.open("index.html")
    page.page.goto(shared)
    assert browser.wait_ready(page.page) == "ready" and page.card() == XSS_NAME


# ------------------------------------------------------------------ text from the lists stays text
def test_a_territory_named_like_html_shows_as_text(page):
    page.open()
    page.page.fill("#q", "<img src")
    result = page.page.locator("#results li.result").first
    assert result.locator(".main").inner_text() == XSS_NAME
    page.page.press("#q", "Enter")
    page.page.wait_for_selector("#card:not([hidden])")
    assert page.card() == XSS_NAME
    assert page.js("document.querySelectorAll('img').length") == 0      # no element was made from the name
    x, y = page.position(4.85, 46.75)                                    # hover: the tooltip shows the name
    page.page.mouse.move(x, y)
    page.page.wait_for_selector("#tooltip:not([hidden])")
    assert page.page.inner_text("#tooltip") == XSS_NAME


def test_card_shows_the_plan_columns(page):
    page.open(f"index.html#{XSS_ID}")
    body = page.page.inner_text("#card-body")
    assert "Plan d'action" in body
    assert "Axe 1 : Transition écologique et énergétique\noui" in body
    assert "Axe 2 : Écosystèmes d'innovation\nnon" in body
    assert "Plan d'action adopté le\n15 mars 2024" in body
    assert "Actions de l'axe 2 (Écosystèmes d'innovation)\n4" in body
    assert f"Commentaire\n{PLAN['plan_commentaire']}" in body
    link = page.page.locator("#card-body a[href^='https://example.org/']")
    assert link.get_attribute("href") == PLAN["plan_url"] and link.get_attribute("rel") == "noopener noreferrer nofollow"
    assert page.js("document.querySelectorAll('#card-body script, #card-body b').length") == 0


# ------------------------------------------------------------------ downloads
def test_downloads_panel_lists_every_published_file_from_the_manifest(page, published):
    page.open()
    page.page.click("#open-downloads")
    page.page.wait_for_selector("table.files tbody tr")
    manifest = json.loads((published / "manifest.json").read_text(encoding="utf-8"))
    text = page.page.inner_text("#downloads")
    assert manifest["build_id"] in text and "Licence Ouverte" in text
    rows = page.page.locator("table.files tbody tr")
    assert rows.count() == len(manifest["outputs"]) + 2                 # + manifest.json and CHANGES.md
    for output in manifest["outputs"]:
        assert output["sha256"] in text and output["format"] in text
    for item in manifest["inputs"]:
        assert item["title"] in text
    page.page.keyboard.press("Escape")
    assert page.page.locator("#downloads").is_hidden()


def _cdn_copy(published: Path, folder: Path, cdn: str) -> Path:
    """The root files of ``published`` (hard links), its page written again for libraries taken from
    ``cdn`` (as a default build takes them from jsDelivr), the local copies left out."""
    folder.mkdir()
    names = set(weblibs.published_names().values())
    for f in published.iterdir():
        if f.is_file() and f.name not in names and f.name != "index.html":
            os.link(f, folder / f.name)
    config = json.loads((published / "territoires-industrie-map.json").read_text(encoding="utf-8"))
    page = webmap.render_page(config["phase"], config["territory_count"], weblibs.library_files(cdn))
    (folder / "index.html").write_text(page, encoding="utf-8")
    return folder


def test_libraries_from_another_origin_load_with_their_hashes(chromium, published, libraries, tmp_path):
    """The default set-up, with a loopback CDN: the libraries come from another origin, checked
    against their SRI hashes under the page's policy; an altered file is refused."""
    with browser.npm_cdn(libraries) as cdn:
        folder = _cdn_copy(published, tmp_path / "cdn", cdn)
        assert f"script-src 'self' {cdn.rstrip('/')} 'sha256-" in html.unescape((folder / "index.html").read_text(encoding="utf-8"))
        with browser.range_server(folder) as url:
            page = Page(chromium, url).open()
            assert page.js("document.documentElement.dataset.source") == "pmtiles"
            assert page.rendered_ids() == _metropole_ids(page.config())
            page.search("71076")
            assert page.card() == XSS_NAME
            page.close()
    for altered in ("maplibre-gl.mjs", "maplibre-gl-worker.mjs"):   # a module script; the worker, fetched
        with browser.npm_cdn(libraries, tamper=altered) as cdn:
            folder = _cdn_copy(published, tmp_path / altered, cdn)
            with browser.range_server(folder) as url:
                page = Page(chromium, url)
                page.page.goto(url + "index.html")
                assert browser.wait_ready(page.page) == "error", altered
                assert any(altered in e and "integrity" in e for e in page.errors), page.errors
                assert page.page.is_visible("#notice")
                page.context.close()


def test_page_opened_as_a_file_says_it_must_be_served(chromium, published):
    """Browsers run no module script from file://: the page's own text says what to do."""
    context = chromium.new_context()
    page = context.new_page()
    page.goto((published / "index.html").as_uri())
    page.wait_for_load_state("load")
    assert "python3 -m http.server" in page.inner_text("#notice") and page.is_visible("#notice")
    context.close()


def test_readme_screenshot_command(published, tmp_path):
    """The README's command that made docs/web-map.png runs (into a temporary file here)."""
    png = tmp_path / "web-map.png"
    run = subprocess.run([sys.executable, str(Path(browser.__file__)), str(published), str(png)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    from PIL import Image

    assert Image.open(png).size == (1280, 800) and png.stat().st_size < 300_000
