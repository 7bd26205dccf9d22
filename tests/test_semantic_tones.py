"""The built-in sound model really learned its world: semantic search through the public API.

A fresh draw of the tones world (seed never used in training), written as files and indexed with
``builtin:tones``. Thresholds are the issue's (≥ 0.9); the measured figures are printed (run with
``-s``) and kept in benchmarks/RESULTS.md (benchmarks/bench_audio.py measures the same on a larger draw).
The files are lossless (wav, flac): the same sounds as Ogg Vorbis (libsndfile's default quality) cost this small model
about 0.05 of audio→audio top-5 (it never heard a lossy codec in training; benchmarks/RESULTS.md).
"""

from __future__ import annotations

import pytest

from mmsearch import Engine
from mmsearch.world import tones as T

FRESH_SEED = 515151  # training used other seeds (see mmsearch/models/tones/TRAINING.md)
PER_CLASS = 6


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    import soundfile as sf

    root = tmp_path_factory.mktemp("tones")
    labels = {}
    for c in T.CLASSES:
        for i, s in enumerate(T.generate_class(c.name, FRESH_SEED, PER_CLASS)):
            path = root / "sounds" / f"{c.name}_{i}.{('wav', 'flac')[i % 2]}"  # lossless: the model's quality
            path.parent.mkdir(exist_ok=True)
            sf.write(path, s.samples, s.sample_rate)
            labels[str(path)] = c.name
    prompts = dict(T.class_prompts())
    eng = Engine.open(root / "store", model="builtin:tones", workers=0)
    assert eng.index([root / "sounds"]).indexed == len(labels)
    eng.add_texts({f"class:{name}": prompt for name, prompt in prompts.items()})
    yield eng, labels, prompts
    eng.close()


def test_text_to_audio_recall_at_1_over_the_class_prompts(world):
    eng, labels, prompts = world
    r1 = sum(labels[eng.search(text=p, k=1)[0].path] == c for c, p in prompts.items()) / len(prompts)
    print(f"\ntext→audio R@1 over {len(prompts)} class prompts: {r1:.3f}")
    assert r1 >= 0.9


def test_audio_to_audio_top5_share_the_class(world):
    eng, labels, _ = world
    shared = total = 0
    for path, c in labels.items():
        near = [h for h in eng.search(audio=path, k=6) if h.path != path][:5]
        shared += sum(labels[h.path] == c for h in near)
        total += len(near)
    print(f"\naudio→audio top-5 same class: {shared / total:.3f}")
    assert shared / total >= 0.9


def test_audio_to_text_picks_the_class_prompt(world):
    eng, labels, prompts = world
    right = sum(eng.search(audio=path, type="text", k=1)[0].text == prompts[c] for path, c in labels.items())
    print(f"\naudio→text right class prompt at rank 1: {right / len(labels):.3f}")
    assert right / len(labels) >= 0.9


def test_a_rising_whistle_returns_the_rising_sweeps_first(world):
    eng, labels, _ = world
    rising = [p for p, c in labels.items() if c == "sweep-up"]
    top = eng.search(text="a rising whistle", k=len(rising))
    assert all(labels[h.path] == "sweep-up" for h in top)
