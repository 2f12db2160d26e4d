"""A loopback stand-in for the live sources, so ``bench/run.py`` can time an unchanged live run.

Every host of the project's source catalog (the data.gouv.fr API and its static files, unpkg,
INSEE, Etalab) is answered by the tests' loopback server (``tests/http_server.py``) on
127.0.0.1: the API lists the two 2023-2027 lists as resources, every other source is served at its
catalog URL, each with an ETag and a Last-Modified, as the real hosts send them. The bodies are
the files of a benchmark mirror (the boundaries: the mirror's GeoParquet written once as the gzipped
GeoJSON the live URL serves, kept beside the catalog). :func:`served` counts what the server answered (HEAD,
304, full bodies and their bytes), so the report can show that an unchanged run downloads nothing.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from http_server import FaultServer  # noqa: E402  (the tests' loopback server, reused as is)
from source_fixtures import loopback_catalog, resource, serve_api  # noqa: E402

LAST_MODIFIED = "Thu, 04 Jul 2024 09:18:48 GMT"


@dataclass
class LiveSources:
    """The running server and the catalog whose URLs point to it."""

    server: FaultServer
    catalog: Path


def _route(server: FaultServer, path: str, body: bytes) -> None:
    server.route(path, body, etag=f'"{hashlib.sha1(body).hexdigest()}"', last_modified=LAST_MODIFIED)


def start(mirror: Path, work: Path) -> LiveSources:
    """Start the server answering for every source of the catalog with ``mirror``'s files."""
    sys.path.insert(0, str(ROOT))
    from pipeline.settings import Settings
    from pipeline.sources.catalog import load_catalog

    server = FaultServer().__enter__()
    work.mkdir(parents=True, exist_ok=True)
    catalog_path = loopback_catalog(work, server)
    catalog = load_catalog(Settings(catalog_path=catalog_path))
    listed = []
    for name, spec in catalog.sources.items():
        body = (_live_boundaries(mirror / spec.mirror, work) if spec.kind == "boundaries"
                else (mirror / spec.mirror).read_bytes())
        if spec.resolve == "datagouv":      # a resource of the dataset, named like ANCT's files
            file = urlparse(spec.url).path.rsplit("/", 1)[-1]
            listed.append(resource(server, file, body, urlparse(spec.url).path.split("/")[-2], name))
            continue
        if spec.resolve == "yearly":        # the catalog's first year only: later years answer 404
            path = urlparse(spec.url_template.format(year=spec.first_year)).path
        else:
            path = urlparse(spec.url).path
        _route(server, path, body)
    serve_api(server, listed)
    return LiveSources(server, catalog_path)


def _live_boundaries(parquet: Path, work: Path) -> bytes:
    """The mirror's GeoParquet as the gzipped GeoJSON the live URL serves (made once per work folder)."""
    out = work / "communes-50m.geojson.gz"
    if not out.is_file():
        import gzip
        import shutil

        import geopandas as gpd

        plain = work / "communes-50m.geojson"
        gpd.read_parquet(parquet).to_file(plain, driver="GeoJSON", engine="pyogrio")
        with plain.open("rb") as src, gzip.open(out.with_suffix(".tmp"), "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst)
        out.with_suffix(".tmp").replace(out)
        plain.unlink()
    return out.read_bytes()


def stop(live: LiveSources) -> None:
    live.server.__exit__(None, None, None)


def served(live: LiveSources, since: int = 0) -> dict:
    """What the server answered from its ``since``-th request on: requests by method, 304 answers,
    full bodies (200 GET) and their bytes, and 404 (years not published yet)."""
    out = {"requests": 0, "head": 0, "get": 0, "not_modified": 0, "bodies": 0, "body_bytes": 0, "not_found": 0}
    routes = live.server.routes
    for hit in live.server.log[since:]:
        out["requests"] += 1
        route = routes.get(hit.path)
        out["head" if hit.method == "HEAD" else "get"] += 1
        if route is None:
            out["not_found"] += 1
        elif hit.method == "GET":
            inm, ims = hit.headers.get("If-None-Match"), hit.headers.get("If-Modified-Since")
            if (inm is not None and inm == route.etag) or (inm is None and ims and ims == route.last_modified):
                out["not_modified"] += 1
            else:
                out["bodies"] += 1
                out["body_bytes"] += len(route.body)
    return out
