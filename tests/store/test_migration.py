"""A schema-2 store (before photo metadata) upgrades in place, and the next `index` of its folders reads the
EXIF of what it indexed before: no model call, no re-embedding."""

from __future__ import annotations

import sqlite3

from mmsearch import Engine
from mmsearch.store.session import V3_COLUMNS
from tests.kit import unit, write_exif_jpeg, write_images


def _make_v2(db) -> None:
    con = sqlite3.connect(db)
    con.executescript("".join(f"ALTER TABLE contents DROP COLUMN {c};" for c, _ in V3_COLUMNS)
                      + "UPDATE meta SET value='2' WHERE key='schema_version';")
    con.commit()
    con.close()


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
    _make_v2(db)
    assert _schema(db)[0] == "2"

    with Engine.open(store, model=tiny_model, workers=0) as eng:  # migrated on open
        assert _schema(db) == ("3", _schema(db)[1]) and {c for c, _ in V3_COLUMNS} <= _schema(db)[1]
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
    _make_v2(store / "mmsearch.sqlite3")
    with Engine.open(store, model=tiny_model, workers=0) as eng:
        eng.index([a])
        assert [h.camera for h in eng.search(vector=unit(32), where=["camera"])] == ["Canon"]
        eng.index([b])
        assert sorted(h.camera for h in eng.search(vector=unit(32), where=["camera"])) == ["Canon", "Nikon"]


def test_a_new_store_is_schema_3(tmp_path, tiny_model):
    with Engine.open(tmp_path / "store", model=tiny_model) as eng:
        eng.stats()
    version, columns = _schema(tmp_path / "store" / "mmsearch.sqlite3")
    assert version == "3" and {c for c, _ in V3_COLUMNS} <= columns
