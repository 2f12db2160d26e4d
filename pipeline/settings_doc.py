"""The settings tables of the documentation, generated from :class:`pipeline.settings.Settings`.

Each documentation file of ``SETTINGS_DOCS`` holds one table of every ``TI_*`` variable between
the markers ``BEGIN`` and ``END``: variable, what it sets (the field's ``doc``), the values accepted
(its ``expect``, the same words as the error message) and the default (the field's default, or its
``unset`` text). A test checks the tables are current. Regenerate them, from the repository root,
with ``python -m pipeline.settings_doc``.
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path

from .settings import ASSETS_DIR, Settings, field_meta

SETTINGS_DOCS = (Path("README.md"), Path("docs") / "PRODUCTION.md")   # from the repository root
BEGIN = ("<!-- settings table: generated from pipeline/settings.py by `python -m pipeline.settings_doc`, "
         "do not edit by hand -->")
END = "<!-- end of the generated settings table -->"


class TableMarkersError(ValueError):
    """A documentation file without exactly one pair of settings-table markers."""


def default_text(name: str) -> str:
    """The default of a field as the documentation shows it (paths as the repository names them)."""
    meta = field_meta(name)
    if "unset" in meta:
        return str(meta["unset"])
    value = Settings.__pydantic_fields__[name].default   # type: ignore[attr-defined]
    if isinstance(value, bool):
        return f"`{int(value)}`"
    if isinstance(value, Path):
        if value.is_relative_to(ASSETS_DIR):
            return f"`assets/{value.relative_to(ASSETS_DIR).as_posix()}`"
        return f"`{value.as_posix()}/`" if not value.suffix else f"`{value.as_posix()}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_settings_table() -> str:
    """The table, markers included, one row per field of :class:`Settings` in declaration order."""
    lines = [BEGIN, "", "| variable | what it sets | value | default |", "| --- | --- | --- | --- |"]
    for f in fields(Settings):
        meta = field_meta(f.name)
        if not meta.get("doc"):
            raise ValueError(f"Settings.{f.name} has no 'doc' in its json_schema_extra: say what it sets")
        lines.append(f"| `{meta['env']}` | {_cell(meta['doc'])} | {_cell(meta['expect'])} | "
                     f"{_cell(default_text(f.name))} |")
    return "\n".join([*lines, "", END])


def with_current_table(text: str, where: str) -> str:
    """``text`` with its settings table (between the markers) replaced by the current one."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise TableMarkersError(f"{where}: expected one settings table between {BEGIN!r} and {END!r}")
    head, rest = text.split(BEGIN)
    return head + render_settings_table() + rest.split(END, 1)[1]


def write_settings_tables(root: Path = Path()) -> list[Path]:
    """Rewrite the table of each file of ``SETTINGS_DOCS`` under ``root``; the files changed."""
    changed = []
    for rel in SETTINGS_DOCS:
        path = root / rel
        text = path.read_text(encoding="utf-8")
        new = with_current_table(text, str(rel))
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


if __name__ == "__main__":
    for written in write_settings_tables(Path(sys.argv[1]) if len(sys.argv) > 1 else Path()):
        print(written)
