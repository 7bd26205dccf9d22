"""The database: SQLAlchemy engines, transactions, the generation counter, schema and migrations.

Reads run in a deferred transaction (a WAL snapshot); writes run in ``BEGIN IMMEDIATE`` and bump the
store *generation* once per transaction, so an index file can record exactly which state it reflects.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from sqlalchemy import create_engine, event, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session

from mmsearch.errors import StoreError
from mmsearch.store.safety import db_error, is_storage_error
from mmsearch.store.schema import SCHEMA_VERSION, Base, Meta


def _to_v2(conn) -> None:
    """Version 2: sounds. Contents gain duration, sample rate, channels and an info JSON; segments appear."""
    from mmsearch.store.schema import Segment

    for column, kind in (("duration", "FLOAT"), ("sample_rate", "INTEGER"), ("channels", "INTEGER"), ("info", "TEXT")):
        conn.exec_driver_sql(f"ALTER TABLE contents ADD COLUMN {column} {kind}")
    Segment.__table__.create(conn)


#: Columns schema 3 adds to ``contents`` (photo metadata; see :class:`mmsearch.store.schema.Content`).
V3_COLUMNS = (("taken_at", "VARCHAR(19)"), ("taken_offset", "VARCHAR(6)"), ("camera_make", "TEXT"),
              ("camera_model", "TEXT"), ("gps_lat", "FLOAT"), ("gps_lon", "FLOAT"), ("orientation", "INTEGER"),
              ("meta_version", "INTEGER"))


def _to_v3(conn) -> None:
    """Version 3: photo metadata. Contents gain nullable EXIF columns; what was indexed before has
    ``meta_version`` NULL, and the next ``index`` of its folder reads its metadata (no model, no decode)."""
    have = {r[1] for r in conn.exec_driver_sql("PRAGMA table_info(contents)")}
    for column, kind in V3_COLUMNS:
        if column not in have:  # (a store made by this version and taken back to an older one by hand has them)
            conn.exec_driver_sql(f"ALTER TABLE contents ADD COLUMN {column} {kind}")


#: schema version → the step that brings a store of the version before up to it (run in the
#: transaction that records the new version).
MIGRATIONS: dict[int, Callable[[object], None]] = {2: _to_v2, 3: _to_v3}


def _fold(value):
    return value.casefold() if isinstance(value, str) else value


def _make_engine(db: Path, begin: str) -> SAEngine:
    engine = create_engine(f"sqlite:///{db}", connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record) -> None:  # pragma: no cover - exercised implicitly
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (SQLAlchemy's pysqlite recipe)
        cur = dbapi_conn.cursor()
        for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL", "busy_timeout=30000"):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()
        # SQLite's lower() and LIKE fold ASCII only: text filters ("make~ü") compare Python's casefold
        dbapi_conn.create_function("mm_fold", 1, _fold, deterministic=True)

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:  # pragma: no cover
        conn.exec_driver_sql(begin)

    return engine


@contextmanager
def _storage_errors(path: Path) -> Iterator[None]:
    """A storage failure inside becomes one clear StoreError (statement bugs pass through)."""
    try:
        yield
    except DatabaseError as exc:
        if is_storage_error(exc):
            raise db_error(exc, str(path)) from exc
        raise


class Database:
    """One SQLite file. ``reader``/``writer`` are the SQLAlchemy engines (public: tests and tools hook them)."""

    def __init__(self, path: Path, *, create: bool) -> None:
        self.path = path
        self._local = threading.local()
        self.reader = _make_engine(path, "BEGIN")
        self.writer = _make_engine(path, "BEGIN IMMEDIATE")
        try:
            self._init_schema(create)
        except OperationalError as exc:
            raise StoreError(f"cannot open database: {exc.orig}", path=str(path)) from exc
        except DatabaseError as exc:  # e.g. "file is not a database": a damaged or foreign file
            raise db_error(exc, str(path)) from exc

    def close(self) -> None:
        self.reader.dispose()
        self.writer.dispose()

    # ---- schema ------------------------------------------------------------------------------
    def _init_schema(self, create: bool) -> None:
        # Look first with a plain read: opening a current store never waits for a writer or needs write access.
        with self.reader.connect() as conn:
            if _version(conn) == SCHEMA_VERSION:
                return
        with self.writer.begin() as conn:
            tables = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'")}
            if "meta" not in tables:
                if not create and tables:
                    raise StoreError("not an mmsearch database", path=str(self.path))
                Base.metadata.create_all(conn)
                conn.execute(sqlite_insert(Meta), [
                    {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                    {"key": "generation", "value": "0"},
                    {"key": "created_at", "value": str(time.time())},
                ])
                return
            version = _version(conn) or 0
            if version > SCHEMA_VERSION:
                raise StoreError(f"store has schema version {version}, this mmsearch knows up to {SCHEMA_VERSION}",
                                 path=str(self.path), hint="upgrade mmsearch")
            for step in range(version + 1, SCHEMA_VERSION + 1):  # each step commits with its record
                MIGRATIONS[step](conn)
                conn.execute(Meta.__table__.update().where(Meta.key == "schema_version").values(value=str(step)))

    # ---- transactions --------------------------------------------------------------------------
    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session over one consistent snapshot (reused inside :meth:`snapshot`)."""
        current = getattr(self._local, "session", None)
        if current is not None:
            yield current
            return
        with _storage_errors(self.path), Session(self.reader, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Make every read in this block (this thread) see one and the same committed state."""
        if getattr(self._local, "session", None) is not None:
            yield
            return
        with _storage_errors(self.path), Session(self.reader, expire_on_commit=False) as session, session.begin():
            self._local.session = session
            try:
                yield
            finally:
                self._local.session = None

    @contextmanager
    def write(self) -> Iterator[tuple[Session, int]]:
        """A write transaction; yields the session and the new generation it commits as.

        A disk-full, damaged-file or I/O error rolls it back (nothing half-written) and is raised as
        one clear :class:`StoreError`.
        """
        with _storage_errors(self.path), Session(self.writer, expire_on_commit=False) as session, session.begin():
            gen = int(session.execute(select(Meta.value).where(Meta.key == "generation")).scalar_one()) + 1
            session.execute(Meta.__table__.update().where(Meta.key == "generation").values(value=str(gen)))
            yield session, gen

    def generation(self) -> int:
        with self.read() as s:
            return int(s.execute(select(Meta.value).where(Meta.key == "generation")).scalar_one())

    # ---- checks ----------------------------------------------------------------------------------
    def integrity(self) -> tuple[list[str], list[tuple]]:
        """(``PRAGMA integrity_check`` lines, ``foreign_key_check`` rows); ``["ok"]`` and ``[]`` when sound.

        A file too damaged to run the check gives its error as the one integrity line.
        """
        try:
            with self.read() as s:
                res = [r[0] for r in s.execute(text("PRAGMA integrity_check"))]
                fk = [tuple(r) for r in s.execute(text("PRAGMA foreign_key_check"))]
        except StoreError as exc:
            cause = exc.__cause__
            return [str(getattr(cause, "orig", None) or exc)], []
        return res, fk


def _version(conn) -> int | None:
    tables = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'")}
    if "meta" not in tables:
        return None
    value = conn.execute(select(Meta.value).where(Meta.key == "schema_version")).scalar_one_or_none()
    return None if value is None else int(value)
