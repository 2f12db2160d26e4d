"""territoires-industrie: build the Territoires d'industrie geometries from official lists.

The core (sources, reconciliation, geometry, publishing) is plain Python; the Dagster layer lives in
``pipeline.definitions`` and the ``pipeline.defs`` package, which calls the core.
"""

__version__ = "0.1.0"
CONTRACT_VERSION = "1.2.0"
