"""The programme's phases: their names, defined once for the CLI, the core, publishing and Dagster.

The source catalog (``assets/sources.toml``) says which lists each phase reads; these are the
names every other place refers to. ``CURRENT_PHASE`` is the one published at the contract's
root paths.
"""

from __future__ import annotations

CURRENT_PHASE = "2023-2027"
PREVIOUS_PHASE = "2018-2022"
PHASES = (CURRENT_PHASE, PREVIOUS_PHASE)


def phase_key(phase: str) -> str:
    """``2023-2027`` -> ``2023_2027`` (for names that allow letters, digits and underscores)."""
    return phase.replace("-", "_")
