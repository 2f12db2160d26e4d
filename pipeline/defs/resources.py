"""The one Dagster resource of the project: the pipeline settings (``pipeline.settings.Settings``).

``PipelineSettings`` is derived from ``Settings``: one string field per TI_* variable, named like
the settings field, described by its variable and expected form. A non-empty field overrides the
environment for a run (launchpad config, tests); an empty one falls back to the environment, then
to the default. Validation is the settings object's own: a bad value fails the step that needs the
settings with one line naming the variable, and never stops the code location from loading
(:func:`definition_settings`).
"""

from __future__ import annotations

import logging
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field, create_model

from ..settings import Settings, describe_setting, env_names, lenient_from_env

log = logging.getLogger(__name__)


class _SettingsOverrides(ConfigurableResource):
    """Overrides for a run, one field per TI_* variable (empty: the environment, then the default)."""

    def settings(self) -> Settings:
        """The run's settings: the environment, overridden by the non-empty fields; validated."""
        overrides = {var: str(getattr(self, name)) for var, name in env_names().items() if getattr(self, name)}
        return Settings.from_env(overrides=overrides)


_FIELDS: dict[str, Any] = {name: (str, Field(default="", description=describe_setting(name)))
                           for name in env_names().values()}
PipelineSettings = create_model("PipelineSettings", __base__=_SettingsOverrides, **_FIELDS)
PipelineSettings.__doc__ = _SettingsOverrides.__doc__
PipelineSettings.__module__ = __name__


def definition_settings() -> Settings:
    """The settings used while the code location loads (the catalog names the source assets).

    A bad TI_* value must not stop the code location from loading: it is logged here and its
    default is used for the definitions; the steps that read the settings at run time then fail
    with the same one-line message. URL overrides and pins are left out: a misspelt TI_URL_* or
    TI_PIN_* is reported by the run that loads the catalog to fetch, not by the code location.
    """
    settings, problems = lenient_from_env()
    for problem in problems:
        log.error("%s (the code location loads with its default; runs will fail until it is fixed)", problem)
    return settings.replace(url_overrides={}, pins={})
