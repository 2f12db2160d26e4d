"""An identity has one name: the territory names of a phase's lists, checked.

* Within one list an id has one name: an id listed under two names is refused, naming both and
  their lines (:func:`names_of`).
* Between the two lists of a phase a territory may be renamed (the 2023-11 and 2024-07 lists
  rename ti-4421 and ti-8412): the most recent list's name wins and the rename is reported
  (:func:`renames`).
* A name that leaves one id for another (two names swapped, a name given to another territory)
  is not a rename but an implausible change: :func:`moved_names` lists them, for the change
  guard (:mod:`pipeline.publish.guard`), between the two lists and against the published release.
"""

from __future__ import annotations

import pandas as pd

from ..errors import InputFormatError
from ..regular_files import shown
from .csv_tables import clean_text


def names_of(frame: pd.DataFrame | None) -> dict[str, str]:
    """Territory id -> its name in one list (whitespace cleaned; rows without a name left out).

    InputFormatError naming the file, the id, both names and their lines when an id has two names.
    """
    if frame is None or "lib_ti" not in frame:
        return {}
    first: dict[str, tuple[str, object]] = {}
    for tid, lib, line in zip(frame["id_ti"].tolist(), frame["lib_ti"].tolist(), frame["_line"].tolist()):
        if not isinstance(tid, str) or not isinstance(lib, str):
            continue
        name = clean_text(lib)
        if not name:
            continue
        seen = first.setdefault(tid, (name, line))
        if seen[0] != name:
            lines = sorted([(seen[1], seen[0]), (line, name)], key=lambda x: int(str(x[0])))
            raise InputFormatError(
                f"{frame.attrs.get('source', 'list')}: territory {tid} has two names: {shown(lines[0][1])} "
                f"(line {lines[0][0]}) and {shown(lines[1][1])} (line {lines[1][0]}); an id has one name")
    return {tid: name for tid, (name, _line) in first.items()}


def renames(older: dict[str, str], newer: dict[str, str]) -> list[dict]:
    """Territories whose name differs between two name sets (id, old and new name), by id."""
    return [{"id_ti": tid, "old": older[tid], "new": newer[tid]}
            for tid in sorted(older.keys() & newer.keys()) if older[tid] != newer[tid]]


def moved_names(older: dict[str, str], newer: dict[str, str]) -> list[str]:
    """Names that moved from one id to another ("'name' ti-a -> ti-b"), sorted."""
    ids_of_old: dict[str, set[str]] = {}
    for tid, name in older.items():
        ids_of_old.setdefault(name, set()).add(tid)
    moved = []
    for tid, name in newer.items():
        before = ids_of_old.get(name, set())
        if before and tid not in before:
            moved.append(f"{shown(name)} {', '.join(sorted(before))} -> {tid}")
    return sorted(moved)
