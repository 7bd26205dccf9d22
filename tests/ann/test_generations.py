"""One index file per generation: a pointer is the commit point, old generations are collected, loads map."""

from __future__ import annotations

import numpy as np
import pytest

from mmsearch.ann.indexes import IndexSet
from mmsearch.ann.space_index import SpaceIndex, read_record
from mmsearch.encoders.base import SpaceInfo
from mmsearch.store.store import Store, Upsert
from tests.kit import index_file

DIM = 16


def _vectors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _add(store: Store, space, start: int, n: int) -> None:
    store.apply([Upsert(f"/v/{i}.png", "file", 1, 1, f"{i:064x}", "image", vector=v)
                 for i, v in zip(range(start, start + n), _vectors(n, start))], space.id)


@pytest.fixture
def store(tmp_path):
    st = Store(tmp_path / "store", create=True)
    space = st.ensure_space(SpaceInfo(spec="test:vectors", family="test", weights="w", dim=DIM, modalities=("image",)))
    _add(st, space, 0, 50)
    yield st, space
    st.close()


def _writer_sync(st, space, kind="flat"):
    return IndexSet(st, kind).sync(space, save=True)


def test_each_save_is_a_new_generation_file_and_old_ones_are_collected(store):
    st, space = store
    _writer_sync(st, space)
    first = index_file(st.root)
    assert read_record(st.root, space.id, "image")["generation"] == st.generation()
    _add(st, space, 50, 5)
    _writer_sync(st, space)
    second = index_file(st.root)
    assert second != first and second.exists() and not first.exists()
    assert sorted(p.name for p in (st.root / "ann").iterdir()) == sorted([second.name, "space1-image.json"])


def test_a_reader_that_mapped_an_old_generation_keeps_answering_after_a_save(store):
    st, space = store
    _writer_sync(st, space)
    reader = SpaceIndex(st, space.id, space.key, "image")
    assert reader.sync(save=False).action == "loaded" and reader.ann.mapped  # current file: mapped, not read
    q = _vectors(1, 0)  # the first stored vector
    before = reader.search(q, 3)[1][0].tolist()
    _add(st, space, 50, 5)
    _writer_sync(st, space)  # replaces the pointer and deletes the generation the reader has mapped
    assert reader.search(q, 3)[1][0].tolist() == before
    rep = reader.sync(save=False)  # and then moves on to the new generation
    assert rep.action in ("loaded", "current") and reader.ann.ntotal == 55


def test_a_crash_between_the_new_file_and_the_pointer_leaves_the_old_generation_in_force(store):
    st, space = store
    _writer_sync(st, space)
    old = index_file(st.root)
    _add(st, space, 50, 5)
    idx = SpaceIndex(st, space.id, space.key, "image")
    idx.sync(save=False)  # caught up in memory, as a writer would be just before saving
    idx.ann.write(st.root / "ann" / f"space1-image.g{st.generation()}.faiss")  # the file, but no pointer yet
    fresh = SpaceIndex(st, space.id, space.key, "image")
    rep = fresh.sync(save=False)
    assert index_file(st.root) == old and rep.action == "caught-up" and rep.from_file  # no rebuild, no retry
    assert fresh.ann.ntotal == 55


def test_a_reader_that_must_catch_up_reads_a_private_copy(store):
    st, space = store
    _writer_sync(st, space)
    _add(st, space, 50, 5)
    reader = SpaceIndex(st, space.id, space.key, "image")
    rep = reader.sync(save=False)
    assert rep.action == "caught-up" and not reader.ann.mapped and reader.ann.ntotal == 55
    assert read_record(st.root, space.id, "image")["ntotal"] == 50  # a reader never writes


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "pq", "ondisk"])
def test_rebuilds_stream_from_the_database_in_blocks(store, kind, monkeypatch):
    st, space = store
    _add(st, space, 50, 1150)  # 1,200 vectors: enough for pq
    blocks = []
    real = st.iter_vectors

    def counted(*a, **k):
        for ids, vecs in real(*a, **{**k, "block": 256}):
            blocks.append(len(ids))
            yield ids, vecs

    monkeypatch.setattr(st, "iter_vectors", counted)
    _writer_sync(st, space, kind)
    assert blocks == [256] * 4 + [176]  # never more than one block of vectors in memory at once
    rec = read_record(st.root, space.id, "image")
    assert rec["kind"] == kind and rec["ntotal"] == 1200


def test_a_save_at_the_same_generation_never_replaces_the_file_in_force(store):
    st, space = store
    _writer_sync(st, space, "flat")
    current = index_file(st.root)
    IndexSet(st, "hnsw").sync(space, save=True)  # another kind, no data change: same generation
    assert index_file(st.root) != current and read_record(st.root, space.id, "image")["kind"] == "hnsw"


def test_a_reader_racing_a_save_reads_the_new_pointer_instead_of_rebuilding(store, monkeypatch):
    st, space = store
    _writer_sync(st, space)
    reader = SpaceIndex(st, space.id, space.key, "image")
    stale = read_record(st.root, space.id, "image")
    _add(st, space, 50, 5)
    _writer_sync(st, space)  # the generation the reader is about to open is collected
    from mmsearch.store import files

    calls = []
    real_read = files.read_pointer

    def first_stale(folder, name):  # the reader read the pointer just before the save replaced it
        calls.append(name)
        return dict(stale) if len(calls) == 1 else real_read(folder, name)

    monkeypatch.setattr("mmsearch.ann.space_index.read_pointer", first_stale)
    rep = reader.sync(save=False)
    assert rep.action == "loaded" and reader.ann.ntotal == 55 and len(calls) >= 2


def test_a_store_from_before_generations_loads_without_a_rebuild(store):
    st, space = store
    _writer_sync(st, space)
    rec = read_record(st.root, space.id, "image")
    legacy = st.root / "ann" / "space1-image.faiss"
    index_file(st.root).rename(legacy)  # the single-file layout: NAME.faiss + a sidecar without "file"
    from mmsearch.store.files import pointer_path, write_json

    write_json(pointer_path(st.root / "ann", "space1-image"), {k: v for k, v in rec.items() if k != "file"})
    rep = SpaceIndex(st, space.id, space.key, "image").sync(save=False)
    assert rep.action == "loaded" and rep.from_file
    _add(st, space, 50, 5)
    _writer_sync(st, space)  # the next save moves it to a generation file and collects the old one
    assert not legacy.exists() and index_file(st.root).name.startswith("space1-image.g")
