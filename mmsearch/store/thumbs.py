"""What the server needs from a store to serve files: the thumbnails folder, and an indexed content's
identity (its sha256 and the files the index saw, with the size and mtime recorded for each).

A separate module (not a :class:`~mmsearch.store.store.Store` method) so that only the server imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from mmsearch.store.schema import Content, Source

if TYPE_CHECKING:  # pragma: no cover
    from mmsearch.store.store import Store

FOLDER = "thumbs"  # <store>/thumbs/: a cache, safe to delete at any time


@dataclass(frozen=True)
class IndexedFile:
    """A file as the index saw it: a followed path, and the size and mtime it had then."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Identity:
    content_id: int
    sha256: str
    modality: str
    files: tuple[IndexedFile, ...]  # in path order; none for an added text


def folder(store: "Store") -> Path:
    """``<store>/thumbs``: where generated thumbnails are cached (not created here)."""
    return store.root / FOLDER


def identity(store: "Store", content_id: int) -> Identity | None:
    """The sha256, modality and indexed files of content ``content_id`` (None: no such content)."""
    with store.db.read() as s:
        row = s.execute(select(Content.sha256, Content.modality).where(Content.id == content_id)).first()
        if row is None:
            return None
        files = s.execute(select(Source.uri, Source.size, Source.mtime_ns)
                          .where(Source.content_id == content_id, Source.kind == "file")
                          .order_by(Source.uri)).all()
    return Identity(content_id, row[0], row[1], tuple(IndexedFile(u, int(z), int(m)) for u, z, m in files))
