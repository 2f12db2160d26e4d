"""A preview PNG of all territories: the metropole plus one inset per overseas departement.

Each zone is drawn in its metric CRS (Lambert-93, or the overseas CRS) so shapes look right.
Used as the preview file of a release (and, as a thumbnail, in the Dagster run metadata).
matplotlib is imported on first use only. The polygons are drawn as one ``PatchCollection`` per
zone on a ``Figure`` outside pyplot, which renders once, at ``savefig``: the same PNG as
geopandas' ``plot``, without its per-call overhead nor pyplot (bench/README.md has the figures).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

from .light import zones
from .zones import METROPOLE, ZONES, metric_epsg

FILL = "#f2994a"
EDGE = "#7a370a"
INSETS = ("971", "972", "973", "974", "976")
# inset rectangles [left, bottom, width, height] in figure fractions, left column
_INSET_BOXES = {
    "971": (0.01, 0.74, 0.17, 0.17),
    "972": (0.01, 0.56, 0.17, 0.17),
    "973": (0.01, 0.38, 0.17, 0.17),
    "974": (0.01, 0.20, 0.17, 0.17),
    "976": (0.01, 0.02, 0.17, 0.17),
}


def _patches(geoms) -> list:
    """One matplotlib patch per polygonal geometry, as geopandas draws it: normalised rings
    (matplotlib tells holes by their winding), holes as sub-paths; missing or empty ones left out."""
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MplPath

    patches = []
    for geom in shapely.normalize(np.asarray(geoms, dtype=object)):
        if geom is None or geom.is_empty:
            continue
        rings = []
        for part in shapely.get_parts(geom):
            if part.geom_type == "Polygon":
                rings.append(MplPath(shapely.get_coordinates(part.exterior), closed=True))
                rings.extend(MplPath(shapely.get_coordinates(ring), closed=True) for ring in part.interiors)
        if rings:
            patches.append(PathPatch(MplPath.make_compound_path(*rings)))
    return patches


def _draw(ax, geoms, title: str | None = None) -> None:
    """Draw ``geoms`` (one zone, metric CRS) on ``ax``: filled, outlined, equal axes, no frame."""
    from matplotlib.collections import PatchCollection

    patches = _patches(geoms)
    if patches:
        ax.add_collection(PatchCollection(patches, facecolor=FILL, edgecolor=EDGE, linewidth=0.3), autolim=True)
        ax.autoscale_view()
    ax.set_axis_off()
    ax.set_aspect("equal")
    if title:
        ax.set_title(title, fontsize=7, pad=2)


def in_metric_crs(territories: gpd.GeoDataFrame) -> dict[str, np.ndarray]:
    """Zone -> its territories' geometries in the zone's metric CRS (what the preview draws)."""
    zone = zones(territories)
    return {z: territories.geometry[zone == z].to_crs(metric_epsg(z)).values.to_numpy()
            for z in dict.fromkeys(zone)}


def render_preview_bytes(territories: gpd.GeoDataFrame, title: str | None = None, dpi: int = 110,
                         projected: Mapping[str, np.ndarray] | None = None) -> bytes:
    """The preview as PNG bytes (metropole + insets for 971, 972, 973, 974, 976).

    ``projected``: :func:`in_metric_crs` of ``territories`` when known already (the publish's
    ``light.Simplifier`` projects the same zones), else computed here.
    """
    from matplotlib.figure import Figure

    projected = in_metric_crs(territories) if projected is None else projected
    none = np.empty(0, dtype=object)
    # a Figure outside pyplot has the Agg canvas only at savefig: it renders once
    fig = Figure(figsize=(10, 9), dpi=dpi)
    try:
        main = fig.add_axes((0.20, 0.02, 0.79, 0.90))
        _draw(main, projected.get(METROPOLE, none))
        for z in INSETS:
            ax = fig.add_axes(_INSET_BOXES[z])
            sub = projected.get(z, none)
            n = len(sub)
            _draw(ax, sub, f"{ZONES[z][1]} ({n})")
            if n == 0:
                ax.text(0.5, 0.5, "aucun territoire", ha="center", va="center", fontsize=6, transform=ax.transAxes)
        fig.suptitle(title or f"Territoires d'industrie - {len(territories)} territoires", fontsize=13)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
        return buf.getvalue()
    finally:
        fig.clear()


def render_preview(territories: gpd.GeoDataFrame, path: Path, title: str | None = None,
                   projected: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write the preview PNG to ``path`` and return the path (``projected``: see :func:`render_preview_bytes`)."""
    Path(path).write_bytes(render_preview_bytes(territories, title, projected=projected))
    return Path(path)


def verify_png(path: Path) -> dict:
    """Check the PNG signature and that the image is not blank; facts for the manifest."""
    from matplotlib.image import imread

    from ..errors import PublishError

    raw = Path(path).read_bytes()
    if not raw.startswith(b"\x89PNG\r\n\x1a\n"):
        raise PublishError(f"{path}: preview is not a PNG")
    img = imread(io.BytesIO(raw), format="png")
    if np.ptp(img[..., :3]) == 0:
        raise PublishError(f"{path}: preview image is blank")
    return {"rows": None, "format": "PNG", "media_type": "image/png", "width": int(img.shape[1]), "height": int(img.shape[0])}
