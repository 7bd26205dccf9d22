import sqlite3

import numpy as np
import pytest

from mmsearch.encoders.base import SpaceInfo
from mmsearch.errors import StoreError, StoreLockedError
from mmsearch.store.store import Store, Upsert


def _space(dim=8):
    return SpaceInfo(spec="test:model", family="test", weights="w1", dim=dim, modalities=("image", "text"))


def test_round_trip_vectors_are_kept_as_fp16_and_come_back(tmp_path):
    store = Store(tmp_path / "s", create=True)
    sp = store.ensure_space(_space())
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(5, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ups = [Upsert(f"/x/{i}.png", "file", 10, 1, f"sha{i}", "image", 4, 3, None, vecs[i]) for i in range(5)]
    res = store.apply(ups, sp.id)
    assert res.added_contents == 5 and res.added_vectors == 5
    store.close()

    again = Store(tmp_path / "s")
    ids, got = again.vectors(sp.id, "image")
    assert len(ids) == 5
    np.testing.assert_allclose(got, vecs, atol=2e-3)
    meta = again.content_meta(ids)
    assert sorted(m.uris[0] for m in meta.values()) == sorted(u.uri for u in ups)
    assert again.generation() == res.generation
    assert again.integrity_problems() == []


def test_generation_increases_once_per_transaction(tmp_path):
    store = Store(tmp_path / "s", create=True)
    sp = store.ensure_space(_space())
    g0 = store.generation()
    store.apply([Upsert("/a", "file", 1, 1, "a", "text", text="a", vector=np.ones(8))], sp.id)
    assert store.generation() == g0 + 1


def test_duplicates_share_one_content_and_removal_keeps_the_other(tmp_path):
    store = Store(tmp_path / "s", create=True)
    sp = store.ensure_space(_space())
    v = np.ones(8, np.float32) / np.sqrt(8)
    store.apply([Upsert("/a.png", "file", 1, 1, "same", "image", vector=v), Upsert("/b.png", "file", 1, 1, "same", "image", vector=v)], sp.id)
    assert store.count_vectors(sp.id, "image") == 1
    store.apply([], sp.id, remove_uris=["/a.png"])
    assert store.count_vectors(sp.id, "image") == 1
    store.apply([], sp.id, remove_uris=["/b.png"])
    assert store.count_vectors(sp.id, "image") == 0
    assert list(store.tombstones(sp.id, "image", since_gen=0)) == [1]


def test_missing_store_and_foreign_database_are_refused(tmp_path):
    with pytest.raises(StoreError, match="no mmsearch store"):
        Store(tmp_path / "nothing")
    (tmp_path / "foreign").mkdir()
    con = sqlite3.connect(tmp_path / "foreign" / "mmsearch.sqlite3")
    con.execute("create table other (x)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="not an mmsearch database"):
        Store(tmp_path / "foreign")


def test_newer_schema_is_refused(tmp_path):
    Store(tmp_path / "s", create=True).close()
    con = sqlite3.connect(tmp_path / "s" / "mmsearch.sqlite3")
    con.execute("update meta set value='999' where key='schema_version'")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="schema version 999"):
        Store(tmp_path / "s")


def test_writer_lock_names_the_holder(tmp_path):
    a = Store(tmp_path / "s", create=True)
    b = Store(tmp_path / "s")
    with a.writer_lock("index"):
        with pytest.raises(StoreLockedError, match=r"pid \d+ .*index"):
            with b.writer_lock("index"):
                pass
    with b.writer_lock("index"):  # released
        pass


def test_space_dim_mismatch_is_refused(tmp_path):
    store = Store(tmp_path / "s", create=True)
    store.ensure_space(_space(8))
    with pytest.raises(StoreError, match="dim"):
        store.ensure_space(_space(16))


def test_a_garbled_database_record_is_a_clear_error_not_a_new_store(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "database.json").write_text("{not json")
    with pytest.raises(StoreError, match="unreadable database.json"):
        Store(tmp_path / "s", create=True)
    assert not (tmp_path / "s" / "mmsearch.sqlite3").exists()
