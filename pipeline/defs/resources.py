"""The one Dagster resource of the project: the pipeline settings (``pipeline.settings.Settings``).

Each field overrides the TI_* variable of the same name for a run (launchpad config, tests);
an empty field falls back to the environment, then to the default. Validation is the settings
object's own: a bad value fails the step that needs the settings with one line naming the
variable, and never stops the code location from loading.
"""

from __future__ import annotations

import logging
import os

from dagster import ConfigurableResource

from ..errors import PipelineError
from ..settings import Settings, env_names

log = logging.getLogger(__name__)


class PipelineSettings(ConfigurableResource):
    """Overrides for a run, one field per TI_* variable (empty: the environment, then the default)."""

    mirror_dir: str = ""
    raw_dir: str = ""
    output_dir: str = ""
    plans_path: str = ""
    catalog_path: str = ""
    keep_releases: str = ""
    http_timeout: str = ""
    http_retries: str = ""
    http_backoff: str = ""
    http_max_retry_after: str = ""
    schedule_cron: str = ""
    schedule_timezone: str = ""
    lock_path: str = ""
    alert_webhook_url: str = ""
    release_max_age_days: str = ""
    sources_max_age_hours: str = ""
    max_source_mb: str = ""
    max_table_mb: str = ""
    http_deadline: str = ""
    max_commune_vertices: str = ""
    accept_changes: str = ""

    def settings(self) -> Settings:
        env = dict(os.environ)
        for var, name in env_names().items():
            value = getattr(self, name)
            if value:
                env[var] = str(value)
        return Settings.from_env(env)


def definition_settings() -> Settings:
    """The settings used while the code location loads (the catalog names the source assets).

    A bad TI_* value must not stop the code location from loading: it is logged here and the
    defaults are used for the definitions; the steps that read the settings at run time then
    fail with the same one-line message. URL overrides and pins are left out: a misspelt TI_URL_* or
    TI_PIN_* is reported by the run that loads the catalog to fetch, not by the code location.
    """
    try:
        return Settings.from_env().replace(url_overrides={}, pins={})
    except PipelineError as err:
        log.error("%s (the code location loads with the default settings; runs will fail until it is fixed)", err)
        catalog = os.environ.get("TI_CATALOG", "").strip()
        try:
            return Settings.validated({"catalog_path": catalog} if catalog else {})
        except PipelineError:       # the catalog path itself is the bad value
            return Settings()
