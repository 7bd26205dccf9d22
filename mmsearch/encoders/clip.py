"""open_clip image+text encoders.

Spec strings (see :mod:`mmsearch.encoders.registry`):

* ``ViT-B-32:laion2b_s34b_b79k`` — an open_clip architecture and pretrained tag (hub download, cached)
* ``hf-hub:org/repo`` — an open_clip model on the Hugging Face hub
* ``local-dir:/path`` — a folder with ``open_clip_config.json`` and weights, fully offline
* ``builtin:shapes`` — a small model shipped inside mmsearch (a ``local-dir`` in package data)
* ``ViT-B-32:random`` / ``ViT-B-32:random@7`` — real architecture, seeded random weights (benchmarks only)
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmsearch.encoders.base import SpaceInfo
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


def weights_fingerprint(path: Path) -> str:
    """A cheap, content-based tag for a weights file: size + first and last MiB."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read())
    return "sha256-" + h.hexdigest()[:16]


def _find_weights(folder: Path) -> Path | None:
    for pattern in ("*.safetensors", "*.bin", "*.pth", "*.pt"):
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
    return None


class OpenClipEncoder:
    """An open_clip CLIP model: images and texts into one space."""

    def __init__(
        self,
        spec: str,
        *,
        model_name: str,
        pretrained: str | None,
        weights: str,
        device: str | None = None,
        batch_size: int = 64,
        random_seed: int | None = None,
    ) -> None:
        import open_clip
        import torch

        self.device = resolve_device(device)
        self.batch_size = batch_size
        self._lock = threading.Lock()  # torch modules are not safe to call from several threads at once
        try:
            if random_seed is not None:
                torch.manual_seed(random_seed)
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, device=self.device
            )
            self._tokenizer = open_clip.get_tokenizer(model_name)
        except (ModelError, UsageError):
            raise
        except Exception as exc:  # open_clip raises RuntimeError/OSError/HF errors for missing weights
            msg = str(exc)
            if _hub_unreachable(exc):
                reason = "weights are not in the local cache and the Hugging Face hub cannot be reached"
            else:
                reason = f"{type(exc).__name__}: {msg.splitlines()[0][:200] if msg else ''}"
            raise ModelError(f"cannot load model {spec!r}: {reason}", hint=_HUB_HINT) from exc
        model.eval()
        self._fp16 = self.device.startswith("cuda")
        if self._fp16:
            model = model.half()
        self._model = model
        self._preprocess = preprocess
        self._pp_cfg = dict(open_clip.get_model_preprocess_cfg(model))
        with torch.no_grad():
            dim = int(self._embed_texts_raw(["probe"]).shape[1])
        family = "open_clip-local-dir" if model_name.startswith("local-dir:") else model_name
        self.space = SpaceInfo(
            spec=spec,
            family=family,
            weights=weights,
            dim=dim,
            modalities=("image", "text"),
            extra={"model_name": model_name, "preprocess": _jsonable(self._pp_cfg)},
        )

    # ---- preprocessing recipe (runs in decode workers) -------------------------------------
    def image_recipe(self) -> dict[str, Any]:
        return {"kind": "open_clip", "cfg": _jsonable(self._pp_cfg)}

    def preprocess(self, image: Any) -> np.ndarray:
        """Preprocess one decoded PIL image in this process (query side)."""
        return self._preprocess(image).numpy()

    # ---- embedding --------------------------------------------------------------------------
    def embed_image_batch(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        out = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(pixels), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(pixels[start : start + self.batch_size]))
                x = x.to(self.device, dtype=torch.float16 if self._fp16 else torch.float32)
                out.append(self._model.encode_image(x).float().cpu().numpy())
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
            tokens = self._tokenizer(texts[start : start + self.batch_size]).to(self.device)
            out.append(self._model.encode_text(tokens).float().cpu().numpy())
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


# ---- spec parsing --------------------------------------------------------------------------------
def builtin_dir(name: str) -> Path:
    return Path(__file__).resolve().parent.parent / "models" / name


def load_local_dir(spec: str, folder: Path, **kw: Any) -> OpenClipEncoder:
    folder = folder.expanduser().resolve()
    if not folder.is_dir():
        raise ModelError(f"model folder not found for {spec!r}", path=str(folder))
    config = folder / "open_clip_config.json"
    if not config.is_file():
        raise ModelError("not an open_clip model folder: open_clip_config.json is missing", path=str(folder))
    try:
        json.loads(config.read_text(encoding="utf-8"))["model_cfg"]
    except (ValueError, KeyError) as exc:
        raise ModelError(f"invalid open_clip_config.json ({exc})", path=str(config)) from exc
    weights = _find_weights(folder)
    if weights is None:  # open_clip would silently run with random weights here
        raise ModelError("no weights file (*.safetensors, *.bin, *.pth) in model folder", path=str(folder))
    return OpenClipEncoder(
        spec, model_name=f"local-dir:{folder}", pretrained=None, weights=weights_fingerprint(weights), **kw
    )


def load_open_clip(spec: str, **kw: Any) -> OpenClipEncoder:
    """``ARCH:TAG``, ``ARCH:random[@seed]`` or ``hf-hub:org/repo``."""
    import open_clip

    if spec.startswith("hf-hub:"):
        return OpenClipEncoder(spec, model_name=spec, pretrained=None, weights=spec.split(":", 1)[1], **kw)
    arch, sep, tag = spec.partition(":")
    if not sep or not tag:
        raise UsageError(
            f"--model {spec!r}: expected ARCH:PRETRAINED (e.g. ViT-B-32:laion2b_s34b_b79k), "
            "hf-hub:ORG/REPO, local-dir:PATH or builtin:NAME"
        )
    models = open_clip.list_models()
    if arch not in models:
        close = difflib.get_close_matches(arch, models, n=3)
        raise ModelError(f"unknown open_clip architecture {arch!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    if tag == "random" or tag.startswith("random@"):
        seed = int(tag.split("@", 1)[1]) if "@" in tag else 0
        return OpenClipEncoder(spec, model_name=arch, pretrained=None, weights=f"random@{seed}", random_seed=seed, **kw)
    tags = [t for a, t in open_clip.list_pretrained() if a == arch]
    if tag not in tags and not os.path.isfile(tag):
        raise ModelError(
            f"unknown pretrained tag {tag!r} for {arch}",
            hint=f"known tags: {', '.join(tags) or 'none'}",
        )
    return OpenClipEncoder(spec, model_name=arch, pretrained=tag, weights=tag, **kw)
