"""A schema-2 store (before photo metadata) upgrades in place, and the next `index` of its folders reads the
EXIF of what it indexed before: no model call, no re-embedding."""

from __future__ import annotations

import sqlite3

import pytest

from mmsearch import Engine
from mmsearch.errors import StoreError
from mmsearch.store.migrate import V3_COLUMNS
from tests.kit import cli, make_pre_alembic, make_revision_0001, unit, write_exif_jpeg, write_images


def _schema(db) -> tuple[str, set[str]]:
    con = sqlite3.connect(db)
    try:
        version = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        return version, {r[1] for r in con.execute("PRAGMA table_info(contents)")}
    finally:
        con.close()


def test_a_schema_2_store_upgrades_and_the_next_index_backfills_exif(tmp_path, tiny_model):
    data = tmp_path / "data"
    write_exif_jpeg(data / "canon.jpg", make="Canon", model="EOS R5", taken="2023:06:15 10:11:12", gps=(10.5, 20.25))
    write_exif_jpeg(data / "plain.jpg", seed=1)
    write_images(data, 2)
    store = tmp_path / "store"
    with Engine.open(store, model=tiny_model, workers=0) as eng:
        assert eng.index([data]).indexed == 4
    db = store / "mmsearch.sqlite3"
    make_pre_alembic(db, 2)
    assert _schema(db)[0] == "2"

    with Engine.open(store, model=tiny_model, workers=0) as eng:  # migrated on open
        assert _schema(db) == ("4", _schema(db)[1]) and {c for c, _ in V3_COLUMNS} <= _schema(db)[1]
        hits = eng.search(vector=unit(32), k=10)
        assert len(hits) == 4 and all(h.camera is None and h.taken_at is None for h in hits)  # not read yet
        assert eng.search(vector=unit(32), where=["make~canon"]) == []

        r = eng.index([data])
        assert r.ok and r.unchanged == 4 and r.indexed == 0 and r.reused == 0  # nothing embedded again
        assert any("photo metadata (EXIF) of 4 images" in n for n in r.notices)
        (hit,) = eng.search(vector=unit(32), where=["make~canon"])
        assert hit.path.endswith("canon.jpg") and hit.taken_at == "2023-06-15T10:11:12" and hit.gps == (10.5, 20.25)
        assert hit.camera == "Canon EOS R5"

        again = eng.index([data])  # read once: a file without EXIF is not opened again and again
        assert not any("photo metadata" in n for n in again.notices)


def test_backfill_reads_only_the_folders_indexed(tmp_path, tiny_model):
    a, b = tmp_path / "a", tmp_path / "b"
    write_exif_jpeg(a / "x.jpg", make="Canon")
    write_exif_jpeg(b / "y.jpg", make="Nikon", seed=1)
    store = tmp_path / "store"
    with Engine.open(store, model=tiny_model, workers=0) as eng:
        eng.index([a, b])
    make_pre_alembic(store / "mmsearch.sqlite3", 2)
    with Engine.open(store, model=tiny_model, workers=0) as eng:
        eng.index([a])
        assert [h.camera for h in eng.search(vector=unit(32), where=["camera"])] == ["Canon"]
        eng.index([b])
        assert sorted(h.camera for h in eng.search(vector=unit(32), where=["camera"])) == ["Canon", "Nikon"]


def test_a_new_store_is_schema_4(tmp_path, tiny_model):
    with Engine.open(tmp_path / "store", model=tiny_model) as eng:
        eng.stats()
    version, columns = _schema(tmp_path / "store" / "mmsearch.sqlite3")
    assert version == "4" and {c for c, _ in V3_COLUMNS} <= columns


# ---- Alembic: one chain of revisions for SQLite and PostgreSQL --------------------------------------------
def _differences(url: str) -> list:
    """What the database at ``url`` lacks or has beyond the models (Alembic's autogenerate comparison)."""
    from alembic.migration import MigrationContext
    from alembic.autogenerate import compare_metadata
    from sqlalchemy import create_engine

    from mmsearch.store.schema import Base

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    finally:
        engine.dispose()


def test_the_revisions_listed_are_the_scripts():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from mmsearch.store import migrate

    cfg = Config()
    cfg.set_main_option("script_location", str(migrate.SCRIPTS))
    scripts = ScriptDirectory.from_config(cfg)
    assert [s.revision for s in reversed(list(scripts.walk_revisions()))] == list(migrate.REVISIONS)
    assert scripts.get_current_head() == migrate.HEAD


@pytest.mark.parametrize("old", [None, 1, 2, 3, "0001", "downgraded"])
def test_every_sqlite_store_migrates_to_exactly_the_models(tmp_path, tiny_model, old):
    data = tmp_path / "data"
    write_images(data, 3)
    (data / "broken.png").write_bytes(b"not a png")
    store = tmp_path / "store"
    with Engine.open(store, model=tiny_model, workers=0) as eng:
        eng.index([data])
        before = [(h.path, round(h.score, 4)) for h in eng.search(vector=unit(32), k=5)]
        errors = [(e.path, e.reason) for e in eng.errors()]
    assert [p for p, _ in errors] == [str(data / "broken.png")]
    db = store / "mmsearch.sqlite3"
    if old == "0001":  # as the first Alembic release made it
        make_revision_0001(db)
    elif old == "downgraded":  # taken back for that release by `mmsearch downgrade`
        out = cli("downgrade", "0001", "--store", str(store))
        assert out.exit_code == 0 and "from schema revision 0002 to 0001" in out.output, out.output
    elif old is not None:  # as the release before Alembic (schema 3), or older ones, made it
        make_pre_alembic(db, old)
    with Engine.open(store, model=tiny_model, workers=0) as eng:
        assert [(h.path, round(h.score, 4)) for h in eng.search(vector=unit(32), k=5)] == before
        assert [(e.path, e.reason) for e in eng.errors()] == errors  # recorded errors kept
        assert eng.index([data]).indexed == 0  # nothing embedded again
        assert [(e.path, e.reason) for e in eng.errors()] == errors  # and recorded once, not once per schema
    con = sqlite3.connect(db)
    assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [("0002",)]
    con.close()
    assert _differences(f"sqlite:///{db}") == []


def test_a_new_postgres_store_is_exactly_the_models(tmp_path, tiny_model, postgres_url):
    with Engine.open(tmp_path / "pg", model=tiny_model, workers=0, db=postgres_url) as eng:
        eng.stats()
    assert _differences(postgres_url) == []


def test_a_store_of_an_unknown_revision_is_refused_before_anything_is_written(tmp_path, tiny_model):
    with Engine.open(tmp_path / "store", model=tiny_model) as eng:
        eng.stats()
    con = sqlite3.connect(tmp_path / "store" / "mmsearch.sqlite3")
    con.execute("UPDATE alembic_version SET version_num = '9999'")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="revision 9999, this mmsearch knows up to 0002"):
        Engine.open(tmp_path / "store")


def _postgres_store_with_an_error(tmp_path, tiny_model, postgres_url) -> tuple:
    """A store on PostgreSQL at ``tmp_path/pg`` of two images and a broken one: (its data folder, its errors)."""
    data = tmp_path / "data"
    write_images(data, 2)
    (data / "broken.png").write_bytes(b"not a png")
    with Engine.open(tmp_path / "pg", model=tiny_model, workers=0, db=postgres_url) as eng:
        eng.index([data])
        return data, [(e.path, e.reason) for e in eng.errors()]


def test_a_postgres_store_of_revision_0001_upgrades_keeping_its_errors(tmp_path, tiny_model, postgres_url):
    from sqlalchemy import create_engine, text

    data, errors = _postgres_store_with_an_error(tmp_path, tiny_model, postgres_url)
    engine = create_engine(postgres_url)
    with engine.begin() as conn:  # the errors table as revision 0001 made it: one record per path
        conn.execute(text("ALTER TABLE errors DROP CONSTRAINT uq_errors_uri_space"))
        conn.execute(text("ALTER TABLE errors DROP COLUMN space_id"))
        conn.execute(text("ALTER TABLE errors ADD CONSTRAINT errors_uri_key UNIQUE (uri)"))
        conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
        conn.execute(text("UPDATE meta SET value = '3' WHERE key = 'schema_version'"))
    engine.dispose()
    other = tmp_path / "other"
    other.mkdir()
    (other / "broken.gif").write_bytes(b"nor a gif")
    with Engine.open(tmp_path / "pg", model=tiny_model, workers=0, db=postgres_url) as eng:
        assert [(e.path, e.reason) for e in eng.errors()] == errors
        r = eng.index([other])  # a new record beside the copied ones: the id sequence moved past them
        assert [p for p, _ in r.errors] == [str(other / "broken.gif")]
        assert sorted(e.path for e in eng.errors()) == sorted([str(data / "broken.png"), str(other / "broken.gif")])
    assert _differences(postgres_url) == []
    engine = create_engine(postgres_url)
    with engine.connect() as conn:  # named as in a new database, for the revisions to come
        assert conn.execute(text("SELECT pg_get_serial_sequence('errors', 'id')")).scalar_one() == "public.errors_id_seq"
        assert conn.execute(text("SELECT conname FROM pg_constraint WHERE conrelid = 'errors'::regclass "
                                 "AND contype = 'p'")).scalar_one() == "errors_pkey"
    engine.dispose()


def _errors_table(db) -> tuple[list, list, list]:
    """(columns, unique column sets, rows) of a SQLite store's errors table."""
    con = sqlite3.connect(db)
    try:
        columns = [r[1] for r in con.execute("PRAGMA table_info(errors)")]
        unique = sorted([r[2] for r in con.execute(f"PRAGMA index_info('{ix[1]}')")]
                        for ix in con.execute("PRAGMA index_list(errors)") if ix[2])
        rows = con.execute("SELECT uri, reason FROM errors ORDER BY uri").fetchall()
        return columns, unique, rows
    finally:
        con.close()


def test_a_downgraded_store_is_what_revision_0001_made_one_record_per_path(tmp_path, tiny_model):
    data = tmp_path / "data"
    write_images(data, 1)
    (data / "a.png").write_bytes(b"not a png")
    (data / "b.png").write_bytes(b"nor this")
    store, db = tmp_path / "store", tmp_path / "store" / "mmsearch.sqlite3"
    with Engine.open(store, model=tiny_model, workers=0) as eng:
        eng.index([data])
        space = eng.stats().spaces[0].id
    con = sqlite3.connect(db)  # a.png: a record about the file itself, which is kept; b.png: a later one, kept
    con.executemany("INSERT INTO errors (uri, space_id, reason, gen, at) VALUES (?, ?, ?, ?, 0)",
                    [(str(data / "a.png"), 0, "about the file", 0), (str(data / "b.png"), space + 7, "later", 99)])
    con.commit()
    con.close()
    reference = tmp_path / "reference.sqlite3"  # the errors table as the release of revision 0001 made it
    reference.write_bytes(db.read_bytes())
    make_revision_0001(reference)
    assert Engine.downgrade("0001", store) == "0002"
    columns, unique, rows = _errors_table(db)
    assert (columns, unique) == _errors_table(reference)[:2] and "space_id" not in columns
    assert [uri for uri, _ in rows] == [str(data / "a.png"), str(data / "b.png")]
    assert rows[0][1] == "about the file" and rows[1][1] == "later"
    assert _schema(db)[0] == "3"
    con = sqlite3.connect(db)
    assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [("0001",)]
    con.close()
    assert Engine.downgrade("0001", store) == "0001"  # already there: nothing to do


@pytest.mark.parametrize("revision, message", [
    ("0003", "revision '0003': not one this mmsearch knows"),
    ("head", "revision 'head': not one this mmsearch knows"),
])
def test_downgrade_to_a_revision_it_does_not_know_is_refused_naming_it(tmp_path, tiny_model, revision, message):
    with Engine.open(tmp_path / "store", model=tiny_model) as eng:
        eng.stats()
    out = cli("downgrade", revision, "--store", str(tmp_path / "store"))
    assert out.exit_code != 0 and message in out.output, out.output
    with Engine.open(tmp_path / "store", create=False) as eng:  # untouched: opens at this release's schema
        assert eng.stats().items == {}


def test_downgrade_with_no_store_there_names_the_folder(tmp_path):
    out = cli("downgrade", "0001", "--store", str(tmp_path / "nothing"))
    assert out.exit_code != 0 and "no mmsearch store here" in out.output and "nothing" in out.output, out.output


def test_a_postgres_store_downgraded_and_opened_again_keeps_its_errors(tmp_path, tiny_model, postgres_url):
    _, errors = _postgres_store_with_an_error(tmp_path, tiny_model, postgres_url)
    assert Engine.downgrade("0001", tmp_path / "pg", db=postgres_url) == "0002"
    with Engine.open(tmp_path / "pg", model=tiny_model, workers=0, db=postgres_url) as eng:
        assert [(e.path, e.reason) for e in eng.errors()] == errors
    assert _differences(postgres_url) == []
