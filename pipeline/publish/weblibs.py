"""The web map's third-party libraries: pinned once in ``assets/web/libraries.json``, loaded by
the page from a CDN with Subresource Integrity, or copied next to it from a local npm install.

``libraries.json`` names each npm package, its exact version and each file the page loads (path
inside the package, the name it gets when copied, its SRI ``sha384-…`` hash). The setting
``TI_WEB_LIBRARIES`` (``Settings.web_libraries``) chooses where the page takes them from:

- unset: the file's own ``base_url`` (a CDN serving npm packages verbatim, so the hash of the npm
  file is the hash of the CDN's answer): ``<base_url><package>@<version>/<path>``;
- an http(s) base URL: the same layout under that URL (a mirror of the CDN);
- a local folder: a ``node_modules`` folder (``npm ci`` in ``tests/web``); each file is checked
  against its pinned hash and published next to the page under its ``published_as`` name, so the
  page needs nothing but the server it is on (what CI uses, offline).

No library code is kept in the repository.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import PublishError
from ..settings import ASSETS_DIR

LIBRARIES_JSON = ASSETS_DIR / "web" / "libraries.json"
ROLES = ("maplibre_js", "maplibre_worker", "maplibre_css", "pmtiles_js")


@dataclass(frozen=True)
class LibraryFile:
    """One file the page loads: where from (``url``: absolute, or relative to the page when copied)
    and its SRI hash; ``local`` is the file to copy next to the page (None: loaded from ``url``)."""

    role: str
    package: str
    version: str
    path: str
    published_as: str
    integrity: str
    url: str
    local: Path | None = None


def sri(data: bytes) -> str:
    """The Subresource Integrity value of ``data`` (sha384, the browsers' usual choice)."""
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode("ascii")


def load_pins(path: Path = LIBRARIES_JSON) -> dict:
    """``libraries.json`` as a dict, each file's fields checked (PublishError naming the file otherwise)."""
    try:
        pins = json.loads(Path(path).read_text(encoding="utf-8"))
        files = [(lib["package"], lib["version"], f) for lib in pins["libraries"] for f in lib["files"]]
        roles = [f["role"] for _, _, f in files]
        if sorted(roles) != sorted(ROLES) or not all(f["integrity"].startswith("sha384-") for _, _, f in files):
            raise ValueError(f"expected one file per role {', '.join(ROLES)}, each with a sha384 integrity")
        if not str(pins["base_url"]).startswith("https://") or not pins["base_url"].endswith("/"):
            raise ValueError("base_url must be an https URL ending with /")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise PublishError(f"{path}: not a valid library pin file ({type(err).__name__}: {err})") from None
    return pins


def library_files(web_libraries: str | None, pins: dict | None = None) -> dict[str, LibraryFile]:
    """Role -> :class:`LibraryFile` for the setting ``web_libraries`` (see the module docstring)."""
    pins = load_pins() if pins is None else pins
    local = web_libraries is not None and "://" not in web_libraries
    base = pins["base_url"] if web_libraries is None else web_libraries
    out = {}
    for lib in pins["libraries"]:
        for f in lib["files"]:
            package, version, path = lib["package"], lib["version"], f["path"]
            out[f["role"]] = LibraryFile(
                f["role"], package, version, path, f["published_as"], f["integrity"],
                url=f["published_as"] if local else f"{base}{package}@{version}/{path}",
                local=Path(base) / package / path if local else None)
    return out


def published_names(pins: dict | None = None) -> dict[str, str]:
    """Manifest name -> file name of every library file when copied next to the page."""
    pins = load_pins() if pins is None else pins
    return {f"web_lib_{f['role']}": f["published_as"] for lib in pins["libraries"] for f in lib["files"]}


def origins(files: dict[str, LibraryFile]) -> list[str]:
    """The origins (``https://host``) the page loads libraries from; none when they are copied."""
    found = []
    for f in files.values():
        if f.local is None:
            parts = urlsplit(f.url)
            origin = f"{parts.scheme}://{parts.netloc}"
            if origin not in found:
                found.append(origin)
    return found


def _hint(file: LibraryFile) -> str:
    assert file.local is not None
    folder = file.local.parents[len(Path(file.path).parts)]
    return (f"TI_WEB_LIBRARIES={folder}: install the pinned {file.package} {file.version} there "
            "(npm ci in tests/web, see README 'Web map')")


def _checked_bytes(file: LibraryFile, path: Path) -> bytes:
    """The bytes of ``path`` once they match ``file``'s pinned hash (PublishError otherwise)."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise PublishError(f"{path}: cannot read the web map library ({err.strerror or err}); {_hint(file)}") from None
    if sri(data) != file.integrity:
        raise PublishError(f"{path} is not {file.package} {file.version} as pinned in assets/web/libraries.json "
                           f"(its sha384 differs); {_hint(file)}")
    return data


def copy_local(file: LibraryFile, target: Path) -> None:
    """Copy a local library file to ``target`` once its bytes match the pinned hash."""
    assert file.local is not None
    Path(target).write_bytes(_checked_bytes(file, file.local))


def verify_copy(file: LibraryFile, path: Path) -> dict:
    """Re-check a copied library file against its hash; facts for the manifest."""
    _checked_bytes(file, path)
    css = file.path.endswith(".css")
    kind = "CSS" if css else "JavaScript module" if file.path.endswith(".mjs") else "JavaScript"
    return {"rows": None, "format": f"{kind}, {file.package} {file.version} ({file.path} of the npm package)",
            "media_type": "text/css" if css else "text/javascript", "integrity": file.integrity}
