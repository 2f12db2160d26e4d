"""Parsed reference tables cached beside the downloads, keyed by the input's sha256 and the parser.

Parsing the three COG years of decoupage-administratif (JSON, 35,000 communes each) and the
INSEE change history takes about a second of Python at every build, for files that change a few
times a year. The parsed frames are kept as pickles in ``<TI_RAW_DIR>/parsed/`` (like Dagster's
own filesystem IO manager, and the only format that gives back every dtype and null exactly, so
the directory must be trusted like the code); the key
is the sha256 of the input file, the name of the parser and a digest of the code that parses
(``PARSERS``: ``readers.py``, ``csv_tables.py``) and of the pandas/numpy versions, so any change of input or of
parser parses again. A cache that cannot be read or written is ignored (the file is parsed, a
warning is logged): it never makes a build fail and never serves stale data.

The build keeps more there under keys naming all they depend on: the boundary file's scan and
each phase's reconciliation (:func:`cached`), and the coverage checks' answers (:func:`write_arrays`, plain numpy arrays).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import pickle
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from .. import atomic

log = logging.getLogger(__name__)
PARSERS = ("readers.py", "csv_tables.py")     # modules whose code shapes the parsed frames
FORMAT = "1"


@lru_cache(maxsize=1)
def parser_digest() -> str:
    import numpy as np

    digest = hashlib.sha256(f"{FORMAT}|{pd.__version__}|{np.__version__}".encode())
    here = Path(__file__).resolve().parent
    for name in PARSERS:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:16]


@lru_cache(maxsize=1)
def package_digest() -> str:
    """A digest of every module of the package and of the pandas/numpy versions: the code version
    of what is cached from more than the parsers (any change of any module computes it again)."""
    digest = hashlib.sha256(parser_digest().encode())
    package = Path(__file__).resolve().parent.parent
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def cache_key(kind: str, sha256: str) -> str:
    return f"{kind}-{sha256[:32]}-{parser_digest()}"


def cached_frames(cache_dir: Path | None, kind: str, sha256: str, names: tuple[str, ...],
                  parse: Callable[[], dict[str, pd.DataFrame]]) -> dict[str, pd.DataFrame]:
    """``parse()`` once per input file and parser version; later calls read the frames back.

    ``names``: the frames ``parse`` returns (a dict name -> DataFrame). With ``cache_dir`` None,
    or an input without a sha256, nothing is cached.
    """
    if cache_dir is None or not sha256:
        return parse()
    return cached(Path(cache_dir), kind, cache_key(kind, sha256), names, parse)


def cached_path(cache_dir: Path, key: str) -> Path:
    """The file :func:`cached` keeps ``key``'s objects in (it may not exist yet)."""
    return cache_dir / f"{key}.pickle"


def cached(cache_dir: Path, kind: str, key: str, names: tuple[str, ...],
           compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The objects ``compute()`` returns (name -> object), kept as ``<cache_dir>/<key>.pickle``.

    ``key`` must name everything the objects depend on (inputs and code); an entry that cannot be
    read is computed again, one that cannot be written is not kept; older entries of ``kind`` go.
    """
    path = cached_path(cache_dir, key)
    if path.is_file():
        try:
            with open(path, "rb") as fh:
                frames = pickle.load(fh)
            if isinstance(frames, dict) and set(names) <= set(frames):
                return frames
            log.warning("parse cache %s holds other frames: parsing %s again", key, kind)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError,
                TypeError) as err:
            log.warning("parse cache %s unreadable (%s): parsing %s again", key, err, kind)
    frames = compute()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with atomic.writing(path) as tmp, open(tmp, "wb") as fh:
            pickle.dump({n: frames[n] for n in names}, fh, protocol=pickle.HIGHEST_PROTOCOL)
        prune(cache_dir, kind, key)
    except (OSError, pickle.PicklingError, TypeError, AttributeError) as err:
        log.warning("parse cache %s not written (%s)", key, err)
    return frames


def read_arrays(cache_dir: Path, key: str) -> dict[str, Any] | None:
    """The numpy arrays kept under ``key`` by :func:`write_arrays` (no pickle: only plain arrays
    are read), or None when there are none or they cannot be read."""
    import numpy as np

    path = cache_dir / f"{key}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError) as err:
        log.warning("parse cache %s unreadable (%s): computing it again", key, err)
        return None


def write_arrays(cache_dir: Path, kind: str, key: str, arrays: dict[str, Any]) -> None:
    """Keep numpy arrays as ``<cache_dir>/<key>.npz`` (older entries of ``kind`` go); a failure is logged."""
    import numpy as np

    path = cache_dir / f"{key}.npz"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with atomic.writing(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        prune(cache_dir, kind, key, ".npz")
    except (OSError, ValueError) as err:
        log.warning("parse cache %s not written (%s)", key, err)


def prune(cache_dir: Path, kind: str, keep: str, suffix: str = ".pickle") -> None:
    """Drop older entries of the same kind (another sha256 or parser): one entry per input.
    ``suffix``: the files of the entries to drop (an entry may keep a file beside its pickle)."""
    for path in cache_dir.glob(f"{kind}-*{suffix}"):
        if path.name != keep + suffix:
            with contextlib.suppress(OSError):
                path.unlink()
