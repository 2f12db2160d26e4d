"""``python -m pipeline.publish [PATH]``: regenerate the data dictionary (docs/DATA_DICTIONARY.md)."""

import sys
from pathlib import Path

from .dictionary import DICTIONARY_PATH, write_data_dictionary

print(write_data_dictionary(Path(sys.argv[1]) if len(sys.argv) > 1 else DICTIONARY_PATH))
