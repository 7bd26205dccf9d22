"""The public API: self-retrieval, index kinds, texts, removal, model mismatch."""

import numpy as np
import pytest

from mmsearch import Engine, ModelError, StoreError, UsageError
from tests.conftest import make_tiny_model, write_images, write_texts

NOTES = ["buy milk and eggs", "the quarterly report is due friday", "a red bicycle leaning on a wall",
         "call the plumber about the leak", "birthday party on saturday", "notes on transformer models"]


@pytest.fixture
def filled(engine_factory, tmp_path):
    def make(index="auto"):
        eng = engine_factory(tmp_path / f"store-{index}", index=index)
        imgs = write_images(tmp_path / "data" / "img", 120)
        notes = write_texts(tmp_path / "data" / "notes", NOTES)
        eng.index([tmp_path / "data"])
        return eng, imgs, notes

    return make


@pytest.mark.parametrize("index", ["flat", "ivf", "hnsw"])
def test_self_retrieval_ranks_the_item_itself_first(filled, index):
    eng, imgs, notes = filled(index)
    assert eng.stats().spaces[0].index["image"] == index
    for p in imgs[::10]:
        hits = eng.search(image=p, k=5)
        assert hits[0].path == str(p) and hits[0].score > 0.99
        assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
        assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    for p, text in zip(notes, NOTES):
        hit = eng.search(text=text, type="text", k=1)[0]
        assert hit.path == str(p) and hit.text == text


def test_type_any_merges_modalities_and_default_prefers_images(filled):
    eng, imgs, notes = filled()
    assert {h.modality for h in eng.search(text="milk", k=5)} == {"image"}
    both = eng.search(text=NOTES[0], type="any", k=200)
    assert {h.modality for h in both} == {"image", "text"}
    assert len(both) == len(imgs) + len(notes)


def test_added_texts_are_searchable_and_image_to_text_works(engine_factory, tmp_path):
    eng = engine_factory()
    imgs = write_images(tmp_path / "img", 5)
    eng.index([tmp_path / "img"])
    assert eng.add_texts({"c1": "a cat on a sofa", "c2": "a dog in the park"}) == 2
    assert eng.add_texts({"c1": "a cat on a sofa"}) == 0  # same text again: nothing new
    hits = eng.search(text="a dog in the park", type="text", k=2)
    assert hits[0].paths == ("text:c2",) and hits[0].path is None
    img_to_text = eng.search(image=imgs[0], type="text", k=2)
    assert {h.paths[0] for h in img_to_text} == {"text:c1", "text:c2"}
    assert eng.remove(["text:c1"]) == 1
    assert [h.paths for h in eng.search(text="a cat on a sofa", type="text", k=5)] == [("text:c2",)]


def test_remove_folder_drops_its_items_from_search(engine_factory, tmp_path):
    eng = engine_factory()
    a = write_images(tmp_path / "a", 3, seed=1)
    write_images(tmp_path / "b", 3, seed=2)
    eng.index([tmp_path / "a", tmp_path / "b"])
    assert eng.remove([tmp_path / "a"]) == 3
    assert all(h.path.startswith(str(tmp_path / "b")) for h in eng.search(image=a[0], k=10))


def test_under_filter(engine_factory, tmp_path):
    eng = engine_factory()
    write_images(tmp_path / "x" / "a", 10, seed=1)
    b = write_images(tmp_path / "x" / "b", 10, seed=2)
    eng.index([tmp_path / "x"])
    hits = eng.search(image=b[0], k=20, under=tmp_path / "x" / "a")
    assert len(hits) == 10 and all("/x/a/" in h.path for h in hits)


def test_query_with_another_model_is_refused(engine_factory, tmp_path):
    eng = engine_factory()
    write_images(tmp_path / "img", 3)
    eng.index([tmp_path / "img"])
    eng.close()
    other = "local-dir:" + str(make_tiny_model(tmp_path / "other", seed=99))
    with Engine.open(tmp_path / "store", model=other) as e2:
        with pytest.raises(ModelError, match="no vectors for model"):
            e2.search(text="x")


def test_bad_arguments_are_usage_errors(engine_factory, tmp_path):
    eng = engine_factory()
    write_images(tmp_path / "img", 2)
    eng.index([tmp_path / "img"])
    with pytest.raises(UsageError):
        eng.search()
    with pytest.raises(UsageError):
        eng.search(text="a", image=tmp_path / "img" / "x.png")
    with pytest.raises(UsageError, match="k=0"):
        eng.search(text="a", k=0)
    with pytest.raises(UsageError, match="type="):
        eng.search(text="a", type="movie")
    with pytest.raises(UsageError, match="no such file"):
        eng.search(image=tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"junk")
    with pytest.raises(UsageError, match="junk.png"):
        eng.search(image=tmp_path / "junk.png")
    with pytest.raises(UsageError, match="dimensions"):
        eng.search(vector=np.ones(5))
    with pytest.raises(UsageError):
        eng.add_texts("just one string")


def test_opening_a_missing_store_for_reading(tmp_path):
    with pytest.raises(StoreError, match="no mmsearch store"):
        Engine.open(tmp_path / "none", create=False)


@pytest.mark.parametrize("kind", ["pq", "ondisk"])
def test_pq_candidates_are_reranked_with_exact_vectors(tmp_path, kind):
    """IVF-PQ codes are lossy (in memory or on disk); hits must carry exact scores and match exact search's."""
    from mmsearch.encoders.base import SpaceInfo
    from mmsearch.store.store import Store, Upsert

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(30, 32))
    x = centres[rng.integers(0, 30, 1000)] + 0.3 * rng.normal(size=(1000, 32))  # < 1024: fast 4-bit PQ
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    store = Store(tmp_path / "s", create=True)
    sp = store.ensure_space(SpaceInfo(spec="v", family="v", weights="w", dim=32, modalities=("image",)))
    store.apply([Upsert(f"/v/{i}", "file", 1, 1, f"{i:064x}", "image", vector=x[i]) for i in range(1000)], sp.id)
    store.close()
    exact_ids = {}
    with Engine.open(tmp_path / "s", index="flat", create=False) as flat:
        for i in range(0, 300, 10):
            exact_ids[i] = [(h.id, h.score) for h in flat.search(vector=x[i], k=10)]
    import shutil

    shutil.rmtree(tmp_path / "s" / "ann", ignore_errors=True)  # readers never write index files; be sure
    agree = 0
    with Engine.open(tmp_path / "s", index=kind, create=False) as pq:
        assert pq.stats().spaces[0].index["image"] in (kind, "none")
        for i, want in exact_ids.items():
            got = pq.search(vector=x[i], k=10)
            assert pq.stats().spaces[0].index["image"] == kind
            wanted = dict(want)
            for h in got:  # scores are exact, not PQ approximations
                if h.id in wanted:
                    assert abs(h.score - wanted[h.id]) < 1e-5
            agree += len({h.id for h in got} & set(wanted))
    assert agree / (10 * len(exact_ids)) >= 0.95


def test_a_vanished_file_updates_every_models_index_file(engine_factory, tmp_path):
    """Content dropped while indexing with model B must leave model A's index file current too."""
    other = "local-dir:" + str(make_tiny_model(tmp_path / "other", seed=5))
    imgs = write_images(tmp_path / "img", 4)
    engine_factory(tmp_path / "store").index([tmp_path / "img"])
    engine_factory(tmp_path / "store", model=other).index([tmp_path / "img"])
    imgs[0].unlink()
    engine_factory(tmp_path / "store", model=other).index([tmp_path / "img"])
    with Engine.open(tmp_path / "store", create=False) as reader:  # model A, the store's first
        hits = reader.search(image=imgs[1], k=10)
        assert reader.notices == []  # nothing was behind: no repair to report
        assert str(imgs[0]) not in {h.path for h in hits} and len(hits) == 3
        assert reader.doctor(repair=False).ok


def test_notices_belong_to_the_call_that_made_them(engine_factory, tmp_path):
    eng = engine_factory()
    write_images(tmp_path / "img", 3)
    eng.index([tmp_path / "img"])
    eng.close()
    (tmp_path / "store" / "ann" / "space1-image.json").unlink()  # the image index's pointer: as if never saved
    eng = engine_factory()
    first = eng.index([tmp_path / "img"]).notices
    second = eng.index([tmp_path / "img"]).notices
    assert first == ["index 1/image file was missing: built from the database (3 vectors)"]
    assert second == [] and eng.notices == []


def test_an_indexed_folder_found_empty_keeps_its_entries_until_removed(engine_factory, tmp_path):
    """An empty folder where files were is what an unmounted disk leaves: index keeps them, and says so."""
    from tests.kit import write_images

    mnt = tmp_path / "mnt"
    imgs = write_images(mnt / "photos", 3)
    eng = engine_factory(tmp_path / "store")
    assert eng.index([mnt]).indexed == 3
    for p in imgs:
        p.unlink()
    (mnt / "photos").rmdir()
    report = eng.index([mnt])
    assert report.removed == 0 and eng.stats().sources["file"] == 3
    assert [n for n in report.notices if f"{mnt} is empty now: its 3 entries are kept" in n], report.notices
    assert eng.remove([mnt]) == 3  # forgetting them is a decision of its own
    write_images(mnt, 1)
    assert eng.index([mnt]).indexed == 1  # a folder with files in it syncs as before


def test_a_second_store_of_a_model_reuses_its_calibration_prompts(engine_factory, counting, tiny_model, tmp_path,
                                                                   monkeypatch):
    """The generic prompts scores are calibrated against are embedded once per model (the user's cache),
    not by every new store; the stores' calibrated scores are the same."""
    from mmsearch.query.calibrate import BACKGROUND_PROMPTS

    monkeypatch.setenv("MMSEARCH_CACHE", str(tmp_path / "cache"))
    write_images(tmp_path / "img", 4)
    scores, texts = [], []
    for name in ("one", "two"):
        eng = engine_factory(tmp_path / name, model=counting.spec(tiny_model))
        eng.index([tmp_path / "img"])
        texts.append(counting.last.items - 4)  # what reached the text tower: prompts (and nothing else)
        scores.append([h.calibrated for h in eng.search("a photo of a cat")])
    assert texts[0] >= len(BACKGROUND_PROMPTS) and texts[1] == 0
    assert scores[0] == scores[1]
