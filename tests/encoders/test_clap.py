"""CLAP models (transformers ClapModel) through our pipeline, per runtime, against transformers itself.

The reference is what a transformers user writes: the file read with soundfile, mixed to mono,
resampled with soxr to the model's rate, then ``ClapProcessor`` + ``get_audio_features`` /
``get_text_features``. Ours: ``mmsearch.ingest.audio`` decode and log-mel windows in numpy, the
model on ONNX Runtime (the CPU runtime) or torch, the sound's vector the normalised mean of its windows.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.kit import make_tiny_clap
from tests.kit import tone, write_sound


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory) -> str:
    return "local-dir:" + str(make_tiny_clap(tmp_path_factory.mktemp("clap") / "tiny", seed=3))


def _reference(folder: str, path, texts=None):
    import soundfile as sf
    import soxr
    import torch
    from transformers import ClapModel, ClapProcessor

    from mmsearch.encoders.clap import pooled

    model, proc = ClapModel.from_pretrained(folder).eval(), ClapProcessor.from_pretrained(folder)
    with torch.inference_mode():
        if texts is not None:
            t = proc.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
            return pooled(model.get_text_features(**t)).numpy()
        x, rate = sf.read(str(path), dtype="float32", always_2d=True)
        x = soxr.resample(x.mean(axis=1), rate, proc.feature_extractor.sampling_rate, quality="HQ")
        f = proc.feature_extractor([x], sampling_rate=proc.feature_extractor.sampling_rate, return_tensors="pt")
        return pooled(model.get_audio_features(input_features=f["input_features"])).numpy()[0]


def _reference_windows(folder: str, path, seconds: int) -> np.ndarray:
    """transformers on each ``seconds``-long stretch of the file, back to back; their normalised mean."""
    import soundfile as sf
    import soxr
    import torch
    from transformers import ClapModel, ClapProcessor

    from mmsearch.encoders.clap import pooled

    model, proc = ClapModel.from_pretrained(folder).eval(), ClapProcessor.from_pretrained(folder)
    rate = proc.feature_extractor.sampling_rate
    x, own = sf.read(str(path), dtype="float32", always_2d=True)
    x = soxr.resample(x.mean(axis=1), own, rate, quality="HQ")
    parts = [x[i : i + seconds * rate] for i in range(0, len(x), seconds * rate)]
    with torch.inference_mode():
        f = proc.feature_extractor(parts, sampling_rate=rate, return_tensors="pt")
        v = pooled(model.get_audio_features(input_features=f["input_features"])).numpy()
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    return v.mean(axis=0)


def _ours(enc, path) -> np.ndarray:
    from mmsearch.query.encode import query_sound

    v = enc.embed_audio_batch(query_sound(str(path), enc.audio_recipe())).mean(axis=0)
    return v / np.linalg.norm(v)


def _cos(a, b) -> float:
    return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


SOUNDS = [  # (name, rate, channels): formats, rates and layouts a user's files come in
    ("tone.wav", 16000, 1), ("tone.flac", 44100, 2), ("tone.ogg", 22050, 1), ("tone.mp3", 48000, 2),
    ("tone6.wav", 8000, 6),
]


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
@pytest.mark.parametrize("name,rate,channels", SOUNDS)
def test_sound_vectors_match_transformers(tiny_clap, tmp_path, runtime, name, rate, channels):
    from mmsearch.encoders.registry import load_encoder

    rng = np.random.default_rng(rate + channels)
    x = tone(0.8, rate, 330.0 + 50 * channels) + 0.05 * rng.standard_normal(int(0.8 * rate)).astype(np.float32)
    path = write_sound(tmp_path / name, np.repeat(x[:, None], channels, axis=1) * np.linspace(1, 0.5, channels), rate)
    enc = load_encoder(tiny_clap, runtime=runtime, precision="fp32" if runtime == "onnx" else None)
    assert _cos(_ours(enc, path), _reference(tiny_clap.split(":", 1)[1], path)) >= 0.999


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_text_vectors_match_transformers(tiny_clap, runtime):
    from mmsearch.encoders.registry import load_encoder

    texts = ["a rising whistle", "white noise, with a DOG barking!", "Ça va? naïve", "x" * 200, "a"]
    enc = load_encoder(tiny_clap, runtime=runtime)
    ours, ref = enc.embed_texts(texts), _reference(tiny_clap.split(":", 1)[1], None, texts)
    assert min(_cos(a, b) for a, b in zip(ours, ref)) >= 0.999


def test_auto_precision_keeps_fidelity_and_the_cache_lists_the_export(tiny_clap):
    from mmsearch import Engine
    from mmsearch.encoders.registry import load_encoder

    enc = load_encoder(tiny_clap, runtime="onnx")
    described = enc.describe()
    assert set(described["towers"]) == {"audio", "text"}
    assert all(t["fidelity"] >= 0.999 for t in described["towers"].values())
    found = [c for c in Engine.runtime_cache() if c.key == enc.space.key]
    assert found and set(found[0].towers) == {"audio", "text"}


def test_a_clap_folder_is_recognised_by_its_files(tiny_clap):
    from mmsearch.encoders.spec import builtin_ref, local_dir_ref
    from pathlib import Path

    ref = local_dir_ref(tiny_clap, Path(tiny_clap.split(":", 1)[1]))
    assert ref.kind == "clap" and ref.modalities == ("audio", "text") and ref.key.startswith("clap-local-dir|")
    assert builtin_ref("builtin:shapes", "shapes").kind == "open_clip"


def test_the_default_sound_model_offline_is_a_clear_model_error():
    from mmsearch.config import DEFAULT_AUDIO_MODEL
    from mmsearch.encoders.registry import load_encoder
    from mmsearch.errors import ModelError

    with pytest.raises(ModelError, match="cannot load CLAP model .*hub"):
        load_encoder(DEFAULT_AUDIO_MODEL, runtime="torch")


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_a_sound_longer_than_the_window_is_the_mean_of_its_windows(tiny_clap, tmp_path, runtime):
    from mmsearch.encoders.registry import load_encoder

    rng = np.random.default_rng(9)
    x = np.concatenate([tone(1.0, 44100, 300.0), 0.2 * rng.standard_normal(44100).astype(np.float32),
                        tone(0.6, 44100, 2000.0)])  # 2.6 s: windows of 1 s, 1 s and 0.6 s
    path = write_sound(tmp_path / "long.flac", np.stack([x, 0.5 * x], axis=1), 44100)
    enc = load_encoder(tiny_clap, runtime=runtime, precision="fp32" if runtime == "onnx" else None)
    assert _cos(_ours(enc, path), _reference_windows(tiny_clap.split(":", 1)[1], path, 1)) >= 0.999
