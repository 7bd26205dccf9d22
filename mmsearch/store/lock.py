"""One writer per store: a lock file, and a small record of who holds it (read by the error and by doctor)."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from mmsearch.errors import StoreLockedError
from mmsearch.types import DoctorCheck

LOCK_NAME = "writer.lock"
HOLDER_NAME = LOCK_NAME + ".json"


def read_holder(root: Path) -> dict[str, Any] | None:
    """The lock holder's record: None when there is none; ``{"unreadable": True, …}`` when it is garbled."""
    try:
        return json.loads((root / HOLDER_NAME).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"pid": None, "host": None, "what": "?", "since": None, "unreadable": True}


def describe(holder: dict[str, Any]) -> str:
    return f"pid {holder.get('pid')} on {holder.get('host')} ({holder.get('what')})"


@contextmanager
def writer_lock(root: Path, what: str = "write") -> Iterator[None]:
    """Hold the store's writer lock for the block. Readers never take it."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(root / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        holder = read_holder(root)
        if holder and not holder.get("unreadable"):
            since = time.ctime(holder["since"]) if holder.get("since") else "?"
            who = describe(holder).removesuffix(")") + f", since {since})"
        else:
            who = "another process"
        raise StoreLockedError(f"store is being written by {who}", path=str(root),
                               hint="wait for it to finish, or stop it") from None
    holder_file = root / HOLDER_NAME
    try:
        holder_file.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": what,
                                           "since": time.time(), "argv": sys.argv[:6]}))
        yield
    finally:
        holder_file.unlink(missing_ok=True)
        lock.release()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_holder(holder: dict[str, Any] | None, *, repairing: bool) -> DoctorCheck:
    """Doctor's ``lock`` finding for a holder record read *before* taking the lock (``repairing``: we hold it now)."""
    if holder is None:
        return DoctorCheck("lock", "ok", "no writer")
    who = describe(holder)
    if repairing:  # we hold the lock, so whoever wrote the record is gone; taking the lock replaced it
        return DoctorCheck("lock", "repaired", f"stale lock record of {who}, a writer that did not finish: cleared")
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        if _pid_alive(holder["pid"]):
            since = time.ctime(holder["since"]) if holder.get("since") else "?"
            return DoctorCheck("lock", "note", f"{who} is writing since {since}: what follows may show work in progress")
        return DoctorCheck("lock", "note", f"stale lock record of {who}, a writer that did not finish "
                                           "(harmless: the next writer replaces it)")
    return DoctorCheck("lock", "note", f"lock record of {who}: cannot tell from here whether it still runs")
