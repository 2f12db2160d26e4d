"""Dagster resources: the pipeline settings, read from the TI_* environment variables by default."""

from __future__ import annotations

from dagster import ConfigurableResource

from ..settings import Settings


class PipelineSettings(ConfigurableResource):
    """Overrides for a run; empty fields fall back to the environment (TI_*) and then the defaults."""

    mirror_dir: str = ""
    raw_dir: str = ""
    output_dir: str = ""
    plans_path: str = ""

    def settings(self) -> Settings:
        import os

        env = dict(os.environ)
        for key, value in (("TI_MIRROR_DIR", self.mirror_dir), ("TI_RAW_DIR", self.raw_dir),
                           ("TI_OUTPUT_DIR", self.output_dir), ("TI_PLANS_PATH", self.plans_path)):
            if value:
                env[key] = value
        return Settings.from_env(env)
