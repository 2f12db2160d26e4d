"""Blocking asset checks of each phase's territories: the core's quality checks, as Dagster sees them.

The checks run inside the phase's build (:func:`pipeline.steps.sequence.run_checks`, which needs the
boundary polygons the build holds); the ``territories_*`` asset reports each result as an
:class:`AssetCheckResult` of its blocking :class:`AssetCheckSpec`. When one fails, the asset stops
with a :class:`Failure` naming the check and its first offending items (territory, code, file,
line), so the publish asset of the run never starts and the published files stay as they were.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, Failure, MetadataValue

if TYPE_CHECKING:   # imported by the step that builds (the code location needs no geometry stack)
    from ..steps import quality

# check name -> description (the names are the core's CheckResult names)
CHECKS = {
    "territory_count": "Every territory of the source lists built, one row each.",
    "geometries_valid": "Every geometry valid, non-empty, MultiPolygon.",
    "communes_accounted_for": "Every listed code matched or reconciled; otherwise the errors are listed.",
    "area_matches_communes": "Territory area equals the sum of its communes' areas within 0.5 %.",
    "holes_are_enclaves": "Every hole left inside a territory is covered by communes outside it.",
    "no_unexpected_overlaps": "No two territories overlap unless they share a commune in the source list.",
}
JSON_ITEMS = 200     # longer lists are cut in the metadata (the manifest keeps them whole)


def check_specs(asset: str) -> list[AssetCheckSpec]:
    """The blocking checks of a ``territories_*`` asset."""
    return [AssetCheckSpec(name, asset=asset, blocking=True, description=text) for name, text in CHECKS.items()]


def _metadata(details: dict) -> dict:
    meta: dict[str, object] = {}
    for key, value in details.items():
        if isinstance(value, (list, tuple)):
            meta[key] = MetadataValue.json(list(value)[:JSON_ITEMS])
            meta[f"{key}_count"] = len(value)
        elif isinstance(value, dict):
            meta[key] = MetadataValue.json(value)
        else:
            meta[key] = value
    return meta


def check_results(asset: str, results: list[quality.CheckResult]) -> list[AssetCheckResult]:
    """The core's results as Dagster check results (structured metadata)."""
    return [AssetCheckResult(asset_key=asset, check_name=r.name, passed=r.passed, description=r.description,
                             severity=AssetCheckSeverity.ERROR, metadata=_metadata(r.details))
            for r in results if r.name in CHECKS]


def stop_if_failed(phase: str, results: list[quality.CheckResult]) -> None:
    """Raise a Failure naming each failed blocking check and its first offending items."""
    from ..steps import quality

    if not quality.all_passed(results):
        failed = [r for r in results if r.blocking and not r.passed]
        raise Failure(description=f"{phase}: {quality.failure_message(results)}",
                      metadata={r.name: MetadataValue.json(quality.offending_items(r)[:JSON_ITEMS])
                                for r in failed},
                      allow_retries=False)
