"""Tests for the procedural shapes world (generator + sample writer). Fast, no model."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mmsearch.world import shapes as W
from mmsearch.world.sample import write_samples


def _pixels(scenes):
    return [np.asarray(s.image) for s in scenes]


def test_constants():
    assert {"circle", "square", "triangle", "star"} <= set(W.SHAPES)
    assert len(W.COLOURS) >= 8
    assert set(W.COLOURS) == set(W.COLOUR_RGB)
    rgbs = list(W.COLOUR_RGB.values())
    # colours are clearly distinct from each other
    for i in range(len(rgbs)):
        for j in range(i + 1, len(rgbs)):
            assert np.linalg.norm(np.subtract(rgbs[i], rgbs[j])) > 60


def test_deterministic_per_seed():
    a = W.generate(3, 12)
    b = W.generate(3, 12)
    assert len(a) == len(b) == 12
    assert [s.captions for s in a] == [s.captions for s in b]
    assert [s.objects for s in a] == [s.objects for s in b]
    for x, y in zip(_pixels(a), _pixels(b)):
        assert np.array_equal(x, y)


def test_prefix_stable():
    a = W.generate(5, 10)
    b = W.generate(5, 4)
    assert (len(a), len(b)) == (10, 4)
    for x, y in zip(_pixels(a[:4]), _pixels(b)):
        assert np.array_equal(x, y)


def test_different_seeds_differ():
    a, b = W.generate(0, 10), W.generate(1, 10)
    assert [s.captions for s in a] != [s.captions for s in b]
    assert any(not np.array_equal(x, y) for x, y in zip(_pixels(a), _pixels(b)))


@pytest.mark.parametrize("size", [48, 64, 96])
def test_images_rgb_of_requested_size(size):
    scenes = W.generate(11, 6, size=size, two_object_rate=0.5)
    assert len(scenes) == 6
    for s in scenes:
        assert s.image.mode == "RGB"
        assert s.image.size == (size, size)


def test_captions_mention_colour_and_shape():
    scenes = W.generate(2, 60, two_object_rate=0.3)
    assert any(len(s.objects) == 2 for s in scenes)
    assert any(len(s.objects) == 1 for s in scenes)
    for s in scenes:
        assert s.captions and all(isinstance(c, str) and c for c in s.captions)
        for o in s.objects:
            assert o.shape in W.SHAPES and o.colour in W.COLOURS
            assert o.size in W.SIZES and o.position in W.POSITIONS
            for c in s.captions:
                assert o.colour in c and o.shape in c, (c, o)
        if len(s.objects) == 1:
            assert W.single_caption(s.objects[0].colour, s.objects[0].shape) in s.captions
        else:
            assert s.relation in W.RELATIONS
            assert s.objects[0].label != s.objects[1].label


@pytest.mark.parametrize("rate, objects", [(0.0, 1), (1.0, 2)])
def test_two_object_rate_extremes(rate, objects):
    scenes = W.generate(4, 30, two_object_rate=rate)
    assert [len(s.objects) for s in scenes] == [objects] * 30


def test_object_is_drawn_in_its_colour():
    # The object's colour must dominate the pixels at its centre, whatever the background.
    scenes = W.generate(9, 40, two_object_rate=0.0)
    assert len(scenes) == 40
    for s in scenes:
        o = s.objects[0]
        x0, y0, x1, y1 = o.bbox
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        px = np.asarray(s.image)[cy, cx].astype(int)
        assert np.linalg.norm(px - np.array(W.COLOUR_RGB[o.colour])) < 40, (o, px)


def test_positions_and_relations():
    left = W.render_scene([{"shape": "circle", "colour": "red", "size": "small", "position": "left"}])
    assert left.objects[0].bbox[2] < 40  # stays in the left part of a 64px image
    pair = W.render_scene(
        [{"shape": "circle", "colour": "red", "size": "small"},
         {"shape": "triangle", "colour": "yellow", "size": "small"}], relation="left of")
    a, b = pair.objects
    assert a.bbox[0] < b.bbox[0]
    assert "a red circle left of a yellow triangle" in pair.captions


def test_helpers():
    assert W.single_caption("red", "circle") == "a red circle"
    prompts = W.all_single_prompts()
    assert len(prompts) == len(W.SHAPES) * len(W.COLOURS)
    assert len({p for _, _, p in prompts}) == len(prompts)


def test_sample_writer(tmp_path):
    m = write_samples(tmp_path / "demo", seed=7, n=8)
    imgs = sorted((tmp_path / "demo" / "images").glob("*.png"))
    notes = sorted((tmp_path / "demo" / "notes").glob("*.txt"))
    assert len(imgs) == 8 and len(notes) >= 5
    assert len(m["images"]) == 8
    assert json.loads((tmp_path / "demo" / "manifest.json").read_text())["images"] == m["images"]
    for item in m["images"]:
        assert (tmp_path / "demo" / item["file"]).is_file()
        o = item["objects"][0]
        assert f"{o['colour']}_{o['shape']}" in item["file"]
