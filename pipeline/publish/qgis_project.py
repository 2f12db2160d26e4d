"""``territoires-industrie.qgz``: a QGIS project beside the GeoPackage, for a double-click.

Written from the template ``assets/qgis/territoires-industrie.qgs`` (no QGIS needed): the territories
of the GeoPackage with their default style (``assets/styles/territoires-industrie.qml``, the one the
GeoPackage stores) and labels on ``lib_ti``; the membership tables (CSV) as tables related to the
territories by ``id_ti`` (a territory's form lists its communes and groupements; a commune's row
opens its territory); every path relative (``./territoires-industrie.gpkg|layername=...``).

The project CRS is Lambert-93 (EPSG:2154) and it opens on the metropole. The overseas departements
are not redrawn in their own CRS (a QGIS project has one): one spatial bookmark per zone, its
extent in the zone's metric CRS (``zones.ZONES``), takes the map there; the project's abstract says
to set the project CRS to that one for undistorted shapes.
"""

from __future__ import annotations

import warnings
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import geopandas as gpd

from ..errors import PublishError
from ..settings import ASSETS_DIR
from .gpkg import LAYER
from .zones import METROPOLE, ZONES, metric_epsg, zone_of

TEMPLATE = ASSETS_DIR / "qgis" / "territoires-industrie.qgs"
PROJECT_CRS = 2154
MEDIA_TYPE = "application/zip"
# layer id of the template -> (name of its file in layout.STABLE_NAMES, layer name; {phase} filled)
LAYERS: dict[str, tuple[str, str]] = {
    "territoires_industrie": ("gpkg", "Territoires d'industrie {phase}"),
    "communes_membres": ("membership_communes_csv", "Communes membres {phase} (table)"),
    "groupements_listes": ("membership_groupements_csv", "Groupements listés {phase} (table)"),
}
_DOCTYPE = b"<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)   # fixed: the same project gives the same bytes
_MARGIN = 0.06   # of the width and height, so that labels at the edges fit


def _source(layer_id: str, filename: str) -> str:
    return f"./{filename}|layername={LAYER}" if LAYERS[layer_id][0] == "gpkg" else f"./{filename}"


def _spatialrefsys(element: ET.Element, epsg: int) -> None:
    """Fill an empty ``<spatialrefsys>`` with the definition QGIS reads (WKT first)."""
    import pyproj

    crs = pyproj.CRS.from_epsg(epsg)
    with warnings.catch_warnings():   # pyproj warns that PROJ strings lose information
        warnings.simplefilter("ignore")
        proj4 = crs.to_proj4()
    element.attrib.clear()
    for tag, text in (("wkt", crs.to_wkt()), ("proj4", proj4), ("srid", str(epsg)), ("authid", f"EPSG:{epsg}"),
                      ("description", crs.name), ("projectionacronym", proj4.split()[0].removeprefix("+proj=")),
                      ("geographicflag", "true" if crs.is_geographic else "false")):
        ET.SubElement(element, tag).text = text


def _fill_crs(root: ET.Element) -> None:
    for element in root.iter("spatialrefsys"):
        if "epsg" in element.attrib:
            _spatialrefsys(element, int(element.attrib["epsg"]))


def _insert_style(maplayer: ET.Element, placeholder: ET.Element) -> None:
    """Replace ``<style qml="..."/>`` by the QML file's elements (renderer, labeling, ...)."""
    qml = ET.parse(ASSETS_DIR / placeholder.attrib["qml"]).getroot()
    position = list(maplayer).index(placeholder)
    maplayer.remove(placeholder)
    for offset, child in enumerate(qml):
        maplayer.insert(position + offset, child)
    maplayer.set("labelsEnabled", qml.get("labelsEnabled", "0"))


def _set_layers(root: ET.Element, files: dict[str, str], phase: str) -> None:
    """Datasource and name of each layer whose file is published; the others removed."""
    maplayers = {m.findtext("id"): m for m in root.iter("maplayer")}
    tree = root.find("layer-tree-group")
    projectlayers, relations = root.find("projectlayers"), root.find("relations")
    assert tree is not None and projectlayers is not None and relations is not None, "template"
    for node in list(tree.iter("layer-tree-layer")):
        layer_id = node.get("id", "")
        key, name = LAYERS[layer_id]
        maplayer = maplayers[layer_id]
        if key not in files:
            tree.remove(node)
            projectlayers.remove(maplayer)
            for rel in [r for r in relations if layer_id in (r.get("referencingLayer"), r.get("referencedLayer"))]:
                relations.remove(rel)
            continue
        node.set("source", _source(layer_id, files[key]))
        node.set("name", name.format(phase=phase))
        _text(maplayer, "datasource", _source(layer_id, files[key]))
        _text(maplayer, "layername", name.format(phase=phase))
        placeholder = maplayer.find("style")
        if placeholder is not None:
            _insert_style(maplayer, placeholder)


def _text(parent: ET.Element, tag: str, text: str) -> None:
    element = parent.find(tag)
    assert element is not None, f"template: no <{tag}>"
    element.text = text


def _zone_bounds(frame: gpd.GeoDataFrame) -> dict[str, tuple[float, float, float, float]]:
    """Zone -> bounds of its territories in the zone's metric CRS, with a margin."""
    zones = [zone_of(d, i) for d, i in zip(frame["departements"], frame["id_ti"])]
    out = {}
    for zone in dict.fromkeys(sorted(zones, key=lambda z: (z != METROPOLE, z))):
        part = frame[[z == zone for z in zones]]
        xmin, ymin, xmax, ymax = part.to_crs(metric_epsg(zone)).total_bounds
        dx, dy = (xmax - xmin) * _MARGIN, (ymax - ymin) * _MARGIN
        out[zone] = (xmin - dx, ymin - dy, xmax + dx, ymax + dy)
    return out


def _set_extents(root: ET.Element, bounds: dict[str, tuple[float, float, float, float]]) -> None:
    """The opening view (the metropole, else the first zone) and one bookmark per zone."""
    zone = METROPOLE if METROPOLE in bounds else next(iter(bounds))
    view = bounds[zone] if metric_epsg(zone) == PROJECT_CRS else _to_project(bounds[zone], metric_epsg(zone))
    extent = root.find("mapcanvas/extent")
    default = root.find("ProjectViewSettings/DefaultViewExtent")
    marks = root.find("Bookmarks")
    assert extent is not None and default is not None and marks is not None, "template"
    for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), view):
        _text(extent, tag, repr(float(value)))
        default.set(tag, repr(float(value)))
    for zone, (xmin, ymin, xmax, ymax) in bounds.items():
        epsg = metric_epsg(zone)
        mark = ET.SubElement(marks, "Bookmark", {
            "id": f"zone-{zone}", "name": f"{ZONES[zone][1]} (EPSG:{epsg})",
            "group": "Territoires d'industrie",
            "extent": f"POLYGON(({xmin} {ymin}, {xmax} {ymin}, {xmax} {ymax}, {xmin} {ymax}, {xmin} {ymin}))"})
        _spatialrefsys(ET.SubElement(mark, "spatialrefsys"), epsg)


def _to_project(box: tuple[float, float, float, float], epsg: int) -> tuple[float, float, float, float]:
    import pyproj

    transformer = pyproj.Transformer.from_crs(epsg, PROJECT_CRS, always_xy=True)
    return tuple(transformer.transform_bounds(*box))   # type: ignore[return-value]


def _set_metadata(root: ET.Element, phase: str, n: int, bounds: dict, meta: dict | None) -> None:
    title = f"Territoires d'industrie {phase} ({n} territoires)"
    overseas = ", ".join(f"{ZONES[z][1]} EPSG:{metric_epsg(z)}" for z in bounds if z != METROPOLE)
    abstract = (
        f"{title}. The territories in Lambert-93 (EPSG:2154), for the metropole; labels on lib_ti. "
        "The membership tables are related to the territories by id_ti: a territory's form lists its "
        "communes and groupements, a commune's row opens its territory. "
        + (f"Overseas: use the spatial bookmarks, then set the project CRS to the zone's ({overseas}) "
           "for undistorted shapes. " if overseas else "")
        + (f"Build {meta.get('build_id')}, contract {meta.get('contract_version')}." if meta else ""))
    _text(root, "title", title)
    root.set("projectname", title)
    metadata = root.find("projectMetadata")
    assert metadata is not None, "template"
    _text(metadata, "title", title)
    _text(metadata, "abstract", abstract)


def project_xml(frame: gpd.GeoDataFrame, phase: str, files: dict[str, str], meta: dict | None = None) -> bytes:
    """The ``.qgs`` XML of a phase's project; ``files``: name -> file name of each published file."""
    if "gpkg" not in files:
        raise PublishError("the QGIS project needs the GeoPackage, which was not written")
    root = ET.parse(TEMPLATE).getroot()
    _set_layers(root, files, phase)
    bounds = _zone_bounds(frame)
    _set_extents(root, bounds)
    _set_metadata(root, phase, len(frame), bounds, meta)
    _fill_crs(root)
    ET.indent(root, space="  ")
    return _DOCTYPE + ET.tostring(root, encoding="utf-8", xml_declaration=False) + b"\n"


def write_qgz(frame: gpd.GeoDataFrame, path: Path, phase: str, files: dict[str, str],
              meta: dict | None = None) -> Path:
    """Write the project as a ``.qgz`` (a zip holding one ``.qgs``)."""
    info = zipfile.ZipInfo(Path(path).with_suffix(".qgs").name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(info, project_xml(frame, phase, files, meta))
    return Path(path)


def read_project(path: Path) -> ET.Element:
    """The root element of the ``.qgs`` inside a ``.qgz``."""
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith(".qgs")]
        if len(names) != 1:
            raise PublishError(f"{path}: QGIS project check failed: {len(names)} .qgs files in the archive")
        return ET.fromstring(archive.read(names[0]))


def verify_qgz(path: Path) -> dict:
    """Re-read the project: raise PublishError unless its CRS is Lambert-93, every datasource is a
    file beside it (relative path) and the territories carry the style."""
    root = read_project(path)
    problems = []
    if root.findtext("projectCrs/spatialrefsys/authid") != f"EPSG:{PROJECT_CRS}":
        problems.append("project CRS is not EPSG:2154")
    layers = list(root.iter("maplayer"))
    for layer in layers:
        source = (layer.findtext("datasource") or "").split("|")[0]
        if not source.startswith("./") or not (Path(path).parent / source).is_file():
            problems.append(f"layer {layer.findtext('id')}: datasource {source!r} is not a file beside the project")
    if not any(layer.find("renderer-v2") is not None and layer.get("labelsEnabled") == "1" for layer in layers):
        problems.append("no layer with the default style and labels")
    if problems:
        raise PublishError(f"{path}: QGIS project check failed: {'; '.join(problems)}")
    return {"rows": None, "format": "QGIS project (.qgz)", "media_type": MEDIA_TYPE, "layers": len(layers),
            "crs": f"EPSG:{PROJECT_CRS}"}
