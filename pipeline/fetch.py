"""Fetch one source: from the mirror directory (offline) or its live URL, into the download cache.

STUB: the real implementation (retries, conditional requests, checksums, content sniffing) is
being written; the interface below is fixed.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from .catalog import SourceSpec
from .errors import SourceError
from .settings import Settings


@dataclass
class FetchResult:
    source: str              # logical name in the catalog
    path: Path               # local file to read
    origin: str              # URL, or mirror path
    mode: str                # "live" or "mirror"
    sha256: str
    size: int
    release: str             # release label from the catalog
    cog: int
    etag: str | None = None
    last_modified: str | None = None
    fetched_at: str = ""
    changed: bool = True     # False when the cached copy was reused (304 / same sha256)
    attempts: int = 1

    def as_metadata(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_source(spec: SourceSpec, settings: Settings, session=None) -> FetchResult:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if settings.mirror_dir is not None:
        path = spec.mirror_path(settings.mirror_dir)
        if not path.is_file():
            raise SourceError(f"{spec.name}: mirror file not found: {path} (TI_MIRROR_DIR={settings.mirror_dir})")
        return FetchResult(spec.name, path, str(path), "mirror", sha256_file(path), path.stat().st_size,
                           spec.mirror_release, spec.cog, fetched_at=now)
    raise SourceError(f"{spec.name}: live download not implemented yet ({spec.url})")
