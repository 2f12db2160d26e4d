"""The source catalog (``assets/sources.toml``): what each source is and where it comes from."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputFormatError
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

    def mirror_path(self, mirror_dir: Path) -> Path:
        return mirror_dir / self.mirror

    def release(self, offline: bool) -> str:
        return self.mirror_release if offline else self.live_release

    def file_format(self, offline: bool) -> str:
        return self.mirror_format if offline else self.format


@dataclass(frozen=True)
class PhaseSpec:
    """One programme phase: the lists that define it and the COG year of their codes."""

    name: str
    list_cog: int
    expected_territories: int
    communes: str | None = None
    groupements: str | None = None


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


def load_catalog(settings: Settings | None = None) -> Catalog:
    """Read the catalog TOML and apply the settings' URL overrides."""
    settings = settings or Settings.from_env()
    path = settings.catalog_path
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputFormatError(f"source catalog not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise InputFormatError(f"source catalog {path} is not valid TOML: {err}") from None
    sources: dict[str, SourceSpec] = {}
    for name, entry in raw.get("sources", {}).items():
        missing = sorted(_SOURCE_FIELDS - set(entry))
        if missing:
            raise InputFormatError(f"source catalog {path}: [sources.{name}] lacks {', '.join(missing)}")
        values = {k: entry[k] for k in _SOURCE_FIELDS}
        values["cog"] = int(values["cog"])
        values["url"] = settings.url_overrides.get(name, values["url"])
        sources[name] = SourceSpec(name=name, sha256=entry.get("sha256"), **values)
    unknown = sorted(set(settings.url_overrides) - set(sources))
    if unknown:
        from ..settings import URL_PREFIX, SettingsError

        raise SettingsError(f"{URL_PREFIX}{unknown[0].upper()}: no source named {unknown[0]!r} in {path} "
                            f"(known: {', '.join(sorted(sources))})")
    phases = {
        name: PhaseSpec(
            name=name,
            list_cog=int(entry["list_cog"]),
            expected_territories=int(entry["expected_territories"]),
            communes=entry.get("communes"),
            groupements=entry.get("groupements"),
        )
        for name, entry in raw.get("phases", {}).items()
    }
    for phase in phases.values():
        for ref in (phase.communes, phase.groupements):
            if ref is not None and ref not in sources:
                raise InputFormatError(f"source catalog {path}: phase {phase.name} names unknown source {ref!r}")
    return Catalog(sources=sources, phases=phases)
