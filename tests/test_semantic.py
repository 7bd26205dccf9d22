"""The built-in model really learned its world: semantic search through the public API.

A fresh draw of the shapes world (seed never used in training), indexed with ``builtin:shapes``.
Thresholds are the issue's (≥ 0.9); the measured figures are printed (run with ``-s``) and kept in
benchmarks/RESULTS.md.
"""

import pytest

from mmsearch import Engine
from mmsearch.world import shapes as W

FRESH_SEED = 424242  # training used other seeds (see mmsearch/models/shapes/TRAINING.md)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    gallery = W.generate(FRESH_SEED, 720, two_object_rate=0.0)  # ~15 per (colour, shape): top-5 can be all-correct
    queries = W.generate(FRESH_SEED + 1, 60, two_object_rate=0.0)
    labels = {}
    for name, scenes in (("gallery", gallery), ("queries", queries)):
        (root / name).mkdir()
        for i, sc in enumerate(scenes):
            p = root / name / f"{i:04d}.png"
            sc.image.save(p)
            labels[str(p)] = (sc.objects[0].colour, sc.objects[0].shape)
    eng = Engine.open(root / "store", model="builtin:shapes", device="cpu", workers=0)
    report = eng.index([root / "gallery"])
    assert report.indexed == len(gallery)
    yield eng, root, labels, gallery, queries
    eng.close()


def test_text_to_image_recall_at_1(world):
    eng, root, labels, gallery, _ = world
    present = sorted({(o.colour, o.shape) for sc in gallery for o in sc.objects})
    correct = 0
    for colour, shape in present:
        top = eng.search(text=W.single_caption(colour, shape), k=1)[0]
        correct += labels[top.path] == (colour, shape)
    r1 = correct / len(present)
    print(f"\ntext→image R@1 over {len(present)} 'a COLOUR SHAPE' prompts: {r1:.3f}")
    assert r1 >= 0.9


def test_image_to_image_top5_share_shape_and_colour(world):
    eng, root, labels, _, queries = world
    shared = total = 0
    for i in range(len(queries)):
        q = str(root / "queries" / f"{i:04d}.png")
        for hit in eng.search(image=q, k=5):
            shared += labels[hit.path] == labels[q]
            total += 1
    rate = shared / total
    print(f"\nimage→image: top-5 share shape and colour: {rate:.3f}")
    assert rate >= 0.9


def test_image_to_text_picks_the_right_caption_among_distractors(world):
    eng, root, labels, gallery, _ = world
    eng.add_texts({f"{c}-{s}": W.single_caption(c, s) for c, s, _ in W.all_single_prompts()})
    correct = 0
    for i in range(100):
        p = str(root / "gallery" / f"{i:04d}.png")
        top = eng.search(image=p, type="text", k=1)[0]
        correct += top.paths[0] == "text:{}-{}".format(*labels[p])
    acc = correct / 100
    print(f"\nimage→text accuracy among {len(W.all_single_prompts())} captions: {acc:.3f}")
    assert acc >= 0.9
