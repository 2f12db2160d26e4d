"""The JSON documents the pipeline reads back (locks, manifests, the release index): bounded, validated.

Such a file says what to read and where to write, so nothing in it is trusted: it must be a
regular file (never a device such as ``/dev/zero``, a FIFO or a directory) of at most
:data:`MAX_DOCUMENT_BYTES`, valid JSON, and valid against its schema in ``assets/schemas/``
before any field is used. Every path it holds is checked by :func:`confined` before use.
Failures are :class:`InvalidDocument`: one line naming the file and what is wrong (exit 2); it is
also a ``ValueError``, so callers that treat an unreadable document as absent keep doing so.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from .errors import PipelineError
from .regular_files import RefusedFile, read_regular
from .settings import ASSETS_DIR

if TYPE_CHECKING:
    import jsonschema

MAX_DOCUMENT_BYTES = 64 << 20   # a manifest of a real build is ~100 KiB: far below, yet no file is read whole
SCHEMAS_DIR = ASSETS_DIR / "schemas"


class InvalidDocument(PipelineError, ValueError):
    """A lock, manifest or index that is not a bounded regular file of valid JSON fitting its schema."""


def read_bounded(path: Path, what: str, max_bytes: int | None = None) -> bytes:
    """The bytes of ``path``, a regular file of at most ``max_bytes``; FileNotFoundError when it
    is absent (callers decide what a missing file means), InvalidDocument otherwise."""
    max_bytes = MAX_DOCUMENT_BYTES if max_bytes is None else max_bytes
    try:
        return read_regular(path, max_bytes)
    except RefusedFile as err:
        if err.kind == "too_large":
            raise InvalidDocument(f"{what} {path} is larger than {max_bytes:,} bytes; refused (not read further)") \
                from None
        raise InvalidDocument(f"{what} {path} {err.why.removeprefix('it ')}; refused") from None


@functools.cache
def _validator(schema_name: str) -> jsonschema.protocols.Validator:
    import jsonschema  # when a document is validated: reading one (read_bounded) needs none

    schema = json.loads((SCHEMAS_DIR / schema_name).read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def validate(doc: Any, schema_name: str, path: Path | str, what: str) -> None:
    """InvalidDocument naming the first offending field when ``doc`` does not fit the schema."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator(schema_name).iter_errors(doc))
    if error is None:
        return
    where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    message = " ".join(error.message.split())
    message = message if len(message) <= 160 else message[:157] + "..."
    raise InvalidDocument(f"{what} {path} is invalid at {where}: {message} (schema {schema_name})")


def load(path: Path, schema_name: str, what: str, max_bytes: int | None = None) -> Any:
    """Read ``path`` (:func:`read_bounded`), parse it and check it against ``schema_name``."""
    data = read_bounded(path, what, max_bytes)
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise InvalidDocument(f"{what} {path} is not valid UTF-8 JSON ({' '.join(str(err).split())[:160]})") from None
    validate(doc, schema_name, path, what)
    return doc


def relative(value: object, what: str, root: Path | str = "its root") -> str:
    """``value`` when it is a relative, normalised POSIX path (no ``..`` or ``.`` part, no leading
    ``/``, backslash or drive, not empty); InvalidDocument otherwise."""
    text = value if isinstance(value, str) else ""
    parts = PurePosixPath(text).parts
    if (not text or text.startswith("/") or "\\" in text or ":" in (parts[0] if parts else "")
            or any(p in ("..", ".", "") for p in text.split("/"))):
        raise InvalidDocument(f"{what}: path {value!r} must be relative, normalised and inside {root}; refused")
    return text


def confined(root: Path, value: object, what: str) -> Path:
    """``root / value`` when ``value`` is :func:`relative` and stays inside ``root`` once links are
    resolved; InvalidDocument otherwise (an absolute path, ``..``, a link out of ``root``...)."""
    text = relative(value, what, root)
    base = Path(root).resolve()
    path = base / text
    if not path.resolve().is_relative_to(base):
        raise InvalidDocument(f"{what}: path {value!r} leads out of {root} (a link); refused")
    return path
