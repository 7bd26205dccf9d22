"""A model's image preprocessing in Pillow and numpy: the pixels open_clip's own transform computes,
without torch.

The recipe is what an encoder's ``image_recipe()`` gives: ``{"kind": "open_clip", "cfg": {size, mode,
mean, std, interpolation, resize_mode, fill_color}}`` (open_clip's ``PreprocessCfg``). The work is
split where it is cheapest to ship:

* :func:`prepare` (decode workers): resize and crop/pad an RGB PIL image to the model's input size →
  ``uint8 (H, W, 3)``, a quarter of the bytes a float batch would cost to send between processes;
* :func:`to_batch` (the parent, just before the encoder): scale to [0, 1], normalise with mean/std,
  channels first → ``float32 (N, 3, H, W)``, what :meth:`Encoder.embed_image_batch` takes.

open_clip's ``image_transform_v2(cfg, is_train=False)``, reproduced step by step (open_clip 3.x,
torchvision 0.2x on PIL images):

* ``shortest``, square size S: torchvision ``Resize(S)``, short side → S, long side →
  ``int(S * long / short)`` (truncated); then ``CenterCrop`` (zero padding if ever needed).
* ``shortest``, size (H, W) not square: ``ResizeKeepRatio((H, W))`` with its *default* interpolation,
  bicubic, whatever the cfg says (an open_clip quirk kept here); each side → ``round(side / ratio)``,
  ratio = min(h / H, w / W); then ``CenterCrop``.
* ``longest``: ``ResizeKeepRatio(longest=1)`` (ratio = max(...)) and ``CenterCropOrPad`` padding with
  ``fill_color``.
* ``squash``: ``Resize((H, W))``, aspect ratio not kept.
* Interpolation: ``bilinear`` → PIL BILINEAR, anything else open_clip accepts (``bicubic``, ``random``)
  → PIL BICUBIC. torchvision resizes PIL images with ``Image.resize`` (always antialiased) and skips
  the call when the size already matches; so do we.
* Crop offsets ``int(round((side - crop) / 2.0))`` (Python's round: halves to even); padding puts
  ``(crop - side) // 2`` before and the rest after.
* ``ToTensor`` + ``Normalize``: ``float32(u) / 255``, then ``(x - mean) / std`` in float32, the same
  operations in the same order, so the floats are bit-identical on the same machine.

A reduced decode (JPEG DCT scaling, see :mod:`mmsearch.ingest.decode`) passes the full image's
``size`` and the ``box`` of the reduced image that covers it: the output size is computed from the
full size (as open_clip would compute it) and Pillow resamples exactly that box.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's defaults (PreprocessCfg)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_RESIZE_MODES = ("shortest", "longest", "squash")

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Plan:
    """A recipe read once: target (height, width), how to resize, and how to normalise."""

    height: int
    width: int
    resize_mode: str
    resample: int  # a PIL resampling filter
    fill: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


_PLANS: dict[Any, Plan] = {}


def plan(recipe: dict[str, Any]) -> Plan:
    """The :class:`Plan` of an open_clip recipe (cached per recipe); ``ValueError`` for one we cannot follow."""
    key = repr(recipe)
    got = _PLANS.get(key)
    if got is not None:
        return got
    if recipe.get("kind") != "open_clip":
        raise ValueError(f"unknown image recipe {recipe.get('kind')!r}")
    cfg = recipe.get("cfg") or {}
    size = cfg.get("size", 224)
    if isinstance(size, (int, float)):
        height = width = int(size)
    elif isinstance(size, (list, tuple)) and len(size) in (1, 2):
        height, width = int(size[0]), int(size[-1])
    else:
        raise ValueError(f"image recipe: size {size!r} is not an int or (height, width)")
    if cfg.get("mode", "RGB") != "RGB":
        raise ValueError(f"image recipe: mode {cfg.get('mode')!r} (only RGB)")
    resize_mode = cfg.get("resize_mode") or "shortest"
    if resize_mode not in _RESIZE_MODES:
        raise ValueError(f"image recipe: resize_mode {resize_mode!r}, expected one of {', '.join(_RESIZE_MODES)}")
    interpolation = cfg.get("interpolation") or "bicubic"
    if interpolation not in ("bicubic", "bilinear", "random"):  # what open_clip itself accepts
        raise ValueError(f"image recipe: interpolation {interpolation!r}")
    from PIL import Image

    resample = Image.Resampling.BILINEAR if interpolation == "bilinear" else Image.Resampling.BICUBIC
    if resize_mode == "shortest" and height != width:
        resample = Image.Resampling.BICUBIC  # open_clip's ResizeKeepRatio(size) is not given the cfg's choice
    got = Plan(height, width, resize_mode, int(resample), int(cfg.get("fill_color") or 0),
               _triple(cfg.get("mean"), OPENAI_MEAN), _triple(cfg.get("std"), OPENAI_STD))
    _PLANS[key] = got
    return got


def _triple(value: Any, default: tuple[float, float, float]) -> tuple[float, float, float]:
    if not value:  # open_clip: `mean or OPENAI_DATASET_MEAN`
        return default
    if not isinstance(value, (list, tuple)):
        return (float(value),) * 3
    if len(value) == 1:
        return (float(value[0]),) * 3
    return tuple(float(v) for v in value)  # type: ignore[return-value]


def resize_size(width: int, height: int, recipe: dict[str, Any] | Plan) -> tuple[int, int]:
    """(width, height) open_clip resizes a ``width × height`` image to, before any crop or pad."""
    p = recipe if isinstance(recipe, Plan) else plan(recipe)
    if p.resize_mode == "squash":
        return p.width, p.height
    if p.resize_mode == "shortest" and p.height == p.width:  # torchvision Resize(int)
        if width <= height:
            return p.width, int(p.width * height / width)
        return int(p.height * width / height), p.height
    # open_clip ResizeKeepRatio: shortest (non-square target) or longest, the same expressions
    longest = 1.0 if p.resize_mode == "longest" else 0.0
    ratio_h, ratio_w = height / p.height, width / p.width
    ratio = max(ratio_h, ratio_w) * longest + min(ratio_h, ratio_w) * (1.0 - longest)
    return round(width * 1.0 / ratio), round(height * 1.0 / ratio)


def prepare(image: Any, recipe: dict[str, Any] | Plan, *, size: tuple[int, int] | None = None,
            box: Box | None = None) -> np.ndarray:
    """An RGB PIL image → the model's input pixels, ``uint8 (H, W, 3)`` (resized, cropped or padded).

    ``size``/``box``: when ``image`` is a reduced decode of a larger image, the full image's (width,
    height) and the region of ``image`` that covers it (Pillow's ``draft`` box, oriented).
    """
    p = recipe if isinstance(recipe, Plan) else plan(recipe)
    if image.mode != "RGB":
        image = image.convert("RGB")
    full = size or image.size
    out_w, out_h = resize_size(full[0], full[1], p)
    if out_w < 1 or out_h < 1:
        raise ValueError(f"a {full[0]}×{full[1]} image resizes to {out_w}×{out_h} pixels")
    if box is not None and box != (0, 0, *image.size):
        image = image.resize((out_w, out_h), p.resample, box=box)
    elif image.size != (out_w, out_h):
        image = image.resize((out_w, out_h), p.resample)
    arr = np.asarray(image, dtype=np.uint8)
    return _crop_or_pad(arr, p.height, p.width, p.fill if p.resize_mode == "longest" else 0)


def _crop_or_pad(arr: np.ndarray, crop_h: int, crop_w: int, fill: int) -> np.ndarray:
    """torchvision ``center_crop`` / open_clip ``center_crop_or_pad`` on an (h, w, 3) array."""
    h, w = arr.shape[:2]
    if crop_h > h or crop_w > w:
        pad_h, pad_w = max(crop_h - h, 0), max(crop_w - w, 0)
        arr = np.pad(arr, ((pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2), (0, 0)),
                     constant_values=fill)
        h, w = arr.shape[:2]
    if (h, w) == (crop_h, crop_w):
        return np.ascontiguousarray(arr)
    top, left = int(round((h - crop_h) / 2.0)), int(round((w - crop_w) / 2.0))
    return np.ascontiguousarray(arr[top : top + crop_h, left : left + crop_w])


def to_batch(pixels: Sequence[np.ndarray], recipe: dict[str, Any] | Plan) -> np.ndarray:
    """``uint8 (H, W, 3)`` crops from :func:`prepare` → the normalised ``float32 (N, 3, H, W)`` batch."""
    p = recipe if isinstance(recipe, Plan) else plan(recipe)
    if not len(pixels):
        return np.zeros((0, 3, p.height, p.width), np.float32)
    x = np.stack(pixels).astype(np.float32)
    if x.shape[1:] != (p.height, p.width, 3):
        raise ValueError(f"pixels of shape {x.shape[1:]} do not fit the recipe ({p.height}, {p.width}, 3)")
    x /= np.float32(255)
    x -= np.asarray(p.mean, np.float32)
    x /= np.asarray(p.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
