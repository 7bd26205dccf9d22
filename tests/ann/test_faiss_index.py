"""One contract suite for every index kind, compared with exact search (ties tolerated)."""

import numpy as np
import pytest

from mmsearch.ann.faiss_index import AnnIndex, CorruptIndexError, SearchParams, choose_kind
from mmsearch.errors import UsageError


def clustered(n, dim=32, seed=0):
    """Embedding-like data: points around a few hundred centres (uniform noise makes ANN meaningless)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(n // 20, 4), dim))
    x = centres[rng.integers(0, len(centres), n)] + 0.3 * rng.normal(size=(n, dim))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "pq"])
def test_self_queries_find_themselves_and_recall_vs_exact(kind):
    n = 1000 if kind == "pq" else 3000  # PQ codebook training is slow; 1000 points is enough to test it
    x = clustered(n)
    ids = np.arange(100, 100 + n, dtype=np.int64)
    ann = AnnIndex.build(kind, 32, ids, x)
    assert ann.ntotal == n and ann.kind == kind
    q = x[:200]
    scores, got = ann.search(q, 10, SearchParams(nprobe=16, ef_search=128))
    exact = np.argsort(-(q @ x.T), axis=1)[:, :10] + 100
    assert got.shape == (200, 10)
    recall = np.mean([len(set(g) & set(e)) / 10 for g, e in zip(got, exact)])
    if kind == "pq":
        assert recall > 0.5
    else:
        assert (got[:, 0] == ids[:200]).mean() >= 0.99
        assert recall >= 0.95
    assert np.all(np.diff(scores, axis=1) <= 1e-5)  # sorted best first


@pytest.mark.parametrize("kind", ["flat", "ivf", "pq"])
def test_remove_ids(kind):
    x = clustered(1000)
    ids = np.arange(1000, dtype=np.int64)
    ann = AnnIndex.build(kind, 32, ids, x)
    assert ann.remove(np.array([5, 6, 7]))
    assert ann.ntotal == 997
    _, got = ann.search(x[5:6], 5, SearchParams(nprobe=64))
    assert 5 not in got[0]


def test_hnsw_says_it_cannot_remove():
    ann = AnnIndex.build("hnsw", 32, np.arange(50), clustered(50))
    assert ann.remove(np.array([1])) is False


def test_save_load_and_corruption_detection(tmp_path):
    x = clustered(500)
    ann = AnnIndex.build("flat", 32, np.arange(500), x)
    path = tmp_path / "i.faiss"
    ann.save(path, {"generation": 7})
    loaded, meta = AnnIndex.load(path)
    assert meta["generation"] == 7 and loaded.ntotal == 500
    assert not list(tmp_path.glob(".*tmp"))  # no temp files left behind
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptIndexError):
        AnnIndex.load(path)


def test_empty_index_and_k_larger_than_n():
    ann = AnnIndex.build("flat", 8, np.zeros(0, np.int64), np.zeros((0, 8), np.float32))
    s, i = ann.search(np.ones((1, 8), np.float32), 5)
    assert s.shape == (1, 0)
    ann.add(np.array([3]), np.ones((1, 8), np.float32) / np.sqrt(8))
    s, i = ann.search(np.ones((1, 8), np.float32), 5)
    assert list(i[0]) == [3]


def test_auto_kind_by_size_and_bad_kind():
    assert choose_kind("auto", 10) == "flat"
    assert choose_kind("auto", 10_000_000) == "ivf"
    with pytest.raises(UsageError, match="--index"):
        choose_kind("annoy", 1)


def test_pq_on_too_few_vectors_falls_back_to_exact_and_switches_when_grown():
    from mmsearch.ann.faiss_index import PQ_MIN, needs_rebuild

    small = AnnIndex.build("pq", 32, np.arange(5), clustered(5))  # FAISS would raise "nx >= k" here
    assert small.kind == "flat" and small.ntotal == 5
    assert needs_rebuild(small, "pq", 5) is None
    assert "switching from flat to pq" in needs_rebuild(small, "pq", PQ_MIN)


def test_ivf_is_retrained_once_it_outgrows_its_training():
    from mmsearch.ann.faiss_index import needs_rebuild

    ann = AnnIndex.build("ivf", 32, np.arange(500), clustered(500))
    assert ann.trained_n == 500
    assert needs_rebuild(ann, "ivf", 1500) is None
    assert "retraining" in needs_rebuild(ann, "ivf", 2500)


def test_load_tolerates_a_writer_replacing_file_then_sidecar(tmp_path):
    """A reader between the two renames of a save sees a mismatch that clears: not damage."""
    import threading
    import time

    path = tmp_path / "i.faiss"
    AnnIndex.build("flat", 32, np.arange(100), clustered(100)).save(path, {"generation": 1})
    newer = AnnIndex.build("flat", 32, np.arange(200), clustered(200, seed=1))
    path.write_bytes(newer.to_bytes())  # the data file is new, the sidecar still old
    staged = tmp_path / "staged"
    staged.mkdir()
    newer.save(staged / "i.faiss", {"generation": 2})
    late = threading.Timer(0.03, lambda: (staged / "i.json").replace(path.with_suffix(".json")))
    late.start()
    loaded, meta = AnnIndex.load(path)
    late.join()
    assert meta["generation"] == 2 and loaded.ntotal == 200
