"""One contract suite for every index kind (flat, ivf, hnsw, pq), each case compared with exact search."""

import numpy as np
import pytest

from mmsearch.ann.faiss_index import PQ_MIN, AnnIndex, CorruptIndexError, SearchParams, choose_kind, needs_rebuild
from mmsearch.errors import UsageError
from tests.kit import clustered, exact_top, recall

KINDS = ["flat", "ivf", "hnsw", "pq"]
N = {"flat": 3000, "ivf": 3000, "hnsw": 3000, "pq": 1000}  # PQ codebook training is slow; 1000 points test it
PARAMS = SearchParams(nprobe=16, ef_search=128)
WIDE = SearchParams(nprobe=64, ef_search=128)


@pytest.fixture(params=KINDS)
def built(request):
    kind = request.param
    x = clustered(N[kind])
    ids = np.arange(100, 100 + len(x), dtype=np.int64)
    return kind, x, ids, AnnIndex.build(kind, 32, ids, x)


def test_recall_against_exact_and_sorted_scores(built):
    kind, x, ids, ann = built
    assert ann.ntotal == len(x) and ann.kind == kind
    q = x[:200]
    scores, got = ann.search(q, 10, PARAMS)
    assert got.shape == (200, 10)
    assert recall(got, exact_top(q, x, ids, 10)) >= (0.5 if kind == "pq" else 0.95)  # pq: its codes alone
    if kind != "pq":
        assert (got[:, 0] == ids[:200]).mean() >= 0.99  # an indexed vector finds itself
    assert np.all(np.diff(scores, axis=1) <= 1e-5)  # best first


def test_written_file_read_back_mapped_or_copied_answers_the_same(built, tmp_path):
    kind, x, ids, ann = built
    path = tmp_path / "i.faiss"
    ann.write(path)
    want = ann.search(x[:50], 10, PARAMS)
    for mmap in (True, False):
        back = AnnIndex.read(path, kind, 32, mmap=mmap)
        assert back.mapped is mmap and back.ntotal == ann.ntotal
        got = back.search(x[:50], 10, PARAMS)
        assert np.array_equal(got[1], want[1]) and np.allclose(got[0], want[0])


def test_built_from_blocks_matches_built_at_once(built):
    kind, x, ids, ann = built
    blocks = [(ids[i : i + 700], x[i : i + 700]) for i in range(0, len(x), 700)]
    streamed = AnnIndex.build_from(kind, 32, len(x), lambda m: x[:m], blocks)
    assert streamed.kind == kind and streamed.ntotal == ann.ntotal
    q = x[:100]
    truth = exact_top(q, x, ids, 10)
    assert abs(recall(streamed.search(q, 10, PARAMS)[1], truth) - recall(ann.search(q, 10, PARAMS)[1], truth)) < 0.05


def test_removed_ids_are_never_returned_or_removal_is_refused(built):
    kind, x, ids, ann = built
    gone = ids[5:8]
    if kind == "hnsw":  # HNSW cannot delete in place: it says so, and the caller rebuilds
        assert ann.remove(gone) is False and ann.ntotal == len(x)
        return
    assert ann.remove(gone)
    assert ann.ntotal == len(x) - 3
    _, got = ann.search(x[5:8], 10, WIDE)
    assert not set(got.ravel()) & set(gone)


def test_k_larger_than_the_index_returns_what_there_is(built):
    kind, x, ids, _ = built
    small = AnnIndex.build(kind, 32, ids[:20], x[:20])
    _, got = small.search(x[:1], 50, WIDE)
    found = got[0][got[0] >= 0]
    assert 0 < len(found) <= 20 and set(found) <= set(ids[:20])


def test_empty_index_and_k_larger_than_n():
    ann = AnnIndex.build("flat", 8, np.zeros(0, np.int64), np.zeros((0, 8), np.float32))
    s, i = ann.search(np.ones((1, 8), np.float32), 5)
    assert s.shape == (1, 0)
    ann.add(np.array([3]), np.ones((1, 8), np.float32) / np.sqrt(8))
    s, i = ann.search(np.ones((1, 8), np.float32), 5)
    assert list(i[0]) == [3]


@pytest.mark.parametrize("kind,n,expected", [("auto", 10, "flat"), ("auto", 10_000_000, "ivf"), ("pq", 5, "flat"),
                                             ("pq", PQ_MIN, "pq"), ("hnsw", 3, "hnsw")])
def test_kind_by_size(kind, n, expected):
    assert choose_kind(kind, n) == expected


def test_bad_kind_is_a_usage_error():
    with pytest.raises(UsageError, match="--index"):
        choose_kind("annoy", 1)


def test_pq_on_too_few_vectors_falls_back_to_exact_and_switches_when_grown():
    small = AnnIndex.build("pq", 32, np.arange(5), clustered(5))  # FAISS would raise "nx >= k" here
    assert small.kind == "flat" and small.ntotal == 5
    assert needs_rebuild(small, "pq", 5) is None
    assert "switching from flat to pq" in needs_rebuild(small, "pq", PQ_MIN)


def test_ivf_is_retrained_once_it_outgrows_its_training():
    ann = AnnIndex.build("ivf", 32, np.arange(500), clustered(500))
    assert ann.trained_n == 500
    assert needs_rebuild(ann, "ivf", 1500) is None
    assert "retraining" in needs_rebuild(ann, "ivf", 2500)


def test_reading_a_damaged_file_is_a_corrupt_index_error(tmp_path):
    path = tmp_path / "i.faiss"
    AnnIndex.build("flat", 32, np.arange(500), clustered(500)).write(path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CorruptIndexError):
        AnnIndex.read(path, "flat", 32, mmap=False)
    with pytest.raises(FileNotFoundError):
        AnnIndex.read(tmp_path / "nothing.faiss", "flat", 32, mmap=True)
