"""A phase's lists checked against the COG year their label claims, before they are reconciled.

The COG year of a list comes from its label (file name, API resource, catalog); the codes must
fit it (:mod:`pipeline.sources.labels`): a list by commune by its INSEE codes, a list by groupement
by its SIRENs and, where the phase has a list by commune too, by how its EPCI expand in each COG
year. Only the COG years the build already has references for are compared (no extra download).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from ..errors import ReconciliationError
from ..sources.csv_tables import in_set
from ..sources.labels import cog_misfit, groupement_misfit
from ..sources.readers import AdminRef
from . import vintages
from .membership import expand_groupements


@dataclass(frozen=True)
class Labelled:
    """One list as read, with the label it was resolved under."""

    source: str          # catalog source name
    origin: str          # the file or URL read
    cog: int             # the COG year its label claims
    frame: pd.DataFrame


def _refuse(phase: str, item: Labelled, why: str) -> ReconciliationError:
    return ReconciliationError(
        f"{phase}: source {item.source} ({item.origin}) is labelled COG {item.cog} but {why}; the label and the "
        f"content disagree, nothing built (check the file's name, or pin the right release: TI_PIN_"
        f"{item.source.upper()})")


def _pairs(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(frame["id_ti"].tolist(), frame["insee_com"].tolist()))


def check_labels(phase: str, communes: Labelled | None, groupements: Labelled | None, years: list[int],
                 admin_of: Callable[[int], AdminRef], changes: pd.DataFrame) -> None:
    """ReconciliationError naming the list, its label and the year its content fits, when they differ."""
    years = sorted(set(years))
    if len(years) < 2:
        return
    listed_codes = set(communes.frame["insee_com"].tolist()) if communes is not None else set()
    listed_sirens = set(groupements.frame["siren_groupement"].tolist()) if groupements is not None else set()
    compare = communes is not None and groupements is not None and communes.cog in years
    listed = _pairs(communes.frame) if compare and communes is not None else set()
    # Per year, only what the checks compare is kept: the listed codes and SIRENs that year knows
    # (``cog_misfit`` only looks at the codes a year lacks) and the count of pairs on which the
    # expansion disagrees. One reference (and its full code set) lives at a time: keeping every
    # year's sets and expansions cost about 45 MB at the build's peak.
    codes: dict[int, set[str]] = {}
    sirens: dict[int, set[str]] = {}
    differ: dict[int, int] = {}
    for year in years:
        admin = admin_of(year)
        known = admin.codes
        codes[year] = {c for c in listed_codes if c in known}
        sirens[year] = _known_sirens(listed_sirens, admin)
        if compare and groupements is not None and communes is not None:
            differ[year] = _expansion_differ(listed, communes.cog, year, known, changes,
                                             expand_groupements(groupements.frame, admin)[0])
        del admin, known
    if communes is not None:
        why = cog_misfit(listed_codes, communes.cog, codes)
        if why:
            raise _refuse(phase, communes, why)
    if groupements is None:
        return
    why = cog_misfit(listed_sirens, groupements.cog, sirens)
    if why:
        raise _refuse(phase, groupements, why.replace("codes", "SIRENs"))
    if not compare:
        return
    why = groupement_misfit(differ, groupements.cog)
    if why:
        raise _refuse(phase, groupements, why)


def _known_sirens(sirens: set[str], admin: AdminRef) -> set[str]:
    """The SIRENs of ``sirens`` that a COG year knows (an EPCI/EPT, or a commune's own SIREN)."""
    if not sirens:
        return set()
    found = admin.members["siren_groupement"][in_set(admin.members["siren_groupement"], sirens)]
    own = admin.communes["siren"][in_set(admin.communes["siren"], sirens)]
    return set(found.tolist()) | set(own.tolist())


def _expansion_differ(listed: set[tuple[str, str]], listed_cog: int, year: int, year_codes: set[str],
                      changes: pd.DataFrame, expanded: pd.DataFrame) -> int:
    """How many (territory, commune) pairs differ between the list by commune mapped to ``year``
    and the groupement list expanded with that year's EPCI/EPT membership."""
    moved = vintages.code_mapping_moved(changes, {code for _tid, code in listed}, listed_cog, year, year_codes)
    hit = {(tid, code) for tid, code in listed if code in moved} if moved else set()
    reference = (listed - hit) | {(tid, new) for tid, code in hit for new in moved[code]}
    return len(reference ^ _pairs(expanded))
