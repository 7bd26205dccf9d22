"""A store survives what users do to it: two models, a second writer, readers during a write,
index files deleted, truncated or left behind, and a full disk."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import event

from mmsearch import Engine, StoreError, StoreLockedError
from mmsearch.ann.space_index import SpaceIndex
from mmsearch.query.calibrate import BACKGROUND_PROMPTS, TUNING_QUERIES
from mmsearch.store.store import Store
from tests.kit import (TINY_CFG, Corpus, all_hits, cli, index_file, index_pointer, make_tiny_model, write_images,
                       write_texts)

REPO = Path(__file__).resolve().parents[1]


# ---- several models in one store -----------------------------------------------------------------------------
def test_a_store_holds_two_models_side_by_side(tmp_path, tiny_model, counting):
    data = tmp_path / "data"
    imgs = write_images(data, 6)
    write_texts(data / "n", ["a lantern by the harbour", "granite and copper"])
    other = "local-dir:" + str(make_tiny_model(tmp_path / "other", seed=7, cfg={**TINY_CFG, "embed_dim": 24}))
    store = tmp_path / "store"

    with Engine.open(store, model=tiny_model, workers=0) as a:
        assert a.index([data]).indexed == 8
        first = {h.id: h.score for h in a.search(image=imgs[0], k=8)}
    with Engine.open(store, model=counting.spec(other), workers=0) as b:
        enc = b.encoder(counting.spec(other))
        assert enc is counting.last  # the wrapped model, loaded through the registry
        rep = b.index([data])
        # the second model embeds everything once (and, once per space, the score calibration's prompts
        # and the typical searches its indexes are tuned with)
        assert rep.indexed == 8 and enc.items == 8 + len(BACKGROUND_PROMPTS) + len(TUNING_QUERIES)
        st = b.stats()
        assert [(s.spec, s.dim, s.vectors) for s in st.spaces] == [(tiny_model, 32, 8), (other, 24, 8)]
        hit = b.search(image=imgs[0], k=1)[0]
        assert hit.path == str(imgs[0]) and hit.space == other
        # the same engine can query the first model by name
        assert b.search(image=imgs[0], k=1, space=tiny_model)[0].space == tiny_model

    # adding the second model left the first one's vectors and index untouched
    with Engine.open(store, model=counting.spec(tiny_model), workers=0) as a:
        again = {h.id: h.score for h in a.search(image=imgs[0], k=8)}
        assert again.keys() == first.keys()
        assert all(abs(again[i] - first[i]) < 1e-5 for i in first)
        enc = a.encoder(counting.spec(tiny_model))
        assert enc is counting.last
        assert a.index([data]).unchanged == 8 and enc.items == 0  # nothing re-embedded for model A either
    r = cli("query", "granite and copper", "--type", "text", "--store", store, "--model", other, "--json")
    assert r.exit_code == 0, r.output
    assert '"space": "' + other in r.stdout


# ---- one writer, many readers -------------------------------------------------------------------------------
_HOLDER = """
import sys
from mmsearch.store.store import Store
store = Store(sys.argv[1])
with store.writer_lock("index"):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path, tiny_model):
    data = tmp_path / "data"
    write_images(data, 3)
    store = tmp_path / "store"
    with Engine.open(store, model=tiny_model, workers=0) as eng:
        eng.index([data])
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(store)], cwd=REPO, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "held"
        with Engine.open(store, model=tiny_model, workers=0) as eng:
            with pytest.raises(StoreLockedError, match=rf"pid {holder.pid} on .*\(index, since"):
                eng.index([data])
            with pytest.raises(StoreLockedError):
                eng.add_texts(["a note"])
            with pytest.raises(StoreLockedError):
                eng.remove([data])
            assert len(all_hits(eng)) == 3  # readers are not blocked
            assert eng.stats().items == {"image": 3}
        r = cli("index", data, "--store", store, "--model", tiny_model)
        assert r.exit_code == 3 and f"pid {holder.pid}" in r.output and "Traceback" not in r.output
        r = cli("stats", "--store", store)
        assert r.exit_code == 0
        r = cli("doctor", "--store", store)  # repairing needs the lock
        assert r.exit_code == 3 and "another process writes" in r.output
        r = cli("doctor", "--store", store, "--no-repair", "--json")
        assert r.exit_code == 0 and "is writing" in r.stdout
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding the lock: the OS releases it
        holder.wait()
    with Engine.open(store, model=tiny_model, workers=0) as eng:
        assert eng.index([data]).unchanged == 3
        assert not (store / "writer.lock.json").exists()


def test_a_reader_sees_the_last_committed_state_during_a_write(tmp_path, tiny_model):
    data = tmp_path / "data"
    write_images(data / "a", 10, seed=1)
    write_images(data / "b", 60, seed=2)
    store = tmp_path / "store"
    with Engine.open(store, model=tiny_model, workers=0) as w:
        w.index([data / "a"])
    reader = Engine.open(store, create=False)  # a long-lived reader (like the server)
    assert len(all_hits(reader, "image")) == 10
    problems: list[BaseException] = []

    def write() -> None:
        try:
            with Engine.open(store, model=tiny_model, workers=0) as w:
                w.index([data], commit_every=2, on_commit=lambda ev: time.sleep(0.02))
        except BaseException as exc:  # noqa: BLE001
            problems.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    seen = []
    try:
        while writer.is_alive():
            lo = reader.store.count_vectors(1, "image")
            got = len(all_hits(reader, "image"))
            hi = reader.store.count_vectors(1, "image")
            assert lo <= got <= hi  # exactly some committed state, never a half-written one
            seen.append(got)
            with Engine.open(store, create=False) as fresh:  # a reader that opens mid-write
                assert 10 <= len(all_hits(fresh, "image")) <= 70
                fresh.stats()
    finally:
        writer.join()
        reader.close()
    assert not problems
    assert seen == sorted(seen) and seen[0] >= 10
    assert any(10 < n < 70 for n in seen), seen  # it really read while the write was under way
    with Engine.open(store, create=False) as r:
        assert len(all_hits(r, "image")) == 70


# ---- index files: a cache rebuilt or caught up from the database -------------------------------------------------
@pytest.fixture
def corpus():
    """What the shared `indexed` fixture writes here: 12 images (seed 1) under data/img, 3 notes."""
    return Corpus(images=12, seed=1, texts=("meadow", "glacier", "violin"))


def test_deleted_index_file_is_rebuilt_with_a_notice(indexed):
    store = indexed.store
    index_file(store).unlink()
    index_pointer(store).unlink()
    with Engine.open(store, create=False) as eng:
        assert len(all_hits(eng, "image")) == 12
        assert "index 1/image file was missing: built from the database (12 vectors)" in eng.notices
    r = cli("query", "meadow", "--type", "image", "--store", store)  # the CLI says so too (a query loads
    # only the indexes it searches: a text query would not touch the image index)
    assert r.exit_code == 0 and "note:" in r.output and "missing" in r.output


@pytest.mark.parametrize("damage", ["truncate", "garbage-pointer", "file-gone", "garbage-file"])
def test_damaged_index_file_is_rebuilt(indexed, tiny_model, damage):
    """What a query can see without reading the whole file (a flipped byte of the same size is doctor's:
    it verifies checksums, see test_doctor)."""
    store = indexed.store
    path = index_file(store)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage-pointer":
        index_pointer(store).write_text("{not json")
    elif damage == "file-gone":
        path.unlink()
    else:
        path.write_bytes(os.urandom(path.stat().st_size))
    with Engine.open(store, create=False) as eng:
        assert len(all_hits(eng, "image")) == 12
        assert any("rebuilt from the database: index file damaged" in n for n in eng.notices), eng.notices
    with Engine.open(store, model=tiny_model, workers=0) as eng:  # a writer saves the repaired file
        report = eng.index(indexed.roots)
        assert any("damaged" in n for n in report.notices)
    with Engine.open(store, create=False) as eng:  # repaired on disk: nothing more to say
        assert len(all_hits(eng, "image")) == 12 and eng.notices == []


def test_index_file_behind_the_database_is_caught_up_incrementally(indexed, tiny_model, tmp_path):
    store, images = indexed.store, indexed.image_dir
    old = tmp_path / "old-ann"
    shutil.copytree(store / "ann", old)  # the files as they were…
    write_images(images, 15, seed=indexed.corpus.seed)  # …then 3 more images (the 12 again + 3) are committed
    with Engine.open(store, model=tiny_model, workers=0) as eng:
        assert eng.index(indexed.roots).indexed == 3
    shutil.rmtree(store / "ann")
    shutil.copytree(old, store / "ann")  # as if the writer had died before saving its index files

    st = Store(store)
    sp = st.spaces()[0]
    rep = SpaceIndex(st, sp.id, sp.key, "image").sync(save=False)
    assert rep.action == "caught-up" and rep.from_file and rep.previous < rep.generation
    assert SpaceIndex(st, sp.id, sp.key, "text").sync(save=False).action == "caught-up"  # nothing to add: cheap
    st.close()
    with Engine.open(store, create=False) as eng:
        assert len(all_hits(eng, "image")) == 15
        assert any("behind the database (3 vectors added, 0 removed" in n for n in eng.notices), eng.notices
        assert not any("text" in n for n in eng.notices)  # its file was at an older generation, but complete

    # a long-lived reader catches up in memory when another engine writes
    with Engine.open(store, create=False) as reader:
        assert len(all_hits(reader, "image")) == 15
        with Engine.open(store, model=tiny_model, workers=0) as writer:
            indexed.images[0].unlink()
            writer.index(indexed.roots)
        idx = reader.indexes.get(reader.store.spaces()[0], "image")
        assert idx.sync(save=False).action == "caught-up"
        assert len(all_hits(reader, "image")) == 14


def test_writer_notes_an_index_left_behind_by_a_crash(indexed, tiny_model, tmp_path):
    store = indexed.store
    shutil.copytree(store / "ann", tmp_path / "old-ann")
    with Engine.open(store, model=tiny_model, workers=0) as eng:
        eng.add_texts(["tundra"])
    shutil.rmtree(store / "ann")
    shutil.copytree(tmp_path / "old-ann", store / "ann")
    with Engine.open(store, model=tiny_model, workers=0) as eng:
        report = eng.index(indexed.roots)
    assert any("index 1/text file was behind" in n for n in report.notices), report.notices
    assert not any("image" in n for n in report.notices)


# ---- a full disk ----------------------------------------------------------------------------------------------
def test_disk_full_in_the_database_is_a_clear_error_and_the_store_stays_intact(tmp_path, tiny_model):
    data = tmp_path / "data"
    write_images(data / "a", 5, seed=1)
    write_images(data / "b", 40, seed=2)
    store = tmp_path / "store"
    eng = Engine.open(store, model=tiny_model, workers=0)
    eng.index([data / "a"])
    eng.store.db.writer.dispose()

    @event.listens_for(eng.store.db.writer, "connect")
    def _cap(dbapi_conn, _record):  # the database may grow by one page: as good as a full disk
        pages = dbapi_conn.execute("PRAGMA page_count").fetchone()[0]
        dbapi_conn.execute(f"PRAGMA max_page_count = {pages + 1}")

    with pytest.raises(StoreError, match="disk full.*work committed before is kept"):
        eng.index([data], commit_every=10)
    eng.close()
    with Engine.open(store, model=tiny_model, workers=0) as again:
        assert again.store.integrity_problems() == []
        kept = len(all_hits(again, "image"))  # the batches committed before the disk filled
        assert 5 <= kept < 45 and (kept - 5) % 10 == 0
        assert again.index([data]).indexed == 45 - kept  # space again: it goes on where it stopped
        assert again.doctor(repair=False).ok


def test_disk_full_writing_an_index_file_keeps_the_old_file(indexed, tiny_model, monkeypatch):
    store, images = indexed.store, indexed.image_dir
    path = index_file(store)
    before = path.read_bytes()
    write_images(images, 14, seed=indexed.corpus.seed)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", full)
        with Engine.open(store, model=tiny_model, workers=0) as eng:
            with pytest.raises(StoreError, match="disk full"):
                eng.index(indexed.roots)
    assert index_file(store) == path and path.read_bytes() == before  # untouched, no temp files left
    assert not list((store / "ann").glob(".*.tmp"))
    with Engine.open(store, create=False) as eng:  # the database has the 2 new images; the index catches up
        assert len(all_hits(eng, "image")) == 14


def test_cli_reports_disk_full_with_exit_code_3(indexed, tiny_model, monkeypatch):
    store, images = indexed.store, indexed.image_dir
    write_images(images, 13, seed=indexed.corpus.seed)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    r = cli("index", *indexed.roots, "--store", store, "--model", tiny_model, "--workers", "0")
    assert r.exit_code == 3 and "disk full" in r.output and "Traceback" not in r.output
