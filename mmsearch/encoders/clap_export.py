"""A transformers CLAP model → ONNX, once: the sound and text towers at fp32 and int8, fidelity measured.

The same machinery as open_clip's export (:func:`mmsearch.encoders.export.export_tower`): each tower is
traced on the CPU in fp32, quantised, optimised, and measured against ``get_audio_features`` /
``get_text_features`` of transformers itself on probe inputs. The probes: tones, chords, sweeps,
clicks, noise and silence, shorter than, equal to and (cut into windows) longer than the model's
window, at the model's rate, through the model's own ``ClapFeatureExtractor``; texts with
punctuation, non-ASCII and over-long runs, through the model's own tokenizer.

The entry also keeps what the light runtime needs: the feature extractor's settings and mel matrix
(``mel.npy``; :func:`mmsearch.encoders.clap.audio_recipe`) and the tokenizer as ``tokenizer.json``
for the ``tokenizers`` library when it gives the same ids as transformers' tokenizer.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from mmsearch.encoders.cache import EXPORT_VERSION
from mmsearch.encoders.spec import ModelRef

_PROBE_TEXTS_EXTRA = ("a dog barking", "a rising whistle", "rain on a tin roof, then thunder!", "")


def probe_sounds(rate: int, window: int) -> list[np.ndarray]:
    """Varied test sounds: pure tones, a chord, sweeps, clicks, noise, silence, one over a window long."""
    rng = np.random.default_rng(0)
    t = np.arange(window) / rate
    top = rate / 2
    sounds = [0.5 * np.sin(2 * np.pi * f * t) for f in (110.0, 440.0, min(3000.0, top * 0.6))]
    sounds.append(sum(0.2 * np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0)))
    sweep = np.cumsum(np.linspace(100, min(6000, top * 0.9), window)) / rate
    sounds += [0.4 * np.sin(2 * np.pi * sweep), 0.4 * np.sin(2 * np.pi * sweep[::-1])]
    clicks = np.zeros(window)
    clicks[:: max(1, rate // 8)] = 0.9
    sounds += [clicks, 0.3 * rng.standard_normal(window), np.cumsum(rng.standard_normal(window)) * 0.01,
               np.zeros(window), (0.5 * np.sin(2 * np.pi * 660 * t))[: window // 3]]
    return [np.asarray(s, dtype=np.float32) for s in sounds]


def export(ref: ModelRef, out: Path) -> dict[str, Any]:
    """Export a CLAP ``ref`` into ``out`` and return the metadata written there."""
    import torch

    from mmsearch.encoders.clap import ClapEncoder, audio_features, pooled
    from mmsearch.encoders.export import PROBE_TEXTS, export_tower, versions, write_meta

    t0 = time.perf_counter()
    enc = ClapEncoder(ref, device="cpu")
    model, fe = enc.model, enc.processor.feature_extractor
    recipe = enc.audio_recipe()
    clips = probe_sounds(recipe["sampling_rate"], recipe["window"])
    features = torch.from_numpy(np.asarray(fe(clips, sampling_rate=recipe["sampling_rate"],
                                               return_tensors="np")["input_features"], np.float32))
    texts = list(PROBE_TEXTS) + [t for t in _PROBE_TEXTS_EXTRA if t]
    tokens = {k: torch.from_numpy(v) for k, v in enc.tokens(texts).items()}

    def audio(x):
        return pooled(audio_features(model, x))

    def text(ids, mask):
        return pooled(model.get_text_features(input_ids=ids, attention_mask=mask))

    with torch.inference_mode():
        reference = {"audio": audio(features).numpy(), "text": text(tokens["ids"], tokens["mask"]).numpy()}
    towers = {"audio": export_tower(model, audio, "audio", {"features": features}, out, reference["audio"]),
              "text": export_tower(model, text, "text", tokens, out, reference["text"], variable=("ids", "mask"))}
    np.save(out / "mel.npy", recipe.pop("mel"))
    meta = {
        "export_version": EXPORT_VERSION, "key": ref.key, "exported_from": ref.spec, "kind": "clap",
        "space": {"dim": enc.space.dim, "modalities": list(enc.space.modalities),
                  "extra": {k: enc.space.extra[k] for k in ("model_name", "kind", "window_seconds", "text")}},
        "recipe": {**recipe, "mel": "mel.npy"}, "tokenizer": _tokenizer(enc, texts, out), "towers": towers,
        "versions": versions(), "seconds": round(time.perf_counter() - t0, 1),
    }
    write_meta(out, meta)
    return meta


def _tokenizer(enc: Any, texts: list[str], out: Path) -> dict[str, Any]:
    """The model's tokenizer for ``tokenizers`` alone (``tokenizer.json``), kept only when its ids and
    masks equal transformers' on the probe texts; else the query side loads transformers' tokenizer."""
    from mmsearch.encoders.tokenize import HubTokenizer

    backend = getattr(enc.tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.save(str(out / "tokenizer.json"))
        pad = int(enc.tokenizer.pad_token_id if enc.tokenizer.pad_token_id is not None else 0)
        spec = {"kind": "tokenizers", "file": "tokenizer.json", "max_length": enc.max_tokens, "pad_id": pad}
        light = HubTokenizer(out / "tokenizer.json", enc.max_tokens, pad)(texts)
        want = enc.tokens(texts)
        if all(np.array_equal(light[k], want[k]) for k in ("ids", "mask")):
            return spec
        (out / "tokenizer.json").unlink()
    return {"kind": "transformers", "max_length": enc.max_tokens}
