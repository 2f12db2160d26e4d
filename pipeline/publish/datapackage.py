"""``datapackage.json``: a Frictionless Data Package describing a phase's published files.

One resource per published file (its format, media type, bytes and sha256); the CSV membership
tables are tabular resources with a Table Schema made from the column declarations of
:mod:`.membership_tables` (the same ones the data dictionary lists): codes are ``string`` (so
``01`` stays ``01``), counts ``integer``, an empty cell is missing (``missingValues: [""]``), with
primary keys, required columns and the patterns of codes. The other files are ``"type": "file"``
resources (frictionless checks their size and sha256 only). Readers that follow Table Schema
(frictionless, data.gouv.fr's preview, ``pandas.read_csv`` with the dtypes it gives) then read
the tables as declared. Paths are relative: the package describes the folder it sits in.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import PublishError
from .layout import STABLE_NAMES
from .membership_tables import CONSTRAINTS, PRIMARY_KEYS, TABLES

NAME = STABLE_NAMES["datapackage"]
MEDIA_TYPE = "application/json"
PROFILE = "data-package"
TABLE_PROFILE = "tabular-data-resource"
CSV_DIALECT = {"delimiter": ",", "doubleQuote": True, "header": True, "lineTerminator": "\n", "quoteChar": '"'}
FIELD_TYPES = {"string": "string", "int": "integer"}


def table_schema(table: str) -> dict:
    """The Table Schema of a membership table (``communes`` or ``groupements``)."""
    fields = []
    for name, (kind, meaning) in TABLES[table].items():
        item: dict = {"name": name, "type": FIELD_TYPES[kind], "description": meaning}
        if name in CONSTRAINTS[table]:
            item["constraints"] = dict(CONSTRAINTS[table][name])
        fields.append(item)
    return {"fields": fields, "primaryKey": list(PRIMARY_KEYS[table]), "missingValues": [""]}


def _resource(name: str, path: Path, facts: dict) -> dict:
    """One resource: the file ``path`` of the output ``name`` (a manifest output name)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    resource = {
        "name": name.replace("_", "-"), "path": path.name, "format": path.suffix.lstrip(".").lower(),
        "mediatype": facts.get("media_type"), "bytes": path.stat().st_size, "hash": f"sha256:{digest}",
        "description": facts.get("format"),
    }
    table = _table_of(name)
    if table is not None and path.suffix == ".csv":
        resource.update({"type": "table", "profile": TABLE_PROFILE, "encoding": "utf-8",
                         "dialect": dict(CSV_DIALECT), "schema": table_schema(table)})
    else:   # a file read whole by its own tools: size and sha256 only (frictionless would read a
        resource["type"] = "file"   # Parquet or GeoJSON as a table otherwise)
    return resource


def _table_of(name: str) -> str | None:
    """``communes`` for ``membership_communes_csv``, and so on; None for another file."""
    parts = name.split("_")
    return parts[1] if len(parts) == 3 and parts[0] == "membership" and parts[1] in TABLES else None


def build_datapackage(folder: Path, files: dict[str, str], facts: dict[str, dict], phase: str,
                      meta: dict | None = None, inputs: list[dict] | None = None) -> dict:
    """The package of the files ``files`` (output name -> file name in ``folder``)."""
    sources = [{"title": f"{i.get('title') or i.get('source')} ({i.get('licence') or 'licence in the catalog'})",
                **({"path": i["origin"]} if str(i.get("origin", "")).startswith(("https://", "http://")) else {})}
               for i in inputs or []]
    package: dict[str, object] = {
        "profile": PROFILE,
        "name": f"territoires-industrie-{phase}",
        "title": f"Territoires d'industrie {phase}",
        "description": ("The territories of France's Territoires d'industrie programme, one geometry per "
                        "territory, and which communes and groupements each holds. Columns: "
                        "docs/DATA_DICTIONARY.md of the project."),
        "keywords": ["territoires d'industrie", "communes", "ANCT", "France"],
        "resources": [_resource(name, Path(folder) / filename, facts.get(name, {})) for name, filename in files.items()],
        **({"sources": sources} if sources else {}),
    }
    if meta is not None:
        package["territoires_industrie"] = dict(meta)   # build id, contract version, source lock
    return package


def write_datapackage(path: Path, files: dict[str, str], facts: dict[str, dict], phase: str,
                      meta: dict | None = None, inputs: list[dict] | None = None) -> Path:
    package = build_datapackage(Path(path).parent, files, facts, phase, meta, inputs)
    Path(path).write_text(json.dumps(package, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return Path(path)


def verify_datapackage(path: Path, files: dict[str, str]) -> dict:
    """Re-read the package: raise PublishError unless it lists exactly ``files``, each with its
    size and sha256, and the CSV tables with their schema."""
    package = json.loads(Path(path).read_text(encoding="utf-8"))
    listed = {r["path"]: r for r in package.get("resources", [])}
    problems = []
    if set(listed) != set(files.values()):
        problems.append(f"lists {sorted(listed)} instead of {sorted(files.values())}")
    for filename, resource in listed.items():
        file = Path(path).parent / filename
        if not file.is_file() or resource.get("hash") != "sha256:" + hashlib.sha256(file.read_bytes()).hexdigest():
            problems.append(f"{filename}: missing or its sha256 differs")
        if filename.endswith(".csv") and "schema" not in resource:
            problems.append(f"{filename}: no Table Schema")
    if problems:
        raise PublishError(f"{path}: data package check failed: {'; '.join(problems)}")
    return {"rows": None, "format": "Frictionless Data Package (JSON)", "media_type": MEDIA_TYPE,
            "resources": len(listed)}
