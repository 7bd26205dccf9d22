"""A sound's model input: log-mel windows, cut and computed as transformers' ``ClapFeatureExtractor`` does.

The recipe (``kind`` "clap": rate, window, hop, FFT, mel matrix, padding) is what a sound model hands the
decode workers; :mod:`mmsearch.ingest.audio` decodes the samples (and cuts them while they decode, with
:func:`window_starts`, :func:`_pad` and :func:`log_mel` from here), its module doc says how windows are laid.
numpy only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# ---- the model input -----------------------------------------------------------------------------------
_PADDINGS = ("repeatpad", "repeat", "pad")


def check_recipe(recipe: dict[str, Any]) -> None:
    """Raise ``ValueError`` when ``recipe`` is not an audio recipe :func:`windows` can follow."""
    if not isinstance(recipe, dict) or recipe.get("kind") != "clap":
        kind = recipe.get("kind") if isinstance(recipe, dict) else type(recipe).__name__
        raise ValueError(f"an audio recipe must be of kind 'clap', not {kind!r}")
    missing = [k for k in ("sampling_rate", "window", "hop", "n_fft", "hop_length", "mel") if k not in recipe]
    if missing:
        raise ValueError(f"audio recipe lacks {', '.join(missing)}")
    if recipe.get("padding", "repeatpad") not in _PADDINGS:
        raise ValueError(f"audio recipe padding {recipe['padding']!r} is not one of {', '.join(_PADDINGS)}")
    if int(recipe["window"]) <= 0 or int(recipe["hop"]) <= 0 or int(recipe["hop_length"]) <= 0:
        raise ValueError("audio recipe window, hop and hop_length must be positive")
    mel = np.asarray(recipe["mel"])
    if mel.ndim != 2 or mel.shape[0] != int(recipe["n_fft"]) // 2 + 1:
        raise ValueError(f"audio recipe mel matrix has shape {mel.shape}, not (n_fft//2+1, n_mels)")


def window_starts(n: int, window: int, hop: int) -> list[int]:
    """Where each window starts: every ``hop`` samples until one reaches the end (one for a short clip)."""
    starts = [0]
    while starts[-1] + window < n:
        starts.append(starts[-1] + hop)
    return starts


def _pad(clip: np.ndarray, window: int, padding: str) -> np.ndarray:
    """``ClapFeatureExtractor._get_input_mel``'s padding of a clip no longer than ``window``."""
    if len(clip) >= window:
        return clip[:window]
    if padding == "repeat":
        clip = np.tile(clip, window // len(clip) + 1)[:window]
    elif padding == "repeatpad":
        clip = np.tile(clip, window // len(clip))
    return np.pad(clip, (0, window - len(clip)), mode="constant", constant_values=0)


def log_mel(clip: np.ndarray, recipe: dict[str, Any]) -> np.ndarray:
    """(frames, mels) float32 log-mel of one padded window, as ``ClapFeatureExtractor`` computes it."""
    n_fft, hop_length = int(recipe["n_fft"]), int(recipe["hop_length"])
    mel = np.asarray(recipe["mel"], dtype=np.float64)
    floor = max(float(recipe.get("mel_floor", 1e-10)), 1e-10)  # spectrogram's mel_floor, then power_to_db's min
    x = np.pad(clip, (n_fft // 2, n_fft // 2), mode="reflect").astype(np.float64)
    hann = np.hanning(n_fft + 1)[:-1]  # periodic
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop_length]
    spec = np.fft.rfft(frames * hann, axis=-1).astype(np.complex64)  # transformers keeps the FFT in complex64
    power = np.abs(spec, dtype=np.float64) ** 2
    out = 10.0 * np.log10(np.maximum(floor, power @ mel))
    return out.astype(np.float32)


def windows(samples: np.ndarray, recipe: dict[str, Any]) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The model input for a sound: ``(n_windows, channels, frames, mels)`` float32 log-mel features
    and each window's (start, end) in seconds. See :mod:`mmsearch.ingest.audio` for how windows are laid."""
    check_recipe(recipe)
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if not len(x):
        raise ValueError("no samples to cut into windows")
    rate, window, hop = int(recipe["sampling_rate"]), int(recipe["window"]), int(recipe["hop"])
    padding, channels = recipe.get("padding", "repeatpad"), int(recipe.get("channels", 1))
    starts = window_starts(len(x), window, hop)
    first = log_mel(_pad(x[:window], window, padding), recipe)
    out = np.empty((len(starts), *first.shape), np.float32)
    out[0] = first
    for i, s in enumerate(starts[1:], 1):
        out[i] = log_mel(_pad(x[s:s + window], window, padding), recipe)
    spans = [(s / rate, min(s + window, len(x)) / rate) for s in starts]
    feats = np.broadcast_to(out[:, None], (len(starts), channels, *first.shape)) if channels > 1 else out[:, None]
    return feats, spans


def feature_bytes(recipe: dict[str, Any], seconds: float) -> int:
    """Bytes of :func:`windows`' output for ``seconds`` of sound (one channel: the others are views)."""
    rate, window, hop = int(recipe["sampling_rate"]), int(recipe["window"]), int(recipe["hop"])
    n = len(window_starts(max(1, int(math.ceil(seconds * rate))), window, hop))
    frames = window // int(recipe["hop_length"]) + 1
    return n * frames * np.asarray(recipe["mel"]).shape[1] * 4
