"""Open published files in real QGIS (headless) and render them: run with Debian's /usr/bin/python3.

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis_render.py OUT.png FILE.geojson FILE.gpkg
    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis_render.py --project OUT.png FILE.qgz

Prints one JSON object on the last line of stdout: per layer its validity, feature count, geometry
type, whether labels are enabled and on which field, the renderer type; the layers QGIS offers for
the GeoPackage opened without a layer name; then the rendered PNG's path and size. With
``--project``: the project as QGIS reads it (CRS, layers, relations with the related count of each
territory, bookmarks, opening extent), rendered as a user opening it sees it (its layers, its CRS,
its opening extent). Exit code 0 even when a layer is invalid: the test
(tests/test_qgis.py) decides.
"""

import json
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsProject,
    QgsProviderRegistry,
    QgsRectangle,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor


def describe(layer):
    info = {"valid": layer.isValid(), "provider": layer.providerType()}
    if not layer.isValid():
        return info
    labeling = layer.labeling()
    settings = labeling.settings() if labeling is not None and hasattr(labeling, "settings") else None
    info.update({
        "features": layer.featureCount(),
        "geometry_type": QgsWkbTypes.displayString(layer.wkbType()),
        "crs": layer.crs().authid(),
        "fields": [f.name() for f in layer.fields()],
        "labels_enabled": bool(layer.labelsEnabled()),
        "label_field": settings.fieldName if settings is not None else None,
        "renderer": layer.renderer().type() if layer.renderer() else None,
        "fill_color": (layer.renderer().symbol().color().name()
                       if layer.renderer() is not None and hasattr(layer.renderer(), "symbol") else None),
    })
    return info


def main(out_png, geojson, gpkg):
    app = QgsApplication([], False)
    app.initQgis()
    try:
        layers = {
            "geojson": QgsVectorLayer(geojson, "geojson", "ogr"),
            "gpkg": QgsVectorLayer(f"{gpkg}|layername=territoires_industrie", "gpkg", "ogr"),
        }
        result = {"qgis_version": Qgis.QGIS_VERSION, "layers": {k: describe(v) for k, v in layers.items()},
                  # what QGIS offers when the GeoPackage is opened without a layer name (browser, drop)
                  "gpkg_sublayers": [s.name() for s in QgsProviderRegistry.instance().querySublayers(gpkg)]}
        valid = [lyr for lyr in layers.values() if lyr.isValid()]
        if valid:
            settings = QgsMapSettings()
            settings.setLayers([layers["gpkg"]] if layers["gpkg"].isValid() else valid)
            # Lambert-93, metropole only (QGIS reprojects on the fly from EPSG:4326)
            settings.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:2154"))
            settings.setExtent(QgsRectangle(90000, 6030000, 1250000, 7130000))
            settings.setOutputSize(QSize(900, 900))
            result["render"] = render(settings, out_png)
        del layers, valid
    finally:
        app.exitQgis()
    print(json.dumps(result))


def render(settings, out_png):
    """Render ``settings`` to ``out_png``; what a test needs to know about the image."""
    settings.setBackgroundColor(QColor(255, 255, 255))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    ok = image.save(out_png, "PNG")
    return {"saved": bool(ok), "path": out_png, "width": image.width(), "height": image.height(),
            "errors": [e.message for e in job.errors()], "crs": settings.destinationCrs().authid(),
            "map_units_per_pixel": settings.mapUnitsPerPixel()}


def describe_project(project):
    layers = {layer.id(): {**describe(layer), "name": layer.name(), "source": layer.source(),
                           "spatial": layer.isSpatial()}
              for layer in project.mapLayers().values()}
    relations = {}
    for relation in project.relationManager().relations().values():
        parent = relation.referencedLayer()
        counts = ({f["id_ti"]: sum(1 for _ in relation.getRelatedFeatures(f)) for f in parent.getFeatures()}
                  if relation.isValid() else {})
        relations[relation.id()] = {"valid": relation.isValid(), "child": relation.referencingLayerId(),
                                    "related": counts}
    view = project.viewSettings().defaultViewExtent()
    return {"crs": project.crs().authid(), "title": project.title(), "layers": layers, "relations": relations,
            "bookmarks": [{"name": b.name(), "crs": b.extent().crs().authid()}
                          for b in project.bookmarkManager().bookmarks()],
            "view": {"crs": view.crs().authid(), "extent": [view.xMinimum(), view.yMinimum(), view.xMaximum(),
                                                            view.yMaximum()]}}


def main_project(out_png, path):
    app = QgsApplication([], False)
    app.initQgis()
    try:
        project = QgsProject.instance()
        result = {"qgis_version": Qgis.QGIS_VERSION, "read": bool(project.read(path)), "error": project.error()}
        result.update(describe_project(project))
        view = project.viewSettings().defaultViewExtent()
        settings = QgsMapSettings()
        settings.setLayers([lyr for lyr in project.layerTreeRoot().checkedLayers() if lyr.isSpatial()])
        settings.setDestinationCrs(project.crs())   # what a user double-clicking the project sees
        settings.setTransformContext(project.transformContext())
        settings.setOutputSize(QSize(900, max(1, round(900 * view.height() / view.width()))))
        settings.setExtent(view)
        result["render"] = render(settings, out_png)
        project.clear()
    finally:
        app.exitQgis()
    print(json.dumps(result))


if __name__ == "__main__":
    if sys.argv[1] == "--project":
        main_project(*sys.argv[2:4])
    else:
        main(*sys.argv[1:4])
