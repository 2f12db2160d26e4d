"""Errors a user can cause, each with one clear message naming the file, line, URL or code."""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: an error the user can act on. ``str(err)`` is the whole message."""

    exit_code = 2


class SourceError(PipelineError):
    """A source could not be fetched or read (bad URL, network fault, HTTP error, bad body).

    ``retryable``: only transient faults were seen (network, timeout, 429, 5xx), so a later
    attempt may succeed (Dagster's retry policy applies then).
    """

    retryable: bool = False


class InputFormatError(PipelineError):
    """A file was read but its content is malformed (columns, encoding, types, CRS...)."""


class ReconciliationError(PipelineError):
    """Codes of a list could not be matched to the boundary vintage."""


class PlanTableError(PipelineError):
    """The user-supplied plan table is invalid."""


class PublishError(PipelineError):
    """Outputs could not be written; the previously published files are untouched."""


class CheckFailedError(PipelineError):
    """A blocking quality check failed; nothing was published."""
