"""Bounds on what an untrusted input may cost, handed to every reader (never read from the environment here).

:class:`Limits` holds the values of the ``TI_MAX_*`` settings (``Settings.limits`` makes one from
them; its defaults are these). The readers take one as an argument, so a value set on the Dagster
resource reaches them exactly as one set in the environment does.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """``source_mb``: one source as stored and decoded; ``table_mb``: one CSV/JSON table once
    un-gzipped (read whole in memory); ``commune_vertices``: vertices of one commune polygon."""

    source_mb: int = 2048
    table_mb: int = 512
    commune_vertices: int = 250_000

    @property
    def source_bytes(self) -> int:
        return self.source_mb * MiB

    @property
    def table_bytes(self) -> int:
        return self.table_mb * MiB


DEFAULT_LIMITS = Limits()
