"""Dagster asset checks on each phase's territories: the core quality checks, all blocking.

A failing blocking check stops the publish asset of the same run, so a wrong build never
replaces the published files.
"""


from dagster import AssetCheckResult, AssetCheckSeverity, AssetIn, asset_check

from ..build import quality
from .assets import PHASES, phase_key


def _result(res: quality.CheckResult) -> AssetCheckResult:
    meta = {}
    for k, v in res.details.items():
        meta[k] = v if isinstance(v, (int, float, str, bool)) else str(v)[:4000]
    return AssetCheckResult(passed=res.passed, severity=AssetCheckSeverity.ERROR, metadata=meta,
                            description=res.description)


def phase_checks(phase: str):
    key = phase_key(phase)
    asset = f"territories_{key}"
    @asset_check(asset=asset, name="territory_count", blocking=True,
                 description="Every territory of the source lists built, one row each.")
    def count(territories_in):
        return _result(quality.check_count(territories_in.territories,
                                           territories_in.membership.listed_territories))

    @asset_check(asset=asset, name="geometries_valid", blocking=True,
                 description="Every geometry valid, non-empty, MultiPolygon.")
    def geometries(territories_in):
        return _result(quality.check_geometries(territories_in.territories))

    @asset_check(asset=asset, name="communes_accounted_for", blocking=True,
                 description="Every listed code matched or reconciled; otherwise the errors are listed.")
    def members(territories_in):
        m = territories_in.membership
        return _result(quality.check_members(m.errors, m.listed_codes, len(m.members)))

    @asset_check(asset=asset, name="area_matches_communes", blocking=True,
                 description="Territory area equals the sum of its communes' areas within 0.5 %.")
    def areas(territories_in):
        return _result(quality.check_areas(territories_in.territories))

    @asset_check(asset=asset, name="holes_are_enclaves", blocking=True,
                 additional_ins={"boundaries": AssetIn("commune_boundaries")},
                 description="Every hole left inside a territory is covered by communes outside it.")
    def holes(territories_in, boundaries):
        b = territories_in
        return _result(quality.check_holes(b.territories, b.membership.members, boundaries))

    @asset_check(asset=asset, name="no_unexpected_overlaps", blocking=True,
                 description="No two territories overlap unless they share a commune in the source list.")
    def overlaps(territories_in):
        b = territories_in
        return _result(quality.check_overlaps(b.territories, b.membership.shared_communes))

    return [count, geometries, members, areas, holes, overlaps]


ALL_CHECKS = [c for phase in PHASES for c in phase_checks(phase)]
