"""How `mmsearch query` finds a running `mmsearch serve`: a small JSON file in the store folder.

Standard library only (the query client imports this; it must stay light).

``<store>/server.json``, written by the server once it listens and removed when it stops::

    {"url": "http://127.0.0.1:8765", "pid": 4242, "started_at": 1760000000.0, "store": "/abs/store",
     "version": "0.1.0", "protocol": 1, "model": null, "device": null, "runtime": null,
     "precision": null, "token": "…"}

``protocol`` is :data:`PROTOCOL`, the version of the ``/api/query`` exchange (a client ignores a
server that speaks another); ``version`` (the server's mmsearch) is for people.

It is written atomically (a temp file, then a rename) with mode 0600, because the ``token``
authenticates the CLI's requests (header :data:`TOKEN_HEADER`). A server removes the file on
shutdown only while it is still its own (same pid and token): a second server on the same store
replaces it, and the first one leaves the second's file alone. A file left by a killed server is
harmless: :func:`read` ignores it when its process is gone, and a client that cannot connect falls back.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

FILE_NAME = "server.json"
TOKEN_HEADER = "X-Mmsearch-Token"
QUERY_PATH = "/api/query"  # the CLI's endpoint (token required)
MAX_UPLOAD_BYTES = 50 << 20  # a query image; larger uploads are refused with 413
#: settings that change a query's vector: a client whose settings differ searches in-process
ENCODER_SETTINGS = ("device", "runtime", "precision")
PROTOCOL = 4  # bump when /api/query's request or answer changes incompatibly
#: protocols a client speaks: 3 added several ``q``, ``where``, ``since``, ``until``, ``path`` and
#: ``collapse_dups``; 4 added ``moments`` and ``pooling`` (and ``type=video``, whose hits carry their
#: ``moments``). An older server ignores what came later, so it is asked only queries without it
UNDERSTOOD = (2, 3, 4)
_MAX_FILE = 64 << 10
_FIELDS = {"url": str, "pid": int, "token": str, "store": str, "protocol": int}


def path_of(store_root: str | os.PathLike) -> Path:
    return Path(store_root) / FILE_NAME


def write(store_root: str | os.PathLike, info: dict[str, Any]) -> Path:
    """Write ``info`` as the store's server file, atomically and readable by the owner only."""
    final = path_of(store_root)
    tmp = final.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), 0o600)  # a temp file left with looser bits by someone else
            json.dump(info, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return final


def _load(store_root: str | os.PathLike) -> dict[str, Any] | None:
    """The file's content if it is a small regular file of ours, private, with the expected fields."""
    try:
        fd = os.open(path_of(store_root), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_FILE:
            return None
        if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & 0o077):
            return None  # planted by someone else, or readable by others: not a server to send a token to
        data = json.loads(os.read(fd, _MAX_FILE + 1).decode("utf-8"))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    if not isinstance(data, dict) or any(not isinstance(data.get(k), t) for k, t in _FIELDS.items()):
        return None
    return data


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) is not a probe on Windows: let the connection decide
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user took the pid: not our server
        return False
    except OSError:
        return False
    return True


def read(store_root: str | os.PathLike) -> dict[str, Any] | None:
    """The running server of this store, or None (no file, not ours, malformed, or its process is gone)."""
    info = _load(store_root)
    if info is None or not pid_alive(info["pid"]):
        return None
    return info


def remove_if_ours(store_root: str | os.PathLike, *, pid: int, token: str) -> bool:
    """Remove the server file if it is still the one this server wrote (same pid and token)."""
    info = _load(store_root)
    if info is None or info.get("pid") != pid or info.get("token") != token:
        return False
    try:
        os.unlink(path_of(store_root))
    except OSError:
        return False
    return True
