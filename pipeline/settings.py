"""The one settings object of a build, read from the TI_* environment variables and validated.

This is the only module that reads the environment. The CLI reads it with
:meth:`Settings.from_env`; Dagster gets the same object through the ``PipelineSettings`` resource
(``pipeline/defs/resources.py``, one field per variable, derived from this class), whose fields
override the environment; the code location reads it with :func:`lenient_from_env` so that a bad
value fails the runs, not the loading. Every value is checked against its range when the object
is made; a bad one raises :class:`SettingsError` naming the variable, its value and the expected
form, in one line. The core receives the values as arguments (``Settings.limits`` for the readers).
"""

from __future__ import annotations

import difflib
import importlib.resources
import logging
import math
import os
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass

from .errors import PipelineError
from .limits import DEFAULT_LIMITS, Limits

log = logging.getLogger(__name__)

# The static project data (source catalog, axes, styles, schemas, plan template): edited in the
# repository's top-level assets/ and shipped inside the wheel as the package ``pipeline.static``
# (pyproject.toml maps one onto the other, so there is one copy only).
ASSETS_DIR = Path(str(importlib.resources.files("pipeline.static")))

URL_PREFIX = "TI_URL_"
PIN_PREFIX = "TI_PIN_"


class SettingsError(PipelineError):
    """A TI_* setting has a value the pipeline cannot use."""


def _absolute(path: Path | None) -> Path | None:
    return None if path is None else path.expanduser().resolve()


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _urls(urls: dict[str, str]) -> dict[str, str]:
    for name, url in urls.items():
        if not url.lower().startswith(("https://", "http://")):
            raise ValueError(f"{URL_PREFIX}{name.upper()} is not an http(s) URL")
    return urls


def _timezone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError("not an IANA time zone") from None
    return name


# minute, hour, day of month, month, day of week: their ranges, and the names cron accepts
_CRON_FIELDS = ((0, 59, ()), (0, 23, ()), (1, 31, ()),
                (1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
                (0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")))
_CRON_ITEM = re.compile(r"^(\*|(\w+)(?:-(\w+))?)(?:/(\d+))?$")


def _cron_value(token: str, low: int, high: int, names: tuple[str, ...]) -> bool:
    if token.lower() in names:
        return True
    return token.isdigit() and low <= int(token) <= high


def _cron(expression: str) -> str:
    """Five fields of numbers in range, names, ``*``, ranges, lists and steps (Dagster's schedules
    accept no seconds field and no ``@hourly``-style shortcut)."""
    parts = expression.split()
    if len(parts) != 5:
        raise ValueError("not a cron expression of five fields")
    for part, (low, high, names) in zip(parts, _CRON_FIELDS):
        for item in part.split(","):
            match = _CRON_ITEM.match(item)
            if match is None or (match.group(4) is not None and int(match.group(4)) == 0):
                raise ValueError(f"bad cron field {part!r}")
            ends = [g for g in match.group(2, 3) if g is not None]
            if not all(_cron_value(e, low, high, names) for e in ends):
                raise ValueError(f"bad cron field {part!r}")
    return " ".join(parts)


def _webhook(url: str | None) -> str | None:
    if url is not None and not url.lower().startswith(("https://", "http://")):
        raise ValueError("TI_ALERT_WEBHOOK_URL is not an http(s) URL")
    return url


_URL_FORBIDDEN = set(" \t\r\n\"'<>;,`\\")


def _web_libraries(value: str | None) -> str | None:
    """An http(s) base URL (ending with ``/``) or a local folder (made absolute)."""
    if value is None:
        return None
    text = value.strip()
    if "://" in text:
        scheme, _, rest = text.partition("://")
        if scheme.lower() not in ("http", "https") or not rest.split("/")[0] or _URL_FORBIDDEN & set(text):
            raise ValueError("not an http(s) base URL")
        return text if text.endswith("/") else text + "/"
    return str(Path(text).expanduser().resolve())


AbsPath = Annotated[Path, AfterValidator(_absolute)]
OptPath = Annotated[Path | None, AfterValidator(_absolute)]
Seconds = Annotated[float, AfterValidator(_finite)]
Cron = Annotated[str, AfterValidator(_cron)]
TimeZone = Annotated[str, AfterValidator(_timezone)]


@dataclass(frozen=True, config=ConfigDict(extra="forbid", validate_default=True))
class Settings:
    """Every knob of a build; each field's metadata names its variable (``env``), the values it
    accepts (``expect``, also the error message's words), what it sets (``doc``) and, for a field
    unset by default, what that means (``unset``): the documentation's settings tables are
    generated from them (``pipeline/settings_doc.py``).

    Made by :meth:`from_env`, or directly (tests): the ranges are checked either way. Relative
    paths are taken from the working directory when the object is made.
    """

    mirror_dir: OptPath = Field(default=None, json_schema_extra={
        "env": "TI_MIRROR_DIR", "expect": "a folder with the layout of ../shared/data (unset: live URLs)",
        "doc": "read every source from this local folder (layout of `../shared/data`) instead of the network", "unset": "unset: live URLs"})
    raw_dir: AbsPath = Field(default=Path("data_raw"), json_schema_extra={
        "env": "TI_RAW_DIR", "expect": "a folder for the download and parse cache",
        "doc": "download cache, and `parsed/`: the reference tables as parsed, the boundary file's scan and its polygons' WKB, each phase's reconciliation and the answers of the coverage checks, keyed by what they depend on (safe to delete)"})
    output_dir: AbsPath = Field(default=Path("data_out"), json_schema_extra={
        "env": "TI_OUTPUT_DIR", "expect": "the folder where files are published",
        "doc": "where files are published"})
    plans_path: OptPath = Field(default=None, json_schema_extra={
        "env": "TI_PLANS_PATH", "expect": "the plan table CSV (unset: plan columns are null)",
        "doc": "the per-territory plan table (CSV, see docs/PLANS.md)", "unset": "unset: plan columns are null"})
    catalog_path: AbsPath = Field(default=ASSETS_DIR / "sources.toml", json_schema_extra={
        "env": "TI_CATALOG", "expect": "a source catalog TOML file",
        "doc": "another source catalog file"})
    keep_releases: int = Field(default=5, ge=1, le=1000, json_schema_extra={
        "env": "TI_KEEP_RELEASES", "expect": "a whole number of release folders from 1 to 1000",
        "doc": "release folders kept under `releases/` in the output folder"})
    http_timeout: Seconds = Field(default=60.0, gt=0, le=3600, json_schema_extra={
        "env": "TI_HTTP_TIMEOUT", "expect": "seconds, a number > 0 and <= 3600 (e.g. 60)",
        "doc": "timeout of one HTTP request (s)"})
    http_retries: int = Field(default=4, ge=0, le=20, json_schema_extra={
        "env": "TI_HTTP_RETRIES", "expect": "a whole number of retries from 0 to 20",
        "doc": "retries of one download (connection errors, timeouts, 429, 5xx)"})
    http_backoff: Seconds = Field(default=1.0, ge=0, le=600, json_schema_extra={
        "env": "TI_HTTP_BACKOFF", "expect": "seconds, a number >= 0 and <= 600 (doubled at each retry)",
        "doc": "first wait before a retry (s, doubled each time)"})
    http_max_retry_after: Seconds = Field(default=120.0, ge=0, le=3600, json_schema_extra={
        "env": "TI_HTTP_MAX_RETRY_AFTER", "expect": "seconds, a number >= 0 and <= 3600 (cap on Retry-After)",
        "doc": "cap on a server's `Retry-After` (s)"})
    schedule_cron: Cron = Field(default="0 6 * * 1", json_schema_extra={
        "env": "TI_SCHEDULE_CRON", "expect": "a cron expression (e.g. '0 6 * * 1', Mondays at 06:00)",
        "doc": "Dagster: when the `weekly_build` schedule fires (cron, 5 fields)"})
    schedule_timezone: TimeZone = Field(default="Europe/Paris", json_schema_extra={
        "env": "TI_SCHEDULE_TIMEZONE", "expect": "an IANA time zone (e.g. Europe/Paris)",
        "doc": "Dagster: the time zone (IANA name) of `TI_SCHEDULE_CRON` and `TI_SOURCES_CRON`"})
    # Dagster's declarative automation (pipeline/defs/automation.py): when the assets reading an
    # outside input look at it again, and how often the automation sensor evaluates the conditions.
    sources_cron: Cron = Field(default="0 * * * *", json_schema_extra={
        "env": "TI_SOURCES_CRON", "expect": "a cron expression (e.g. '0 * * * *', hourly)",
        "doc": "Dagster: when the automation fetches the sources (and reads the plan table) again to see whether they changed"})
    sensor_interval_seconds: int = Field(default=600, ge=30, le=86400, json_schema_extra={
        "env": "TI_SENSOR_INTERVAL_SECONDS", "expect": "a whole number of seconds from 30 to 86400",
        "doc": "Dagster: least time between two evaluations of the automation (s, >= 30)"})
    # TI_URL_<SOURCE>: the key is the source name in lower case, checked against the catalog
    # when it is loaded (a misspelt name is an error there, see catalog.load_catalog).
    url_overrides: Annotated[dict[str, str], AfterValidator(_urls)] = Field(default_factory=dict, json_schema_extra={
        "env": "TI_URL_<SOURCE>", "expect": "an http(s) URL",
        "doc": "replace one source's live URL, e.g. `TI_URL_TI2023_COMMUNES=https://…`", "unset": "unset: the catalog's URL"})
    # TI_PIN_<SOURCE>: keep a source at one release (date, COG year, file name or resource id);
    # the key is the source name in lower case, checked against the catalog like TI_URL_*.
    pins: dict[str, str] = Field(default_factory=dict, json_schema_extra={
        "env": "TI_PIN_<SOURCE>", "expect": "a release date, COG year, file name or resource id",
        "doc": "keep one source at a release (date, COG year, file name or resource id)", "unset": "unset: the newest release"})
    lock_path: OptPath = Field(default=None, json_schema_extra={
        "env": "TI_LOCK", "expect": "a manifest.json whose 'lock' names the exact sources to rebuild from",
        "doc": "rebuild from exactly the sources of a manifest's `lock` (same as `build --lock`)", "unset": "unset"})
    alert_webhook_url: Annotated[str | None, AfterValidator(_webhook)] = Field(default=None, json_schema_extra={
        "env": "TI_ALERT_WEBHOOK_URL", "expect": "an http(s) URL that receives a JSON POST per failed run",
        "doc": "Dagster: POST a JSON message there for each failed run", "unset": "unset: no alert"})
    # Dagster's freshness windows are at least one minute (warn at the age, fail at twice it).
    release_max_age_days: Seconds = Field(default=8.0, ge=0.001, le=3650, json_schema_extra={
        "env": "TI_RELEASE_MAX_AGE_DAYS", "expect": "days, a number >= 0.001 and <= 3650 (e.g. 8)",
        "doc": "Dagster: the published assets turn WARN past this age in days (FAIL at twice it)"})
    sources_max_age_hours: Seconds = Field(default=26.0, ge=0.02, le=8760, json_schema_extra={
        "env": "TI_SOURCES_MAX_AGE_HOURS", "expect": "hours, a number >= 0.02 and <= 8760 (e.g. 26)",
        "doc": "Dagster: the source assets turn WARN when last fetched longer ago, in hours (FAIL at twice it)"})
    # Limits on untrusted input (README "Limits"), and the change guard's switch.
    max_source_mb: int = Field(default=DEFAULT_LIMITS.source_mb, ge=1, le=1_000_000, json_schema_extra={
        "env": "TI_MAX_SOURCE_MB", "expect": "a whole number of MiB >= 1 (cap on one source, as stored and decoded)",
        "doc": "limit on one source, as stored and as decoded (MiB)"})
    max_table_mb: int = Field(default=DEFAULT_LIMITS.table_mb, ge=1, le=100_000, json_schema_extra={
        "env": "TI_MAX_TABLE_MB", "expect": "a whole number of MiB >= 1 (cap on a CSV/JSON table once un-gzipped)",
        "doc": "limit on one CSV/JSON table once un-gzipped (MiB)"})
    http_deadline: Seconds = Field(default=1800.0, gt=0, le=7 * 86400, json_schema_extra={
        "env": "TI_HTTP_DEADLINE", "expect": "seconds, a number > 0 (one whole download, retries included)",
        "doc": "limit on one download, retries and waits included (s)"})
    max_commune_vertices: int = Field(default=DEFAULT_LIMITS.commune_vertices, ge=100, le=1_000_000_000, json_schema_extra={
        "env": "TI_MAX_COMMUNE_VERTICES", "expect": "a whole number >= 100 (vertices of one commune polygon)",
        "doc": "limit on the vertices of one commune polygon"})
    # The web map's libraries (assets/web/libraries.json): unset, the pinned CDN; an http(s) base
    # URL serving npm packages as <url><package>@<version>/<path>; or a local node_modules folder
    # whose files are checked against the pinned hashes and published next to the page.
    web_libraries: Annotated[str | None, AfterValidator(_web_libraries)] = Field(default=None, json_schema_extra={
        "env": "TI_WEB_LIBRARIES", "expect": "a node_modules folder holding the pinned maplibre-gl and pmtiles "
                                            "(e.g. tests/web/node_modules), or an http(s) base URL like "
                                            "https://cdn.jsdelivr.net/npm/",
        "doc": "where the web map takes MapLibre GL JS and pmtiles from: a local `node_modules` folder (its files are checked against the pinned hashes and published next to the page), or an http(s) base URL serving npm packages as `<url><package>@<version>/<path>`", "unset": "unset: `https://cdn.jsdelivr.net/npm/`, with SRI"})
    accept_changes: bool = Field(default=False, json_schema_extra={
        "env": "TI_ACCEPT_CHANGES", "expect": "1 or 0 (1: publish past the change guard, for one build)",
        "doc": "`1`: publish this build past the change guard (as `build --accept-changes`)"})

    @property
    def offline(self) -> bool:
        return self.mirror_dir is not None

    @property
    def limits(self) -> Limits:
        """The bounds on untrusted input, as the readers take them."""
        return Limits(source_mb=self.max_source_mb, table_mb=self.max_table_mb,
                      commune_vertices=self.max_commune_vertices)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, overrides: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``env`` (default ``os.environ``) updated with ``overrides`` (variable -> value,
        e.g. from command-line options); unset or empty variables keep their default.

        Unknown ``TI_*`` variables are logged as warnings (with the closest known name).
        """
        return cls.validated(_values(env, overrides))

    @classmethod
    def validated(cls, values: Mapping[str, Any]) -> Settings:
        """``cls(**values)``, with a pydantic error turned into one line naming the variable."""
        try:
            return cls(**values)
        except ValidationError as err:
            raise SettingsError(describe(err, values)) from None

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed, validated like the original."""
        current = {f.name: getattr(self, f.name) for f in fields(self)}
        return type(self).validated({**current, **changes})


def _values(env: Mapping[str, str] | None, overrides: Mapping[str, str] | None,
            warn: bool = True) -> dict[str, Any]:
    """Field values from the TI_* variables of ``env`` (default ``os.environ``) updated with ``overrides``."""
    merged = {**(os.environ if env is None else env), **(overrides or {})}
    by_var = env_names()
    values: dict[str, Any] = {}
    for var, raw in merged.items():
        if not var.startswith("TI_") or raw is None:
            continue
        if var.startswith(URL_PREFIX):
            if raw.strip():
                values.setdefault("url_overrides", {})[var[len(URL_PREFIX):].lower()] = raw.strip()
        elif var.startswith(PIN_PREFIX):
            if raw.strip():
                values.setdefault("pins", {})[var[len(PIN_PREFIX):].lower()] = raw.strip()
        elif var in by_var:
            if raw.strip():
                values[by_var[var]] = raw.strip()
        elif warn:
            warn_unknown(var)
    return values


def lenient_from_env(overrides: Mapping[str, str] | None = None) -> tuple[Settings, list[str]]:
    """The settings of the environment with every invalid value replaced by its default, and one
    line per value replaced (for the Dagster code location, which must load whatever the values:
    the runs then fail with the strict :meth:`Settings.from_env` message)."""
    values = _values(None, overrides, warn=False)
    problems: list[str] = []
    while True:
        try:
            return Settings(**values), problems
        except ValidationError as err:
            first = err.errors()[0]
            name = str(first["loc"][0]) if first["loc"] else ""
            problems.append(describe(err, values))
            if name not in values:     # not a value we gave: nothing left to drop
                return Settings(), problems
            del values[name]


def env_names() -> dict[str, str]:
    """Environment variable -> field name, for every field read from one variable."""
    out = {}
    for f in fields(Settings):
        var = field_meta(f.name)["env"]
        if "<" not in var:
            out[var] = f.name
    return out


def warn_unknown(var: str) -> None:
    close = difflib.get_close_matches(var, list(env_names()), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    log.warning("unknown setting %s ignored%s", var, hint)


def describe_setting(name: str) -> str:
    """``VARIABLE: expected form`` of a settings field (documentation, the Dagster resource)."""
    meta = field_meta(name)
    return f"{meta['env']}: {meta['expect']}"


def field_meta(name: str) -> dict:
    """The documentation metadata of a settings field (see :class:`Settings`)."""
    extra = Settings.__pydantic_fields__[name].json_schema_extra   # type: ignore[attr-defined]
    return dict(extra) if isinstance(extra, dict) else {}


def describe(err: ValidationError, values: Mapping[str, Any]) -> str:
    """One line for the first problem: variable, value as given, expected form."""
    first = err.errors()[0]
    name = str(first["loc"][0]) if first["loc"] else "?"
    if name not in Settings.__pydantic_fields__:   # type: ignore[attr-defined]
        return f"unknown setting {name!r}"
    meta = field_meta(name)
    value = values.get(name, first.get("input"))
    if name == "url_overrides":
        return f"{str(first['msg']).removeprefix('Value error, ')}: expected {meta['expect']}"
    return f"{meta['env']}={str(value)!r:.80}: expected {meta['expect']}"
