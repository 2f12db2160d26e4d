"""The published columns of a territory row (the data dictionary's source of truth).

Plan and axis columns are defined in ``pipeline.sources.plans.PLAN_COLUMNS`` and appended after these.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str          # pandas dtype in the in-memory frame; "list[str]" for Python lists of str
    description: str


TERRITORY_COLUMNS: list[Column] = [
    Column("id_ti", "string", "Territory id as published by ANCT, e.g. ti-8418 (reused across phases with other meanings)"),
    Column("lib_ti", "string", "Territory name, whitespace (including non-breaking spaces) cleaned"),
    Column("phase", "string", "Programme phase, e.g. 2023-2027"),
    Column("n_communes", "int64", "Number of member communes in the boundary vintage (COG of the boundaries)"),
    Column("insee_communes", "list[str]", "INSEE codes of the member communes in the boundary vintage, sorted"),
    Column("n_groupements", "int64", "Number of member groupements (EPCI/EPT, and single communes listed as groupements)"),
    Column("siren_groupements", "list[str]", "SIREN of the member groupements as listed by ANCT, sorted"),
    Column("departements", "list[str]", "INSEE codes of the departements touched, sorted"),
    Column("regions", "list[str]", "INSEE codes of the regions touched, sorted"),
    Column("population", "Int64", "Sum of the member communes' municipal population (null if any member lacks one)"),
    Column("area_km2", "float64", "Area of the dissolved territory in km2, computed in a metric CRS suited to it (Lambert-93 or the overseas CRS)"),
    Column("is_new", "boolean", "True when the territory has no commune in common with any 2018-2022 territory (null when the history is unknown)"),
    Column("ti_2018_2022", "list[str]", "Ids of the 2018-2022 territories sharing at least one commune (matched on communes, never on ids)"),
    Column("list_cog", "int64", "COG year of the codes in the source list"),
    Column("boundary_cog", "int64", "COG year of the commune boundaries used"),
    Column("n_communes_reconciled", "int64", "Member communes whose code was mapped from the list's COG to the boundary COG (merger, split, code change)"),
    Column("communes_absorbed_outside", "list[str]", "Codes (list COG) of communes outside any territory absorbed by a member commune: the territory is larger than listed there"),
    Column("geometry", "geometry", "Dissolved territory, MultiPolygon, EPSG:4326 (lon/lat)"),
]

LIST_COLUMNS = [c.name for c in TERRITORY_COLUMNS if c.dtype == "list[str]"]
