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
