"""The Dagster code location named by the contract: ``pipeline.definitions:defs``.

The Dagster layer lives in :mod:`pipeline.defs`; this module only re-exports its ``defs`` so that
``dagster asset materialize -m pipeline.definitions`` and ``workspace.yaml`` keep working.
"""

from .defs.definitions import defs

__all__ = ["defs"]
