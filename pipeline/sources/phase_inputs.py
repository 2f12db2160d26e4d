"""Which sources a phase's build reads, without the geometry stack.

The CLI and the Dagster definitions need these names before (or instead of) a build: a run that
finds nothing changed only resolves, fetches and compares hashes, so this module imports no
pandas, geopandas or shapely (``tests/test_cli.py`` checks the unchanged path's imports).
:mod:`pipeline.steps.sequence` re-exports them for the core build.
"""

from __future__ import annotations

from ..errors import ReconciliationError
from ..phases import CURRENT_PHASE, PREVIOUS_PHASE
from . import resolve
from .catalog import Catalog
from .fetch import FetchResult

BOUNDARIES = "communes_boundaries"
CHANGES = "insee_mvt_communes"


def phase_sources(catalog: Catalog, phase: str) -> list[str]:
    """Names of the sources one phase's build reads (the manifest lists exactly these)."""
    spec = catalog.phases[phase]
    names = [BOUNDARIES, CHANGES]
    names += [n for n in (spec.communes, spec.groupements) if n]
    if phase == CURRENT_PHASE and PREVIOUS_PHASE in catalog.phases:
        prev = catalog.phases[PREVIOUS_PHASE]
        names += [n for n in (prev.communes, prev.groupements) if n]
    for cog in reference_cogs(catalog, phase):
        names += [catalog.decoupage(cog, what).name for what in ("communes", "epci", "ept")]
    return list(dict.fromkeys(names))


def reference_cogs(catalog: Catalog, phase: str) -> list[int]:
    """COG years of the admin references a phase reads: its lists', the boundaries', the previous phase's."""
    cogs = {catalog.phases[phase].list_cog, catalog.boundaries().cog}
    if phase == CURRENT_PHASE and PREVIOUS_PHASE in catalog.phases:
        cogs.add(catalog.phases[PREVIOUS_PHASE].list_cog)
    return sorted(cogs)


def phase_files(catalog: Catalog, phase: str, fetched: dict[str, FetchResult]) -> dict[str, FetchResult]:
    """The fetched files one phase reads: its lists, boundaries and changes, and the references of
    the COG years they resolved to (the manifest lists exactly these)."""
    base = [n for n in phase_sources(catalog, phase) if catalog.source(n).kind not in resolve.DECOUPAGE_KINDS]
    names = base + resolve.needed_references(catalog, {n: fetched[n] for n in base})
    missing = [n for n in names if n not in fetched]
    if missing:   # e.g. a Dagster graph made for the catalog's years while a newer list was resolved
        raise ReconciliationError(
            f"{phase}: the resolved sources need {', '.join(missing)}, which this run did not fetch; build with "
            "`python -m pipeline build`, or pin the lists (TI_PIN_<SOURCE>) to the catalog's COG years")
    return {n: fetched[n] for n in names}
