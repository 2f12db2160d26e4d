"""COG code mapping (pipeline.reconcile.vintages): synthetic INSEE events, then the real change history."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.reconcile import vintages
from pipeline.sources.readers import read_admin, read_commune_changes, read_ti_communes


def changes(*events: tuple[str, str, str, str, str, str]) -> pd.DataFrame:
    """(MOD, DATE_EFF, TYPECOM_AV, COM_AV, TYPECOM_AP, COM_AP) rows, as read_commune_changes returns."""
    frame = pd.DataFrame(events, columns=["MOD", "DATE_EFF", "TYPECOM_AV", "COM_AV", "TYPECOM_AP", "COM_AP"])
    frame["DATE_EFF"] = pd.to_datetime(frame["DATE_EFF"])
    return frame


# Events written the way INSEE writes them (see admin/insee_mvtcommunes_*.csv.gz).
EVENTS = changes(
    # 2024-01-01 merger: 01003 into 01002 (with the commune deleguee row INSEE adds)
    ("32", "2024-01-01", "COM", "01003", "COM", "01002"),
    ("32", "2024-01-01", "COM", "01002", "COM", "01002"),
    ("32", "2024-01-01", "COM", "01003", "COMD", "01003"),
    # 2024-01-01 restoration: 01010 split into itself, 01011 and 01012
    ("21", "2024-01-01", "COM", "01010", "COM", "01010"),
    ("21", "2024-01-01", "COM", "01010", "COM", "01011"),
    ("21", "2024-01-01", "COM", "01010", "COM", "01012"),
    ("21", "2024-01-01", "COMD", "01011", "COM", "01011"),
    # 2024-03-04 code change on a chef-lieu transfer (like 12076 -> 12218)
    ("50", "2024-03-04", "COM", "01020", "COM", "01021"),
    # 2025-01-01: 01002 (the 2024 successor) merged into 01040
    ("32", "2025-01-01", "COM", "01002", "COM", "01040"),
    ("32", "2025-01-01", "COM", "01040", "COM", "01040"),
    # name change only: never a code change
    ("10", "2024-01-01", "COM", "01050", "COM", "01050"),
    # an old merger (2019): 01030 is a delegated code ever since
    ("32", "2019-01-01", "COM", "01030", "COM", "01031"),
    ("32", "2019-01-01", "COM", "01031", "COM", "01031"),
    # an event dated 1 January 2023 is already part of COG 2023
    ("32", "2023-01-01", "COM", "01060", "COM", "01061"),
)
COG2023 = {"01002", "01003", "01010", "01020", "01040", "01050", "01061", "01031"}
COG2024 = {"01002", "01010", "01011", "01012", "01021", "01040", "01050", "01061", "01031"}
COG2025 = {"01010", "01011", "01012", "01021", "01040", "01050", "01061", "01031"}


def test_merger_maps_to_the_successor():
    assert vintages.forward(EVENTS, {"01003", "01002"}, 2023, 2024) == {"01003": {"01002"}, "01002": {"01002"}}


def test_split_maps_to_every_part():
    assert vintages.forward(EVENTS, {"01010"}, 2023, 2024) == {"01010": {"01010", "01011", "01012"}}


def test_code_change_is_followed_and_dated_inclusively():
    assert vintages.forward(EVENTS, {"01020"}, 2023, 2024) == {"01020": {"01020"}}   # 4 March: not yet
    assert vintages.forward(EVENTS, {"01020"}, 2023, 2025) == {"01020": {"01021"}}


def test_chained_events_over_two_years():
    assert vintages.forward(EVENTS, {"01003"}, 2023, 2025) == {"01003": {"01040"}}


def test_name_changes_and_delegated_rows_are_not_code_changes():
    assert vintages.forward(EVENTS, {"01050"}, 2023, 2025) == {"01050": {"01050"}}
    # the COM -> COMD row of 01003 must not keep 01003 alive
    assert vintages.code_mapping(EVENTS, {"01003"}, 2023, 2024, COG2024) == {"01003": {"01002"}}


def test_event_of_the_first_day_belongs_to_the_start_year():
    assert vintages.forward(EVENTS, {"01061"}, 2023, 2024) == {"01061": {"01061"}}
    assert vintages.forward(EVENTS, {"01060"}, 2022, 2023) == {"01060": {"01061"}}


def test_backward_mapping_returns_all_former_parts():
    back = vintages.code_mapping(EVENTS, {"01002", "01040", "01011"}, 2024, 2023, COG2023)
    assert back == {"01002": {"01002", "01003"}, "01040": {"01040"}, "01011": {"01010"}}
    back25 = vintages.code_mapping(EVENTS, {"01040"}, 2025, 2024, COG2024)
    assert back25 == {"01040": {"01002", "01040"}}


def test_targets_are_restricted_to_the_target_codes():
    assert vintages.code_mapping(EVENTS, {"01010"}, 2023, 2024, {"01010", "01011"}) == {"01010": {"01010", "01011"}}
    assert vintages.code_mapping(EVENTS, {"09999"}, 2023, 2024, COG2024) == {"09999": set()}


def test_old_code_found_through_the_whole_history():
    assert vintages.from_history(EVENTS, {"01030"}, 2024) == {"01030": {"01031"}}
    assert vintages.from_history(EVENTS, {"01003"}, 2025) == {"01003": {"01040"}}


def test_predecessors_invert_a_mapping():
    fwd = vintages.forward(EVENTS, COG2023, 2023, 2024)
    inv = vintages.predecessors(fwd)
    assert inv["01002"] == {"01002", "01003"}
    assert inv["01011"] == {"01010"}


def _moved(mapping: dict[str, set[str]]) -> dict[str, set[str]]:
    return {c: t for c, t in mapping.items() if t != {c}}


@pytest.mark.parametrize("from_cog, to_cog", [(2023, 2024), (2023, 2025), (2024, 2025), (2024, 2023),
                                              (2025, 2023), (2025, 2024), (2024, 2024)])
def test_moved_mappings_are_the_mappings_without_the_codes_mapping_to_themselves(from_cog, to_cog):
    cogs = {2023: COG2023, 2024: COG2024, 2025: COG2025}
    codes, targets = cogs[from_cog] | {"09999"}, cogs[to_cog]
    assert vintages.code_mapping_moved(EVENTS, codes, from_cog, to_cog, targets) == _moved(
        vintages.code_mapping(EVENTS, codes, from_cog, to_cog, targets))
    if from_cog <= to_cog:
        assert vintages.forward_moved(EVENTS, codes, from_cog, to_cog) == _moved(
            vintages.forward(EVENTS, codes, from_cog, to_cog))
    # a code absent from the target year maps to nothing; one no event touched is left out
    assert vintages.code_mapping_moved(EVENTS, {"09999", "01050"}, from_cog, to_cog, targets) == {"09999": set()}


# ---------------------------------------------------------------- real change history (TI_MIRROR_DIR)
@pytest.fixture(scope="module")
def real(mirror):
    adm = mirror / "admin"
    ch = read_commune_changes(adm / "insee_mvtcommunes_1943-2025_via-COGiter-0.0.15.csv.gz")
    a24 = read_admin(2024, *[adm / "decoupage-administratif_4.1.0_cog2024" / f"{w}.json.gz"
                             for w in ("communes", "epci", "ept")])
    a25 = read_admin(2025, *[adm / "decoupage-administratif_5.3.0_cog2025" / f"{w}.json.gz"
                             for w in ("communes", "epci", "ept")])
    ti, _ = read_ti_communes(mirror / "territoires_industrie" / "ti2023_communes_anct_20231107.csv")
    return ch, a24, a25, ti


def test_real_2023_to_2024_mergers_and_split(real):
    ch, a24, _, ti = real
    codes = set(ti["insee_com"])
    mapping = vintages.code_mapping(ch, codes, 2023, 2024, a24.codes)
    changed = {c: t for c, t in mapping.items() if t != {c}}
    assert changed == {
        "08294": {"08053"}, "16355": {"16097"}, "35112": {"35062"}, "64541": {"64300"},
        "85041": {"85292"}, "85271": {"85292"}, "95282": {"95169"},
        "85084": {"85084", "85165", "85212"},
    }


def test_real_2023_to_2025(real):
    ch, _, a25, ti = real
    codes = set(ti["insee_com"])
    mapping = vintages.code_mapping(ch, codes, 2023, 2025, a25.codes)
    assert mapping["15141"] == {"15031", "15035", "15047", "15141", "15171"}
    assert mapping["12076"] == {"12218"}
    assert mapping["49069"] == {"49126"} and mapping["69159"] == {"69114"}
    assert mapping["08300"] == {"08439"}
    changed = {c for c, t in mapping.items() if t != {c}}
    assert len(codes - a25.codes) == 34
    assert len(changed) == 36
    assert ti.loc[ti["insee_com"].isin(changed), "id_ti"].nunique() == 26
    assert all(mapping[c] for c in codes)   # every 2023 code has a 2025 commune


def _reference_apply(codes, events):
    """The plain algorithm (every code, every day), as an oracle for the sparse one."""
    from collections import defaultdict

    state = {c: {c} for c in codes}
    for _, day in events.groupby("DATE_EFF", sort=True):
        edges = defaultdict(set)
        for av, ap in zip(day["COM_AV"], day["COM_AP"]):
            edges[av].add(ap)
        for code, current in state.items():
            if any(c in edges for c in current):
                state[code] = set().union(*(edges.get(c, {c}) for c in current))
    return state


def test_sparse_mapping_equals_the_plain_algorithm_on_the_whole_history(mirror):
    from pipeline.reconcile.vintages import _apply, _events
    from pipeline.sources.readers import read_commune_changes

    changes = read_commune_changes(mirror / "admin" / "insee_mvtcommunes_1943-2025_via-COGiter-0.0.15.csv.gz")
    codes = set(changes["COM_AV"]) | set(changes["COM_AP"])
    for start, end in ((None, "2025-01-01"), ("1990-01-01", "2010-01-01"), ("2023-01-01", "2024-01-01")):
        events = _events(changes, pd.Timestamp(start) if start else None, pd.Timestamp(end))
        assert _apply(codes, events) == _reference_apply(codes, events), (start, end)


def test_real_moved_mappings_both_ways(real):
    ch, a24, a25, _ = real
    for codes, cog, to_codes, to_cog in ((a24.codes, 2024, a25.codes, 2025), (a25.codes, 2025, a24.codes, 2024)):
        full = vintages.code_mapping(ch, codes, cog, to_cog, to_codes)
        moved = vintages.code_mapping_moved(ch, codes, cog, to_cog, to_codes)
        assert moved == _moved(full) and 0 < len(moved) < 500
    assert vintages.forward_moved(ch, a24.codes, 2024, 2025) == _moved(vintages.forward(ch, a24.codes, 2024, 2025))
