"""A query reaches every space that can embed it; several spaces merge on calibrated scores."""

from __future__ import annotations

import numpy as np
import pytest

from mmsearch import Engine
from mmsearch.query.calibrate import BackgroundZ
from mmsearch.query.search import merge
from mmsearch.types import Hit
from tests.kit import TINY_CFG, make_tiny_model, write_images, write_texts


def _hit(id: int, score: float, calibrated: float, space: str) -> Hit:
    return Hit(rank=0, id=id, score=score, modality="image", path=f"/{id}.png", paths=(f"/{id}.png",),
               space=space, calibrated=calibrated)


def test_merge_orders_by_calibrated_score_not_raw_cosine_and_shows_an_item_once():
    # model A's cosines run high, model B's low: raw order would put all of A first
    a = [_hit(1, 0.91, 1.0, "A"), _hit(2, 0.90, 0.5, "A")]
    b = [_hit(3, 0.35, 4.0, "B"), _hit(1, 0.30, 2.5, "B")]
    merged = merge([a, b], k=3)
    assert [(h.id, h.space) for h in merged] == [(3, "B"), (1, "B"), (2, "A")]
    assert [h.rank for h in merged] == [1, 2, 3]


def test_the_calibrated_score_is_a_z_score_against_unrelated_queries(engine_factory, tmp_path):
    """Text queries: against generic prompts × the space's items; image queries: the items × each other."""
    from mmsearch.query.calibrate import BACKGROUND_PROMPTS

    eng = engine_factory()
    write_images(tmp_path / "img", 12)
    eng.index([tmp_path / "img"])
    space = eng.space()
    _, items = eng.store.vectors(space.id, "image")
    prompts = eng.encoder(space.spec).embed_texts(list(BACKGROUND_PROMPTS))
    sims = (prompts @ items.T).ravel()
    cal = BackgroundZ(eng.store)  # reads what the write kept
    mu, sd = cal.stats(space, "text", "image")
    assert abs(mu - sims.mean()) < 2e-3 and abs(sd - sims.std()) < 2e-3
    z = cal(space, "text", "image", np.array([mu + 2 * sd]))
    assert abs(z[0] - 2.0) < 1e-6
    half = len(items) // 2
    own = (items[:half] @ items[half:].T).ravel()
    assert abs(cal.stats(space, "image", "image")[0] - own.mean()) < 2e-3
    hit = eng.search(text="anything", k=1)[0]
    assert hit.calibrated == pytest.approx((hit.score - mu) / sd, abs=1e-3)
    assert hit.why["background_mean"] == pytest.approx(mu, abs=1e-5)


def test_a_text_query_searches_every_space_and_merges_them(tmp_path, tiny_model):
    data = tmp_path / "data"
    write_images(data / "img", 6)
    write_texts(data / "n", ["a lantern by the harbour", "granite and copper"])
    other = "local-dir:" + str(make_tiny_model(tmp_path / "other", seed=7, cfg={**TINY_CFG, "embed_dim": 24}))
    store = tmp_path / "store"
    for model in (tiny_model, other):
        with Engine.open(store, model=model, workers=0) as eng:
            eng.index([data])
    with Engine.open(store, create=False) as eng:
        hits = eng.search(text="granite and copper", type="text", k=4)
        assert {h.space for h in hits} <= {tiny_model, other} and len(hits) == 2  # 2 texts, each shown once
        assert hits[0].text == "granite and copper"  # cosine 1 in either space: the top of both lists
        assert all(h.calibrated is not None for h in hits)
        assert [h.calibrated for h in hits] == sorted((h.calibrated for h in hits), reverse=True)
        images = eng.search(text="granite and copper", k=20)  # default type: images, from both spaces
        assert len(images) == 6 and {h.modality for h in images} == {"image"}
        one = eng.search(text="granite and copper", type="text", k=4, space=other)  # --model: one space
        assert {h.space for h in one} == {other} and all(h.calibrated is not None for h in one)
