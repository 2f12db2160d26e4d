"""Helpers for the resolution tests: a scratch mirror (hard links to the shared files plus files made
in the test), a data.gouv.fr API answer, and a catalog whose hosts point to the loopback server."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from http_server import link_or_copy

from pipeline.settings import ASSETS_DIR

DATASET = "programme-territoires-dindustrie"
API_PATH = f"/api/1/datasets/{DATASET}/"
COMMUNES = "territoires_industrie/ti2023_communes_anct_20231107.csv"
GROUPEMENTS = "territoires_industrie/ti2023_groupements_anct_20240704.csv"
# every host of the catalog, served by the loopback server under the same paths
HOSTS = ("https://www.data.gouv.fr", "https://static.data.gouv.fr", "https://unpkg.com", "https://www.insee.fr",
         "https://etalab-datasets.geo.data.gouv.fr")


def scratch_mirror(root: Path, source: Path, added: dict[str, bytes] | None = None) -> Path:
    """A mirror folder: a hard link (or copy) of every file of ``source`` (a symlink out of the
    mirror is refused), plus the ``added`` files (new or replacing one)."""
    added = added or {}
    mirror = root / "mirror"
    for f in source.rglob("*"):
        if f.is_file():
            target = mirror / f.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(f.resolve(), target)
    for rel, body in added.items():
        target = mirror / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)      # a replaced file: never write through the link
        target.write_bytes(body)
    return mirror


def resource(server, file: str, body: bytes, stamp: str, rid: str, checksum: str | None = None) -> dict:
    """Serve ``body`` like static.data.gouv.fr and return its API resource (udata's fields)."""
    path = f"/resources/{DATASET}/{stamp}/{file}"
    server.route(path, body, content_type="text/csv", etag=f'"{rid}"')
    return {"id": rid, "title": file, "format": "csv", "url": server.url(path),
            "latest": server.url(f"/api/1/datasets/r/{rid}"), "filesize": len(body), "mime": "text/csv",
            "checksum": {"type": "sha1", "value": checksum or hashlib.sha1(body).hexdigest()},
            "created_at": f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T00:00:00",
            "last_modified": f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T09:18:48"}


def serve_api(server, resources: list[dict]) -> None:
    """The dataset's API answer (a new route replaces the previous one)."""
    body = json.dumps({"id": "5f0c", "slug": DATASET, "title": "Programme Territoires d'industrie",
                       "resources": resources}).encode()
    server.route(API_PATH, body, content_type="application/json")


def loopback_catalog(tmp_path: Path, server) -> Path:
    """The project's catalog with every host replaced by the loopback server's."""
    text = (ASSETS_DIR / "sources.toml").read_text(encoding="utf-8")
    for host in HOSTS:
        text = text.replace(host, server.url(""))
    path = tmp_path / "sources.toml"
    path.write_text(text, encoding="utf-8")
    return path
