"""A preview PNG of all territories: the metropole plus one inset per overseas departement.

Each zone is drawn in its metric CRS (Lambert-93, or the overseas CRS) so shapes look right.
Used as the preview file of a release (and, as a thumbnail, in the Dagster run metadata).
matplotlib is imported on first use only (it costs about half a second and tens of MB).
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import geopandas as gpd
import numpy as np

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


@functools.cache
def _pyplot():
    """``matplotlib.pyplot``, switched to the headless Agg backend on the first call only."""
    import matplotlib

    matplotlib.use("Agg")  # headless; must precede pyplot
    import matplotlib.pyplot as plt

    return plt


def _draw(ax, frame: gpd.GeoDataFrame, epsg: int, title: str | None = None) -> None:
    if len(frame):
        frame.to_crs(epsg).plot(ax=ax, color=FILL, edgecolor=EDGE, linewidth=0.3)
    ax.set_axis_off()
    ax.set_aspect("equal")
    if title:
        ax.set_title(title, fontsize=7, pad=2)


def render_preview_bytes(territories: gpd.GeoDataFrame, title: str | None = None, dpi: int = 110) -> bytes:
    """The preview as PNG bytes (metropole + insets for 971, 972, 973, 974, 976)."""
    _pyplot()   # the Agg backend before geopandas imports pyplot
    from matplotlib.figure import Figure

    zone = zones(territories)
    # a Figure outside pyplot has the base canvas, whose draw_idle does nothing: geopandas asks for
    # a draw after each layer, which with pyplot's Agg canvas rendered the whole figure again each
    # time (six renders of the full-resolution map before savefig's own); the PNG is the same
    fig = Figure(figsize=(10, 9), dpi=dpi)
    try:
        main = fig.add_axes((0.20, 0.02, 0.79, 0.90))
        _draw(main, territories[zone == METROPOLE], metric_epsg(METROPOLE))
        for z in INSETS:
            ax = fig.add_axes(_INSET_BOXES[z])
            sub = territories[zone == z]
            n = len(sub)
            _draw(ax, sub, metric_epsg(z), f"{ZONES[z][1]} ({n})")
            if n == 0:
                ax.text(0.5, 0.5, "aucun territoire", ha="center", va="center", fontsize=6, transform=ax.transAxes)
        fig.suptitle(title or f"Territoires d'industrie - {len(territories)} territoires", fontsize=13)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
        return buf.getvalue()
    finally:
        fig.clear()


def render_preview(territories: gpd.GeoDataFrame, path: Path, title: str | None = None) -> Path:
    """Write the preview PNG to ``path`` and return the path."""
    Path(path).write_bytes(render_preview_bytes(territories, title))
    return Path(path)


def verify_png(path: Path) -> dict:
    """Check the PNG signature and that the image is not blank; facts for the manifest."""
    from ..errors import PublishError

    raw = Path(path).read_bytes()
    if not raw.startswith(b"\x89PNG\r\n\x1a\n"):
        raise PublishError(f"{path}: preview is not a PNG")
    img = _pyplot().imread(io.BytesIO(raw), format="png")
    if np.ptp(img[..., :3]) == 0:
        raise PublishError(f"{path}: preview image is blank")
    return {"rows": None, "format": "PNG", "media_type": "image/png", "width": int(img.shape[1]), "height": int(img.shape[0])}
