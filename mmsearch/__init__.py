"""mmsearch: cross-modal vector search for photos, notes and sounds.

The public API is :class:`Engine`, its result types and the errors; nothing else is promised.
"""

from mmsearch.engine import Engine
from mmsearch.errors import DecodeError, MmsearchError, ModelError, StoreError, StoreLockedError, UsageError
from mmsearch.ingest.sync import IndexInterrupted
from mmsearch.types import BatchCommitted, DoctorCheck, DoctorReport, ErrorInfo, Hit, IndexReport, Stats

__all__ = [
    "Engine", "Hit", "IndexReport", "Stats", "ErrorInfo", "IndexInterrupted", "BatchCommitted", "DoctorReport",
    "DoctorCheck",
    "MmsearchError", "UsageError", "StoreError", "StoreLockedError", "ModelError", "DecodeError",
]
__version__ = "0.1.0"
