"""The IO manager of the graph: asset values under the Dagster run storage, frames as (Geo)Parquet.

Each asset's value goes to ``<storage>/<asset key>/`` (``storage``: ``$DAGSTER_HOME/storage`` or
the instance's local artifact storage). (Geo)DataFrames, alone or as fields of a dataclass (such as
:class:`pipeline.steps.sequence.BuildResult` and the :class:`~pipeline.reconcile.membership.Membership`
inside it), are written as GeoParquet / Parquet files anyone can open (``territories.parquet``...);
what remains (small: reports, lists, figures) is pickled in ``value.pickle``. Nothing but
``stored_at`` is added to the assets' metadata, so the sources' own ``path`` metadata stays theirs.
The sources' outputs (type Nothing) bypass Dagster's IO manager call: their step stores them with
:func:`store_value`, in the same layout. A step of the run that stored a value takes it from memory.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from dagster import (
    AssetExecutionContext,
    AssetKey,
    DagsterInvariantViolationError,
    Failure,
    InitResourceContext,
    InputContext,
    IOManager,
    MetadataValue,
    OutputContext,
    io_manager,
)

from .. import atomic

if TYPE_CHECKING:
    import pandas as pd

VALUE_FILE = "value.pickle"


@dataclasses.dataclass(frozen=True)
class _FrameFile:
    """Stands for a frame stored beside the pickle, in ``<name>.parquet``."""

    name: str
    geo: bool


def _is_instance(value, module: str, cls: str) -> bool:
    """``isinstance(value, module.cls)``, without importing ``module``: a value of one of its classes
    exists only once it is imported (the sources' values hold no frame, and need no pandas)."""
    loaded = sys.modules.get(module)
    return loaded is not None and isinstance(value, getattr(loaded, cls))


def _split(value, name: str, frames: dict[str, pd.DataFrame], depth: int = 0):
    """``value`` with its frames (top level or dataclass fields, two levels) replaced by _FrameFile."""
    if _is_instance(value, "pandas", "DataFrame"):
        frames[name] = value
        return _FrameFile(name, _is_instance(value, "geopandas", "GeoDataFrame"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type) and depth < 2:
        out = copy.copy(value)
        for f in dataclasses.fields(value):
            # object.__setattr__: frozen dataclasses too (the copy is this module's own)
            object.__setattr__(out, f.name, _split(getattr(value, f.name), f"{name}.{f.name}", frames, depth + 1))
        return out
    return value


def _join(value, read):
    """The inverse of :func:`_split`: each _FrameFile read back with ``read``."""
    if isinstance(value, _FrameFile):
        return read(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            object.__setattr__(value, f.name, _join(getattr(value, f.name), read))
    return value


def _lists_back(frame: pd.DataFrame) -> pd.DataFrame:
    """Parquet gives list cells back as numpy arrays: make them lists again, as the core made them."""
    import numpy as np

    for col in frame.columns:
        if frame[col].dtype == object:
            first = next((v for v in frame[col] if v is not None), None)
            if isinstance(first, np.ndarray):
                frame[col] = [v.tolist() if isinstance(v, np.ndarray) else v for v in frame[col]]
    return frame


class FrameFilesIOManager(IOManager):
    """One folder per asset, ``<base_path>/<asset key path>/``: frames as (Geo)Parquet files, the
    rest of the value pickled. Local paths (the run storage); the graph has no partitions.

    A plain :class:`~dagster.IOManager` on :mod:`pathlib` rather than Dagster's UPathIOManager,
    whose import (universal_pathlib, fsspec) cost every Dagster process about 0.2 s (loading the
    code location, ``python -c "import pipeline.definitions"``, median of 5: 1.93 s -> 1.74 s).
    """

    def __init__(self, base_path: Path | str):
        self.base_path = Path(base_path)
        # The values this manager stored, by (run id, asset key), until a step of the same run
        # loads them: the in-process executor runs a run's steps in one process, so the publishing
        # step takes the build its run made as the CLI does, without reading it back (measured by
        # `python bench/run.py`, "Dagster materialize"). Another run, or a step in another
        # process, reads the files.
        self._this_run: dict[tuple[str, tuple[str, ...]], object] = {}

    def _get_path(self, context: OutputContext | InputContext) -> Path:
        if not context.has_asset_key:
            raise DagsterInvariantViolationError("frame_files_io_manager stores asset values only")
        return self.base_path.joinpath(*context.asset_key.path)

    def handle_output(self, context: OutputContext, obj) -> None:
        # No ``path`` entry in the asset's metadata: the sources' own path (their file in the
        # download cache or the mirror) stays theirs.
        path = self._get_path(context)
        self.dump_to_path(context, obj, path)
        context.add_output_metadata({"stored_at": MetadataValue.path(str(path))})
        self._this_run[(context.run_id, tuple(context.asset_key.path))] = obj

    def load_input(self, context: InputContext):
        path = self._get_path(context)
        upstream = context.upstream_output
        try:
            made = None if upstream is None else (upstream.run_id, tuple(context.asset_key.path))
        except DagsterInvariantViolationError:     # an output context built without its run
            made = None
        if made in self._this_run:      # once: the memory goes with the step that takes it
            return self._this_run.pop(made)
        return self.read_stored(context, path, context.asset_key)

    def read_stored(self, context: InputContext | None, path: Path, key: AssetKey):
        """:meth:`load_from_path`, with a missing or unreadable value reported in one line (a Failure
        Dagster does not retry) instead of a traceback."""
        if not self.path_exists(path):
            raise Failure(description=f"{key.to_user_string()} has no stored value under {path}: materialize it "
                                      "first (e.g. the whole graph, --select '*')", allow_retries=False)
        try:
            return self.load_from_path(context, path)
        except Exception as err:     # whatever the files hold: one line naming them
            why = " ".join(str(err).split())[:300]
            raise Failure(description=f"{key.to_user_string()}: its stored value under {path} cannot be read "
                                      f"({type(err).__name__}: {why}); materialize it again", allow_retries=False) from err

    def dump_to_path(self, context: OutputContext | None, obj, path: Path) -> None:
        """Write the value into a new folder that then takes ``path``'s place (:func:`atomic.replacing_folder`).

        The pickle names the frame files, so the two must never mix values: a run stopped while
        storing leaves the previous value whole (or, killed between the two renames, no value,
        which the loading steps report in one line), never part of one; the runs of part of the
        graph (the automation's) load what is there.
        """
        with atomic.replacing_folder(path) as new:
            frames: dict[str, pd.DataFrame] = {}
            rest = _split(obj, "value", frames)
            for name, frame in frames.items():
                frame.to_parquet(str(new / f"{name}.parquet"), compression="zstd")
            with (new / VALUE_FILE).open("wb") as fh:
                pickle.dump(rest, fh, protocol=pickle.HIGHEST_PROTOCOL)

    def load_from_path(self, context: InputContext | None, path: Path):
        with (path / VALUE_FILE).open("rb") as fh:
            rest = pickle.load(fh)

        def read(ref: _FrameFile) -> pd.DataFrame:
            import pandas as pd

            target = path / f"{ref.name}.parquet"
            if ref.geo:
                import geopandas as gpd

                return _lists_back(gpd.read_parquet(str(target)))
            return _lists_back(pd.read_parquet(str(target)))

        return _join(rest, read)

    def path_exists(self, path: Path) -> bool:   # a folder, not a file
        return (path / VALUE_FILE).exists()


@io_manager(description="Asset values under the run storage: frames as (Geo)Parquet, the rest pickled.")
def frame_files_io_manager(init_context: InitResourceContext) -> FrameFilesIOManager:
    instance = init_context.instance
    if instance is None:
        raise DagsterInvariantViolationError("frame_files_io_manager needs a Dagster instance (its run storage)")
    return FrameFilesIOManager(base_path=instance.storage_directory())


def _instance_manager(context: AssetExecutionContext) -> FrameFilesIOManager:
    """A manager on the instance's storage folder, as :func:`frame_files_io_manager` builds it."""
    return FrameFilesIOManager(base_path=context.instance.storage_directory())


def store_value(context: AssetExecutionContext, key: AssetKey, value) -> Path:
    """Store ``value`` as this IO manager stores an asset's output, for an output Dagster does not
    hand to the IO manager (type Nothing); the folder it is in (what :func:`stored_values` reads)."""
    manager = _instance_manager(context)
    path = manager.base_path.joinpath(*key.path)
    manager.dump_to_path(None, value, path)
    return path


def stored_values(context: AssetExecutionContext, keys: dict[str, AssetKey]) -> dict:
    """The stored values of upstream assets a step depends on without Dagster loading them (inputs
    of type Nothing), read as this IO manager reads an input: ``{name: value}``."""
    manager = _instance_manager(context)
    return {name: manager.read_stored(None, manager.base_path.joinpath(*key.path), key)   # no input context
            for name, key in keys.items()}
