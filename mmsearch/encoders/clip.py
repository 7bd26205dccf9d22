"""open_clip image+text encoders on torch: the reference runtime, and the one CUDA and MPS use.

On the CPU the same models run through :mod:`mmsearch.encoders.onnx` (exported once by
:mod:`mmsearch.encoders.export`); :func:`mmsearch.encoders.registry.load_encoder` picks.

Spec strings (see :mod:`mmsearch.encoders.registry`):

* ``ViT-B-32:laion2b_s34b_b79k`` — an open_clip architecture and pretrained tag (hub download, cached)
* ``hf-hub:org/repo`` — an open_clip model on the Hugging Face hub
* ``local-dir:/path`` — a folder with ``open_clip_config.json`` and weights, fully offline
* ``builtin:shapes`` — a small model shipped inside mmsearch (a ``local-dir`` in package data)
* ``ViT-B-32:random`` / ``ViT-B-32:random@7`` — real architecture, seeded random weights (benchmarks only)
"""

from __future__ import annotations

import difflib
import json
import os
import threading
from typing import Any, Sequence

import numpy as np

from mmsearch.encoders import hub
from mmsearch.encoders.base import SpaceInfo
from mmsearch.encoders.scripts import describe_open_clip
from mmsearch.encoders.spec import ModelRef
from mmsearch.errors import ModelError, UsageError

_HUB_HINT = "pass --model local-dir:PATH to a downloaded copy, or run once online so the hub cache has it"


def resolve_device(device: str | None) -> str:
    """``None``/``"auto"`` picks cuda, then mps, then cpu."""
    import torch

    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available on this machine")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise UsageError(f"--device {device}: expected auto, cpu, cuda, cuda:N or mps")
    return device


class OpenClipEncoder:
    """An open_clip CLIP model: images and texts into one space."""

    def __init__(self, ref: ModelRef, *, device: str | None = None, batch_size: int = 64) -> None:
        import open_clip
        import torch

        self.device = resolve_device(device)
        self.batch_size = batch_size
        self._lock = threading.Lock()  # torch modules are not safe to call from several threads at once
        try:
            _check_names(ref)
            cfg = _check_files(ref)
            if ref.random_seed is not None:
                torch.manual_seed(ref.random_seed)
            model, _, preprocess = open_clip.create_model_and_transforms(
                ref.model_name, pretrained=ref.pretrained, device=self.device, **hub.local_overrides(ref, cfg)
            )
            self.tokenizer = open_clip.get_tokenizer(ref.model_name)
        except (ModelError, UsageError):
            raise
        except Exception as exc:  # open_clip raises RuntimeError/OSError/HF errors for missing weights
            msg = str(exc)
            if _hub_unreachable(exc):
                absent = hub.missing(ref)
                reason = ("the Hugging Face hub cannot be reached and the local cache lacks "
                          + ("; ".join(map(str, absent)) if absent else "a file it needs"))
            else:
                reason = f"{type(exc).__name__}: {msg.splitlines()[0][:200] if msg else ''}"
            raise ModelError(f"cannot load model {ref.spec!r}: {reason}", hint=_HUB_HINT) from exc
        model.eval()
        self._fp16 = self.device.startswith("cuda")
        if self._fp16:
            model = model.half()
        self.model = model  # the torch module (export reads it)
        self._preprocess = preprocess
        self._pp_cfg = dict(open_clip.get_model_preprocess_cfg(model))
        with torch.no_grad():
            dim = int(self._embed_texts_raw(["probe"]).shape[1])
        text_cfg = (cfg or {}).get("text_cfg", {})
        language = describe_open_clip(self.tokenizer, text_cfg.get("hf_tokenizer_name") or ref.model_name)
        self.space = SpaceInfo(spec=ref.spec, family=ref.family, weights=ref.weights, dim=dim,
                               modalities=("image", "text"),
                               extra={"model_name": ref.model_name, "preprocess": _jsonable(self._pp_cfg),
                                      "text": language, "runtime": "torch", "device": self.device})

    # ---- preprocessing recipe (runs in decode workers) -------------------------------------
    def image_recipe(self) -> dict[str, Any]:
        return {"kind": "open_clip", "cfg": _jsonable(self._pp_cfg)}

    def preprocess(self, image: Any) -> np.ndarray:
        """Preprocess one decoded PIL image in this process (query side)."""
        return self._preprocess(image).numpy()

    # ---- embedding --------------------------------------------------------------------------
    def embed_image_batch(self, pixels: Any) -> np.ndarray:
        """Normalised ``(N, 3, H, W)`` pixels, a numpy array or a torch tensor (the JPEG tensor path's,
        already on this device: moved or cast only where it is not) → L2-normalised vectors."""
        import torch

        out = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(pixels), self.batch_size):
                x = pixels[start : start + self.batch_size]
                x = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
                x = x.to(self.device, dtype=torch.float16 if self._fp16 else torch.float32)
                out.append(self.model.encode_image(x).float().cpu().numpy())
        return _normalise(np.concatenate(out) if out else np.zeros((0, self.space.dim), np.float32))

    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        """Embed decoded PIL images (query side convenience)."""
        if not images:
            return np.zeros((0, self.space.dim), np.float32)
        return self.embed_image_batch(np.stack([self.preprocess(im) for im in images]))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        if isinstance(texts, str):
            raise UsageError("embed_texts takes a list of strings, not one string")
        with self._lock, torch.inference_mode():
            return _normalise(self._embed_texts_raw(list(texts)))

    def _embed_texts_raw(self, texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(texts[start : start + self.batch_size]).to(self.device)
            out.append(self.model.encode_text(tokens).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _hub_unreachable(exc: BaseException) -> bool:
    """Whether a load failed because weights are not cached and the hub cannot give them (by exception
    type, following the cause chain: open_clip wraps huggingface_hub's errors)."""
    try:
        from huggingface_hub import errors as hf
    except ImportError:  # pragma: no cover - open_clip depends on it
        return False
    kinds = tuple(getattr(hf, name) for name in ("LocalEntryNotFoundError", "OfflineModeIsEnabled",
                                                 "RepositoryNotFoundError", "HfHubHTTPError") if hasattr(hf, name))
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kinds + (ConnectionError, TimeoutError)):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _jsonable(cfg: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(cfg, default=list))


# ---- names and files --------------------------------------------------------------------------------
def _check_files(ref: ModelRef) -> dict[str, Any] | None:
    """The model's config; a clear error naming the files a load would miss (:mod:`mmsearch.encoders.hub`):
    a ``local-dir:`` copy's tokenizer or text model config, or, offline, what the hub cache lacks."""
    cfg = hub.model_config(ref)
    if ref.folder is not None:
        absent = hub.missing_in_folder(ref, cfg)
        if absent:
            raise ModelError(f"the model folder lacks {'; '.join(absent)}", path=str(ref.folder),
                             hint="copy those files into the folder, e.g. with huggingface-cli download "
                                  "REPO FILE --local-dir FOLDER")
    elif hub.offline():
        absent = hub.missing(ref)
        if absent:
            raise ModelError(hub.explain(ref, absent), hint=_HUB_HINT)
    return cfg


# ---- names ------------------------------------------------------------------------------------------
def _check_names(ref: ModelRef) -> None:
    """An unknown architecture or pretrained tag is a clear error (with close matches), not open_clip's."""
    import open_clip

    if ref.model_name.startswith(("hf-hub:", "local-dir:")):
        return
    models = open_clip.list_models()
    if ref.model_name not in models:
        close = difflib.get_close_matches(ref.model_name, models, n=3)
        raise ModelError(f"unknown open_clip architecture {ref.model_name!r}"
                         + (f"; did you mean {', '.join(close)}?" if close else ""))
    if ref.pretrained is None:
        return
    tags = [t for a, t in open_clip.list_pretrained() if a == ref.model_name]
    if ref.pretrained not in tags and not os.path.isfile(ref.pretrained):
        raise ModelError(f"unknown pretrained tag {ref.pretrained!r} for {ref.model_name}",
                         hint=f"known tags: {', '.join(tags) or 'none'}")
