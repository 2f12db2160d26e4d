"""What a file says about itself is a claim: the dates and COG years of its label, checked.

A release's label comes from its file name (mirror, API resource) or from API fields: the COG year
(``liste-ti-com2023-…``) and the release date (``…-20240704.csv``, ``last_modified``). Nothing
forces a label to be true: a renamed copy, a typo, a date ``99999999``. This module checks

* dates: a real calendar date, not later than today plus :data:`FUTURE_DAYS` (a clock a few days
  off, a time zone, is tolerated; a year 9999 is not) — :func:`checked_date`;
* COG years: the year whose codes the list's codes fit — :func:`cog_misfit` (the list's codes
  against each COG year we have references for) and :func:`groupement_misfit` (a groupement list
  expanded with each year's EPCI membership, against the phase's list by commune); the checks
  themselves run in :mod:`pipeline.reconcile.list_labels`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ..errors import InputFormatError

FUTURE_DAYS = 7     # a release date may lie this many days after today (clock skew, time zones)
SHOWN = 3           # codes named in a message


def checked_date(value: str, what: str) -> str:
    """``YYYYMMDD`` or ``YYYY-MM-DD`` (an ISO date-time is cut to its date) as ``YYYY-MM-DD``;
    InputFormatError naming ``what`` when it is not a real date or lies in the future."""
    text = str(value).strip()
    digits = text[:10].replace("-", "") if "-" in text[:10] else text[:8]
    try:
        day = datetime.strptime(digits, "%Y%m%d").date() if len(digits) == 8 and digits.isdigit() else None
    except ValueError:
        day = None
    if day is None:
        raise InputFormatError(f"{what}: date {text!r} is not a real calendar date (YYYYMMDD)")
    latest = datetime.now(UTC).date() + timedelta(days=FUTURE_DAYS)
    if day > latest:
        raise InputFormatError(f"{what}: date {day.isoformat()} lies in the future (today is "
                               f"{datetime.now(UTC).date().isoformat()}, tolerance {FUTURE_DAYS} days)")
    return day.isoformat()


def _shown(codes: set[str]) -> str:
    first = sorted(codes)[:SHOWN]
    return ", ".join(first) + (f" and {len(codes) - SHOWN} more" if len(codes) > SHOWN else "")


def cog_misfit(codes: set[str], claimed: int, known: dict[int, set[str]]) -> str | None:
    """Why ``codes`` do not fit their claimed COG year, or None when they do.

    ``known``: the codes of each COG year we have references for. The list fits its claim unless
    some of its codes are absent from the claimed year while another year knows every one of them
    (or more of them): a list of 2023 labelled 2025 names codes merged since, a list of 2025
    labelled 2023 names codes created since.
    """
    if claimed not in known or not codes:
        return None
    missing = codes - known[claimed]
    if not missing:
        return None
    best = min((y for y in known if y != claimed), key=lambda y: (len(codes - known[y]), abs(y - claimed)),
               default=None)
    if best is None or len(codes - known[best]) >= len(missing):
        return None    # no year fits better: unknown codes are the reconciliation's business
    return (f"{len(missing)} of its codes are not COG {claimed} codes ({_shown(missing)}) but "
            f"{'all are' if not codes - known[best] else 'more are'} COG {best} codes: its content is of COG {best}")


def groupement_misfit(differ: dict[int, int], claimed: int) -> str | None:
    """Why a groupement list does not fit its claimed COG year, or None when it does.

    ``differ``: for each COG year we have references for, how many (territory, commune) pairs the
    groupement list expanded with that year's EPCI/EPT membership has that the phase's list by
    commune (mapped to that year) has not, or the reverse. EPCI SIRENs last for years while their
    members change: the year the list was made for is the one whose expansion agrees best.
    """
    if claimed not in differ:
        return None
    best = min(differ, key=lambda y: (differ[y], abs(y - claimed)))
    if differ[best] >= differ[claimed]:
        return None
    return (f"expanded with the COG {claimed} EPCI membership it disagrees with the list by commune on "
            f"{differ[claimed]} (territory, commune) pairs, with the COG {best} membership on {differ[best]}: "
            f"its content is of COG {best}")
