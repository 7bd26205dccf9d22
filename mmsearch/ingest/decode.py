"""Bytes → pixels or text, with limits. Runs in decode workers; must stay picklable and light.

Images are shown to the model as a viewer would see them: EXIF orientation applied, the first
frame of animations, transparency composited on white, any mode (CMYK, 16-bit, palette, grey)
converted to RGB. Then the model's own open_clip preprocessing runs (the *recipe*), so pixels match
open_clip's reference path exactly.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_IMAGE_PIXELS = 100_000_000  # decompression-bomb guard (≈ 10k × 10k)
MAX_TEXT_BYTES = 1 << 20  # text files above 1 MiB are skipped with an error
MAX_FILE_BYTES = 1 << 30  # nothing above 1 GiB is read


class BadInput(Exception):
    """This one file cannot be used; the message says why."""


@dataclass
class Loaded:
    """The result of reading one file. ``error`` set means nothing else is."""

    path: str
    modality: str
    size: int = 0
    mtime_ns: int = 0
    sha256: str = ""
    width: int | None = None
    height: int | None = None
    text: str | None = None
    pixels: np.ndarray | None = None
    error: str | None = None


def read_file(path: str, limit: int) -> tuple[bytes, os.stat_result]:
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_size > limit:
                raise BadInput(f"file too large ({st.st_size:,} bytes > limit {limit:,})")
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise BadInput("no such file (removed while indexing?)") from None
    except PermissionError:
        raise BadInput("permission denied") from None
    except IsADirectoryError:
        raise BadInput("is a directory") from None
    except OSError as exc:
        raise BadInput(f"cannot read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise BadInput(f"file grew past the limit while being read ({limit:,} bytes)")
    return data, st


def decode_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS):
    """Decode image bytes into an RGB PIL image (orientation fixed, alpha on white)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise BadInput("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():  # our own pixel limit below decides, with a clearer message
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise BadInput("not a recognised image (wrong extension or unsupported format)") from None
    except Image.DecompressionBombError as exc:  # Pillow's hard stop, above twice its own limit
        raise BadInput(f"image too large ({str(exc).split(',')[0]})") from None
    except Exception as exc:
        raise BadInput(f"cannot open image: {exc}") from None
    w, h = im.size
    if w * h > max_pixels:
        raise BadInput(f"image too large ({w}×{h} = {w * h:,} pixels > limit {max_pixels:,})")
    try:
        im.seek(0)
        im.load()
        im = ImageOps.exif_transpose(im)
        return to_rgb(im)
    except BadInput:
        raise
    except Exception as exc:  # truncated data, bad EXIF, decoder errors
        raise BadInput(f"cannot decode image ({im.format or 'unknown format'}): {exc}") from None


def to_rgb(im):
    """Any PIL mode → RGB; transparency composited on white."""
    from PIL import Image

    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        im = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        im = Image.fromarray(((arr - lo) / max(hi - lo, 1e-12) * 255 + 0.5).astype(np.uint8), "L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def decode_text(data: bytes, limit: int = MAX_TEXT_BYTES) -> str:
    if len(data) > limit:
        raise BadInput(f"text file too large ({len(data):,} bytes > limit {limit:,})")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInput(f"not UTF-8 text (byte {exc.start})") from None
    if "\x00" in text:
        raise BadInput("binary data in a text file")
    text = text.strip()
    if not text:
        raise BadInput("empty text file")
    return text


# ---- worker entry point ----------------------------------------------------------------------------
_TRANSFORMS: dict[str, Any] = {}


def _transform(recipe: dict[str, Any]):
    key = json.dumps(recipe, sort_keys=True)
    fn = _TRANSFORMS.get(key)
    if fn is None:
        if recipe.get("kind") != "open_clip":
            raise ValueError(f"unknown image recipe {recipe.get('kind')!r}")
        from open_clip.transform import PreprocessCfg, image_transform_v2

        cfg = dict(recipe["cfg"])
        if isinstance(cfg.get("size"), list):
            cfg["size"] = tuple(cfg["size"])
        fn = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
        _TRANSFORMS[key] = fn
    return fn


def preprocess(image, recipe: dict[str, Any]) -> np.ndarray:
    return _transform(recipe)(image).numpy()


def load(
    path: str, modality: str, recipe: dict[str, Any] | None, limits: dict[str, int] | None = None, decode: bool = True
) -> Loaded:
    """Read and hash one file; with ``decode``, also decode it (and preprocess images when ``recipe`` is given)."""
    limits = limits or {}
    out = Loaded(path, modality)
    try:
        max_bytes = limits.get("max_text_bytes", MAX_TEXT_BYTES) if modality == "text" else limits.get("max_file_bytes", MAX_FILE_BYTES)
        data, st = read_file(path, max_bytes)
        out.size, out.mtime_ns = st.st_size, st.st_mtime_ns
        out.sha256 = hashlib.sha256(data).hexdigest()
        if not decode:
            return out
        if modality == "image":
            im = decode_image(data, limits.get("max_image_pixels", MAX_IMAGE_PIXELS))
            out.width, out.height = im.size
            if recipe is not None:
                out.pixels = preprocess(im, recipe)
        elif modality == "text":
            out.text = decode_text(data, max_bytes)
        else:
            raise BadInput(f"unsupported modality {modality}")
    except BadInput as exc:
        out.error = str(exc)
    except MemoryError:
        out.error = "out of memory while decoding"
    return out
