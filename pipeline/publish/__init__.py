"""Publishing the territories for GIS users and services (GeoParquet, GeoJSON, GeoPackage...).

Main entry point: :func:`publish_release`. See ``release.py`` for the layout and the atomic swap,
``dictionary.py`` for the data dictionary (``docs/DATA_DICTIONARY.md``).

The names below are imported on first use (PEP 562), so that importing one writer, e.g.
``pipeline.publish.geojson``, does not load the others (matplotlib, pyogrio, sqlite...).
"""

from __future__ import annotations

import importlib

# public name -> submodule that defines it
_LAZY = {
    **dict.fromkeys(("column_descriptions", "render_data_dictionary", "write_data_dictionary"),
                    "dictionary"),
    **dict.fromkeys(("render_preview", "render_preview_bytes"), "preview"),
    **dict.fromkeys(("STABLE_NAMES", "release_dir", "stable_dirs", "stable_paths"), "layout"),
    **dict.fromkeys(("preview_path", "publish_release"), "release"),
    **dict.fromkeys(("apply_retention", "write_index"), "retention"),
}

def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
