"""The source catalog (``assets/sources.toml``): what each source is and where it comes from."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputFormatError
from ..regular_files import read_raw  # a regular file of bounded size (not /dev/zero, not a folder)
from ..settings import Settings


@dataclass(frozen=True)
class SourceSpec:
    """One logical source. ``url`` already includes any TI_URL_<NAME> override."""

    name: str
    title: str
    kind: str
    format: str
    cog: int
    licence: str
    url: str
    url_status: str
    live_release: str
    mirror: str
    mirror_format: str
    mirror_release: str
    sha256: str | None = None
    # how the newest release is found (see assets/sources.toml and pipeline.sources.resolve)
    resolve: str = "fixed"                  # "fixed", "datagouv" or "yearly"
    api: str | None = None                  # datagouv: API base, e.g. https://www.data.gouv.fr/api/1/datasets/
    dataset: str | None = None              # datagouv: dataset slug
    patterns: tuple[str, ...] = ()          # file-name regexes (named groups cog, date, release)
    mirror_patterns: tuple[str, ...] = ()   # the same, for mirror file names only
    url_template: str | None = None         # yearly: URL with {year}
    first_year: int | None = None           # yearly: oldest year tried
    pin: str | None = None                  # keep this release (catalog ``pin`` or TI_PIN_<SOURCE>)
    url_overridden: bool = False            # TI_URL_<SOURCE> set: that exact URL, no resolution

    def mirror_path(self, mirror_dir: Path) -> Path:
        return mirror_dir / self.mirror

    def release(self, offline: bool) -> str:
        return self.mirror_release if offline else self.live_release


@dataclass(frozen=True)
class PhaseSpec:
    """One programme phase: the lists that define it and the COG year of their codes."""

    name: str
    list_cog: int                 # COG year of the known releases of its lists (the Dagster graph's
                                  # static default); a build uses the year of the release resolved
    communes: str | None = None
    groupements: str | None = None
    id_pattern: str | None = None  # the shape of a territory id (a regular expression)

    def lists(self) -> list[str]:
        return [n for n in (self.communes, self.groupements) if n]


@dataclass(frozen=True)
class Catalog:
    sources: dict[str, SourceSpec]
    phases: dict[str, PhaseSpec]

    def source(self, name: str) -> SourceSpec:
        try:
            return self.sources[name]
        except KeyError:
            raise InputFormatError(
                f"source catalog: no source named {name!r} (known: {', '.join(sorted(self.sources))})"
            ) from None

    def decoupage(self, cog: int, what: str) -> SourceSpec:
        """The decoupage-administratif source of one COG year; ``what`` is communes/epci/ept."""
        return self.source(f"decoupage_{cog}_{what}")

    def boundaries(self) -> SourceSpec:
        return self.source("communes_boundaries")


_SOURCE_FIELDS = {
    "title", "kind", "format", "cog", "licence", "url", "url_status", "live_release",
    "mirror", "mirror_format", "mirror_release",
}


_RESOLVE_FIELDS = {"resolve", "api", "dataset", "patterns", "mirror_patterns", "url_template", "first_year", "pin"}
_RESOLVERS = ("fixed", "datagouv", "yearly")


def _resolve_fields(name: str, entry: dict, path, pins: dict[str, str]) -> dict:
    """The optional resolution fields of one ``[sources.<name>]`` table, checked."""
    import re

    values = {k: entry[k] for k in _RESOLVE_FIELDS if k in entry}
    where = f"source catalog {path}: [sources.{name}]"
    if values.get("resolve", "fixed") not in _RESOLVERS:
        raise InputFormatError(f"{where}: resolve = {values['resolve']!r}; expected one of {', '.join(_RESOLVERS)}")
    for key in ("patterns", "mirror_patterns"):
        items = values.get(key, [])
        if isinstance(items, str):
            items = [items]
        for pattern in items:
            try:
                re.compile(pattern)
            except re.error as err:
                raise InputFormatError(f"{where}: {key}: invalid regular expression {pattern!r} ({err})") from None
        values[key] = tuple(items)
    needed = {"datagouv": ("api", "dataset", "patterns"), "yearly": ("url_template", "first_year")}
    lacking = [k for k in needed.get(values.get("resolve", "fixed"), ()) if not values.get(k)]
    if lacking:
        raise InputFormatError(f"{where}: resolve = {values['resolve']!r} needs {', '.join(lacking)}")
    if "first_year" in values:
        values["first_year"] = int(values["first_year"])
    if name in pins:
        values["pin"] = pins[name]
    if values.get("pin") is not None:
        values["pin"] = str(values["pin"]).strip()
    return values


def load_catalog(settings: Settings | None = None) -> Catalog:
    """Read the catalog TOML and apply the settings' URL overrides and pins (TI_URL_*, TI_PIN_*)."""
    settings = settings or Settings.from_env()
    path = settings.catalog_path
    if not Path(path).exists():
        raise InputFormatError(f"source catalog not found: {path}")
    try:
        raw = tomllib.loads(read_raw(Path(path), 16 << 20, "source catalog (TI_CATALOG)").decode("utf-8"))
    except UnicodeDecodeError as err:
        raise InputFormatError(f"source catalog {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except tomllib.TOMLDecodeError as err:
        raise InputFormatError(f"source catalog {path} is not valid TOML: {err}") from None
    sources: dict[str, SourceSpec] = {}
    for name, entry in raw.get("sources", {}).items():
        missing = sorted(_SOURCE_FIELDS - set(entry))
        if missing:
            raise InputFormatError(f"source catalog {path}: [sources.{name}] lacks {', '.join(missing)}")
        values = {k: entry[k] for k in _SOURCE_FIELDS}
        values["cog"] = int(values["cog"])
        overridden = name in settings.url_overrides
        values["url"] = settings.url_overrides.get(name, values["url"])
        sources[name] = SourceSpec(name=name, sha256=entry.get("sha256"), url_overridden=overridden, **values,
                                   **_resolve_fields(name, entry, path, settings.pins))
    for prefix, named in (("TI_URL_", settings.url_overrides), ("TI_PIN_", settings.pins)):
        unknown = sorted(set(named) - set(sources))
        if unknown:
            from ..settings import SettingsError

            raise SettingsError(f"{prefix}{unknown[0].upper()}: no source named {unknown[0]!r} in {path} "
                                f"(known: {', '.join(sorted(sources))})")
    phases = {}
    for name, entry in raw.get("phases", {}).items():
        refs = [entry.get("communes"), entry.get("groupements")]
        for ref in refs:
            if ref is not None and ref not in sources:
                raise InputFormatError(f"source catalog {path}: phase {name} names unknown source {ref!r}")
        if not any(refs):
            raise InputFormatError(f"source catalog {path}: phase {name} names no list (communes or groupements)")
        phases[name] = PhaseSpec(name=name, list_cog=max(sources[r].cog for r in refs if r),
                                 communes=entry.get("communes"), groupements=entry.get("groupements"),
                                 id_pattern=entry.get("id_pattern"))
    return Catalog(sources=sources, phases=phases)
