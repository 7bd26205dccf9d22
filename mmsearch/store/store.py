"""One store = one directory: ``mmsearch.sqlite3`` (the truth), ``ann/`` (FAISS caches), ``manifest.json``.

Or, for metadata several machines share, the truth in a PostgreSQL database (``Store(root, db=URL)``,
``mmsearch index --db postgresql+psycopg://…``): the directory then keeps this machine's FAISS caches and
``database.json``, which binds it to that database (the URL without its password: libpq's ``PGPASSWORD`` or
``~/.pgpass``, or the URL given again, supply it), so later commands on the folder need no ``--db`` and a
folder's caches never meet another database's ids.

:class:`Store` joins the parts: :mod:`~mmsearch.store.session` (engines, transactions, schema),
:mod:`~mmsearch.store.read`, :mod:`~mmsearch.store.write`, :mod:`~mmsearch.store.lock` (one writer),
:mod:`~mmsearch.store.files` (atomic files, generations, manifest) and :mod:`~mmsearch.store.checks`
(what doctor asks of it).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import json

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from mmsearch.errors import StoreError, UsageError
from mmsearch.store.checks import Checks
from mmsearch.store.files import MANIFEST, write_json
from mmsearch.store.lock import writer_lock
from mmsearch.store.moments import MomentReads
from mmsearch.store.read import ContentMeta, SourceState
from mmsearch.store.schema import SCHEMA_VERSION
from mmsearch.store.session import BACKENDS, Database, shown_url
from mmsearch.store.session import downgrade as downgrade_database
from mmsearch.store.write import ApplyResult, Upsert, Writes
from mmsearch.util import folder_size

DB_NAME = "mmsearch.sqlite3"
DB_RECORD = "database.json"  # a store folder bound to a database server (see the module's text)
__all__ = ["Store", "Upsert", "ApplyResult", "ContentMeta", "SourceState", "DB_NAME", "MANIFEST"]


class Store(MomentReads, Writes, Checks):
    """The database half of a store. Thread-compatible; use one per process."""

    def __init__(self, root: Path, *, create: bool = False, db: str | None = None) -> None:
        self.root = Path(root).expanduser().absolute()
        self._held = {}
        url = _bound(self.root, db)
        self.db_path = None if url else self.root / DB_NAME  # the SQLite file; None on a database server
        if url:
            self.db = Database(url, create=create)
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                if db:
                    write_json(self.root / DB_RECORD, {"url": _without_password(db)})
            except OSError as exc:
                self.db.close()
                raise StoreError(f"cannot create store directory: {exc.strerror}", path=str(self.root)) from exc
            return
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
        self.db = Database(f"sqlite:///{self.db_path}", create=create)

    @property
    def database(self) -> str:
        """Where the truth is, fit to print: the SQLite file, or the server's URL without its password."""
        return str(self.db.path)

    def close(self) -> None:
        self.db.close()

    def snapshot(self):
        """Every read in the block sees one committed state (see :meth:`Database.snapshot`)."""
        return self.db.snapshot()

    @contextmanager
    def writer_lock(self, what: str = "write") -> Iterator[None]:
        """One writer per store (raises :class:`StoreLockedError` naming the holder). Readers never take it."""
        with writer_lock(self.root, what), self.db.exclusive(what):
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
            "database": DB_NAME if self.db_path else self.database,
            "spaces": [{"id": sp.id, "key": sp.key, "spec": sp.spec, "dim": sp.dim, "metric": sp.metric,
                        "modalities": sp.modalities.split(","), "preprocess_version": sp.preprocess_version}
                       for sp in self.spaces()],
        })


def downgrade(root: Path, target: str, *, db: str | None = None) -> str:
    """Take the store at ``root`` back to schema revision ``target``, for an older release of mmsearch,
    holding its writer lock; returns the revision it had (this release upgrades it again on opening it)."""
    root = Path(root).expanduser().absolute()
    url = _bound(root, db)
    if url is None and not (root / DB_NAME).exists():
        raise StoreError("no mmsearch store here", path=str(root), hint="pass --store")
    url = url or f"sqlite:///{root / DB_NAME}"
    with writer_lock(root, "downgrade"):
        return downgrade_database(url, target)


def _bound(root: Path, db: str | None) -> str | None:
    """The database URL of the store at ``root`` (``db`` when given), None for its own SQLite file.

    A folder holds one store: ``db`` naming another database than the folder is bound to, or a server for a
    folder with a SQLite store, is refused (its caches hold the other database's ids).
    """
    recorded = None
    try:
        recorded = json.loads((root / DB_RECORD).read_text(encoding="utf-8"))["url"]
    except (FileNotFoundError, NotADirectoryError):  # no record (or no folder: the checks below say so)
        pass
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"unreadable {DB_RECORD}: {exc}", path=str(root),
                         hint="it names the store's database server: fix it, or pass --db URL again") from exc
    if db is None:
        return recorded
    try:
        backend = make_url(db).get_backend_name()
    except ArgumentError as exc:
        raise UsageError(f"--db {_shown(db)}: not a database URL (e.g. postgresql+psycopg://user@host/db)") from exc
    if backend not in BACKENDS:
        raise UsageError(f"--db {_shown(db)}: {backend} is not supported (expected one of {', '.join(BACKENDS)})")
    if backend == "sqlite":
        raise UsageError(f"--db {_shown(db)}: a SQLite store is its folder's own mmsearch.sqlite3; "
                         "pass --store FOLDER instead")
    if recorded is not None and shown_url(recorded) != shown_url(_without_password(db)):
        raise StoreError(f"store folder is bound to {shown_url(recorded)}, not {shown_url(db)}", path=str(root),
                         hint="use another --store folder for another database")
    if recorded is None and (root / DB_NAME).exists():
        raise StoreError("store folder holds a SQLite store; a database server's store needs a folder of its own",
                         path=str(root), hint="pass another --store folder with --db")
    return db


def _without_password(url: str) -> str:
    return make_url(url)._replace(password=None).render_as_string(hide_password=False)  # (URL is a named tuple)


def _shown(url: str) -> str:
    """``url`` without its password where it parses; else as given (then it is no URL)."""
    try:
        return shown_url(url)
    except ArgumentError:
        return url
