"""Turn low-level storage failures into one clear :class:`StoreError`.

A full disk, a damaged database file, a read-only folder or an I/O error must end a command with
one line that says what happened and that the store is intact (SQLite rolls the transaction back;
index files are replaced atomically), never with a traceback. SQLite errors are classified by their
result code (``sqlite3.Error.sqlite_errorcode``), not by the wording of the message.
"""

from __future__ import annotations

import errno
import sqlite3

from sqlalchemy.exc import DatabaseError, IntegrityError, ProgrammingError

from mmsearch.errors import StoreError

DISK_FULL_HINT = "free some disk space and run the same command again; work committed before is kept"
DAMAGED_HINT = ("restore mmsearch.sqlite3 from a backup, or salvage it with `sqlite3 mmsearch.sqlite3 .recover | "
                "sqlite3 new.sqlite3` and put new.sqlite3 in its place, or index into a new store")
_DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}

# SQLite primary result codes (https://sqlite.org/rescode.html); extended codes keep them in the low byte.
SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY, SQLITE_IOERR = 5, 6, 8, 10
SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_NOTADB = 11, 13, 14, 26


def is_storage_error(exc: BaseException) -> bool:
    """An error of the database file or disk (not a bug in a statement, not a constraint violation)."""
    return isinstance(exc, DatabaseError) and not isinstance(exc, (IntegrityError, ProgrammingError))


def sqlite_code(exc: BaseException) -> int | None:
    """The primary SQLite result code behind a SQLAlchemy or sqlite3 error, if there is one."""
    orig = getattr(exc, "orig", None) or exc
    code = getattr(orig, "sqlite_errorcode", None) if isinstance(orig, sqlite3.Error) else None
    return None if code is None else int(code) & 0xFF


def db_error(exc: BaseException, path: str) -> StoreError:
    """A clear :class:`StoreError` for an SQLite failure (``exc``: SQLAlchemy or sqlite3 error)."""
    reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    code = sqlite_code(exc)
    if code == SQLITE_FULL:
        return StoreError("disk full: the database cannot grow; this batch was not written", path=path,
                          hint=DISK_FULL_HINT)
    if code in (SQLITE_CORRUPT, SQLITE_NOTADB):
        return StoreError(f"database damaged ({reason})", path=path, hint=DAMAGED_HINT)
    if code == SQLITE_READONLY:
        return StoreError(f"store is read-only ({reason})", path=path, hint="check the folder's permissions")
    if code in (SQLITE_BUSY, SQLITE_LOCKED):
        return StoreError(f"database stayed locked by another process ({reason})", path=path,
                          hint="another program holds the database open for writing; try again")
    if code in (SQLITE_IOERR, SQLITE_CANTOPEN):
        return StoreError(f"disk I/O error ({reason})", path=path, hint="check the disk, then run `mmsearch doctor`")
    return StoreError(f"database error: {reason}", path=path)


def io_error(exc: OSError, path: str, what: str = "write") -> StoreError:
    """A clear :class:`StoreError` for a failed file write (disk full, permissions, …)."""
    if exc.errno in _DISK_FULL_ERRNOS:
        return StoreError(f"disk full: cannot {what} this file", path=path, hint=DISK_FULL_HINT)
    return StoreError(f"cannot {what}: {exc.strerror or exc}", path=path)
