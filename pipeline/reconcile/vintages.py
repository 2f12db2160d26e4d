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


def _moves(codes: set[str], events: pd.DataFrame) -> dict[str, set[str]]:
    """Follow each code through the events, day by day; cost grows with the events, not the codes.

    Only the codes some event touched are returned (any other code maps to itself).
    """
    state: dict[str, set[str]] = {}            # only codes some event touched
    holders: dict[str, set[str]] = {}          # current code -> original codes mapped to it
    if events.empty:
        return state
    days = events["DATE_EFF"].tolist()
    avs, aps = events["COM_AV"].tolist(), events["COM_AP"].tolist()
    start = 0
    while start < len(days):   # events are sorted by date: one day is a run of equal dates
        end = start + 1
        while end < len(days) and days[end] == days[start]:
            end += 1
        edges: dict[str, set[str]] = defaultdict(set)
        for av, ap in zip(avs[start:end], aps[start:end]):
            edges[av].add(ap)
        start = end
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
    return state


def _apply(codes: set[str], events: pd.DataFrame) -> dict[str, set[str]]:
    """Every code of ``codes`` -> its codes after the events (itself when no event touched it)."""
    state = _moves(codes, events)
    return {c: state.get(c, {c}) for c in codes}


def _window(changes: pd.DataFrame, from_cog: int, to_cog: int) -> pd.DataFrame:
    return _events(changes, pd.Timestamp(f"{from_cog}-01-01"), pd.Timestamp(f"{to_cog}-01-01"))


def forward(changes: pd.DataFrame, codes: set[str], from_cog: int, to_cog: int) -> dict[str, set[str]]:
    """Successors in COG ``to_cog`` of each code valid in COG ``from_cog`` (from_cog <= to_cog)."""
    return _apply(codes, _window(changes, from_cog, to_cog))


def forward_moved(changes: pd.DataFrame, codes: set[str], from_cog: int, to_cog: int) -> dict[str, set[str]]:
    """:func:`forward` restricted to the codes whose successors are not the code itself alone."""
    return {c: t for c, t in _moves(codes, _window(changes, from_cog, to_cog)).items()
            if not (len(t) == 1 and c in t)}


def from_history(changes: pd.DataFrame, codes: set[str], to_cog: int) -> dict[str, set[str]]:
    """Successors in COG ``to_cog`` of codes of any earlier date (old or delegated codes)."""
    return _apply(codes, _events(changes, None, pd.Timestamp(f"{to_cog}-01-01")))


def code_mapping_moved(changes: pd.DataFrame, from_codes: set[str], from_cog: int, to_cog: int,
                       to_codes: set[str]) -> dict[str, set[str]]:
    """:func:`code_mapping` restricted to the codes that do not map to themselves alone.

    Every code of ``from_codes`` left out maps to ``{code}``.
    """
    out: dict[str, set[str]] = {}
    if from_cog <= to_cog:
        for c, targets in _moves(from_codes, _window(changes, from_cog, to_cog)).items():
            out[c] = {t for t in targets if t in to_codes}
        for c in from_codes - to_codes:   # untouched codes missing from the target year
            if c not in out:
                out[c] = set()
    else:
        moves = _moves(to_codes, _window(changes, to_cog, from_cog))
        olds: dict[str, set[str]] = defaultdict(set)
        for old, news in moves.items():
            for new in news:
                olds[new].add(old)
        # a code of to_codes no event touched maps back to itself (and to the codes merged into it)
        for c in (from_codes & (olds.keys() | moves.keys())) | (from_codes - to_codes):
            out[c] = set(olds.get(c, set()))
            if c in to_codes and c not in moves:
                out[c].add(c)
    return {c: t for c, t in out.items() if not (len(t) == 1 and c in t)}


def code_mapping(changes: pd.DataFrame, from_codes: set[str], from_cog: int, to_cog: int,
                 to_codes: set[str]) -> dict[str, set[str]]:
    """Map every code of ``from_codes`` (valid in ``from_cog``) to its codes in ``to_cog``.

    Backward mappings (from_cog > to_cog) invert the forward mapping of the ``to_cog`` codes.
    Targets are restricted to ``to_codes``; a code with no valid target maps to an empty set.
    """
    moved = code_mapping_moved(changes, from_codes, from_cog, to_cog, to_codes)
    return {c: moved.get(c, {c}) for c in from_codes}


def predecessors(mapping: dict[str, set[str]]) -> dict[str, set[str]]:
    """Inverse of a mapping: for each target code, the source codes that map to it."""
    inv: dict[str, set[str]] = defaultdict(set)
    for src, targets in mapping.items():
        for t in targets:
            inv[t].add(src)
    return dict(inv)
