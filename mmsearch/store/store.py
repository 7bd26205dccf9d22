"""One store = one directory: ``mmsearch.sqlite3`` (the truth), ``ann/`` (FAISS caches), ``manifest.json``.

:class:`Store` joins the parts: :mod:`~mmsearch.store.session` (engines, transactions, schema),
:mod:`~mmsearch.store.read`, :mod:`~mmsearch.store.write`, :mod:`~mmsearch.store.lock` (one writer),
:mod:`~mmsearch.store.files` (atomic files, generations, manifest) and :mod:`~mmsearch.store.checks`
(what doctor asks of it).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from mmsearch.errors import StoreError
from mmsearch.store.checks import Checks
from mmsearch.store.files import MANIFEST, write_json
from mmsearch.store.lock import writer_lock
from mmsearch.store.moments import MomentReads
from mmsearch.store.read import ContentMeta, SourceState
from mmsearch.store.schema import SCHEMA_VERSION
from mmsearch.store.session import Database
from mmsearch.store.write import ApplyResult, Upsert, Writes
from mmsearch.util import folder_size

DB_NAME = "mmsearch.sqlite3"
__all__ = ["Store", "Upsert", "ApplyResult", "ContentMeta", "SourceState", "DB_NAME", "MANIFEST"]


class Store(MomentReads, Writes, Checks):
    """The database half of a store. Thread-compatible; use one per process."""

    def __init__(self, root: Path, *, create: bool = False) -> None:
        self.root = Path(root).expanduser().absolute()
        self.db_path = self.root / DB_NAME
        if not self.db_path.exists():
            if not create:
                raise StoreError("no mmsearch store here", path=str(self.root),
                                 hint="run `mmsearch index PATH` first, or pass --store")
            if self.root.exists() and not self.root.is_dir():
                raise StoreError("store path exists and is not a directory", path=str(self.root))
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create store directory: {exc.strerror}", path=str(self.root)) from exc
        self.db = Database(self.db_path, create=create)

    def close(self) -> None:
        self.db.close()

    def snapshot(self):
        """Every read in the block sees one committed state (see :meth:`Database.snapshot`)."""
        return self.db.snapshot()

    @contextmanager
    def writer_lock(self, what: str = "write") -> Iterator[None]:
        """One writer per store (raises :class:`StoreLockedError` naming the holder). Readers never take it."""
        with writer_lock(self.root, what):
            yield

    def integrity_problems(self) -> list[str]:
        """Every problem of the database file itself, as lines (empty when sound)."""
        res, fk = self.db.integrity()
        problems = [] if res == ["ok"] else [f"sqlite integrity: {r}" for r in res]
        problems += [f"foreign key: {r}" for r in fk]
        orphans = self.orphan_contents()
        return problems + ([f"{len(orphans)} contents with no source"] if orphans else [])

    def disk_usage(self) -> int:
        """Bytes the store's files take (database, WAL, index files)."""
        return folder_size(self.root)  # a writer's temp file renamed away mid-walk counts as nothing

    def write_manifest(self) -> None:
        """``manifest.json``: what the store holds, for people and tools (nothing depends on it: a cold
        query reads it only as a hint of which model to start loading early)."""
        write_json(self.root / MANIFEST, {
            "format": "mmsearch-store",
            "schema_version": SCHEMA_VERSION,
            "generation": self.generation(),
            "database": DB_NAME,
            "spaces": [{"id": sp.id, "key": sp.key, "spec": sp.spec, "dim": sp.dim, "metric": sp.metric,
                        "modalities": sp.modalities.split(","), "preprocess_version": sp.preprocess_version}
                       for sp in self.spaces()],
        })
