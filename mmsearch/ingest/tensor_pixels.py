"""A model's image preprocessing in torch, on any device: :mod:`mmsearch.ingest.pixels` for decoded tensors.

The JPEG tensor path (:mod:`mmsearch.ingest.gpu_decode`) decodes with ``torchvision.io.decode_jpeg``
(nvJPEG on CUDA) into ``uint8 (3, H, W)`` tensors; this module turns them into the encoder's
normalised batch where they already are (the GPU), following the same :class:`~mmsearch.ingest.pixels.Plan`
step by step, so both paths compute the same model input up to the decoder's IDCT and the resampler:

* orientation: EXIF values 2..8 as Pillow's ``ImageOps.exif_transpose`` applies them (torchvision
  applies orientation only on the CPU, so it is done here, the same on every device);
* resize: the output size from :func:`~mmsearch.ingest.pixels.resize_size` (open_clip's expressions),
  ``F.interpolate(..., antialias=True)`` bicubic or bilinear as the plan says (torch's antialiased
  kernels were written to match Pillow's), clamped and rounded to whole values as Pillow's ``uint8``
  result is; skipped when the size already matches, as torchvision does;
* crop or pad: the offsets of ``pixels._crop_or_pad`` (``int(round(...))``, padding ``fill`` for
  ``longest``);
* normalise: ``/ 255``, ``- mean``, ``/ std`` in float32, then the model's dtype (fp16 on CUDA).

Images of one size are resized together (one interpolate call per size in a batch: a folder of
camera photos is one or two calls). Imports torch: used only in the parent, never in decode workers.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mmsearch.ingest.pixels import Plan, resize_size

BILINEAR = 2  # PIL.Image.Resampling.BILINEAR; anything else in a Plan is BICUBIC


def orient(image: Any, orientation: int | None) -> Any:
    """A ``(C, H, W)`` tensor turned upright for an EXIF ``orientation`` (1..8; None or 1: as is)."""
    import torch

    o = orientation or 1
    if o == 2:  # FLIP_LEFT_RIGHT
        return image.flip(-1)
    if o == 3:  # ROTATE_180
        return image.flip(-2, -1)
    if o == 4:  # FLIP_TOP_BOTTOM
        return image.flip(-2)
    if o == 5:  # TRANSPOSE
        return image.transpose(-2, -1)
    if o == 6:  # ROTATE_270: a quarter turn clockwise
        return torch.rot90(image, -1, (-2, -1))
    if o == 7:  # TRANSVERSE
        return image.transpose(-2, -1).flip(-2, -1)
    if o == 8:  # ROTATE_90: a quarter turn counter-clockwise
        return torch.rot90(image, 1, (-2, -1))
    return image


def prepare(images: Sequence[Any], p: Plan, dtype: Any = None) -> Any:
    """Upright ``uint8 (3, h, w)`` tensors (one device) → the normalised ``(N, 3, H, W)`` batch in ``dtype``
    (default float32). ``ValueError`` names an image the plan cannot resize (as the CPU path does)."""
    import torch

    if not images:
        raise ValueError("no images")
    device = images[0].device
    out = torch.empty((len(images), 3, p.height, p.width), dtype=torch.float32, device=device)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault((int(im.shape[-2]), int(im.shape[-1])), []).append(i)
    for (h, w), where in groups.items():
        x = torch.stack([images[i] for i in where]).float()
        out[where] = _crop_or_pad(_resize(x, w, h, p), p)
    return normalise(out, p, dtype)


def _resize(x: Any, w: int, h: int, p: Plan) -> Any:
    import torch.nn.functional as F

    out_w, out_h = resize_size(w, h, p)
    if out_w < 1 or out_h < 1:
        raise ValueError(f"a {w}×{h} image resizes to {out_w}×{out_h} pixels")
    if (out_w, out_h) == (w, h):
        return x
    mode = "bilinear" if p.resample == BILINEAR else "bicubic"
    y = F.interpolate(x, size=(out_h, out_w), mode=mode, antialias=True, align_corners=False)
    return y.clamp_(0, 255).round_()  # what Pillow's uint8 result holds


def _crop_or_pad(x: Any, p: Plan) -> Any:
    """``pixels._crop_or_pad`` on an (n, 3, h, w) batch."""
    import torch.nn.functional as F

    h, w = int(x.shape[-2]), int(x.shape[-1])
    if p.height > h or p.width > w:
        fill = float(p.fill) if p.resize_mode == "longest" else 0.0
        pad_h, pad_w = max(p.height - h, 0), max(p.width - w, 0)
        x = F.pad(x, (pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2), value=fill)
        h, w = int(x.shape[-2]), int(x.shape[-1])
    top, left = int(round((h - p.height) / 2.0)), int(round((w - p.width) / 2.0))
    return x[..., top : top + p.height, left : left + p.width]


def normalise(x: Any, p: Plan, dtype: Any = None) -> Any:
    """Whole-valued pixels ``(N, 3, H, W)`` (any real dtype) → ``(x / 255 - mean) / std`` in float32, then ``dtype``."""
    import torch

    x = x.to(torch.float32) / 255.0
    mean = torch.tensor(p.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(p.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    x = (x - mean) / std
    return x if dtype is None else x.to(dtype)


def assemble(pixels: Sequence[Any], p: Plan) -> Any:
    """One encoder batch from a step's pixels: normalised ``(3, H, W)`` tensors from the tensor path and
    ``uint8 (H, W, 3)`` crops from the CPU path (PNGs, JPEGs it fell back on) in one run, in order, on
    the tensors' device and dtype."""
    import torch

    like = next(x for x in pixels if not isinstance(x, np.ndarray))
    crops = [i for i, x in enumerate(pixels) if isinstance(x, np.ndarray)]
    parts = list(pixels)
    if crops:
        u8 = torch.from_numpy(np.stack([pixels[i] for i in crops])).to(like.device).permute(0, 3, 1, 2)
        done = normalise(u8, p, like.dtype)
        for j, i in enumerate(crops):
            parts[i] = done[j]
    return torch.stack(parts)
