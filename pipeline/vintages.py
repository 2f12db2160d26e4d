"""Map commune codes between COG years with the INSEE commune-change history.

A COG year Y is the state of communes on 1 January Y. Going from year A to year B > A applies the
commune-to-commune events dated in (1 Jan A, 1 Jan B]: a merged code maps to its successor, a
split (restored) commune maps to all its parts, a code change maps to the new code. Going back
(A > B) inverts the forward mapping (a merged commune maps to all its former parts).
"""

from __future__ import annotations

from collections import defaultdict

import pandas as pd

NAME_CHANGE = "10"


def _events(changes: pd.DataFrame, start: pd.Timestamp | None, end: pd.Timestamp) -> pd.DataFrame:
    ev = changes[(changes["TYPECOM_AV"] == "COM") & (changes["TYPECOM_AP"] == "COM")
                 & (changes["MOD"] != NAME_CHANGE) & (changes["DATE_EFF"] <= end)]
    if start is not None:
        ev = ev[ev["DATE_EFF"] > start]
    return ev.sort_values("DATE_EFF", kind="stable")


def _apply(codes: set[str], events: pd.DataFrame) -> dict[str, set[str]]:
    """Follow each code through the events, day by day; cost grows with the events, not the codes."""
    state: dict[str, set[str]] = {}            # only codes some event touched
    holders: dict[str, set[str]] = {}          # current code -> original codes mapped to it
    for _, day in events.groupby("DATE_EFF", sort=True):
        edges: dict[str, set[str]] = defaultdict(set)
        for av, ap in zip(day["COM_AV"].tolist(), day["COM_AP"].tolist()):
            edges[av].add(ap)
        moved: list[tuple[str, str]] = []       # (original, current code it leaves)
        for av in edges:
            owners = holders.pop(av, set())
            if av in codes and av not in state:   # an original code no event touched yet
                owners.add(av)
            moved += [(orig, av) for orig in owners]
        for orig, av in moved:
            current = state.get(orig, {orig})
            current.discard(av)
            state[orig] = current
        for orig, av in moved:
            state[orig] |= edges[av]
            for new in edges[av]:
                holders.setdefault(new, set()).add(orig)
    return {c: state.get(c, {c}) for c in codes}


def forward(changes: pd.DataFrame, codes: set[str], from_cog: int, to_cog: int) -> dict[str, set[str]]:
    """Successors in COG ``to_cog`` of each code valid in COG ``from_cog`` (from_cog <= to_cog)."""
    start = pd.Timestamp(f"{from_cog}-01-01")
    end = pd.Timestamp(f"{to_cog}-01-01")
    return _apply(codes, _events(changes, start, end))


def from_history(changes: pd.DataFrame, codes: set[str], to_cog: int) -> dict[str, set[str]]:
    """Successors in COG ``to_cog`` of codes of any earlier date (old or delegated codes)."""
    return _apply(codes, _events(changes, None, pd.Timestamp(f"{to_cog}-01-01")))


def code_mapping(changes: pd.DataFrame, from_codes: set[str], from_cog: int, to_cog: int,
                 to_codes: set[str]) -> dict[str, set[str]]:
    """Map every code of ``from_codes`` (valid in ``from_cog``) to its codes in ``to_cog``.

    Backward mappings (from_cog > to_cog) invert the forward mapping of the ``to_cog`` codes.
    Targets are restricted to ``to_codes``; a code with no valid target maps to an empty set.
    """
    if from_cog <= to_cog:
        mapping = forward(changes, from_codes, from_cog, to_cog)
    else:
        fwd = forward(changes, to_codes, to_cog, from_cog)
        mapping = defaultdict(set)
        for old, news in fwd.items():
            for new in news:
                mapping[new].add(old)
        mapping = {c: set(mapping.get(c, set())) for c in from_codes}
    return {c: {t for t in targets if t in to_codes} for c, targets in mapping.items()}


def predecessors(mapping: dict[str, set[str]]) -> dict[str, set[str]]:
    """Inverse of a mapping: for each target code, the source codes that map to it."""
    inv: dict[str, set[str]] = defaultdict(set)
    for src, targets in mapping.items():
        for t in targets:
            inv[t].add(src)
    return dict(inv)
