"""Files beside the database: atomic writes, generation-named files behind one pointer, the manifest.

A *generational* file is written under a new name (``NAME.g<generation>.<suffix>``) and then made current
by atomically replacing a small JSON pointer (``NAME.json``): the rename of the pointer is the one commit
point, so a reader sees the old generation or the new one, never half of each. Files no pointer names
are collected afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable

from mmsearch.store.safety import io_error

MANIFEST = "manifest.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, rename over ``path``, fsync the folder."""
    atomic_write_with(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_with(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` fills a temp file beside ``path``; it is fsynced and renamed over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # disk full, permissions: the old file is untouched
        raise io_error(exc, str(path)) from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in blocks (bounded memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # not supported on some platforms/filesystems
        pass


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=1) + "\n").encode())


def generation_file(folder: Path, name: str, generation: int, suffix: str) -> Path:
    """A new file for generation ``generation`` of ``name`` (the pointer names it once it is complete).

    Every save gets its own name (a random tag after the generation), so a save at the same generation
    (a rebuild, another index kind) never replaces the file the current pointer names.
    """
    import secrets

    return folder / f"{name}.g{generation}-{secrets.token_hex(4)}{suffix}"


def pointer_path(folder: Path, name: str) -> Path:
    return folder / f"{name}.json"


def read_pointer(folder: Path, name: str) -> dict[str, Any]:
    """The current pointer record. Raises FileNotFoundError when there is none, ValueError when garbled."""
    data = json.loads(pointer_path(folder, name).read_bytes())
    if not isinstance(data, dict):
        raise ValueError("pointer is not a JSON object")
    return data


def collect_generations(folder: Path, name: str, keep: str | Iterable[str] | None, suffix: str) -> list[Path]:
    """Delete the generation files of ``name`` other than ``keep`` (a file name, or the names of the
    current generation's files: an on-disk index has two), and the single ``NAME<suffix>`` file of stores
    made before generations; returns what went.

    A reader that opened an old generation keeps its open file or mapping (POSIX unlink semantics).
    """
    kept = {keep} if isinstance(keep, str) else set(keep or ())
    gone = []
    for p in [*folder.glob(f"{name}.g*"), folder / f"{name}{suffix}"]:
        if not p.exists():
            continue
        if p.name not in kept and not p.name.startswith("."):
            try:
                p.unlink()
                gone.append(p)
            except OSError:  # held open on a platform that forbids deleting it: collected next time
                pass
    return gone


def temp_files(folder: Path) -> list[Path]:
    """Temp files an interrupted :func:`atomic_write_bytes` left behind."""
    return sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
