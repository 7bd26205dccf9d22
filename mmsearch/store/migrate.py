"""Schema migrations, for SQLite and PostgreSQL alike: Alembic revisions in ``mmsearch/store/migrations``.

A store opens at the schema of this mmsearch: a new database is created by the revisions, a store of an
older revision is upgraded in place (in one transaction of the writer, which on PostgreSQL also holds an
advisory lock, so two machines opening an old store at once migrate it once). Stores made before Alembic
(``meta.schema_version`` 1 to 3 and no ``alembic_version`` table) are brought to schema 3 by the
:data:`LEGACY` steps and stamped with revision ``0001``, which is schema 3.

Opening a store at the current revision is one ``SELECT`` and imports no Alembic (:func:`revision` against
:data:`REVISIONS`); Alembic is loaded only when there is something to do.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from sqlalchemy import inspect, select
from sqlalchemy.engine import Connection

from mmsearch.errors import StoreError, UsageError
from mmsearch.store.schema import SCHEMA_VERSION, Meta

SCRIPTS = Path(__file__).resolve().parent / "migrations"
#: Every revision, oldest first (a test checks this against the scripts); the last is the one a store opens at.
REVISIONS = ("0001", "0002")
HEAD = REVISIONS[-1]
#: Key of the PostgreSQL advisory lock a migration holds (and :mod:`mmsearch.store.lock`'s writer lock + 1).
MIGRATION_LOCK = 0x6D6D_7300


def _to_v2(conn: Connection) -> None:
    """Version 2: sounds. Contents gain duration, sample rate, channels and an info JSON; segments appear."""
    from mmsearch.store.schema import Segment

    for column, kind in (("duration", "FLOAT"), ("sample_rate", "INTEGER"), ("channels", "INTEGER"), ("info", "TEXT")):
        conn.exec_driver_sql(f"ALTER TABLE contents ADD COLUMN {column} {kind}")
    Segment.__table__.create(conn)


#: Columns schema 3 adds to ``contents`` (photo metadata; see :class:`mmsearch.store.schema.Content`).
V3_COLUMNS = (("taken_at", "VARCHAR(19)"), ("taken_offset", "VARCHAR(6)"), ("camera_make", "TEXT"),
              ("camera_model", "TEXT"), ("gps_lat", "FLOAT"), ("gps_lon", "FLOAT"), ("orientation", "INTEGER"),
              ("meta_version", "INTEGER"))


def _to_v3(conn: Connection) -> None:
    """Version 3: photo metadata. Contents gain nullable EXIF columns; what was indexed before has
    ``meta_version`` NULL, and the next ``index`` of its folder reads its metadata (no model, no decode)."""
    have = {r[1] for r in conn.exec_driver_sql("PRAGMA table_info(contents)")}
    for column, kind in V3_COLUMNS:
        if column not in have:  # (a store made by this version and taken back to an older one by hand has them)
            conn.exec_driver_sql(f"ALTER TABLE contents ADD COLUMN {column} {kind}")


#: Pre-Alembic schema version → the step that brings a SQLite store of the version before up to it.
LEGACY: dict[int, Callable[[Connection], None]] = {2: _to_v2, 3: _to_v3}


def revision(conn: Connection) -> str | None:
    """The store's Alembic revision; None when it has none yet (a new database, or a store from before Alembic)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one_or_none()


def upgrade(conn: Connection, *, create: bool, where: str) -> None:
    """Bring the database on ``conn`` (in a write transaction) to :data:`HEAD`, creating it when ``create``."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
    tables = set(inspect(conn).get_table_names())
    if "meta" not in tables:
        if tables - {"alembic_version"} or not create:
            raise StoreError("not an mmsearch database" if tables else "no mmsearch store in this database",
                             path=where, hint=None if tables else "run `mmsearch index PATH` with it first")
        _alembic(conn, "upgrade", HEAD)
        conn.execute(Meta.__table__.insert(), [
            {"key": "schema_version", "value": str(SCHEMA_VERSION)},
            {"key": "generation", "value": "0"},
            {"key": "created_at", "value": str(time.time())},
        ])
        return
    found = revision(conn)
    version = int(conn.execute(select(Meta.value).where(Meta.key == "schema_version")).scalar_one_or_none() or 0)
    if version > SCHEMA_VERSION:
        raise StoreError(f"store has schema version {version}, this mmsearch knows up to {SCHEMA_VERSION}",
                         path=where, hint="upgrade mmsearch")
    if found is None:  # a SQLite store from before Alembic
        for step in range(version + 1, 4):
            LEGACY[step](conn)
        conn.execute(Meta.__table__.update().where(Meta.key == "schema_version").values(value="3"))
        _alembic(conn, "stamp", "0001")
    elif found not in REVISIONS:
        raise _unknown(found, where, "upgrade mmsearch")
    if found != HEAD:
        _alembic(conn, "upgrade", HEAD)
        conn.execute(Meta.__table__.update().where(Meta.key == "schema_version").values(value=str(SCHEMA_VERSION)))


def downgrade(conn: Connection, target: str, *, where: str) -> str:
    """Take the database on ``conn`` (in a write transaction) back to revision ``target``, for an older
    release of mmsearch; returns the revision it had. This release upgrades it again when it next opens it."""
    if target not in REVISIONS:
        raise UsageError(f"revision {target!r}: not one this mmsearch knows (known: {', '.join(REVISIONS)})")
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
    found = revision(conn)
    if found not in REVISIONS:
        raise _unknown(found, where, "use the mmsearch release that made it")
    if REVISIONS.index(target) > REVISIONS.index(found):
        raise UsageError(f"revision {target!r}: the store is at {found}, older; opening it with this mmsearch "
                         "upgrades it")
    if target != found:
        _alembic(conn, "downgrade", target)
    return found


def _unknown(found: str | None, where: str, hint: str) -> StoreError:
    return StoreError(f"store has schema revision {found}, this mmsearch knows up to {HEAD}", path=where, hint=hint)


def _alembic(conn: Connection, what: str, target: str) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    cfg.attributes["connection"] = conn
    getattr(command, what)(cfg, target)
