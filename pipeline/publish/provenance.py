"""What each published data file says about itself: build id, contract version, source lock.

The same small dict goes into every data file (GeoParquet and membership Parquet file metadata,
the GeoPackage's ``gpkg_metadata`` table, a GeoJSON foreign member, the FlatGeobuf and PMTiles
descriptions), so that a file copied away from its manifest still names its build.
"""

from __future__ import annotations

import hashlib
import json

from .. import CONTRACT_VERSION, __version__

KEY = "territoires_industrie"   # the metadata key / foreign member / table entry holding the dict
# Who to credit, in the tiles' metadata and on the web map: the lists (ANCT), the boundaries
# (IGN ADMIN EXPRESS through Etalab) and the codes (INSEE COG), all under the Licence Ouverte 2.0.
ATTRIBUTION = "Territoires d'industrie : ANCT ; contours : IGN, Etalab ; codes : INSEE (Licence Ouverte 2.0)"
LICENCE = {"name": "Licence Ouverte / Open Licence 2.0 (Etalab)",
           "url": "https://www.etalab.gouv.fr/licence-ouverte-open-licence/"}


def source_lock(manifest_or_inputs) -> str:
    """The sources a build read, as one string: ``sha256:`` and the digest of the manifest's
    ``lock`` (the exact source of each input, ``pipeline.sources.resolve``) when it has one, else of
    its inputs' (source, sha256) pairs, sorted (times of fetching left out, so that the same files
    give the same value).

    Accepts a manifest dict or its ``inputs`` list.
    """
    if isinstance(manifest_or_inputs, dict):
        lock = manifest_or_inputs.get("lock")
        if lock:
            return lock if isinstance(lock, str) else "sha256:" + _digest(lock)
        manifest_or_inputs = manifest_or_inputs.get("inputs", [])
    pairs = sorted((str(i.get("source")), str(i.get("sha256") or "")) for i in manifest_or_inputs)
    return "sha256:" + _digest(pairs)


def _digest(value) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_metadata(build_id: str, phase: str, sources) -> dict:
    """The dict written inside each data file of a release (``sources``: as for :func:`source_lock`)."""
    return {"build_id": str(build_id), "phase": str(phase), "contract_version": CONTRACT_VERSION,
            "pipeline_version": __version__, "source_lock": source_lock(sources)}


def dumps(meta: dict) -> str:
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
