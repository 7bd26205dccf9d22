"""The database: SQLAlchemy engines, transactions, the generation counter; the schema through
:mod:`~mmsearch.store.migrate`.

Two backends, one set of models: SQLite (the embedded default: one file in the store's folder) and
PostgreSQL (a SQLAlchemy URL: one server holds what several machines share). On SQLite reads run in a
deferred transaction (a WAL snapshot) and writes in ``BEGIN IMMEDIATE``; on PostgreSQL reads run in a
read-only ``REPEATABLE READ`` transaction (one snapshot; MVCC: readers never block the writer) and writes
in ``READ COMMITTED``. Each write bumps the store *generation* once per transaction (on PostgreSQL that
row's lock also orders two writers), so an index file can record exactly which state it reflects.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import create_engine, event, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session

from mmsearch.errors import StoreError, StoreLockedError
from mmsearch.store import migrate
from mmsearch.store.safety import db_error, is_storage_error
from mmsearch.store.schema import SCHEMA_VERSION, Meta

#: The SQLAlchemy dialects a store's database may be (``--db``); others are refused by name.
BACKENDS = ("sqlite", "postgresql")
#: Key of the PostgreSQL advisory lock the one writer holds (:meth:`Database.exclusive`).
WRITER_LOCK = 0x6D6D_7301


def _fold(value):
    return value.casefold() if isinstance(value, str) else value


def insert_for(s: Session | Connection, model):
    """An INSERT of ``model`` in the dialect of ``s`` (both have ``on_conflict_do_nothing/update``)."""
    if (s.get_bind() if isinstance(s, Session) else s).dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(model)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(model)


def _make_engine(url: str, begin: str) -> SAEngine:
    if make_url(url).get_backend_name() == "postgresql":
        return _postgres_engine(url, read=begin == "BEGIN")
    engine = create_engine(url, connect_args={"timeout": 30})

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


def _postgres_engine(url: str, *, read: bool) -> SAEngine:
    # prepare_threshold None: no server-side prepared statements, whose generic plan, made while a table was
    # small, goes on scanning it whole once it is large (a 40,000-row store's batch lookups took 300 ms each)
    engine = create_engine(url, pool_pre_ping=True, isolation_level="REPEATABLE READ" if read else "READ COMMITTED",
                           connect_args={"connect_timeout": 10, "application_name": "mmsearch", "prepare_threshold": None})
    return engine.execution_options(postgresql_readonly=True) if read else engine


def shown_url(url: str) -> str:
    """A database URL fit to print and to record: its password left out."""
    return make_url(url).render_as_string(hide_password=True)


_GENERATION = "SELECT value FROM meta WHERE key = 'generation'"


@contextmanager
def _storage_errors(path: str) -> Iterator[None]:
    """A storage failure inside becomes one clear StoreError (statement bugs pass through)."""
    try:
        yield
    except DatabaseError as exc:
        if is_storage_error(exc):
            raise db_error(exc, str(path)) from exc
        raise


class Database:
    """One database: a SQLite file or a PostgreSQL database, by SQLAlchemy URL. ``reader``/``writer`` are
    the SQLAlchemy engines (public: tests and tools hook them); ``path`` is what errors name (the file, or
    the URL without its password)."""

    def __init__(self, url: str, *, create: bool) -> None:
        self.url = url
        backend = make_url(url).get_backend_name()
        self.backend = backend
        self.path = shown_path(url)
        self._local = threading.local()
        self.reader = _make_engine(url, "BEGIN")
        self.writer = _make_engine(url, "BEGIN IMMEDIATE")
        try:
            self._init_schema(create)
        except OperationalError as exc:
            self.close()
            raise StoreError(f"cannot open database: {str(exc.orig).strip()}", path=str(self.path)) from exc
        except DatabaseError as exc:  # e.g. "file is not a database": a damaged or foreign file
            self.close()
            raise db_error(exc, str(self.path)) from exc
        except StoreError:
            self.close()
            raise

    def close(self) -> None:
        self.reader.dispose()
        self.writer.dispose()

    # ---- schema ------------------------------------------------------------------------------
    def _init_schema(self, create: bool) -> None:
        # Look first with a plain read: opening a current store never waits for a writer or needs write access.
        with self.reader.connect() as conn:
            if migrate.revision(conn) == migrate.HEAD and _version(conn) == SCHEMA_VERSION:
                return
        with self.writer.begin() as conn:
            migrate.upgrade(conn, create=create, where=str(self.path))

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
                # what was read here lives on (an engine caches its spaces): detach it as read, before an
                # exception's rollback would expire it and leave it unreadable outside
                session.expunge_all()
                self._local.session = None
                self._local.generation = None

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

    @contextmanager
    def exclusive(self, what: str) -> Iterator[None]:
        """The one writer of this database, across machines: on PostgreSQL a session advisory lock held by a
        connection for the block (the server frees it if this process dies), its holder recorded in ``meta``
        for the error another writer gets. On SQLite nothing: the store folder's lock file is the lock."""
        if self.backend != "postgresql":
            yield
            return
        import json
        import os
        import socket

        with _storage_errors(self.path), self.writer.connect() as conn:
            if not conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({WRITER_LOCK})").scalar_one():
                conn.rollback()
                raise _busy(conn, str(self.path))
            holder = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": what, "since": time.time()})
            conn.execute(insert_for(conn, Meta).values(key="writer", value=holder)
                         .on_conflict_do_update(index_elements=["key"], set_={"value": holder}))
            conn.commit()
            try:
                yield
            finally:  # unlock even if the record's delete fails (the lock lives as long as the pooled connection)
                conn.rollback()
                try:
                    conn.execute(Meta.__table__.delete().where(Meta.key == "writer"))
                    conn.commit()
                finally:
                    conn.rollback()
                    conn.exec_driver_sql(f"SELECT pg_advisory_unlock({WRITER_LOCK})")
                    conn.commit()

    def generation(self) -> int:
        """The store's generation (a write commits the next one); read once per :meth:`snapshot`, which
        sees one state (a search reads it for its spaces, indexes and calibration alike). Every query asks,
        so it is one statement on a pooled connection, not an ORM session (0.18 ms against 0.6 ms)."""
        session = getattr(self._local, "session", None)
        if session is not None and getattr(self._local, "generation", None) is not None:
            return self._local.generation
        with _storage_errors(self.path):
            if session is not None:
                gen = int(session.connection().exec_driver_sql(_GENERATION).scalar_one())
                self._local.generation = gen
                return gen
            with self.reader.connect() as conn:
                return int(conn.exec_driver_sql(_GENERATION).scalar_one())

    # ---- checks ----------------------------------------------------------------------------------
    def integrity(self) -> tuple[list[str], list[tuple]]:
        """(``PRAGMA integrity_check`` lines, ``foreign_key_check`` rows); ``["ok"]`` and ``[]`` when sound.

        A file too damaged to run the check gives its error as the one integrity line.
        """
        if self.backend != "sqlite":  # the server keeps its own files sound and enforces the foreign keys
            return ["ok"], []
        try:
            with self.read() as s:
                res = [r[0] for r in s.execute(text("PRAGMA integrity_check"))]
                fk = [tuple(r) for r in s.execute(text("PRAGMA foreign_key_check"))]
        except StoreError as exc:
            cause = exc.__cause__
            return [str(getattr(cause, "orig", None) or exc)], []
        return res, fk


def downgrade(url: str, target: str) -> str:
    """Take the database at ``url`` back to schema revision ``target`` (for an older release) in one write
    transaction; returns the revision it had. On PostgreSQL a writer holding the store is refused."""
    where, engine = shown_path(url), _make_engine(url, "BEGIN IMMEDIATE")
    try:
        with _storage_errors(where), engine.begin() as conn:
            if conn.dialect.name == "postgresql" and \
                    not conn.exec_driver_sql(f"SELECT pg_try_advisory_xact_lock({WRITER_LOCK})").scalar_one():
                raise _busy(conn, where)
            return migrate.downgrade(conn, target, where=where)
    finally:
        engine.dispose()


def shown_path(url: str) -> str:
    """What errors name for a database: the SQLite file, or the server's URL without its password."""
    return (make_url(url).database or "") if make_url(url).get_backend_name() == "sqlite" else shown_url(url)


def _busy(conn, where: str) -> StoreLockedError:
    """The error for a store another process holds the PostgreSQL writer lock of."""
    return StoreLockedError(f"store is being written by {_holder(conn)}", path=where,
                            hint="wait for it to finish, or stop it")


def _holder(conn) -> str:
    import json

    value = conn.execute(select(Meta.value).where(Meta.key == "writer")).scalar_one_or_none()
    try:
        h = json.loads(value)
        return f"pid {h['pid']} on {h['host']} ({h['what']}, since {time.ctime(h['since'])})"
    except (TypeError, ValueError, KeyError):
        return "another process"


def _version(conn) -> int | None:
    value = conn.execute(select(Meta.value).where(Meta.key == "schema_version")).scalar_one_or_none()
    return None if value is None else int(value)
