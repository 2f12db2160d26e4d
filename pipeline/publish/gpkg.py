"""GeoPackage writer (for QGIS users) with a default layer style, and its read-back check.

Lists are stored as ``;``-joined strings (GeoPackage has no list type), dates as DATE, booleans
as BOOLEAN. The style (``assets/styles/territoires-industrie.qml`` / ``.sld``) goes into the
``layer_styles`` table that QGIS reads, with ``useAsDefault = 1``, so QGIS applies it on open.
pyogrio (GDAL) is imported inside the functions that use it, not by ``import`` of this module.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import geopandas as gpd
import pandas as pd

from ..errors import PublishError
from ..settings import ASSETS_DIR
from .columns import column_infos
from .provenance import KEY, dumps

LAYER = "territoires_industrie"
STYLE_NAME = "territoires-industrie"
STYLE_QML = ASSETS_DIR / "styles" / "territoires-industrie.qml"
STYLE_SLD = ASSETS_DIR / "styles" / "territoires-industrie.sld"
LIST_SEPARATOR = ";"

# The table QGIS creates (QgsOgrProviderUtils / "GPKG styles"), registered as an attributes table.
_LAYER_STYLES_DDL = """
CREATE TABLE IF NOT EXISTS layer_styles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    f_table_catalog TEXT(256),
    f_table_schema TEXT(256),
    f_table_name TEXT(256),
    f_geometry_column TEXT(256),
    styleName TEXT(30),
    styleQML TEXT,
    styleSLD TEXT,
    useAsDefault BOOLEAN,
    description TEXT,
    owner TEXT(30),
    ui TEXT(30),
    update_time DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
)
"""


def gpkg_frame(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """``frame`` with its list columns joined by ``;`` (empty list -> empty string)."""
    out = frame.copy()
    for info in column_infos(frame):
        if info.kind == "list":
            out[info.name] = pd.Series(
                [LIST_SEPARATOR.join(v) for v in frame[info.name]], index=frame.index, dtype="string"
            )
    return out


def write_gpkg(frame: gpd.GeoDataFrame, path: Path, *, qml: Path = STYLE_QML, sld: Path = STYLE_SLD,
               metadata: dict | None = None) -> Path:
    """Write the ``territoires_industrie`` layer and its default style into a new file.

    ``metadata`` (the build's, see ``provenance.py``) becomes the layer's metadata item
    ``territoires_industrie`` (a JSON text), which GDAL stores in the ``gpkg_metadata`` table.
    """
    import pyogrio

    Path(path).unlink(missing_ok=True)  # GDAL would otherwise add the layer to the old file
    pyogrio.write_dataframe(
        gpkg_frame(frame), path, layer=LAYER, driver="GPKG", use_arrow=True,
        promote_to_multi=True, geometry_type="MultiPolygon",
        dataset_options={"VERSION": "1.2"},  # readable without warnings by older GDAL/QGIS (3.22)
        layer_metadata={KEY: dumps(metadata)} if metadata is not None else None,
    )
    add_default_style(path, LAYER, Path(qml).read_text(encoding="utf-8"), Path(sld).read_text(encoding="utf-8"))
    return Path(path)


def add_default_style(path: Path, layer: str, qml: str, sld: str, geometry_column: str = "geom") -> None:
    """Store ``qml``/``sld`` as the default style of ``layer`` in the ``layer_styles`` table."""
    with closing(sqlite3.connect(path)) as con, con:
        con.execute(_LAYER_STYLES_DDL)
        con.execute(
            "INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier, description) "
            "VALUES ('layer_styles', 'attributes', 'layer_styles', 'QGIS layer styles')"
        )
        con.execute("UPDATE layer_styles SET useAsDefault = 0 WHERE f_table_name = ?", (layer,))
        con.execute(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, "
            "styleName, styleQML, styleSLD, useAsDefault, description, owner, ui) "
            "VALUES ('', '', ?, ?, ?, ?, ?, 1, ?, '', NULL)",
            (layer, geometry_column, STYLE_NAME, qml, sld,
             "Default style: outlined fill, labels on lib_ti (territoires-industrie)"),
        )


def file_metadata(path: Path) -> dict | None:
    """The build's metadata written by :func:`write_gpkg` (None if absent)."""
    import json

    import pyogrio

    text = (pyogrio.read_info(path, layer=LAYER).get("layer_metadata") or {}).get(KEY)
    return json.loads(text) if text else None


def default_style(path: Path, layer: str = LAYER) -> dict | None:
    """The default ``layer_styles`` row of ``layer`` as a dict, or None."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
        con.row_factory = sqlite3.Row
        try:
            row = con.execute(
                "SELECT * FROM layer_styles WHERE f_table_name = ? AND useAsDefault = 1 ORDER BY id DESC", (layer,)
            ).fetchone()
        except sqlite3.OperationalError:
            return None
    return dict(row) if row else None


def verify_gpkg(path: Path, expected: gpd.GeoDataFrame) -> dict:
    """Re-read the file; raise PublishError unless layer, rows, geometry type and style are right."""
    import pyogrio

    problems = []
    layers = [name for name, _ in pyogrio.list_layers(path)]
    if LAYER not in layers:
        raise PublishError(f"{path}: GeoPackage check failed: no layer {LAYER!r} (layers: {layers})")
    info = pyogrio.read_info(path, layer=LAYER)
    if info["features"] != len(expected):
        problems.append(f"{info['features']} features instead of {len(expected)}")
    if info["geometry_type"] != "MultiPolygon":
        problems.append(f"geometry type {info['geometry_type']} instead of MultiPolygon")
    back = pyogrio.read_dataframe(path, layer=LAYER, columns=["id_ti"], read_geometry=False)
    if list(back["id_ti"]) != list(expected["id_ti"]):
        problems.append("id_ti values or order differ from the source frame")
    style = default_style(path)
    if style is None or "lib_ti" not in (style.get("styleQML") or ""):
        problems.append("no default style in layer_styles")
    if problems:
        raise PublishError(f"{path}: GeoPackage check failed: {'; '.join(problems)}")
    return {"rows": int(info["features"]), "format": "GeoPackage", "media_type": "application/geopackage+sqlite3",
            "layer": LAYER}
