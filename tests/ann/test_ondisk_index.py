"""``--index ondisk`` as a store's index: two files per generation (the ``.faiss`` and its ``.ivfdata``),
mapped read-only, caught up into a new lists file, checked, collected, and answering like exact search."""

from __future__ import annotations

import numpy as np
import pytest

from mmsearch.ann.faiss_index import choose_kind
from mmsearch.ann.indexes import IndexSet
from mmsearch.ann.faiss_index import index_ids
from mmsearch.ann.space_index import SpaceIndex, read_record
from mmsearch.encoders.base import SpaceInfo
from mmsearch.store.store import Store
from tests.kit import add_vectors, clustered, exact_top, recall

DIM, N = 16, 3000


def _files(root, hidden=False):
    """The names in ``ann/`` (``hidden``: also dot names, the work folders of indexes being made)."""
    return sorted(p.name for p in (root / "ann").iterdir() if hidden or not p.name.startswith("."))


def _lists(root):
    return root / "ann" / read_record(root, 1, "image")["lists"]["file"]


@pytest.fixture
def store(tmp_path):
    st = Store(tmp_path / "store", create=True)
    space = st.ensure_space(SpaceInfo(spec="test:vectors", family="test", weights="w", dim=DIM, modalities=("image",)))
    x = clustered(N, DIM, seed=5)
    add_vectors(st, space, x)
    yield st, space, x
    st.close()


def _writer(st, space, kind="ondisk", **kw):
    return IndexSet(st, kind, **kw)


def _search(idx, q, k=10):
    from mmsearch.ann.rerank import reranked

    rows = reranked(idx.store, idx.space_id, idx.ann, q, k, modality=idx.modality)
    return np.array([[i for _, i in row] + [-1] * (k - len(row)) for row in rows])


def test_built_saved_and_read_back_mapped_answer_like_exact_search(store):
    st, space, x = store
    _writer(st, space).sync(space, save=True)
    rec = read_record(st.root, space.id, "image")
    assert rec["kind"] == "ondisk" and rec["ntotal"] == N and rec["tuning"]["param"] == "nprobe"
    faiss_file, lists = rec["file"], rec["lists"]["file"]
    assert lists == faiss_file.removesuffix(".faiss") + ".ivfdata"  # one generation, two files
    assert _files(st.root, hidden=True) == sorted([faiss_file, lists, "space1-image.json"])  # no work folder left
    assert (st.root / "ann" / lists).stat().st_size == rec["lists"]["bytes"] > 0
    reader = SpaceIndex(st, space.id, space.key, "image", "ondisk")
    rep = reader.sync(save=False)
    assert rep.action == "loaded" and reader.ann.mapped and reader.ann.kind == "ondisk"
    q = x[:100] + 0.1 * np.random.default_rng(1).normal(size=(100, DIM)).astype(np.float32)  # near stored ones
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    assert recall(_search(reader, q), exact_top(q, x, st.vector_ids(space.id, "image"), 10)) >= 0.95


def test_catching_up_adds_the_new_vectors_and_never_returns_removed_ones(store):
    st, space, x = store
    _writer(st, space).sync(space, save=True)
    first = _files(st.root)
    before = set(st.vector_ids(space.id, "image").tolist())
    fresh = clustered(200, DIM, seed=11)
    add_vectors(st, space, fresh, start=N)
    gone = [f"/v/{i}.png" for i in range(0, 600, 2)]
    st.apply([], space.id, remove_uris=gone)
    now = st.vector_ids(space.id, "image")
    gone_ids = np.array(sorted(before - set(now.tolist())))
    new_ids = np.array(sorted(set(now.tolist()) - before))
    assert len(gone_ids) == 300 and len(new_ids) == 200

    reader = SpaceIndex(st, space.id, space.key, "image", "ondisk")  # a reader catches up privately:
    rep = reader.sync(save=False)
    assert rep.action == "caught-up" and reader.ann.ntotal == len(now)
    private = [n for n in _files(st.root, hidden=True) if n not in first]  # its work folder, no generation
    assert len(private) == 1 and private[0].startswith(".space1-image.work-")

    rep = _writer(st, space).sync(space, save=True)
    rec = read_record(st.root, space.id, "image")
    assert rec["generation"] == st.generation() and rec["ntotal"] == len(now)
    assert _files(st.root) == sorted([rec["file"], rec["lists"]["file"], "space1-image.json"])  # old one collected
    idx = SpaceIndex(st, space.id, space.key, "image", "ondisk")
    assert idx.sync(save=False).action == "loaded"
    for ann in (reader.ann, idx.ann):
        np.testing.assert_array_equal(np.sort(index_ids(ann)), np.sort(now))
        got = _search(idx if ann is idx.ann else reader, fresh[:50], 10)
        assert not np.isin(got, gone_ids).any()
        assert (got[:, 0] == new_ids[:50]).mean() >= 0.95  # a new vector finds itself
    del reader, ann
    import gc

    gc.collect()
    assert not (st.root / "ann" / private[0]).exists()  # the reader's work folder went with its index


@pytest.mark.parametrize("damage", ["missing", "truncated", "modified"])
def test_a_damaged_ivfdata_is_rebuilt_with_the_reason(store, damage):
    st, space, x = store
    _writer(st, space).sync(space, save=True)
    lists = _lists(st.root)
    if damage == "missing":
        lists.unlink()
    elif damage == "truncated":
        lists.write_bytes(lists.read_bytes()[:1000])
    else:
        data = bytearray(lists.read_bytes())
        data[100] ^= 0xFF
        lists.write_bytes(bytes(data))
    from mmsearch.ann.indexes import _index_problem

    idx = SpaceIndex(st, space.id, space.key, "image", "ondisk")
    problem, _ = _index_problem(idx, st.generation(), st.vector_ids(space.id, "image"), True)
    assert lists.name in problem  # doctor's check (with the checksum) names the file
    if damage == "modified":
        return  # only --verify reads the whole file; a size-true change is doctor's to find
    notices = _writer(st, space).sync(space, save=True)
    assert len(notices) == 1 and lists.name in notices[0] and "rebuilt" in notices[0]
    rec = read_record(st.root, space.id, "image")
    assert rec["kind"] == "ondisk" and rec["ntotal"] == N and _lists(st.root).exists()


def test_a_reader_that_mapped_an_old_generation_keeps_answering_after_a_save(store):
    st, space, x = store
    _writer(st, space).sync(space, save=True)
    reader = SpaceIndex(st, space.id, space.key, "image", "ondisk")
    reader.sync(save=False)
    old = _lists(st.root)
    q = x[:20]
    before = _search(reader, q)
    add_vectors(st, space, clustered(50, DIM, seed=12), start=N)
    _writer(st, space).sync(space, save=True)
    assert not old.exists()  # collected: the reader's mapping holds the unlinked file
    np.testing.assert_array_equal(_search(reader, q), before)
    assert reader.sync(save=False).action == "loaded" and reader.ann.ntotal == N + 50


def test_auto_builds_ondisk_when_even_pq_codes_exceed_the_memory_budget(store, monkeypatch):
    st, space, x = store
    monkeypatch.setattr("mmsearch.ann.faiss_index.AUTO_FLAT_MAX", 1000)
    budget = N * DIM * 4 - 1  # full vectors do not fit: pq, unless even its codes do not
    assert choose_kind("auto", N, DIM, budget) == "pq"
    _writer(st, space, "auto", budget=N * 8).sync(space, save=True)  # less than the ids alone
    assert read_record(st.root, space.id, "image")["kind"] == "ondisk"
    reader = SpaceIndex(st, space.id, space.key, "image", "auto")  # a reader never rebuilds under auto
    assert reader.sync(save=False).action == "loaded" and reader.ann.kind == "ondisk"


def test_doctor_reports_and_repairs_a_missing_ivfdata(store):
    st, space, x = store
    _writer(st, space).sync(space, save=True)
    rec = read_record(st.root, space.id, "image")
    ok = _writer(st, space).check(repair=False)
    assert ok[0].status == "ok" and "ivfdata" in ok[0].detail
    _lists(st.root).unlink()
    found = _writer(st, space).check(repair=True)
    assert found[0].status == "repaired" and rec["lists"]["file"] in found[0].detail
    assert _writer(st, space).check(repair=False)[0].status == "ok"


def test_stats_and_doctor_from_the_command_line_show_the_lists_file(store):
    """Through a fresh interpreter: FAISS's on-disk lists print to fd 1 while read; ``--json`` stays JSON."""
    import json
    import subprocess
    import sys

    st, space, x = store
    _writer(st, space).sync(space, save=True)
    rec = read_record(st.root, space.id, "image")

    def run(*args):
        out = subprocess.run([sys.executable, "-m", "mmsearch", *args, "--store", str(st.root)],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    shown = json.loads(run("stats", "--json"))["spaces"][0]
    assert shown["index"]["image"] == "ondisk"
    assert shown["index_bytes"]["image"] == rec["bytes"] + rec["lists"]["bytes"]
    assert "image=ondisk (" in run("stats")
    checks = {c["name"]: c for c in json.loads(run("doctor", "--no-repair", "--json"))["checks"]}
    assert checks["index 1/image"]["status"] == "ok" and rec["lists"]["file"] in checks["index 1/image"]["detail"]


def test_a_generation_that_changes_nothing_here_keeps_the_files_and_removing_all_empties_it(store):
    st, space, x = store
    _writer(st, space).sync(space, save=True)
    rec = read_record(st.root, space.id, "image")
    st.set_meta("note", "another write")  # a new store generation, nothing added or removed here
    _writer(st, space).sync(space, save=True)
    now = read_record(st.root, space.id, "image")
    assert now["generation"] == st.generation() > rec["generation"]
    assert (now["file"], now["lists"]) == (rec["file"], rec["lists"])  # no lists file written again
    st.apply([], space.id, remove_uris=[f"/v/{i}.png" for i in range(N)])
    _writer(st, space).sync(space, save=True)
    idx = SpaceIndex(st, space.id, space.key, "image", "ondisk")
    assert idx.sync(save=False).action == "loaded" and idx.ann.ntotal == 0
    assert idx.search(x[:2], 5)[1].shape == (2, 0)


def test_doctor_deletes_a_crashed_work_folder_and_stray_lists_but_not_the_current_ones(store):
    st, space, x = store
    _writer(st, space).sync(space, save=True)
    ann = st.root / "ann"
    keep = _files(st.root, hidden=True)
    (ann / ".space1-image.work-1-abc.tmp").mkdir()
    (ann / ".space1-image.work-1-abc.tmp" / "space1-image.g9-0.shard0000").write_bytes(b"x")
    (ann / "space1-image.g0-dead.ivfdata").write_bytes(b"x")  # a save that crashed before its pointer
    found = [c for c in _writer(st, space).check(repair=True) if c.name == "index files"]
    assert found[0].status == "repaired" and "space1-image.g0-dead.ivfdata" in found[0].detail
    assert _files(st.root, hidden=True) == keep


def test_index_ondisk_from_the_command_line_then_query(tmp_path, tiny_model, monkeypatch):
    import json

    from tests.kit import cli, write_images

    monkeypatch.setattr("mmsearch.ann.faiss_index.PQ_MIN", 20)  # a few dozen images make an on-disk index
    imgs = write_images(tmp_path / "data", 40)
    s = tmp_path / "s"
    r = cli("index", tmp_path / "data", "--store", s, "--model", tiny_model, "--index", "ondisk", "--workers", "0",
            "--json")
    assert r.exit_code == 0, r.output
    rec = read_record(s, 1, "image")
    assert rec["kind"] == "ondisk" and rec["ntotal"] == 40 and (s / "ann" / rec["lists"]["file"]).exists()
    for p in imgs[::7]:
        r = cli("query", "--image", p, "--store", s, "-k", "1", "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)[0]["path"] == str(p)


@pytest.mark.parametrize("have,n,switch", [("pq", 1_050_000, False), ("pq", 1_200_000, True),
                                           ("ondisk", 950_000, False), ("ondisk", 800_000, True)])
def test_auto_moves_between_pq_and_ondisk_only_clearly_past_the_budget(have, n, switch):
    from mmsearch.ann.faiss_index import AnnIndex, needs_rebuild

    budget = 72 * 10**6  # 1M × 512: 64-byte codes + 8-byte ids fill it exactly
    ann = AnnIndex(None, have, 512, trained_n=n)
    why = needs_rebuild(ann, "auto", n, budget)
    assert (why is not None) == switch and (why is None or "switching from" in why)
