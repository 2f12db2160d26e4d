"""``python -m pipeline``: the command line (see :mod:`pipeline.cli`)."""

from .cli import main

raise SystemExit(main())
