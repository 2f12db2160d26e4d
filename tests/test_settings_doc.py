"""The settings tables of README.md and docs/PRODUCTION.md are generated from Settings and current."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.settings import ASSETS_DIR, Settings, field_meta
from pipeline.settings_doc import (
    BEGIN,
    END,
    SETTINGS_DOCS,
    TableMarkersError,
    default_text,
    render_settings_table,
    with_current_table,
)

ROOT = Path(__file__).resolve().parent.parent


def _table(rel: Path) -> str:
    text = (ROOT / rel).read_text(encoding="utf-8")
    return text[text.index(BEGIN):text.index(END) + len(END)]


@pytest.mark.parametrize("rel", SETTINGS_DOCS, ids=str)
def test_settings_table_is_current(rel):
    assert _table(rel) == render_settings_table(), (
        f"{rel}: the settings table is stale: run `python -m pipeline.settings_doc` and commit it")


@pytest.mark.parametrize("rel", SETTINGS_DOCS, ids=str)
def test_every_variable_of_settings_has_a_row(rel):
    table = _table(rel)
    for f in fields(Settings):
        assert f"| `{field_meta(f.name)['env']}` |" in table, f.name


@pytest.mark.parametrize("name", [f.name for f in fields(Settings)])
def test_documented_default_is_the_real_one(name):
    """Each default shown, given back as the variable's value, gives the field's default."""
    shown = default_text(name)
    meta = field_meta(name)
    if "unset" in meta:
        assert getattr(Settings(), name) in (None, {}), name
        return
    text = shown.strip("`")
    if text.startswith("assets/"):   # the repository's assets/ is the package's static data
        text = str(ASSETS_DIR / text.removeprefix("assets/"))
    assert getattr(Settings.from_env({meta["env"]: text}), name) == getattr(Settings(), name)


_text = st.text(st.characters(blacklist_characters="<"), max_size=40)


@given(head=_text, old=_text, tail=_text)
def test_regeneration_replaces_the_table_only(head, old, tail):
    doc = f"{head}{BEGIN}{old}{END}{tail}"
    assert with_current_table(doc, "x.md") == f"{head}{render_settings_table()}{tail}"


@pytest.mark.parametrize("doc", ["no markers", f"{BEGIN} {BEGIN} {END}", f"{END} {BEGIN}"])
def test_missing_or_doubled_markers_are_refused(doc):
    with pytest.raises(TableMarkersError):
        with_current_table(doc, "x.md")
