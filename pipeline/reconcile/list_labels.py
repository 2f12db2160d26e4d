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
    codes: dict[int, set[str]] = {}
    sirens: dict[int, set[str]] = {}
    expanded: dict[int, set[tuple[str, str]]] = {}
    for year in years:   # one reference at a time: only code sets are kept
        admin = admin_of(year)
        codes[year] = admin.codes
        sirens[year] = set(admin.members["siren_groupement"].tolist()) | set(admin.communes["siren"].dropna().tolist())
        if groupements is not None and communes is not None:
            expanded[year] = _pairs(expand_groupements(groupements.frame, admin)[0])
    if communes is not None:
        why = cog_misfit(set(communes.frame["insee_com"].tolist()), communes.cog, codes)
        if why:
            raise _refuse(phase, communes, why)
    if groupements is None:
        return
    why = cog_misfit(set(groupements.frame["siren_groupement"].tolist()), groupements.cog, sirens)
    if why:
        raise _refuse(phase, groupements, why.replace("codes", "SIRENs"))
    if communes is None or communes.cog not in codes:
        return
    listed = _pairs(communes.frame)
    listed_codes = {code for _tid, code in listed}
    differ = {}
    for year in years:   # the list by commune in each year's codes, compared with that year's expansion
        moved = vintages.code_mapping_moved(changes, listed_codes, communes.cog, year, codes[year])
        hit = {(tid, code) for tid, code in listed if code in moved} if moved else set()
        reference = (listed - hit) | {(tid, new) for tid, code in hit for new in moved[code]}
        differ[year] = len(reference ^ expanded[year])
    why = groupement_misfit(differ, groupements.cog)
    if why:
        raise _refuse(phase, groupements, why)
