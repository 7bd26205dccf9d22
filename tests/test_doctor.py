"""`mmsearch doctor`: finds what is wrong with a store, repairs what it can, exits 3 when problems remain."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3

import numpy as np
import pytest
from typer.testing import CliRunner

from mmsearch import Engine
from mmsearch.ann.faiss_index import AnnIndex
from mmsearch.ann.space_index import read_record
from mmsearch.cli import app
from mmsearch.store.files import file_sha256, pointer_path, write_json
from tests.conftest import write_images, write_texts

runner = CliRunner()


def _cli(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def store(tmp_path, tiny_model):
    data = tmp_path / "data"
    write_images(data / "a", 6, seed=1)
    write_images(data / "b", 4, seed=2)
    write_texts(data / "n", ["meadow", "glacier"])
    s = tmp_path / "store"
    with Engine.open(s, model=tiny_model, workers=0) as eng:
        eng.index([data])
    return s


def _doctor(store, repair: bool):
    with Engine.open(store, create=False) as eng:
        return eng.doctor(repair=repair)


def _index_file(store, space_id=1, modality="image"):
    """The generation file the pointer of one index names."""
    return store / "ann" / read_record(store, space_id, modality)["file"]


def _status(report) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def test_a_healthy_store(store):
    rep = _doctor(store, repair=True)
    assert rep.ok and not rep.repaired and not rep.problems
    assert {"lock", "database", "foreign-keys", "contents", "files", "errors", "vectors 1", "index 1/image",
            "index 1/text", "index files", "leftovers", "manifest"} <= set(_status(rep))
    r = _cli("doctor", "--store", store, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["ok"] is True
    r = _cli("doctor", "--store", store)
    assert r.exit_code == 0 and "healthy" in r.stdout


@pytest.mark.parametrize("damage", ["delete", "truncate", "flip", "pointer-only"])
def test_missing_or_damaged_index_files_are_rebuilt(store, damage):
    path = _index_file(store)
    if damage == "delete":
        path.unlink()
        pointer_path(store / "ann", "space1-image").unlink()
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "flip":  # same size: only the checksum doctor verifies can see it
        raw = bytearray(path.read_bytes())
        raw[-40] ^= 0xFF
        path.write_bytes(bytes(raw))
    else:
        path.unlink()
    r = _cli("doctor", "--store", store, "--no-repair")
    assert r.exit_code == 3 and "index 1/image" in r.stdout and "problem" in r.stdout
    rep = _doctor(store, repair=True)
    assert rep.ok and _status(rep)["index 1/image"] == "repaired"
    assert "rebuilt from the database (10 vectors)" in next(c.detail for c in rep.checks if c.name == "index 1/image")
    assert _doctor(store, repair=False).ok
    rec = read_record(store, 1, "image")
    ann = AnnIndex.read(_index_file(store), rec["kind"], rec["dim"], mmap=True)
    assert ann.ntotal == rec["ntotal"] == 10


def test_index_behind_is_caught_up_and_disagreeing_index_rebuilt(store, tmp_path, tiny_model):
    shutil.copytree(store / "ann", tmp_path / "old")
    with Engine.open(store, model=tiny_model, workers=0) as eng:
        eng.add_texts(["tundra", "orchid"])
    shutil.rmtree(store / "ann")
    shutil.copytree(tmp_path / "old", store / "ann")
    rep = _doctor(store, repair=False)
    assert _status(rep)["index 1/text"] == "problem" and _status(rep)["index 1/image"] == "ok"
    assert "behind the database" in next(c.detail for c in rep.checks if c.name == "index 1/text")
    rep = _doctor(store, repair=True)
    assert rep.ok and "caught up" in next(c.detail for c in rep.checks if c.name == "index 1/text")

    # same generation and count, other ids, a consistent record: only the id check can see it
    path, rec = _index_file(store), read_record(store, 1, "image")
    wrong = AnnIndex.build("flat", 32, np.arange(1000, 1000 + rec["ntotal"]), np.eye(rec["ntotal"], 32, dtype=np.float32))
    wrong.write(path)
    write_json(pointer_path(store / "ann", "space1-image"),
               {**rec, "bytes": path.stat().st_size, "sha256": file_sha256(path)})
    rep = _doctor(store, repair=False)
    assert "disagrees with the database" in next(c.detail for c in rep.checks if c.name == "index 1/image")
    rep = _doctor(store, repair=True)
    assert rep.ok and _doctor(store, repair=False).ok


def test_database_level_problems_are_repaired(store):
    con = sqlite3.connect(store / "mmsearch.sqlite3")
    con.execute("PRAGMA foreign_keys=OFF")
    con.execute("INSERT INTO contents (sha256, modality, byte_size, created_gen) VALUES ('orphan', 'image', 1, 1)")
    con.execute("INSERT INTO sources (uri, kind, content_id, size, mtime_ns, updated_gen) "
                "VALUES ('/nowhere/ghost.png', 'file', 99999, 1, 1, 1)")
    con.commit()
    con.close()
    rep = _doctor(store, repair=False)
    assert _status(rep)["foreign-keys"] == "problem" and _status(rep)["contents"] == "problem"
    rep = _doctor(store, repair=True)
    assert _status(rep)["foreign-keys"] == "repaired" and _status(rep)["contents"] == "repaired"
    assert rep.ok and _doctor(store, repair=False).ok
    with Engine.open(store, create=False) as eng:
        assert eng.store.integrity_problems() == []


def test_files_gone_from_disk_are_dropped_but_a_missing_folder_is_kept(store, tmp_path):
    data = tmp_path / "data"
    (data / "a" / "img_1_000.png").unlink()
    shutil.move(data / "b", tmp_path / "unplugged")  # like an unmounted disk
    rep = _doctor(store, repair=False)
    details = [c.detail for c in rep.checks if c.name == "files"]
    assert any("1 files the store lists are gone" in d for d in details)
    assert any(f"folder {data / 'b'} is missing" in d and "4 files are kept" in d for d in details)
    rep = _doctor(store, repair=True)
    assert rep.ok
    with Engine.open(store, create=False) as eng:
        assert eng.stats().sources == {"file": 11}  # 12 - the one gone; the 4 in the missing folder stay
        assert len(eng.search(vector=np.ones(32) / np.sqrt(32), type="image", k=100)) == 9


def test_stale_lock_record_leftovers_and_stale_errors(store, tmp_path):
    (store / "writer.lock.json").write_text(json.dumps(
        {"pid": 2 ** 22 + 12345, "host": socket.gethostname(), "what": "index", "since": 0, "argv": []}))
    strays = [store / "ann" / ".space1-image.g7.faiss.4242.tmp",  # an interrupted save
              store / "ann" / "space1-image.g1.faiss",  # a generation no pointer names (a crash before the pointer)
              store / "ann" / "space9-image.g3.faiss",  # an index of no model
              store / "ann" / "space1-image.faiss"]  # the single-file layout of older versions
    for p in strays:
        p.write_bytes(b"nothing reads this")
    (store / ".manifest.json.77.tmp").write_bytes(b"half written")
    with Engine.open(store, create=False) as eng:
        eng.store.apply([], None, errors=[(str(tmp_path / "data" / "a" / "gone.png"), "empty file (0 bytes)")])
    rep = _doctor(store, repair=False)
    assert rep.ok  # all harmless: notes
    st = _status(rep)
    assert st["lock"] == st["leftovers"] == st["index files"] == st["errors"] == "note"
    assert "stale lock record of pid" in next(c.detail for c in rep.checks if c.name == "lock")
    rep = _doctor(store, repair=True)
    st = _status(rep)
    assert st["lock"] == st["leftovers"] == st["index files"] == st["errors"] == "repaired"
    assert not (store / "writer.lock.json").exists()
    assert not any(p.exists() for p in strays) and not (store / ".manifest.json.77.tmp").exists()
    assert _index_file(store).exists() and _index_file(store, 1, "text").exists()  # the current ones stay
    with Engine.open(store, create=False) as eng:
        assert eng.errors() == []
        assert len(eng.search(vector=np.ones(32) / np.sqrt(32), type="image", k=100)) == 10


def test_a_damaged_database_is_reported_not_hidden(store):
    db = store / "mmsearch.sqlite3"
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    raw = bytearray(db.read_bytes())
    for pos in range(2 * page, len(raw), page):  # scribble over every page after the schema
        raw[pos : pos + 64] = os.urandom(64)
    db.write_bytes(bytes(raw))
    r = _cli("doctor", "--store", store)
    assert r.exit_code == 3, r.output
    assert "Traceback" not in r.output
    assert "damaged" in r.output or "integrity" in r.output
    r = _cli("stats", "--store", store)
    assert r.exit_code == 3 and "Traceback" not in r.output


def test_a_damaged_index_page_stops_the_doctor_from_touching_caches(store):
    db = store / "mmsearch.sqlite3"
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = con.execute("PRAGMA page_size").fetchone()[0]
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'ix_vectors_space_mod_gen'").fetchone()[0]
    con.close()
    raw = bytearray(db.read_bytes())
    raw[(root - 1) * page + 8 : (root - 1) * page + 200] = os.urandom(192)
    db.write_bytes(bytes(raw))
    ann_before = {p.name: p.read_bytes() for p in (store / "ann").iterdir()}
    rep = _doctor(store, repair=True)
    assert not rep.ok and _status(rep)["database"] == "problem"
    assert ".recover" in next(c.detail for c in rep.checks if c.name == "database")
    assert _status(rep)["other checks"] == "note"  # nothing rebuilt from a database that cannot be trusted
    assert {p.name: p.read_bytes() for p in (store / "ann").iterdir()} == ann_before
