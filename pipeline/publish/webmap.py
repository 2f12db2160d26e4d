"""The web map published with every release: a page that needs nothing but a static file server.

Files written beside each phase's data files (README, "Web map"):

- ``index.html``: the page, from ``assets/web/index.html``, with its Content Security Policy (only
  its own scripts and the pinned libraries' origin) and the library tags with their SRI hashes;
- ``territoires-industrie-map.js`` / ``.css``: the page's own code, copied from ``assets/web/``;
- ``territoires-industrie-map.json``: what the page shows, built from the build's frame: a card
  per territory, the legend, the zones' extents, the phases, the names of the files it reads;
- ``territoires-industrie-search.json``: the search index, built from the membership table
  (every commune of each territory with its name), held to :data:`SEARCH_MAX_BYTES`;
- the libraries themselves when ``TI_WEB_LIBRARIES`` names a local folder (:mod:`.weblibs`).

The page reads the tiles, and falls back to the regional light GeoJSON when the server does not
answer HTTP Range requests. Every text it shows comes from these JSON files (so from the lists)
and is inserted as text, never as HTML. The downloads panel reads the release's ``manifest.json``.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import html
import json
import math
import string
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from ..errors import PublishError
from ..settings import ASSETS_DIR
from . import weblibs
from .columns import plan_columns
from .layout import STABLE_NAMES
from .light import zones
from .provenance import ATTRIBUTION, LICENCE
from .zones import REGIONS, ZONES

WEB_DIR = ASSETS_DIR / "web"
PAGE_NAME = STABLE_NAMES["web_page"]
SCRIPT_NAME = STABLE_NAMES["web_script"]     # also the names of the page's own files in assets/web/
STYLE_NAME = STABLE_NAMES["web_style"]
DATA_NAME = STABLE_NAMES["web_data"]
SEARCH_NAME = STABLE_NAMES["web_search"]
# Size targets of the search index, which the page loads whole before its first search. Measured on
# the shared data (gzip -9): 2023-2027 435,578 bytes, 159,135 gzipped (18,659 communes); 2018-2022
# 376,540 / 138,305 (16,168). The targets leave room for about 40 % more communes, and keep the
# index under what one photo costs a mobile page.
SEARCH_MAX_BYTES = 650_000
SEARCH_MAX_GZIP_BYTES = 230_000
DATASET = {"title": "Programme Territoires d'industrie (ANCT) sur data.gouv.fr",
           "url": "https://www.data.gouv.fr/fr/datasets/programme-territoires-dindustrie/"}
# Okabe-Ito colours, told apart with every common colour-vision deficiency
STYLE = {"new": "#d55e00", "continuing": "#0072b2", "unknown": "#8c8c8c", "background": "#f4f2ee",
         "fill_opacity": 0.72, "line": "#ffffff", "hover": "#1a1a1a", "selected": "#000000"}
_PLAN_LABELS = {"plan_date_adoption": "Plan d'action adopté le", "plan_url": "Plan d'action",
                "plan_statut": "Statut du plan", "plan_commentaire": "Commentaire"}


@dataclass(frozen=True)
class WebOptions:
    """What the page needs beyond the frame: the libraries setting and the programme's phases
    (newest first; the current one is at the root of the output folder)."""

    libraries: str | None
    phases: tuple[str, ...]
    current_phase: str


def _json_bytes(value) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _plain(value):
    """A cell as JSON: None for missing, ISO text for dates, Python scalars for numpy ones."""
    if value is None or (not isinstance(value, (list, tuple, np.ndarray)) and pd.isna(value)):
        return None
    if isinstance(value, (dt.date, pd.Timestamp)):
        return value.isoformat()[:10]
    if isinstance(value, (np.ndarray, list, tuple)):
        return [str(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    return str(value)


def card_fields(frame: pd.DataFrame) -> list[dict]:
    """The axis and plan columns of ``frame``, in published order, each with its French label."""
    from ..sources.plans import load_axes

    axes = {a.column: a for a in load_axes()}
    counts = {a.count_column: a for a in axes.values()}
    out = []
    for column in plan_columns():
        if column.name not in frame.columns:
            continue
        if column.name in axes:
            label = f"Axe {axes[column.name].order} : {axes[column.name].short_fr}"
        elif column.name in counts:
            label = f"Actions de l'axe {counts[column.name].order} ({counts[column.name].short_fr})"
        else:
            label = _PLAN_LABELS.get(column.name, column.name)
        out.append({"name": column.name, "label": label, "kind": column.kind})
    return out


def _legend(frame: pd.DataFrame, phase: str, previous: str | None) -> dict:
    """The classes of the fill colour (column ``is_new``): new or continuing, or one class for a
    phase whose territories are all new (the programme's first)."""
    values = frame["is_new"].astype("boolean")
    classes = []
    if values.eq(True).all():
        classes.append({"value": "true", "label": f"Territoire d'industrie {phase}", "color": STYLE["continuing"]})
    else:
        since = f" en {previous}" if previous else ""
        classes += [{"value": "true", "label": f"Nouveau en {phase} (aucune commune déjà territoire d'industrie{since})",
                     "color": STYLE["new"]},
                    {"value": "false", "label": f"Déjà territoire d'industrie{since} (communes en commun)",
                     "color": STYLE["continuing"]}]
    if values.isna().any():
        classes.append({"value": "null", "label": "Historique inconnu", "color": STYLE["unknown"]})
    return {"column": "is_new", "classes": classes, "default": STYLE["unknown"]}


def _bounds(geoms) -> list[float]:
    west, south, east, north = gpd.GeoSeries(geoms).total_bounds
    return [round(float(v), 4) for v in (west, south, east, north)]


def _territory(row, zone: str, fields: list[dict]) -> dict:
    plan = {f["name"]: _plain(row[f["name"]]) for f in fields}
    return {
        "id": str(row["id_ti"]), "name": str(row["lib_ti"]), "is_new": _plain(row.get("is_new")),
        "regions": _plain(row.get("regions")) or [], "departements": _plain(row.get("departements")) or [],
        "n_communes": _plain(row.get("n_communes")), "n_groupements": _plain(row.get("n_groupements")),
        "population": _plain(row.get("population")),
        "area_km2": None if _plain(row.get("area_km2")) is None else round(float(row["area_km2"]), 1),
        "ti_2018_2022": _plain(row.get("ti_2018_2022")) or [], "zone": zone, "bbox": _bounds([row.geometry]),
        "plan": {k: v for k, v in plan.items() if v is not None},
    }


def map_data(frame: gpd.GeoDataFrame, *, phase: str, build_id: str, options: WebOptions, files: dict[str, str],
             fallback_simplification_m: float | None) -> dict:
    """The content of :data:`DATA_NAME` (see the module docstring)."""
    zone = zones(frame)
    fields = card_fields(frame)
    earlier = sorted((p for p in options.phases if p < phase), reverse=True)
    ordered = frame.assign(_zone=zone).sort_values("id_ti")
    territories = [_territory(row, row["_zone"], fields) for _, row in ordered.iterrows()]
    used = sorted({r for t in territories for r in t["regions"]})
    return {
        "format": "territoires-industrie-map/1", "build_id": build_id, "phase": phase,
        "current_phase": options.current_phase, "phases": list(options.phases), "territory_count": len(frame),
        "layer": files["layer"], "files": {k: v for k, v in files.items() if k != "layer"},
        "fallback_simplification_m": fallback_simplification_m,
        "attribution": ATTRIBUTION, "licence": LICENCE, "dataset": DATASET, "style": STYLE,
        "legend": _legend(frame, phase, earlier[0] if earlier else None),
        "zones": [{"code": z, "label": ZONES[z][1], "bounds": _bounds(frame.geometry[zone == z])}
                  for z in ZONES if (zone == z).any()],
        "regions": {code: REGIONS.get(code, code) for code in used},
        "fields": fields, "territories": territories,
    }


def search_index(frame: pd.DataFrame, communes: pd.DataFrame | None, *, phase: str, build_id: str) -> dict:
    """The content of :data:`SEARCH_NAME`: per territory (by id) its name and its communes' codes
    and names (from the membership table; codes only, names empty, without one)."""
    rows = []
    by_territory = {} if communes is None else dict(tuple(communes.sort_values("insee_com").groupby("id_ti")))
    for id_ti, name, codes in sorted(zip(frame["id_ti"], frame["lib_ti"], frame["insee_communes"])):
        members = by_territory.get(id_ti)
        if members is not None:
            rows.append([str(id_ti), str(name), [str(c) for c in members["insee_com"]],
                         [str(n) if pd.notna(n) else "" for n in members["nom_commune"]]])
        else:
            rows.append([str(id_ti), str(name), [str(c) for c in codes], ["" for _ in codes]])
    return {"format": "territoires-industrie-search/1", "build_id": build_id, "phase": phase,
            "columns": ["id_ti", "lib_ti", "insee_com", "nom_commune"], "territories": rows}


def write_json(value: dict, path: Path) -> Path:
    Path(path).write_bytes(_json_bytes(value))
    return Path(path)


def verify_map_data(path: Path, frame: pd.DataFrame) -> dict:
    """Re-read the page's data; PublishError unless it holds exactly the frame's territories."""
    back = json.loads(Path(path).read_text(encoding="utf-8"))
    if sorted(t["id"] for t in back["territories"]) != sorted(frame["id_ti"]):
        raise PublishError(f"{path}: the web map data does not hold the {len(frame)} territories")
    return {"rows": len(back["territories"]), "format": "JSON (the web map's territory cards, legend and zones)",
            "media_type": "application/json"}


def verify_search(path: Path, frame: pd.DataFrame, max_bytes: int = SEARCH_MAX_BYTES,
                  max_gzip_bytes: int = SEARCH_MAX_GZIP_BYTES) -> dict:
    """Re-read the search index; PublishError unless it holds every territory within its size targets."""
    data = Path(path).read_bytes()
    back = json.loads(data)
    zipped = len(gzip.compress(data, 9))
    if sorted(t[0] for t in back["territories"]) != sorted(frame["id_ti"]):
        raise PublishError(f"{path}: the search index does not hold the {len(frame)} territories")
    if len(data) > max_bytes or zipped > max_gzip_bytes:
        raise PublishError(f"{path}: the search index is {len(data)} bytes ({zipped} gzipped), over its target "
                           f"of {max_bytes} ({max_gzip_bytes} gzipped)")
    return {"rows": len(back["territories"]), "communes": sum(len(t[2]) for t in back["territories"]),
            "format": "JSON (the web map's search index: each territory with its communes)",
            "media_type": "application/json", "gzip_bytes": zipped, "max_bytes": max_bytes,
            "max_gzip_bytes": max_gzip_bytes}


def import_map(libraries: dict[str, weblibs.LibraryFile]) -> str:
    """The page's import map: the bare name ``maplibre-gl`` to its address, with its SRI hash (so
    that the browser checks it on every import), as JSON safe inside a ``<script>`` element."""
    lib = libraries["maplibre_js"]
    address = lib.url if "://" in lib.url else f"./{lib.url}"    # a copy beside the page (import maps need ./)
    text = json.dumps({"imports": {lib.package: address}, "integrity": {address: lib.integrity}},
                      separators=(",", ":"), ensure_ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def content_security_policy(origins: list[str], inline: tuple[str, ...] = ()) -> str:
    """The page's policy: its own files, the libraries' origin for scripts, styles and the worker's
    code (fetched with its SRI hash), the ``inline`` scripts by their sha256 (the import map only);
    MapLibre's worker and images come from blob:/data:."""
    extra = "".join(f" {o}" for o in origins)
    hashes = "".join(f" 'sha256-{base64.b64encode(hashlib.sha256(t.encode()).digest()).decode()}'" for t in inline)
    return "; ".join([
        "default-src 'none'", f"script-src 'self'{extra}{hashes}", f"style-src 'self'{extra}", "img-src 'self' data: blob:",
        f"connect-src 'self'{extra}", "worker-src blob:", "child-src blob:", "base-uri 'none'",
        "form-action 'none'", "object-src 'none'",
    ])


def render_page(phase: str, count: int, libraries: dict[str, weblibs.LibraryFile]) -> str:
    """``assets/web/index.html`` with its placeholders filled (every value HTML-escaped but the
    import map, JSON whose ``<``, ``>`` and ``&`` are escaped)."""
    imports = import_map(libraries)
    values = {"phase": phase, "count": str(count), "script": SCRIPT_NAME, "style": STYLE_NAME, "data": DATA_NAME,
              "csp": content_security_policy(weblibs.origins(libraries), (imports,))}
    for role, lib in libraries.items():
        values[role] = lib.url
        values[f"{role}_integrity"] = lib.integrity
    template = string.Template((WEB_DIR / PAGE_NAME).read_text(encoding="utf-8"))
    return template.substitute({**{k: html.escape(v, quote=True) for k, v in values.items()}, "importmap": imports})


def verify_page(path: Path, libraries: dict[str, weblibs.LibraryFile]) -> dict:
    """The page names its policy, its own files and each library with its hash."""
    text = Path(path).read_text(encoding="utf-8")
    wanted = ['http-equiv="Content-Security-Policy"', SCRIPT_NAME, STYLE_NAME, DATA_NAME,
              f'<script type="importmap">{import_map(libraries)}</script>']
    wanted += [f'integrity="{lib.integrity}"' for lib in libraries.values() if lib.role != "maplibre_worker"]
    missing = [w for w in wanted if w not in text]
    if missing:
        raise PublishError(f"{path}: the web page lacks {', '.join(missing)}")
    return {"rows": None, "format": "HTML (the web map)", "media_type": "text/html"}


def copy_static(name: str, path: Path) -> Path:
    """Copy the page's own script or style (``assets/web/<name>``) to ``path``."""
    Path(path).write_bytes((WEB_DIR / name).read_bytes())
    return Path(path)


def verify_static(name: str, path: Path) -> dict:
    if Path(path).read_bytes() != (WEB_DIR / name).read_bytes():
        raise PublishError(f"{path}: differs from assets/web/{name}")
    kind = ("CSS", "text/css") if name.endswith(".css") else ("JavaScript module", "text/javascript")
    return {"rows": None, "format": f"{kind[0]} (the web map's own)", "media_type": kind[1]}
