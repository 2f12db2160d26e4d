"""Metric CRS per zone: Lambert-93 for the metropole, a local CRS for each overseas departement.

A territory's zone is read from its ``departements`` list (INSEE codes); a territory never spans two
zones.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import PublishError

METROPOLE = "metropole"

# zone -> (EPSG code of a metric CRS, display name)
ZONES: dict[str, tuple[int, str]] = {
    METROPOLE: (2154, "France métropolitaine"),
    "971": (5490, "Guadeloupe"),
    "972": (5490, "Martinique"),
    "973": (2972, "Guyane"),
    "974": (2975, "La Réunion"),
    "976": (4471, "Mayotte"),
}


# INSEE code -> name of the regions (COG, unchanged from 2016 to 2025), shown on the web map's cards
REGIONS: dict[str, str] = {
    "01": "Guadeloupe", "02": "Martinique", "03": "Guyane", "04": "La Réunion", "06": "Mayotte",
    "11": "Île-de-France", "24": "Centre-Val de Loire", "27": "Bourgogne-Franche-Comté", "28": "Normandie",
    "32": "Hauts-de-France", "44": "Grand Est", "52": "Pays de la Loire", "53": "Bretagne",
    "75": "Nouvelle-Aquitaine", "76": "Occitanie", "84": "Auvergne-Rhône-Alpes",
    "93": "Provence-Alpes-Côte d'Azur", "94": "Corse",
}


def zone_of_departement(code: str) -> str:
    code = str(code)
    if code.startswith("97"):
        if code[:3] not in ZONES:
            raise PublishError(f"departement {code!r}: no metric CRS known for this overseas departement")
        return code[:3]
    return METROPOLE


def zone_of(departements: Iterable[str], id_ti: str = "?") -> str:
    """The single zone of a territory from its departement codes (PublishError if mixed or empty)."""
    zones = {zone_of_departement(d) for d in departements}
    if len(zones) != 1:
        raise PublishError(
            f"territory {id_ti}: column 'departements' must name departements of exactly one zone "
            f"(metropole or one overseas departement), got {sorted(zones) or 'none'}"
        )
    return zones.pop()


def metric_epsg(zone: str) -> int:
    return ZONES[zone][0]
