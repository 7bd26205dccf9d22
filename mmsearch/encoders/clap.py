"""CLAP sound+text encoders (transformers' ``ClapModel``) on torch: the reference runtime, and the one
CUDA and MPS use. On the CPU the same models run through their ONNX export
(:mod:`mmsearch.encoders.clap_export`, :class:`mmsearch.encoders.onnx.OnnxClapEncoder`).

Specs (the kind is read from the files, :mod:`mmsearch.encoders.spec`):

* ``hf-hub:laion/clap-htsat-unfused`` — LAION-CLAP from the Hugging Face hub (cached; the default sound model)
* ``local-dir:/path`` — a folder as ``ClapModel.save_pretrained`` + ``ClapProcessor.save_pretrained`` write it
* ``builtin:tones`` — the small CLAP trained on the procedural sound world, shipped with mmsearch

Sounds reach the model as log-mel windows computed in the decode workers
(:mod:`mmsearch.ingest.audio`) from the :meth:`ClapEncoder.audio_recipe`: the feature extractor's
own settings and mel matrix, so the workers need numpy only. Texts go through the model's own
tokenizer.
"""

from __future__ import annotations

import threading
from typing import Any, Sequence

import numpy as np

from mmsearch.encoders.base import SpaceInfo
from mmsearch.encoders.scripts import describe_hf
from mmsearch.encoders.spec import ModelRef
from mmsearch.errors import ModelError, UsageError

_HUB_HINT = "pass --model local-dir:PATH to a downloaded copy (ClapModel.save_pretrained), or run once online"


def audio_recipe(fe: Any) -> dict[str, Any]:
    """The picklable description of a ``ClapFeatureExtractor`` that decode workers compute features from."""
    fusion = getattr(fe, "truncation", "rand_trunc") == "fusion"
    mel = fe.mel_filters if fusion else fe.mel_filters_slaney
    return {"kind": "clap", "sampling_rate": int(fe.sampling_rate), "window": int(fe.nb_max_samples),
            "hop": int(fe.nb_max_samples), "n_fft": int(fe.fft_window_size), "hop_length": int(fe.hop_length),
            "padding": str(getattr(fe, "padding", "repeatpad")), "channels": 4 if fusion else 1,
            "mel": np.asarray(mel, dtype=np.float64), "mel_floor": 1e-10}


def max_text_tokens(tokenizer: Any, config: Any) -> int:
    """Tokens a text is cut to: the tokenizer's limit, within the model's position table."""
    limit = int(getattr(config, "max_position_embeddings", 514)) - 2
    declared = int(getattr(tokenizer, "model_max_length", limit) or limit)
    return max(2, min(limit, declared))


def load_clap(ref: ModelRef, device: str = "cpu") -> tuple[Any, Any]:
    """(ClapModel in eval mode on ``device``, ClapProcessor) for a CLAP reference; clear errors offline."""
    try:
        from transformers import ClapModel, ClapProcessor
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise ModelError(f"model {ref.spec!r} is a CLAP model, which needs the audio extra",
                         hint="pip install 'mmsearch[audio]'") from exc
    source = str(ref.folder) if ref.folder is not None else ref.model_name.split(":", 1)[1]
    hf_logging.set_verbosity_error()  # its progress bars and advice are not ours to print
    hf_logging.disable_progress_bar()
    try:
        import torch

        if ref.random_seed is not None:
            torch.manual_seed(ref.random_seed)
        processor = ClapProcessor.from_pretrained(source)
        model = ClapModel.from_pretrained(source).float().to(device).eval()  # fp16 files run as fp32
    except Exception as exc:  # OSError / hub errors for a missing or partial download
        from mmsearch.encoders.clip import _hub_unreachable

        if _hub_unreachable(exc) or (ref.folder is None and "offline" in str(exc).lower()):
            reason = "weights are not in the local cache and the Hugging Face hub cannot be reached"
        else:
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        raise ModelError(f"cannot load CLAP model {ref.spec!r}: {reason}", hint=_HUB_HINT) from exc
    return model, processor


def audio_features(model: Any, x: Any) -> Any:
    """``get_audio_features`` of windows no longer than the model's window: ``is_longer`` all false (a fused
    model needs it given, and our windows never exceed its length, so it uses no fusion crops)."""
    import torch

    return model.get_audio_features(input_features=x, is_longer=torch.zeros((x.shape[0], 1), dtype=torch.bool,
                                                                             device=x.device))


def pooled(out: Any) -> Any:
    """transformers 4 returns the projected features; 5 returns an output whose ``pooler_output`` they are."""
    return out if hasattr(out, "shape") else out.pooler_output


class ClapEncoder:
    """A transformers CLAP model: sounds and texts into one space, on torch."""

    def __init__(self, ref: ModelRef, *, device: str | None = None, batch_size: int = 64) -> None:
        import torch

        from mmsearch.encoders.clip import resolve_device

        self.device = resolve_device(device)
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self.model, self.processor = load_clap(ref, self.device)
        self._fp16 = self.device.startswith("cuda")
        if self._fp16:
            self.model = self.model.half()
        self.tokenizer = self.processor.tokenizer
        self.max_tokens = max_text_tokens(self.tokenizer, self.model.config.text_config)
        self._recipe = audio_recipe(self.processor.feature_extractor)
        with torch.inference_mode():
            dim = int(self._texts(["probe"]).shape[1])
        self.space = SpaceInfo(spec=ref.spec, family=ref.family, weights=ref.weights, dim=dim,
                               modalities=("audio", "text"),
                               extra={"model_name": ref.model_name, "kind": "clap", "runtime": "torch",
                                      "device": self.device, "text": describe_hf(self.tokenizer, _name(ref)),
                                      "window_seconds": self._recipe["window"] / self._recipe["sampling_rate"]})

    # ---- the encoder contract -----------------------------------------------------------------------
    def audio_recipe(self) -> dict[str, Any]:
        return dict(self._recipe)

    def image_recipe(self) -> dict[str, Any]:
        raise ModelError(f"model {self.space.spec!r} embeds sounds and texts, not images")

    def embed_image_batch(self, pixels: np.ndarray) -> np.ndarray:
        raise ModelError(f"model {self.space.spec!r} embeds sounds and texts, not images")

    def embed_audio_batch(self, features: np.ndarray) -> np.ndarray:
        """Embed (N, C, frames, mels) log-mel windows made by the recipe → (N, dim) unit vectors."""
        import torch

        out = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(features), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(features[start : start + self.batch_size], np.float32))
                x = x.to(self.device, dtype=torch.float16 if self._fp16 else torch.float32)
                out.append(pooled(audio_features(self.model, x)).float().cpu().numpy())
        return _normalise(np.concatenate(out) if out else np.zeros((0, self.space.dim), np.float32))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        if isinstance(texts, str):
            raise UsageError("embed_texts takes a list of strings, not one string")
        with self._lock, torch.inference_mode():
            return _normalise(self._texts(list(texts)))

    def tokens(self, texts: list[str]) -> dict[str, np.ndarray]:
        """The model's token ids and attention mask for ``texts`` (padded to the longest, cut to the limit)."""
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="np")
        return {"ids": enc["input_ids"].astype(np.int64), "mask": enc["attention_mask"].astype(np.int64)}

    def _texts(self, texts: list[str]) -> np.ndarray:
        import torch

        out = []
        for start in range(0, len(texts), self.batch_size):
            t = self.tokens(texts[start : start + self.batch_size])
            ids, mask = (torch.from_numpy(t[k]).to(self.device) for k in ("ids", "mask"))
            out.append(pooled(self.model.get_text_features(input_ids=ids, attention_mask=mask)).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _name(ref: ModelRef) -> str:
    """The tokenizer's name a space records: the hub repo, or the folder's name for a local copy."""
    return ref.folder.name if ref.folder is not None else ref.model_name.split(":", 1)[-1]


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
