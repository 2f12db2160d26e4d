"""Serve a published folder and open its web map in Debian's chromium, headless (Playwright).

Two servers: :class:`RangeServer`, a static server answering HTTP Range requests with 206 (as
nginx, Apache and static hosts do), and Python's own ``python -m http.server``, run as a
subprocess exactly so, which answers every request with the whole file (200). :func:`launch`
starts chromium with WebGL on SwiftShader (no GPU).

Also a command, to refresh the README's screenshot from a published folder::

    python tests/browser.py data_out docs/web-map.png
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
INSTALL = "apt-get install -y chromium (README, Tests and CI)"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def chromium_missing() -> str | None:
    """Why chromium cannot run here (None when it can)."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not found ({INSTALL})"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install -e '.[test]')"
    return None


class _RangeHandler(SimpleHTTPRequestHandler):
    """``SimpleHTTPRequestHandler`` with single byte ranges (206, or 416 when unsatisfiable)."""

    def log_message(self, format, *args):   # quiet
        pass

    def send_head(self):
        match = _RANGE.match(self.headers.get("Range", "").strip())
        path = Path(self.translate_path(self.path))
        if not match or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        first, last = match.groups()
        if first:
            start, end = int(first), min(int(last) if last else size - 1, size - 1)
        else:
            start, end = max(size - int(last or 0), 0), size - 1
        if start > end or start >= size:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.end_headers()
            return None
        fh = open(path, "rb")   # noqa: SIM115 - returned to SimpleHTTPRequestHandler, which closes it
        fh.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self._left = end - start + 1
        return fh

    def copyfile(self, source, outputfile):
        left = getattr(self, "_left", None)
        if left is None:
            return super().copyfile(source, outputfile)
        while left > 0:
            block = source.read(min(left, 1 << 16))
            if not block:
                break
            outputfile.write(block)
            left -= len(block)
        self._left = None


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):   # the browser gave up a tile
            super().handle_error(request, client_address)


@contextlib.contextmanager
def range_server(folder: Path):
    """A loopback static server of ``folder`` that answers Range requests; yields its base URL."""
    with _serving(partial(_RangeHandler, directory=str(folder))) as url:
        yield url


@contextlib.contextmanager
def _serving(handler):
    """A loopback server of ``handler`` on a free port, in a thread; yields its base URL."""
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _CdnHandler(SimpleHTTPRequestHandler):
    """Serves a ``node_modules`` folder as jsDelivr serves npm: ``/<package>@<version>/<path>``,
    with ``Access-Control-Allow-Origin: *``; a comment is appended to the file named ``tamper``."""

    tamper = ""

    def log_message(self, format, *args):   # quiet
        pass

    def do_GET(self):
        import json

        match = re.match(r"^/((?:@[^/]+/)?[^/@]+)@([^/]+)/(.+)$", self.path.split("?")[0])
        folder = Path(self.directory) / match.group(1) if match else None
        if folder is None or json.loads((folder / "package.json").read_text())["version"] != match.group(2):
            self.send_error(404)
            return
        altered = self.tamper and match.group(3).endswith("/" + self.tamper)
        body = (folder / match.group(3)).read_bytes() + (b"\n/* altered */\n" if altered else b"")
        self.send_response(200)
        kind = "text/css" if match.group(3).endswith(".css") else "text/javascript"
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def npm_cdn(modules: Path, tamper: str = ""):
    """A loopback CDN of ``modules`` on an origin of its own, ``tamper`` (a file name) altered (see
    :class:`_CdnHandler`); yields its base URL."""
    handler = type("Handler", (_CdnHandler,), {"tamper": tamper})
    with _serving(partial(handler, directory=str(modules))) as url:
        yield url


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def python_http_server(folder: Path):
    """``python -m http.server`` (the command a person runs) serving ``folder``; yields its base URL."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=folder,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(url, timeout=1).close()
                break
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:   # SIGTERM not acted on (CI once saw it, under load): SIGKILL is
            proc.kill()
            proc.wait(timeout=10)


def launch(playwright):
    """Debian's chromium, headless, WebGL on SwiftShader."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)


def wait_ready(page, timeout: float = 60_000) -> str:
    """Wait until the page says it is ready (or failed); return its state."""
    # a selector, not wait_for_function: the page's policy forbids the eval the latter needs
    page.wait_for_selector("html[data-state=ready], html[data-state=error]", state="attached", timeout=timeout)
    return page.evaluate("document.documentElement.dataset.state")


def screenshot(folder: Path, png: Path, hash_: str = "#commune=71076&carte=5.10/46.55/2.55", size=(1280, 800)) -> Path:
    """A screenshot of ``folder``'s web map (served with Range support), for the README."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    with range_server(folder) as url, sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": size[0], "height": size[1]})
        page.goto(url + "index.html" + hash_)
        if wait_ready(page) != "ready":
            raise SystemExit(f"the page did not start: {page.inner_text('#notice')}")
        page.evaluate("window.territoiresIndustrie.idle()")
        shot = page.screenshot()
        browser.close()
    png.parent.mkdir(parents=True, exist_ok=True)
    # a palette of 96 colours: the page has few, and the README's copy stays small
    Image.open(io.BytesIO(shot)).convert("RGB").quantize(colors=96, dither=Image.Dither.NONE).save(png, optimize=True)
    return png


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python tests/browser.py <published folder, e.g. data_out> <png>")
    reason = chromium_missing()
    if reason:
        raise SystemExit(reason)
    print(screenshot(Path(sys.argv[1]).resolve(), Path(sys.argv[2])), os.path.getsize(sys.argv[2]), "bytes")
