"""Regenerate territoires-industrie.qml and .sld with QGIS itself (run with Debian's python3).

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 assets/styles/make_styles.py data_out/territoires-industrie.gpkg

Needs ``python3-qgis`` (apt). The published GeoPackage stores both files in its ``layer_styles``
table (see pipeline/publish/gpkg.py). The style: a light orange fill with a brown outline and
labels on ``lib_ti`` (white halo, placed inside the polygons, collisions avoided).
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (
    QgsApplication,
    QgsFillSymbol,
    QgsMapLayer,
    QgsPalLayerSettings,
    QgsSingleSymbolRenderer,
    QgsTextBufferSettings,
    QgsTextFormat,
    QgsVectorLayer,
    QgsVectorLayerSimpleLabeling,
)
from qgis.PyQt.QtGui import QColor, QFont

HERE = Path(__file__).resolve().parent


def style_layer(layer):
    symbol = QgsFillSymbol.createSimple({
        "color": "242,153,74,140",
        "outline_color": "122,55,10,255",
        "outline_width": "0.26",
        "outline_width_unit": "MM",
        "joinstyle": "round",
    })
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))

    fmt = QgsTextFormat()
    fmt.setFont(QFont("DejaVu Sans"))
    fmt.setSize(7)
    fmt.setColor(QColor(40, 20, 5))
    buf = QgsTextBufferSettings()
    buf.setEnabled(True)
    buf.setSize(0.8)
    buf.setColor(QColor(255, 255, 255, 220))
    fmt.setBuffer(buf)

    pal = QgsPalLayerSettings()
    pal.fieldName = "lib_ti"
    pal.isExpression = False
    pal.enabled = True
    pal.setFormat(fmt)
    pal.placement = QgsPalLayerSettings.Horizontal
    pal.centroidInside = True
    pal.autoWrapLength = 18
    layer.setLabeling(QgsVectorLayerSimpleLabeling(pal))
    layer.setLabelsEnabled(True)


def main(gpkg):
    app = QgsApplication([], False)
    app.initQgis()
    try:
        layer = QgsVectorLayer(f"{gpkg}|layername=territoires_industrie", "territoires_industrie", "ogr")
        if not layer.isValid():
            raise SystemExit(f"cannot open {gpkg}")
        style_layer(layer)
        categories = QgsMapLayer.Symbology | QgsMapLayer.Labeling
        msg, ok = layer.saveNamedStyle(str(HERE / "territoires-industrie.qml"), categories)
        if not ok:
            raise SystemExit(f"QML not saved: {msg}")
        msg, ok = layer.saveSldStyle(str(HERE / "territoires-industrie.sld"))
        if not ok:
            raise SystemExit(f"SLD not saved: {msg}")
        del layer
    finally:
        app.exitQgis()


if __name__ == "__main__":
    main(sys.argv[1])
