"""The Dagster layer: definitions, assets, checks, automation, alerts, resources and IO managers.

It calls the core (``pipeline.steps``, ``pipeline.sources``, ``pipeline.publish``), never the reverse.
"""

import warnings

from dagster import BetaWarning

# Two beta notices Dagster prints for features this project relies on knowingly, once per source
# asset and per launch: data versions on outputs (how an unchanged source stops a rebuild) and the
# selection `dg launch --assets '*'` builds. They tell an operator nothing they can act on.
warnings.filterwarnings("ignore", category=BetaWarning, message=r"Parameter `data_version` of initializer `Output")
warnings.filterwarnings("ignore", category=BetaWarning, message=r"Parameter `include_sources` of function `AssetSelection")
