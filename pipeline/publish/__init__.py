"""Publishing the territories for GIS users and services (GeoParquet, GeoJSON, GeoPackage...).

Main entry point: :func:`publish_release`. See ``release.py`` for the layout and the atomic swap,
``dictionary.py`` for the data dictionary (``docs/DATA_DICTIONARY.md``).
"""

from __future__ import annotations

from ..errors import PublishError
from .dictionary import column_descriptions, column_kinds, render_data_dictionary, write_data_dictionary
from .preview import preview_markdown, render_preview, render_preview_bytes
from .release import (
    DEFAULT_PHASE,
    STABLE_NAMES,
    apply_retention,
    preview_path,
    publish_release,
    release_dir,
    stable_paths,
)

__all__ = [
    "DEFAULT_PHASE", "STABLE_NAMES", "PublishError", "apply_retention", "column_descriptions",
    "column_kinds", "preview_markdown", "preview_path", "publish_release", "release_dir",
    "render_data_dictionary", "render_preview", "render_preview_bytes", "stable_paths",
    "write_data_dictionary",
]
