"""Settings read from the environment (each has a default), shared by the core and Dagster."""

from __future__ import annotations

import importlib.resources
import os
from dataclasses import dataclass, field
from pathlib import Path

# The static project data (source catalog, axes, styles, schemas, plan template): edited in the
# repository's top-level assets/ and shipped inside the wheel as the package ``pipeline.static``
# (pyproject.toml maps one onto the other, so there is one copy only).
ASSETS_DIR = Path(str(importlib.resources.files("pipeline.static")))


def _path(value: str | None, default: Path | None) -> Path | None:
    if value is None or value.strip() == "":
        return default
    return Path(value).expanduser().resolve()


@dataclass(frozen=True)
class Settings:
    """Every knob of a build. Build one with :meth:`from_env` or directly in tests."""

    mirror_dir: Path | None = None          # TI_MIRROR_DIR: read sources from here, offline
    raw_dir: Path = Path("data_raw")        # TI_RAW_DIR: download cache (default: in the working directory)
    output_dir: Path = Path("data_out")     # TI_OUTPUT_DIR: published files (default: in the working directory)
    plans_path: Path | None = None          # TI_PLANS_PATH: user plan table (CSV)
    catalog_path: Path = ASSETS_DIR / "sources.toml"  # TI_CATALOG
    keep_releases: int = 5                  # TI_KEEP_RELEASES
    http_timeout: float = 60.0              # TI_HTTP_TIMEOUT (seconds, connect and read)
    http_retries: int = 4                   # TI_HTTP_RETRIES
    http_backoff: float = 1.0               # TI_HTTP_BACKOFF (seconds, doubled each retry)
    http_max_retry_after: float = 120.0     # TI_HTTP_MAX_RETRY_AFTER (cap on Retry-After)
    url_overrides: dict[str, str] = field(default_factory=dict)  # TI_URL_<SOURCE>

    @property
    def offline(self) -> bool:
        return self.mirror_dir is not None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        base = cls()
        overrides = {
            k[len("TI_URL_"):].lower(): v for k, v in env.items() if k.startswith("TI_URL_") and v
        }
        return cls(
            mirror_dir=_path(env.get("TI_MIRROR_DIR"), None),
            raw_dir=_path(env.get("TI_RAW_DIR"), base.raw_dir.resolve()),
            output_dir=_path(env.get("TI_OUTPUT_DIR"), base.output_dir.resolve()),
            plans_path=_path(env.get("TI_PLANS_PATH"), None),
            catalog_path=_path(env.get("TI_CATALOG"), base.catalog_path),
            keep_releases=int(env.get("TI_KEEP_RELEASES", base.keep_releases)),
            http_timeout=float(env.get("TI_HTTP_TIMEOUT", base.http_timeout)),
            http_retries=int(env.get("TI_HTTP_RETRIES", base.http_retries)),
            http_backoff=float(env.get("TI_HTTP_BACKOFF", base.http_backoff)),
            http_max_retry_after=float(
                env.get("TI_HTTP_MAX_RETRY_AFTER", base.http_max_retry_after)
            ),
            url_overrides=overrides,
        )
