"""Errors raised by mmsearch. The library raises; only the CLI and server report.

Every error carries a human reason and, where there is one, the path or argument it is about.
``exit_code`` is what the CLI exits with (documented in README "Exit codes").
"""

from __future__ import annotations


class MmsearchError(Exception):
    """Base class. ``str(err)`` is one line a person can act on."""

    exit_code = 3

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None) -> None:
        self.path = path
        self.hint = hint
        text = f"{path}: {message}" if path else message
        if hint:
            text = f"{text} ({hint})"
        super().__init__(text)


class UsageError(MmsearchError):
    """A bad argument to the API or CLI."""

    exit_code = 2


class UnanswerableQuery(UsageError):
    """A well-formed query this store has no model for: none embeds all of its parts together (an image
    and a sound), or none that embeds it holds the kind of result asked for (``type``)."""


class StoreError(MmsearchError):
    """The store is missing, damaged, or built in a way that does not fit the request."""

    exit_code = 3


class StoreLockedError(StoreError):
    """Another process is writing to the store."""

    exit_code = 3


class ModelError(MmsearchError):
    """A model could not be found, loaded, or does not match the store."""

    exit_code = 4


class DecodeError(MmsearchError):
    """One input file could not be read or decoded. Recorded per file; never aborts a run."""

    exit_code = 1


class IndexInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``Engine.index``: everything committed so far is kept; ``report`` says how far it got.

    A ``KeyboardInterrupt`` (not an :class:`MmsearchError`), so code that stops on Ctrl-C still stops.
    """

    def __init__(self, report) -> None:  # report: mmsearch.types.IndexReport
        super().__init__("interrupted")
        self.report = report
