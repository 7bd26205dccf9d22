"""Where searches run: the torch exact searcher and the filter-after path of GPU indexes, checked on the
CPU (the same code; tests/test_gpu.py runs them on CUDA), and the choice and report on a faiss-cpu machine."""

from __future__ import annotations

import numpy as np
import pytest

from mmsearch.ann.faiss_index import AnnIndex, SearchParams
from mmsearch.ann.indexes import IndexSet
from mmsearch.ann.placement import Placed, PostFiltered, TorchExact, choose, cuda_usable, faiss_build
from mmsearch.config import Settings
from mmsearch.encoders.base import SpaceInfo
from mmsearch.errors import UsageError
from mmsearch.store.store import Store, Upsert
from tests.kit import cli

DIM = 16


def unit_rows(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact(x: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int, allowed=None) -> np.ndarray:
    keep = np.ones(len(ids), bool) if allowed is None else np.isin(ids, allowed)
    sims = q @ x[keep].T
    return ids[keep][np.argsort(-sims, axis=1, kind="stable")[:, :k]]


@pytest.fixture(scope="module")
def data():
    x = unit_rows(3000, 0)
    ids = np.arange(3000, dtype=np.int64) * 3 + 7  # not positions: the searchers must map back
    return x, ids, unit_rows(20, 1)


class IgnoresSelector:
    """A CPU index that drops ``allowed``, as FAISS GPU indexes drop an IDSelector without a word."""

    def __init__(self, ann: AnnIndex) -> None:
        self.ann, self.ntotal = ann, ann.ntotal

    def search(self, queries, k, params=None, allowed=None):
        return self.ann.search(queries, k, params)


def test_torch_exact_search_matches_faiss_flat(data):
    x, ids, q = data
    ann = AnnIndex.build("flat", DIM, ids, x)
    t = TorchExact.of(ann, device="cpu")
    s1, i1 = ann.search(q, 10)
    s2, i2 = t.search(q, 10)
    assert (i1 == i2).all() and np.allclose(s1, s2, atol=1e-5)


@pytest.mark.parametrize("k, kept", [(10, 500), (10, 3), (5000, None), (10, 0)])
def test_torch_exact_search_honours_filters_and_short_sets(data, k, kept):
    x, ids, q = data
    allowed = None if kept is None else ids[np.random.default_rng(2).choice(len(ids), kept, replace=False)]
    scores, got = TorchExact(ids, x, device="cpu").search(q, k, allowed)
    want = exact(x, ids, q, k, allowed)
    assert got.shape == want.shape == (len(q), min(k, len(ids) if kept is None else kept))
    assert (got[:, :10] == want[:, :10]).all()  # (deep in a full ranking, float rounding may swap near-ties)
    assert all(set(a) == set(b) for a, b in zip(got, want)) and (np.diff(scores, axis=1) <= 0).all()
    if kept:
        assert np.isin(got, allowed).all()


@pytest.mark.parametrize("kept", [300, 2])  # a broad filter, and one the over-fetch cannot satisfy
def test_an_index_that_ignores_selectors_is_filtered_after_the_search(data, kept):
    x, ids, q = data
    ann = AnnIndex.build("flat", DIM, ids, x)
    allowed = ids[np.random.default_rng(3).choice(len(ids), kept, replace=False)]
    _, ignored = IgnoresSelector(ann).search(q, 10, None, allowed)
    assert not np.isin(ignored, allowed).all()  # the hazard: without care, other ids come back
    _, got = PostFiltered(IgnoresSelector(ann), ann).search(q, 10, None, allowed)
    assert (got[:, : min(10, kept)] == exact(x, ids, q, 10, allowed)).all()


def test_post_filtered_ivf_returns_only_allowed_ids(data):
    x, ids, q = data
    ivf = AnnIndex.build("ivf", DIM, ids, x)
    allowed = ids[::7]
    _, got = PostFiltered(IgnoresSelector(ivf), ivf).search(q, 10, SearchParams(nprobe=10_000), allowed)
    assert np.isin(got[got >= 0], allowed).all() and (got == exact(x, ids, q, 10, allowed)).all()


def test_a_copy_for_another_device_keeps_what_the_index_knows(data):
    x, ids, _ = data
    ann = AnnIndex.build("ivf", DIM, ids, x)
    copy = ann.with_index(ann.index)
    assert (copy.kind, copy.dim, copy.trained_n, copy.tuned) == (ann.kind, ann.dim, ann.trained_n, ann.tuned)


needs_no_cuda = pytest.mark.skipif(cuda_usable(), reason="this machine has CUDA")


@needs_no_cuda
@pytest.mark.parametrize("kind, n, wanted", [("flat", 10, "auto"), ("flat", 10**6, "auto"), ("ivf", 10**6, "auto"),
                                             ("hnsw", 10**6, "cuda"), ("pq", 10**6, "cuda"), ("flat", 10**6, "cpu")])
def test_without_a_gpu_every_search_stays_on_faiss_cpu(kind, n, wanted):
    assert choose(kind, n, wanted) == "faiss-cpu"


@needs_no_cuda
@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_asking_for_cuda_without_one_is_a_usage_error(kind):
    with pytest.raises(UsageError, match="search_device cuda"):
        choose(kind, 10, "cuda")


def test_faiss_build_is_detected():
    b = faiss_build()
    import faiss

    assert b["build"] == ("faiss-gpu" if "GPU" in faiss.get_compile_options() else "faiss-cpu")
    assert b["version"] == faiss.__version__ and any(d.startswith("faiss") for d in b["distributions"])


def test_a_bad_search_device_is_a_usage_error(monkeypatch):
    monkeypatch.setenv("MMSEARCH_SEARCH_DEVICE", "gpu")
    with pytest.raises(UsageError, match="search_device .MMSEARCH_SEARCH_DEVICE or the config file. 'gpu'"):
        Settings.resolve()


def test_a_write_places_the_index_again(tmp_path, data):
    x, _, q = data
    st = Store(tmp_path / "s", create=True)
    sp = st.ensure_space(SpaceInfo(spec="t:v", family="t", weights="w", dim=DIM, modalities=("image",)))
    st.apply([Upsert(f"/v/{i}.png", "file", 1, 1, f"{i:064x}", "image", vector=x[i]) for i in range(100)], sp.id)
    idx = IndexSet(st, "flat").get(sp, "image")
    idx.sync(save=False)
    idx.search(q, 5)
    first = idx.placement
    st.apply([Upsert("/v/new.png", "file", 1, 1, "f" * 64, "image", vector=q[0])], sp.id)
    idx.sync(save=False)
    _, got = idx.search(q[:1], 1)
    assert idx.placement is not first and got[0, 0] == st.vectors(sp.id, "image")[0][-1]  # the new vector found
    st.close()


@pytest.fixture
def torch_on_cpu(monkeypatch):
    """Flat indexes placed as a torch copy of their vectors, as on a CUDA machine (on the CPU: the same code)."""
    from mmsearch.ann import space_index

    def place(ann: AnnIndex, wanted: str = "auto") -> Placed:
        if ann.kind != "flat":
            return Placed("faiss-cpu", "cpu", ann)
        return Placed("torch", "cpu", TorchExact.of(ann, "cpu"))

    monkeypatch.setattr(space_index, "place", place)


@pytest.mark.parametrize("role", ["writer", "reader of the writer's file"])
def test_a_placed_copy_never_serves_vectors_the_index_no_longer_has(tmp_path, data, torch_on_cpu, role):
    """The torch copy holds the vectors as they were when placed: after vectors are added, and after some
    are removed, searches through it see the index as it is now."""
    x, _, q = data
    st = Store(tmp_path / "s", create=True)
    sp = st.ensure_space(SpaceInfo(spec="t:v", family="t", weights="w", dim=DIM, modalities=("image",)))
    st.apply([Upsert(f"/v/{i}.png", "file", 1, 1, f"{i:064x}", "image", vector=x[i]) for i in range(200)], sp.id)
    writer = IndexSet(st, "flat").get(sp, "image")
    idx = writer if role == "writer" else IndexSet(st, "flat").get(sp, "image")

    def searched() -> np.ndarray:
        writer.sync(save=True)
        idx.sync(save=role == "writer")
        _, got = idx.search(q, 5)
        assert idx.placement.path == "torch"
        ids, vecs = st.vectors(sp.id, "image")
        assert (got == exact(vecs, ids, q, 5)).all()  # what the database holds now, not what was placed
        return got

    before = searched()
    st.apply([Upsert(f"/v/near{r}.png", "file", 1, 1, f"{r:03d}" + "a" * 61, "image", vector=q[r]) for r in range(3)],
             sp.id)  # each the best match of its query
    added = searched()
    assert not np.isin(added[:3, 0], before).any()
    st.apply([], sp.id, remove_uris=[f"/v/near{r}.png" for r in range(3)] + [f"/v/{i}.png" for i in range(0, 200, 2)])
    removed = searched()
    assert not np.isin(removed, added[:3, 0]).any()
    st.close()


def test_stats_and_doctor_say_where_searches_run_and_which_faiss(tmp_path):
    from tests.kit import write_images

    write_images(tmp_path / "imgs", 3)
    assert cli("index", str(tmp_path / "imgs"), "--store", str(tmp_path / "s"), "-m", "builtin:shapes").exit_code == 0
    out = cli("stats", "--store", str(tmp_path / "s"), "--json")
    import json

    d = json.loads(out.output)
    assert d["faiss"].startswith(faiss_build()["build"]) and d["spaces"][0]["search"]["image"] == "faiss-cpu"
    doc = cli("doctor", "--store", str(tmp_path / "s"), "--no-repair")
    assert "faiss-cpu" in doc.output or "faiss-gpu" in doc.output
