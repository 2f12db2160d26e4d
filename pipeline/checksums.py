"""The one file checksum helper of the project (downloads, the manifest, the swap, the CLI).

Kept apart from ``pipeline.sources.fetch`` so that the publishing modules use it without loading
the HTTP stack.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
