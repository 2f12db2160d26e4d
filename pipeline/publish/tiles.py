"""Web formats: PMTiles vector tiles and FlatGeobuf (with its spatial index), written by GDAL.

PMTiles: GDAL's driver (through pyogrio) cuts one set of geometries into the tiles of a zoom
range, simplifying each tile on its own, which would let shared borders drift apart. So each
zoom band of :data:`BANDS` is cut from the territories simplified beforehand *as one coverage*
(``light.Simplifier``) with GDAL's own simplification off; the bands' tiles are then put into one
archive with the ``pmtiles`` library (a tile is taken as GDAL wrote it). Tiles hold only
``light.MAP_COLUMNS``, in one layer :data:`LAYER`.

GDAL centres the header on the middle of the bounds, which span the overseas departements (a point
off West Africa): :func:`tile_metadata` puts the centre on metropolitan France and writes the
attribution, a description and each field's meaning (TileJSON 3.0.0) into the archive's metadata.

FlatGeobuf: every column (lists ``;``-joined as in the GeoPackage) and the packed Hilbert R-tree
index, so that a bbox query reads only the features it needs.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import geopandas as gpd

from ..errors import PublishError
from .columns import column_infos
from .light import MAP_COLUMNS, Simplifier, map_frame, zones
from .provenance import ATTRIBUTION, KEY, dumps
from .zones import METROPOLE

LAYER = "territoires"
# (min zoom, max zoom, coverage simplification in m; 0: as published). A band's tolerance is about
# half a pixel of a 256-pixel tile at its max zoom in France (156 543 m / 2^z * cos 46 deg / 2):
# z4 ~3.4 km, z7 ~420 m; from z8 on the source's own generalisation (50 m) is below a pixel. A z9
# tile (4096 units over ~54 km) keeps coordinates to ~13 m, finer than the source: web maps
# overzoom it beyond z9, and a z10 band would double the tiles and the writing time.
BANDS = ((0, 4, 2000.0), (5, 7, 400.0), (8, 9, 0.0))
CENTER_ZOOM = 5   # metropolitan France fills a 1000-pixel-wide map at zoom 5


def band_tolerances() -> tuple[float, ...]:
    """The coverage simplifications the tiles use (``light.Simplifier``'s ``planned``)."""
    return tuple(t for _, _, t in BANDS if t)


def write_pmtiles(frame: gpd.GeoDataFrame, path: Path, simplify: Simplifier, metadata: dict | None = None) -> Path:
    """Write the territories' vector tiles (zooms of :data:`BANDS`) as one PMTiles archive."""
    import pyogrio
    from pmtiles.reader import MmapSource, Reader, all_tiles
    from pmtiles.tile import zxy_to_tileid
    from pmtiles.writer import Writer

    path = Path(path)
    tiles: dict[int, bytes] = {}
    header: dict = {}
    tile_meta: dict = {}
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".pmtiles-") as tmp:
        for zmin, zmax, tolerance in BANDS:
            band = Path(tmp) / f"z{zmin}-{zmax}.pmtiles"
            part = map_frame(frame).set_geometry(gpd.GeoSeries(simplify(tolerance), crs=4326, index=frame.index))
            pyogrio.write_dataframe(
                part, band, driver="PMTiles", layer=LAYER,
                dataset_options={"MINZOOM": zmin, "MAXZOOM": zmax, "NAME": "territoires-industrie",
                                 "SIMPLIFICATION": 0, "SIMPLIFICATION_MAX_ZOOM": 0},
            )
            with open(band, "rb") as fh:
                reader = Reader(MmapSource(fh))
                header, tile_meta = dict(reader.header()), dict(reader.metadata())
                for (z, x, y), data in all_tiles(reader.get_bytes):
                    tiles[zxy_to_tileid(z, x, y)] = data
    header, tile_meta = tile_metadata(frame, header, tile_meta, metadata)
    with open(path, "wb") as fh:
        writer = Writer(fh)
        for tile_id in sorted(tiles):
            writer.write_tile(tile_id, tiles[tile_id])
        writer.finalize(header, tile_meta)
    return path


def _center(frame: gpd.GeoDataFrame) -> tuple[float, float]:
    """The middle of the metropolitan territories' bounds (of all of them when none is in the metropole)."""
    metro = frame[zones(frame) == METROPOLE]
    west, south, east, north = (metro if len(metro) else frame).total_bounds
    return (west + east) / 2, (south + north) / 2


def tile_metadata(frame: gpd.GeoDataFrame, header: dict, tile_meta: dict, metadata: dict | None) -> tuple[dict, dict]:
    """The header and metadata GDAL wrote for one band, completed for the whole archive: zoom
    range of :data:`BANDS`, centre on metropolitan France (:data:`CENTER_ZOOM`), attribution, a
    description, each field's meaning and the build's metadata under ``KEY``."""
    lon, lat = _center(frame)
    west, south, east, north = frame.total_bounds
    header.update({"center_lon_e7": round(lon * 1e7), "center_lat_e7": round(lat * 1e7), "center_zoom": CENTER_ZOOM,
                   "min_lon_e7": round(west * 1e7), "min_lat_e7": round(south * 1e7),
                   "max_lon_e7": round(east * 1e7), "max_lat_e7": round(north * 1e7)})
    phases = sorted(set(frame["phase"].astype(str))) if "phase" in frame else []
    meaning = {c.name: c.description for c in column_infos(frame)}
    tile_meta.update({
        "name": f"Territoires d'industrie {', '.join(phases)}".strip(),
        "description": (f"Territoires d'industrie {', '.join(phases)}: {len(frame)} territories, one polygon each "
                        f"(layer {LAYER!r}), built from the ANCT lists of communes and groupements"),
        "attribution": ATTRIBUTION,
        "minzoom": str(BANDS[0][0]), "maxzoom": str(BANDS[-1][1]),
        "center": f"{lon:.4f},{lat:.4f},{CENTER_ZOOM}", "bounds": f"{west:.4f},{south:.4f},{east:.4f},{north:.4f}",
    })
    for layer in tile_meta.get("vector_layers", []):
        layer.update({"minzoom": BANDS[0][0], "maxzoom": BANDS[-1][1],
                      "description": "One polygon per territory, simplified per zoom band as one coverage",
                      "fields": {name: meaning.get(name, "") for name in MAP_COLUMNS if name in layer.get("fields", {})}})
    if metadata is not None:
        tile_meta[KEY] = metadata
    return header, tile_meta


def pmtiles_info(path: Path) -> tuple[dict, dict, list[tuple[tuple[int, int, int], int]]]:
    """(header, metadata, [((z, x, y), tile bytes)]) of a PMTiles archive."""
    from pmtiles.reader import MmapSource, Reader, all_tiles

    with open(path, "rb") as fh:
        reader = Reader(MmapSource(fh))
        return reader.header(), reader.metadata(), [(zxy, len(data)) for zxy, data in all_tiles(reader.get_bytes)]


def ids_at_zoom(path: Path, zoom: int) -> set[str]:
    """The territory ids present in the tiles of one zoom level, as GDAL reads them."""
    import pyogrio

    back = pyogrio.read_dataframe(path, layer=LAYER, columns=["id_ti"], read_geometry=False, ZOOM_LEVEL=zoom)
    return set(back["id_ti"])


def verify_pmtiles(path: Path, expected: gpd.GeoDataFrame, zooms=None) -> dict:
    """Raise PublishError unless the tiles of each of ``zooms`` hold every territory; facts for
    the manifest.

    ``zooms`` defaults to the first zoom of each band: the coarsest grid its geometries are cut
    to, where a small territory would vanish first (reading every zoom through GDAL costs about
    three times as much; tests/test_publish_real_build.py reads every zoom).
    """
    header, _meta, tiles = pmtiles_info(path)
    ids = set(expected["id_ti"])
    zooms = [band[0] for band in BANDS] if zooms is None else zooms
    problems = [f"zoom {z}: {len(ids - found)} territories missing, e.g. {sorted(ids - found)[:3]}"
                for z in zooms if (found := ids_at_zoom(path, z)) != ids]
    if problems:
        raise PublishError(f"{path}: PMTiles check failed: {'; '.join(problems)}")
    largest = max(tiles, key=lambda t: t[1])
    return {"rows": len(ids), "format": "PMTiles v3, Mapbox Vector Tiles", "media_type": "application/vnd.pmtiles",
            "layer": LAYER, "min_zoom": header["min_zoom"], "max_zoom": header["max_zoom"], "tiles": len(tiles),
            "largest_tile_bytes": largest[1], "largest_tile": "/".join(map(str, largest[0])),
            "bands": [{"zooms": f"{a}-{b}", "simplification_m": t} for a, b, t in BANDS]}


def pmtiles_metadata(path: Path) -> dict | None:
    """The build's metadata written by :func:`write_pmtiles` (None if absent)."""
    return pmtiles_info(path)[1].get(KEY)


def write_flatgeobuf(frame: gpd.GeoDataFrame, path: Path, metadata: dict | None = None) -> Path:
    """Write every column (lists ``;``-joined) with the spatial index; the build's metadata in the
    layer description (a JSON text)."""
    import pyogrio

    from .gpkg import gpkg_frame

    Path(path).unlink(missing_ok=True)
    pyogrio.write_dataframe(
        gpkg_frame(frame), path, layer=LAYER, driver="FlatGeobuf", use_arrow=True, promote_to_multi=True,
        geometry_type="MultiPolygon",
        layer_options={"SPATIAL_INDEX": "YES", "TITLE": "territoires-industrie",
                       "DESCRIPTION": dumps({KEY: metadata} if metadata is not None else {})},
    )
    return Path(path)


def flatgeobuf_metadata(path: Path) -> dict | None:
    """The build's metadata written by :func:`write_flatgeobuf` (None if absent)."""
    import pyogrio

    text = (pyogrio.read_info(path).get("layer_metadata") or {}).get("DESCRIPTION")
    return json.loads(text).get(KEY) if text else None


def verify_flatgeobuf(path: Path, expected: gpd.GeoDataFrame) -> dict:
    """Re-read every feature through the spatial index (a bbox query over the whole extent)."""
    import pyogrio

    info = pyogrio.read_info(path)
    back = pyogrio.read_dataframe(path, columns=["id_ti"], bbox=tuple(expected.total_bounds))
    problems = []
    if not info.get("capabilities", {}).get("fast_spatial_filter"):
        problems.append("no spatial index")
    if sorted(back["id_ti"]) != sorted(expected["id_ti"]):
        problems.append(f"{len(back)} features read back through the index instead of {len(expected)}")
    if problems:
        raise PublishError(f"{path}: FlatGeobuf check failed: {'; '.join(problems)}")
    return {"rows": len(back), "format": "FlatGeobuf with packed Hilbert R-tree index",
            "media_type": "application/flatgeobuf", "layer": LAYER}
