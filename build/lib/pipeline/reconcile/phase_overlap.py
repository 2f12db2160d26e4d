"""A territory's history across programme phases, matched on communes (never on ids).

Territory ids are reused across phases with different meanings (ti-0101 is "Basse-Terre" in
2023-2027 but "Cap Excellence" in 2018-2022), so the only sound link is shared communes, both
phases' lists being expressed in the same boundary vintage first.
"""

from __future__ import annotations

import pandas as pd


def overlaps(current: pd.DataFrame, previous: pd.DataFrame) -> pd.DataFrame:
    """For each current territory: ids of previous territories sharing communes, and counts.

    Both frames have columns id_ti, insee_com in the same COG. Returns id_ti, ti_previous (sorted
    list), n_communes_shared, share_shared (fraction of the current territory's communes), is_new.
    """
    prev = previous[["id_ti", "insee_com"]].rename(columns={"id_ti": "id_prev"})
    joined = current[["id_ti", "insee_com"]].merge(prev, on="insee_com", how="left")
    n = current.groupby("id_ti")["insee_com"].nunique()
    shared = joined.dropna(subset=["id_prev"]).groupby("id_ti")["insee_com"].nunique()
    ids = joined.dropna(subset=["id_prev"]).groupby("id_ti")["id_prev"].agg(lambda s: sorted(set(s)))
    out = pd.DataFrame({"id_ti": n.index})
    out["ti_previous"] = [ids.get(t, []) for t in out["id_ti"]]
    out["n_communes_shared"] = [int(shared.get(t, 0)) for t in out["id_ti"]]
    out["share_shared"] = [round(shared.get(t, 0) / n[t], 4) for t in out["id_ti"]]
    out["is_new"] = out["n_communes_shared"] == 0
    return out
