"""Combined queries through the public API and the CLI, on the shapes world and its built-in model.

"a red circle - red" finds circles of other colours, weights move the ranking, text and images mix,
``like`` an indexed image returns it and its neighbours, ``unlike`` pushes look-alikes down; a query
without operators gives the very same vector (and hits) as before the query language existed.
"""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest

from mmsearch import Engine
from mmsearch.errors import UsageError
from mmsearch.world import shapes as W
from tests.kit import cli

SEED = 313131  # a fresh draw: the model was trained on other seeds
MODEL = "builtin:shapes"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("combined")
    labels: dict[str, tuple[str, str]] = {}
    (root / "gallery").mkdir()
    for i, sc in enumerate(W.generate(SEED, 480, two_object_rate=0.0)):  # ~10 per (colour, shape)
        p = root / "gallery" / f"{i:04d}.png"
        sc.image.save(p)
        labels[str(p)] = (sc.objects[0].colour, sc.objects[0].shape)
    (root / "outside").mkdir()  # images never indexed
    for i, sc in enumerate(W.generate(SEED + 1, 20, two_object_rate=0.0)):
        p = root / "outside" / f"{i:02d}.png"
        sc.image.save(p)
        labels[str(p)] = (sc.objects[0].colour, sc.objects[0].shape)
    eng = Engine.open(root / "store", model=MODEL, device="cpu", workers=0)
    assert eng.index([root / "gallery"]).indexed == 480
    yield eng, root, labels
    eng.close()


def _labels(hits, labels):
    return [labels[h.path] for h in hits]


def _one(labels, label, folder="gallery"):
    return next(p for p, lab in sorted(labels.items()) if lab == label and f"/{folder}/" in p)


# ---- the semantics ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["a red circle", "t-shirt x-ray", "a blue-ish star", "C++ dog+cat -20%", "10:30 a star",
                                  '"a green square"', "dog -cat", "  padded  "])
def test_a_query_without_operators_gives_the_very_same_vector_as_the_text_tower(world, text):
    eng, _, _ = world
    vec = eng.encoder(MODEL).embed_texts([text])[0]
    got, want = eng.search(text=text, k=8), eng.search(vector=vec, k=8)
    assert [(h.id, h.score) for h in got] == [(h.id, h.score) for h in want]


def test_subtracting_a_colour_ranks_circles_of_other_colours_first(world):
    eng, _, labels = world
    assert [lab for lab in _labels(eng.search(text="a red circle", k=5), labels)] == [("red", "circle")] * 5
    found = _labels(eng.search(text="a red circle - red", k=10), labels)
    assert all(shape == "circle" for _, shape in found), found
    assert not any(colour == "red" for colour, _ in found), found


def test_a_weight_moves_the_ranking_towards_its_term(world):
    eng, _, labels = world

    def share(text):
        found = Counter(_labels(eng.search(text=text, k=20), labels))
        return found[("red", "circle")], found[("blue", "square")]

    even = share("a red circle + a blue square")
    red_heavy, blue_heavy = share("3:a red circle + a blue square"), share("a red circle + 3:a blue square")
    assert red_heavy[0] > max(even[0], red_heavy[1]), (even, red_heavy)
    assert blue_heavy[1] > max(even[1], blue_heavy[0]), (even, blue_heavy)


def test_a_combination_is_the_normalised_weighted_sum_of_unit_term_vectors(world):
    eng, _, _ = world
    t = eng.encoder(MODEL).embed_texts(["a red circle", "red"]).astype(np.float64)
    v = 2 * t[0] - 0.5 * t[1]
    want = eng.search(vector=(v / np.linalg.norm(v)).astype(np.float32), k=6)
    got = eng.search(text="2:a red circle - 0.5:red", k=6)
    assert [h.id for h in got] == [h.id for h in want]
    assert np.allclose([h.score for h in got], [h.score for h in want], atol=1e-5)


def test_text_and_an_image_mix(world):
    eng, _, labels = world
    green_square = _one(labels, ("green", "square"))
    alone = Counter(_labels(eng.search(image=green_square, k=10), labels))
    mixed = _labels(eng.search(image=green_square, text="blue", k=10), labels)
    assert all(shape == "square" for _, shape in mixed), mixed
    assert Counter(mixed)[("blue", "square")] > alone[("blue", "square")]
    assert eng.search(image=green_square, text="blue", k=10) == eng.search(image=[green_square], text=["blue"], k=10)


def test_several_images_find_what_they_share(world):
    eng, _, labels = world
    red_circle, red_square = _one(labels, ("red", "circle")), _one(labels, ("red", "square"))
    found = _labels(eng.search(image=[red_circle, red_square], k=10), labels)
    assert Counter(c for c, _ in found)["red"] >= 8, found


def test_like_an_indexed_image_returns_it_and_its_neighbours(world):
    eng, _, labels = world
    example = _one(labels, ("green", "square"))
    hits = eng.search(like=example, k=8)
    assert hits[0].path == example and hits[0].score > 0.99
    assert Counter(_labels(hits, labels))[("green", "square")] >= 7
    assert [h.id for h in eng.search(like=[hits[0].id], k=8)] == [h.id for h in hits]  # a content id works too


def test_like_a_file_not_indexed_embeds_it_as_a_query_image(world):
    eng, root, labels = world
    outside = str(root / "outside" / "03.png")
    assert [h.id for h in eng.search(like=outside, k=6)] == [h.id for h in eng.search(image=outside, k=6)]


def test_like_an_added_text_uses_its_stored_vector(world):
    eng, _, _ = world
    eng.add_texts({"note": "a yellow triangle"})
    got = eng.search(like="text:note", type="image", k=6)
    assert [h.id for h in got] == [h.id for h in eng.search(text="a yellow triangle", type="image", k=6)]


@pytest.mark.parametrize("disliked", [("pink", "circle"), ("red", "hexagon")])
def test_unlike_pushes_look_alikes_down(world, disliked):
    eng, _, labels = world
    liked, disliked_path = _one(labels, ("red", "circle")), _one(labels, disliked)
    before = Counter(_labels(eng.search(like=liked, k=30), labels))
    after_hits = eng.search(like=liked, unlike=disliked_path, k=30)
    after = Counter(_labels(after_hits, labels))
    assert before[disliked] >= 3, before  # the look-alikes were there
    assert after[disliked] < before[disliked] / 2, after
    assert disliked_path not in [h.path for h in after_hits]
    assert _labels(after_hits[:5], labels) == [("red", "circle")] * 5  # what was liked stays on top
    assert liked in [h.path for h in after_hits[:10]]


@pytest.mark.parametrize("kw, says", [
    ({"text": "a red circle - a red circle"}, "cancel out"),
    ({"like": ["{gallery0}", "{gallery0}"], "image": "{gallery0}", "unlike": ["{gallery0}"] * 6}, "cancel out"),
    ({"text": "dog + + cat"}, 'query "dog + + cat": empty term at column 7'),
    ({"unlike": "{gallery0}"}, "unlike needs something to search for"),
    ({"text": "x", "vector": [0.0] * 64}, "vector is searched alone"),
    ({"like": "{root}/nope.png"}, "no such file"),
    ({"like": 10**9}, "no item with content id"),
    ({"like": 2.5}, "like takes paths or content ids"),
    ({"like": "text:nope"}, "no such added text"),
    ({"text": "a", "audio": "{gallery0}"}, "no model in this store embeds every part of this query (text and audio)"),
])
def test_bad_combinations_are_usage_errors(world, kw, says):
    eng, root, labels = world
    fill = {"root": root, "gallery0": sorted(p for p in labels if "/gallery/" in p)[0]}
    fill_in = lambda v: v.format(**fill) if isinstance(v, str) else v  # noqa: E731
    kw = {n: [fill_in(x) for x in v] if isinstance(v, list) else fill_in(v) for n, v in kw.items()}
    with pytest.raises(UsageError, match=re.escape(says)):
        eng.search(**kw)


def test_a_space_that_cannot_embed_a_term_is_skipped_with_a_notice(tmp_path):
    import soundfile as sf

    from mmsearch.world import tones as T

    sounds = tmp_path / "sounds"
    sounds.mkdir()
    for i, s in enumerate(T.generate_class(T.CLASSES[0].name, SEED, 3)):
        sf.write(sounds / f"{i}.wav", s.samples, s.sample_rate)
    images = tmp_path / "images"
    images.mkdir()
    for i, sc in enumerate(W.generate(SEED, 6, two_object_rate=0.0)):
        sc.image.save(images / f"{i}.png")
    with Engine.open(tmp_path / "store", model=[MODEL, "builtin:tones"], device="cpu", workers=0) as eng:
        eng.index([sounds, images])
        eng.search(text="a red circle", k=3)
        assert eng.notices == []  # a text query reaches both spaces
        hits = eng.search(text="a red circle", image=images / "0.png", k=3)
        assert hits and {h.space for h in hits} == {MODEL}
        assert eng.notices == ["model builtin:tones not searched: it does not embed the query's image"]
        hits = eng.search(audio=sounds / "0.wav", text="a sound", like=sounds / "1.wav", k=3)  # sound and words
        assert hits and {h.space for h in hits} == {"builtin:tones"} and {h.modality for h in hits} == {"audio"}
        assert eng.notices == [f"model {MODEL} not searched: it does not embed the query's audio"]
        assert eng.search(like=sounds / "2.wav", k=1)[0].path == str(sounds / "2.wav")  # by its stored vector


# ---- the CLI ------------------------------------------------------------------------------------------------
def _json(*args):
    r = cli("query", *args, "--json", "--no-server")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_the_cli_combines_text_images_and_examples_as_the_api_does(world):
    eng, root, labels = world
    store = root / "store"
    a, b = _one(labels, ("green", "square")), _one(labels, ("red", "circle"))
    cases = [
        (("a red circle - red",), {"text": "a red circle - red"}),
        (("--image", a, "--text", "blue"), {"image": [a], "text": ["blue"]}),
        (("at night", "-i", a, "-i", b), {"image": [a, b], "text": ["at night"]}),
        (("--like", a, "--like", b, "--unlike", _one(labels, ("pink", "circle"))),
         {"like": [a, b], "unlike": [_one(labels, ("pink", "circle"))]}),
        (("2:a star", "--text", "yellow"), {"text": ["2:a star", "yellow"]}),
    ]
    for args, kw in cases:
        got = _json(*args, "--store", store, "-k", "5")
        assert [h["id"] for h in got] == [h.id for h in eng.search(**kw, k=5)], args


@pytest.mark.parametrize("args, says", [
    (("dog + + cat",), 'query "dog + + cat": empty term at column 7'),
    (("--unlike", "{a}"), "--unlike needs something to search for"),
    ((), "give a query text, --image PATH or --audio PATH"),
    (("a red circle - a red circle",), "cancel out"),
])
def test_cli_errors_are_one_line_with_exit_code_2(world, args, says):
    _, root, labels = world
    a = _one(labels, ("green", "square"))
    r = cli("query", *(x.format(a=a) for x in args), "--store", root / "store", "--no-server")
    assert r.exit_code == 2, r.output
    assert says in r.output and "Traceback" not in r.output


# ---- a running server: queries its protocol cannot carry are searched in-process, never cut short --------
@pytest.fixture
def served(indexed, monkeypatch):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from tests.test_served import Served

    s = Served(indexed.store, monkeypatch)
    yield s
    s.stop()


def _in_process_too(store, *args):
    r = cli("query", *args, "--store", store, "--json", "--no-server")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.mark.parametrize("args", [
    ("--like", "{img0}"),
    ("hello", "--unlike", "{img1}"),
    ("--image", "{img0}", "--image", "{img1}"),
    ("--like", "{img0}", "--like", "{img2}", "--unlike", "{img1}"),
])
def test_with_a_server_running_combined_queries_search_in_process(served, indexed, args):
    args = [a.format(img0=indexed.images[0], img1=indexed.images[1], img2=indexed.images[2]) for a in args]
    r = cli("query", *args, "--store", served.store, "--json", "-k", "4")
    assert r.exit_code == 0, r.output
    assert served.calls == []  # the server was not asked: it would have answered another query
    assert json.loads(r.stdout) == _in_process_too(served.store, *args, "-k", "4")


@pytest.mark.parametrize("args", [("hello there", "--image", "{img0}"), ("--text", "hello", "--text", "general")])
def test_with_a_server_running_texts_with_one_image_are_served_as_in_process(served, indexed, args):
    args = [a.format(img0=indexed.images[0]) for a in args]
    r = cli("query", *args, "--store", served.store, "--json", "-k", "4")
    assert r.exit_code == 0, r.output
    assert len(served.calls) == 1  # protocol 3 carries several texts, and texts with one image
    got, want = json.loads(r.stdout), _in_process_too(served.store, *args, "-k", "4")
    assert [(h["id"], h["rank"]) for h in got] == [(h["id"], h["rank"]) for h in want] and got
    assert np.allclose([h["score"] for h in got], [h["score"] for h in want], atol=1e-5)


def test_with_a_server_running_one_combined_text_is_served_as_in_process(served):
    r = cli("query", "hello + 2:there - kenobi", "--store", served.store, "--json", "--type", "any")
    assert r.exit_code == 0, r.output
    assert len(served.calls) == 1 and served.calls[0]["text"] == "hello + 2:there - kenobi"
    got, want = json.loads(r.stdout), _in_process_too(served.store, "hello + 2:there - kenobi", "--type", "any")
    assert [(h["id"], h["rank"]) for h in got] == [(h["id"], h["rank"]) for h in want] and got
    assert np.allclose([h["score"] for h in got], [h["score"] for h in want], atol=1e-5)


def test_the_light_main_path_hands_combined_queries_to_the_full_cli(served, indexed):
    from tests.test_served import _run_main

    store = str(served.store)
    for args in (("--like", str(indexed.images[0])), ("--image", str(indexed.images[0]), "-i", str(indexed.images[1]))):
        r = _run_main("query", *args, "--store", store, "--json", "-k", "3")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == _in_process_too(served.store, *args, "-k", "3")
    assert served.calls == []
    r = _run_main("query", "--image", str(indexed.images[0]), "--store", store, "--json", "-k", "3")  # one image: served
    assert r.returncode == 0 and r.stderr.strip().splitlines()[-1] == "HEAVY []", r.stderr
    assert len(served.calls) == 1


@pytest.mark.parametrize("kw, background", [
    ({"text": "a red circle - red"}, "text"),
    ({"text": "blue", "image": "{img}"}, "image"),
    ({"text": "blue", "like": "{img}"}, "image"),
    ({"like": "{img}", "unlike": "{other}"}, "image"),
])
def test_a_combined_query_is_calibrated_against_the_background_of_its_kind(world, kw, background):
    eng, _, labels = world
    fill = {"img": _one(labels, ("green", "square")), "other": _one(labels, ("red", "circle"))}
    hits = eng.search(**{n: v.format(**fill) for n, v in kw.items()}, k=3)
    assert {h.why["query"] for h in hits} == {background}
    mu, sigma = eng.calibration.stats(eng.space(), background, "image")
    assert all(abs(h.calibrated - (h.score - mu) / sigma) < 1e-3 for h in hits)
