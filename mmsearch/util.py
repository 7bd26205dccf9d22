"""Small helpers every layer shares (imports nothing of mmsearch): batching and "is this path under that folder"."""

from __future__ import annotations

import os
from typing import Iterable, Iterator, Sequence, TypeVar

#: Segments a video keeps per space (its moment ids are ``content_id * MOMENT_SLOTS + idx``; see
#: :data:`mmsearch.store.schema.MOMENT`): here so the light decode workers know it without the store.
MOMENT_SLOTS = 4096

T = TypeVar("T")

#: Keeps SQL ``IN (...)`` lists well under SQLite's variable limit.
IN_CHUNK = 500


def chunks(seq: Sequence[T], n: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``n`` items of a sequence."""
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def batched(items: Iterable[T], n: int) -> Iterator[list[T]]:
    """Lists of at most ``n`` items from any iterable (a stream), in order."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def under_bounds(root: str) -> tuple[str, str]:
    """``(low, high)``: a path strictly below ``root`` sorts in ``low <= path < high`` (an index range, no LIKE)."""
    prefix = root.rstrip(os.sep) + os.sep
    return prefix, prefix[:-1] + chr(ord(os.sep) + 1)


def is_under(path: str, root: str) -> bool:
    """``path`` is ``root`` or below it (both absolute, as stored)."""
    low, high = under_bounds(root)
    return path == root or low <= path < high


def under_any(path: str, roots: Iterable[str]) -> bool:
    return any(is_under(path, r) for r in roots)


def folder_size(folder: "os.PathLike[str] | str") -> int:
    """Bytes the files below ``folder`` take (a file renamed or removed mid-walk counts as nothing)."""
    from pathlib import Path

    size = 0
    for f in Path(folder).rglob("*"):
        try:
            size += f.stat().st_size if f.is_file() else 0
        except OSError:
            pass
    return size
