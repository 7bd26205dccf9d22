"""Bytes → pixels, text or sound features, with limits. Runs in decode workers; must stay picklable
and light (Pillow, numpy, soundfile, soxr, PyAV only: no torch, no open_clip, no transformers).

Sounds (:mod:`mmsearch.ingest.audio`) are never read whole: the file is hashed as a stream (they can
be gigabytes) and only its first ``max_audio_seconds`` are decoded into the model's log-mel windows.

Images are shown to the model as a viewer would see them: EXIF orientation applied, the first
frame of animations, transparency composited on white, any mode (CMYK, 16-bit, palette, grey)
converted to RGB. Then the model's preprocessing recipe runs (:mod:`mmsearch.ingest.pixels`, the
same pixels open_clip's transform computes) and the worker hands back the ``uint8`` crop.

JPEGs are decoded *reduced* when the model needs far fewer pixels than the file has: Pillow's
``draft`` asks libjpeg for a 1/2, 1/4 or 1/8 scale DCT decode, the smallest whose result is still at
least the size open_clip's resize produces (computed for the image as displayed, so EXIF rotations
that swap the axes are accounted for). A 12 MP photo then decodes at ~0.2 MP. The resize is then
computed from the full image's size and resamples exactly the region the reduced decode covers, so
geometry is unchanged; only the anti-aliasing filter differs (DCT scaling, then a shorter bicubic),
which stays within the fidelity tests' cosine ≥ 0.999 of open_clip on the full decode
(tests/ingest/test_pixels.py). That is why ``PREPROCESS_VERSION`` was not bumped: vectors made before
and after are comparable. Stored width/height are always the full image's.

An image's metadata (EXIF date taken, camera, GPS, orientation: :mod:`mmsearch.ingest.exif`) is read
from the opened file in the same pass; unreadable metadata leaves its fields empty, never fails the file.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from mmsearch.ingest.exif import Exif, read_exif
from mmsearch.ingest.pixels import Box, plan, prepare, resize_size

MAX_IMAGE_PIXELS = 100_000_000  # decompression-bomb guard (≈ 10k × 10k)
MAX_TEXT_BYTES = 1 << 20  # text files above 1 MiB are skipped with an error
MAX_FILE_BYTES = 1 << 30  # nothing above 1 GiB is read (images, texts)
MAX_AUDIO_BYTES = 8 << 30  # sound files are hashed as a stream, never held whole: up to 8 GiB
MAX_AUDIO_SECONDS = 600.0  # the first 10 minutes of a sound are decoded and embedded
MAX_VIDEO_BYTES = 64 << 30  # videos are hashed as a stream too: up to 64 GiB
_HASH_CHUNK = 1 << 20


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
    pixels: np.ndarray | None = None  # uint8 (H, W, 3), the model input before normalisation (pixels.to_batch)
    error: str | None = None
    # sounds (mmsearch.ingest.audio): what the file is, and the model input of its first max_audio_seconds
    duration: float | None = None  # seconds of the whole file (as its container tells; else as decoded)
    sample_rate: int | None = None  # the file's own
    channels: int | None = None  # the file's own
    truncated: bool = False  # only the first max_audio_seconds were decoded
    windows: np.ndarray | None = None  # float32 (n_windows, channels, frames, mels) log-mel (audio.windows)
    spans: list[tuple[float, float]] | None = None  # each window's (start, end) in seconds of the file
    exif: Exif | None = None  # an image's metadata (empty fields: none in the file); None: not decoded
    info: dict[str, Any] | None = None  # what else the file is, kept with its content (a video's codec, …)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled compactly: windows whose channels are one array seen several times (a broadcast
        view, CLAP fusion) travel as one channel and are broadcast again on arrival."""
        state = dict(self.__dict__)
        w = self.windows
        if w is not None and w.ndim == 4 and w.shape[1] > 1 and w.strides[1] == 0:
            state["windows"] = ("broadcast", np.ascontiguousarray(w[:, :1]), w.shape)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        w = state.get("windows")
        if isinstance(w, tuple) and len(w) == 3 and w[0] == "broadcast":
            state = {**state, "windows": np.broadcast_to(w[1], w[2])}
        self.__dict__.update(state)


@contextmanager
def reading() -> Iterator[None]:
    """Reading one file: what the OS says goes wrong becomes :class:`BadInput` with a reason a person acts on."""
    try:
        yield
    except FileNotFoundError:
        raise BadInput("no such file (removed while indexing?)") from None
    except PermissionError:
        raise BadInput("permission denied") from None
    except IsADirectoryError:
        raise BadInput("is a directory") from None
    except OSError as exc:
        raise BadInput(f"cannot read: {exc.strerror or exc}") from None


def read_file(path: str, limit: int) -> tuple[bytes, os.stat_result]:
    with reading(), open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if st.st_size > limit:
            raise BadInput(f"file too large ({st.st_size:,} bytes > limit {limit:,})")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise BadInput(f"file grew past the limit while being read ({limit:,} bytes)")
    return data, st


def hash_file(path: str, limit: int) -> tuple[str, os.stat_result]:
    """sha256 of a file read as a stream of 1 MiB chunks (never whole in memory), and its stat."""
    digest = hashlib.sha256()
    with reading(), open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if st.st_size > limit:
            raise BadInput(f"file too large ({st.st_size:,} bytes > limit {limit:,})")
        seen = 0
        buf = bytearray(_HASH_CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            seen += n
            if seen > limit:
                raise BadInput(f"file grew past the limit while being read ({limit:,} bytes)")
            digest.update(view[:n])
    return digest.hexdigest(), st


def decode_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS, *, draft: Callable[[Any], None] | None = None,
                 inspect: Callable[[Any], None] | None = None):
    """Decode image bytes into an RGB PIL image (orientation fixed, alpha on white).

    ``draft(image)`` is called on the opened, size-checked image before its pixels are decoded: the
    place to ask for a reduced decode (see :func:`decode_picture`). ``inspect(image)`` is called once
    they are, before the orientation is applied (metadata that follows the pixels, as in a PNG, is read by then).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    from mmsearch.ingest.formats import open_image

    if not data:
        raise BadInput("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():  # our own pixel limit below decides, with a clearer message
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = open_image(data, max_pixels=max_pixels)  # HEIC, AVIF, JPEG XL, camera raw: formats.py
    except BadInput:  # a missing plugin (names the install), a raw LibRaw cannot read
        raise
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
        if draft is not None:
            draft(im)
        im.load()
        if inspect is not None:
            inspect(im)
        im = ImageOps.exif_transpose(im)
        return to_rgb(im)
    except BadInput:
        raise
    except Exception as exc:  # truncated data, bad EXIF, decoder errors
        raise BadInput(f"cannot decode image ({im.format or 'unknown format'}): {exc}") from None


@dataclass
class Picture:
    """A decoded image: RGB, as displayed; a reduced decode of a larger image when ``box`` is set."""

    image: Any  # PIL image
    width: int  # the full image's size, as displayed
    height: int
    box: Box | None = None  # the region of ``image`` that the full image maps to
    exif: Exif | None = None  # what the file says about itself (mmsearch.ingest.exif)


_SWAPS_AXES = (5, 6, 7, 8)  # EXIF orientations that transpose (TRANSPOSE, ROTATE_270, TRANSVERSE, ROTATE_90)


def decode_picture(data: bytes, recipe: dict[str, Any] | None = None, max_pixels: int = MAX_IMAGE_PIXELS) -> Picture:
    """Decode image bytes for ``recipe``: a JPEG as small as the recipe's resize allows (DCT scaling)."""
    seen: dict[str, Any] = {}

    def reduce(im: Any) -> None:
        if recipe is None or im.format not in ("JPEG", "MPO"):  # only libjpeg decodes at a scale
            return
        orientation = im.getexif().get(0x0112, 1)  # EXIF sits before the image data in a JPEG
        raw_w, raw_h = im.size
        swap = orientation in _SWAPS_AXES
        shown_w, shown_h = (raw_h, raw_w) if swap else (raw_w, raw_h)
        need_w, need_h = resize_size(shown_w, shown_h, recipe)
        if swap:
            need_w, need_h = need_h, need_w
        if need_w < 1 or need_h < 1 or min(raw_w // need_w, raw_h // need_h) < 2:
            return  # no reduction possible (or the recipe cannot resize this image: prepare says why)
        got = im.draft("RGB", (need_w, need_h))  # scale s ≤ min(w // need_w, h // need_h): each side ≥ need
        if got is not None and im.size != (raw_w, raw_h):
            seen.update(size=(shown_w, shown_h), box=_oriented_box(got[1], im.size, orientation))

    def inspect(im: Any) -> None:
        seen["exif"] = read_exif(im)  # never raises: bad metadata leaves fields empty

    image = decode_image(data, max_pixels, draft=reduce, inspect=inspect)
    if "box" not in seen:
        return Picture(image, *image.size, exif=seen.get("exif"))
    return Picture(image, *seen["size"], box=seen["box"], exif=seen.get("exif"))


def _oriented_box(box: Box, size: tuple[int, int], orientation: int) -> Box:
    """Where ``box`` (in an image of ``size``, as stored) lies once the EXIF ``orientation`` is applied."""
    x0, y0, x1, y1 = box
    w, h = size
    corners = {
        2: lambda x, y: (w - x, y),  # FLIP_LEFT_RIGHT
        3: lambda x, y: (w - x, h - y),  # ROTATE_180
        4: lambda x, y: (x, h - y),  # FLIP_TOP_BOTTOM
        5: lambda x, y: (y, x),  # TRANSPOSE
        6: lambda x, y: (h - y, x),  # ROTATE_270 (clockwise)
        7: lambda x, y: (h - y, w - x),  # TRANSVERSE
        8: lambda x, y: (y, w - x),  # ROTATE_90 (counter-clockwise)
    }.get(orientation)
    if corners is None:
        return box
    (ax, ay), (bx, by) = corners(x0, y0), corners(x1, y1)
    return (min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))


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
def load(
    path: str, modality: str, recipe: dict[str, Any] | None, limits: dict[str, int] | None = None, decode: bool = True,
    sink: Callable[[np.ndarray], None] | None = None,
) -> Loaded:
    """Read and hash one file; with ``decode``, also decode it (and prepare the model input when
    ``recipe`` is given: an image's ``uint8`` crop, :func:`mmsearch.ingest.pixels.prepare`; a sound's
    log-mel windows, :func:`mmsearch.ingest.audio.windows`, from a recipe of kind ``"clap"``).

    A video: :func:`mmsearch.ingest.video.load_video` (hashed as a stream, ``max_video_bytes``; its frames
    handed to ``sink`` as they decode when one is given).
    A sound is hashed as a stream (``limits["max_audio_bytes"]``, default 8 GiB) and, with a recipe,
    its first ``limits["max_audio_seconds"]`` (default 600) are decoded at the recipe's rate; without
    a recipe only its duration, sample rate and channels are filled (a short probe decode)."""
    limits = limits or {}
    out = Loaded(path, modality)
    image_like = modality == "image" or (modality == "video" and recipe is not None and recipe.get("kind") != "clap")
    p = plan(recipe) if recipe is not None and decode and image_like else None  # a bad recipe raises
    if recipe is not None and decode and modality in ("audio", "video") and not image_like:
        from mmsearch.ingest.audio import check_recipe

        check_recipe(recipe)  # a bad recipe raises
    try:
        if modality in ("audio", "video"):
            streamed = limits.get(f"max_{modality}_bytes", MAX_AUDIO_BYTES if modality == "audio" else MAX_VIDEO_BYTES)
            out.sha256, st = hash_file(path, streamed)
            out.size, out.mtime_ns = st.st_size, st.st_mtime_ns
            if decode and modality == "audio":
                _load_audio(out, recipe, limits)
            elif decode:
                _load_video(out, recipe, limits, sink)
            return out
        max_bytes = limits.get("max_text_bytes", MAX_TEXT_BYTES) if modality == "text" else limits.get("max_file_bytes", MAX_FILE_BYTES)
        data, st = read_file(path, max_bytes)
        out.size, out.mtime_ns = st.st_size, st.st_mtime_ns
        out.sha256 = hashlib.sha256(data).hexdigest()
        if not decode:
            return out
        if modality == "image":
            pic = decode_picture(data, recipe, limits.get("max_image_pixels", MAX_IMAGE_PIXELS))
            out.width, out.height, out.exif = pic.width, pic.height, pic.exif
            if p is not None:
                out.pixels = prepare_picture(pic, p)
        elif modality == "text":
            out.text = decode_text(data, max_bytes)
        else:
            raise BadInput(f"unsupported modality {modality}")
    except BadInput as exc:
        out.error = str(exc)
        out.windows = out.spans = out.pixels = None
    except MemoryError:
        out.error = "out of memory while decoding"
        out.windows = out.spans = out.pixels = None
    return out


def _load_video(out: Loaded, recipe: dict[str, Any] | None, limits: dict[str, Any],
                sink: Callable[[np.ndarray], None] | None = None) -> None:
    from mmsearch.ingest.video import load_video

    try:
        load_video(out, recipe, limits, sink)
    except (BadInput, MemoryError):
        raise
    except Exception as exc:  # a demuxer or decoder failing in a way not foreseen: this file, not the run
        raise BadInput(f"cannot decode video: {type(exc).__name__}: {exc}") from None


def _load_audio(out: Loaded, recipe: dict[str, Any] | None, limits: dict[str, Any]) -> None:
    from mmsearch.ingest.audio import PROBE_SECONDS, decode_windows, probe_audio

    if recipe is None:
        sound = probe_audio(out.path)
        known = not sound.truncated or sound.duration > PROBE_SECONDS + 1e-6  # else the container did not say
        out.duration = sound.duration if known else None
    else:
        sound = decode_windows(out.path, recipe, float(limits.get("max_audio_seconds", MAX_AUDIO_SECONDS)))
        out.duration, out.truncated = sound.duration, sound.truncated
        out.windows, out.spans = sound.features, sound.spans
    out.sample_rate, out.channels = sound.sample_rate, sound.channels


def prepare_picture(pic: Picture, recipe: Any) -> np.ndarray:
    """The model's ``uint8 (H, W, 3)`` input for a decoded picture (an image open_clip cannot resize is bad input)."""
    try:
        return prepare(pic.image, recipe, size=(pic.width, pic.height), box=pic.box)
    except ValueError as exc:
        raise BadInput(f"cannot preprocess image: {exc}") from None
