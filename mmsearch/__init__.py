"""mmsearch: cross-modal vector search for photos, notes and sounds.

The public API is :class:`Engine`, its result types and the errors; nothing else is promised.
Names are imported on first use (PEP 562), so ``import mmsearch`` (and ``mmsearch --help``) loads
neither SQLAlchemy nor numpy.

The package layout is the data flow::

    ingest/ (discover → plan → decode → commit)  →  encoders/  →  store/ (SQLite, the truth)  →  ann/ (FAISS, a cache)
    query/ (encode → search → calibrate/merge)  →  present.py (CLI) / server/ (HTTP)

``engine.py`` wires these; ``cli.py`` and ``server/`` only translate. Lower layers never import higher ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Engine": "mmsearch.engine",
    "Hit": "mmsearch.types",
    "Moment": "mmsearch.types",
    "IndexReport": "mmsearch.types",
    "Stats": "mmsearch.types",
    "ErrorInfo": "mmsearch.types",
    "BatchCommitted": "mmsearch.types",
    "DoctorReport": "mmsearch.types",
    "DoctorCheck": "mmsearch.types",
    "CachedExport": "mmsearch.types",
    "IndexInterrupted": "mmsearch.errors",
    "MmsearchError": "mmsearch.errors",
    "UsageError": "mmsearch.errors",
    "StoreError": "mmsearch.errors",
    "StoreLockedError": "mmsearch.errors",
    "ModelError": "mmsearch.errors",
    "DecodeError": "mmsearch.errors",
}
__all__ = list(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from mmsearch.engine import Engine
    from mmsearch.errors import (DecodeError, IndexInterrupted, MmsearchError, ModelError, StoreError,
                                 StoreLockedError, UsageError)
    from mmsearch.types import (BatchCommitted, CachedExport, DoctorCheck, DoctorReport, ErrorInfo, Hit, IndexReport,
                                Moment, Stats)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mmsearch' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
