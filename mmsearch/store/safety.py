"""Turn low-level storage failures into one clear :class:`StoreError`.

A full disk, a damaged database file, a read-only folder or an I/O error must end a command with
one line that says what happened and that the store is intact (SQLite rolls the transaction back;
index files are replaced atomically), never with a traceback.
"""

from __future__ import annotations

import errno

from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError, ProgrammingError

from mmsearch.errors import StoreError

DISK_FULL_HINT = "free some disk space and run the same command again; work committed before is kept"
DAMAGED_HINT = ("restore mmsearch.sqlite3 from a backup, or salvage it with `sqlite3 mmsearch.sqlite3 .recover | "
                "sqlite3 new.sqlite3` and put new.sqlite3 in its place, or index into a new store")
_DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def is_storage_error(exc: BaseException) -> bool:
    """An error of the database file or disk (not a bug in a statement, not a constraint violation)."""
    return isinstance(exc, DatabaseError) and not isinstance(exc, (IntegrityError, ProgrammingError))


def db_error(exc: BaseException, path: str) -> StoreError:
    """A clear :class:`StoreError` for an SQLite failure (``exc``: SQLAlchemy or sqlite3 error)."""
    reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    low = reason.lower()
    if "disk is full" in low or "database or disk is full" in low:
        return StoreError("disk full: the database cannot grow; this batch was not written", path=path,
                          hint=DISK_FULL_HINT)
    if "malformed" in low or "not a database" in low or "corrupt" in low:
        return StoreError(f"database damaged ({reason})", path=path, hint=DAMAGED_HINT)
    if "readonly" in low or "read-only" in low:
        return StoreError(f"store is read-only ({reason})", path=path, hint="check the folder's permissions")
    if "locked" in low or "busy" in low:
        return StoreError(f"database stayed locked by another process ({reason})", path=path,
                          hint="another program holds the database open for writing; try again")
    if isinstance(exc, OperationalError) and "i/o" in low:
        return StoreError(f"disk I/O error ({reason})", path=path, hint="check the disk, then run `mmsearch doctor`")
    return StoreError(f"database error: {reason}", path=path)


def io_error(exc: OSError, path: str, what: str = "write") -> StoreError:
    """A clear :class:`StoreError` for a failed file write (disk full, permissions, …)."""
    if exc.errno in _DISK_FULL_ERRNOS:
        return StoreError(f"disk full: cannot {what} this file", path=path, hint=DISK_FULL_HINT)
    return StoreError(f"cannot {what}: {exc.strerror or exc}", path=path)
