"""The main job's extras for ``bench/run.py``: the baseline build, per-stage figures, unchanged runs
and the comparison of published bytes.

- :func:`baseline_tree`: a git ref checked out in a worktree under ``bench/work/baseline-<sha>``;
  the ``baseline`` method runs ``python -m pipeline`` from there (the current directory comes first
  on ``sys.path``, before the venv's editable install of this checkout).
- :func:`stages`: seconds per stage of one main-job run, read from what the run published (each
  phase's manifest: the core steps' ``extra.timings_s``, each published file's ``timings_s``) and
  from the CLI's progress log (resolving and fetching the sources).
- :func:`published`: the published data of two output folders compared: the manifests'
  ``content_sha256``, and each file's bytes, else its data without the build's own metadata (the
  Parquet tables, the GeoJSON features, the GeoPackage and FlatGeobuf features, the PMTiles tiles).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / "work"
PHASES = ("2023-2027", "2018-2022")
# the core steps as the manifests name them (extra.timings_s), in build order
CORE_STAGES = ("scan_boundaries", "reconcile", "attributes", "repair_and_dissolve", "assemble", "checks")
FETCH_LINE = re.compile(r"reading the sources of .*: done in ([0-9.]+) s")


def baseline_tree(ref: str) -> tuple[Path, str]:
    """A worktree of ``ref`` (detached) under bench/work, made once per commit; (folder, short sha)."""
    sha = subprocess.run(["git", "rev-parse", "--short", f"{ref}^{{commit}}"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    tree = WORK / f"baseline-{sha}"
    if not (tree / "pipeline" / "__init__.py").is_file():
        subprocess.run(["git", "worktree", "add", "--force", "--detach", str(tree), sha], cwd=ROOT, check=True,
                       capture_output=True)
    return tree, sha


def _phase_dir(out: Path, phase: str) -> Path:
    return out if phase == PHASES[0] else out / f"phase={phase}"


def stages(out: Path, log: Path) -> dict[str, float]:
    """Seconds per stage of one run (both phases added up; ``<phase>:`` keys per phase too)."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    found = FETCH_LINE.findall(text)
    result: dict[str, float] = {"resolve_and_fetch": float(found[0])} if found else {}
    for phase in PHASES:
        path = _phase_dir(out, phase) / "manifest.json"
        if not path.is_file():
            continue
        manifest = json.loads(path.read_text())
        core = manifest.get("extra", {}).get("timings_s", {})
        files = {f"publish_{k}": v for k, v in manifest.get("timings_s", {}).items()}
        for name, seconds in {**core, **files}.items():
            result[f"{phase}:{name}"] = float(seconds)
            result[name] = result.get(name, 0.0) + float(seconds)
    return result


def _sha(path: Path, skip_first_line: bool = False) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        if skip_first_line:
            fh.readline()
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _same_table(a: Path, b: Path) -> bool:
    """The same Parquet table (columns and values; the file metadata, which holds the build id, aside)."""
    import pyarrow.parquet as pq

    ta, tb = pq.read_table(a), pq.read_table(b)
    return ta.replace_schema_metadata(None).equals(tb.replace_schema_metadata(None))


def _same_features(a: Path, b: Path) -> bool:
    """The same layers and features read through GDAL (GeoPackage, FlatGeobuf; their metadata aside)."""
    import pyogrio

    layers = [name for name, _ in pyogrio.list_layers(a)]
    if layers != [name for name, _ in pyogrio.list_layers(b)]:
        return False
    for layer in layers:
        # the style table's update_time is the write time of the file
        fa, fb = (pyogrio.read_dataframe(p, layer=layer).drop(columns=["update_time"], errors="ignore")
                  for p in (a, b))
        geo = [c for c in ("geometry",) if c in fa.columns]
        if not fa.drop(columns=geo).equals(fb.drop(columns=geo)):
            return False
        if geo and list(fa.geometry.to_wkb()) != list(fb.geometry.to_wkb()):
            return False
    return True


def _same_tiles(a: Path, b: Path) -> bool:
    """The same vector tiles (bytes of each z/x/y) in two PMTiles archives (their metadata aside)."""
    from pmtiles.reader import MmapSource, Reader, all_tiles

    def tiles(path: Path) -> dict:
        with path.open("rb") as fh:
            return dict(all_tiles(Reader(MmapSource(fh)).get_bytes))

    return tiles(a) == tiles(b)


def _verdict(fa: Path, fb: Path) -> str:
    if not fb.is_file():
        return "missing"
    if _sha(fa) == _sha(fb):
        return "identical bytes"
    if fa.suffix == ".geojson" and _sha(fa, True) == _sha(fb, True):
        return "identical features (first line: build metadata)"
    if fa.suffix == ".parquet" and _same_table(fa, fb):
        return "identical table (file metadata: build id)"
    if fa.suffix in (".gpkg", ".fgb") and _same_features(fa, fb):
        return "identical features (file metadata: build id, write time)"
    if fa.suffix == ".pmtiles" and _same_tiles(fa, fb):
        return "identical tiles (archive metadata: build id)"
    return "differs"


def published(a: Path, b: Path) -> dict:
    """Per phase: equal content_sha256; per file: bytes equal, else data equal (tables, GeoJSON features)."""
    out: dict = {}
    for phase in PHASES:
        da, db = _phase_dir(a, phase), _phase_dir(b, phase)
        if not ((da / "manifest.json").is_file() and (db / "manifest.json").is_file()):
            continue
        ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (da, db))
        files = {}
        for entry in ma.get("outputs", []):
            name = Path(entry["path"]).name
            files[name] = _verdict(da / name, db / name)
        out[phase] = {"content_sha256_equal": ma.get("content_sha256") == mb.get("content_sha256"),
                      "content_sha256": ma.get("content_sha256"), "files": files}
    return out
