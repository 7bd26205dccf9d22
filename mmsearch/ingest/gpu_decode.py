"""The JPEG tensor path: read ahead on threads, decode batches with nvJPEG, preprocess on the device.

On a CUDA encoder the CPU workers are what limits ingest (a worker decodes and resizes ~55 640×480
JPEGs a second; the model embeds ~30k), so JPEGs go another road, in the parent, which has torch
loaded already:

1. **Read ahead** on a thread pool (:data:`THREADS`, a few batches ahead): the bytes, their sha256
   (the same bytes: what the store keys the vector by), size and mtime, and the header (size from the
   frame header, EXIF metadata and orientation read as the workers read them:
   :func:`mmsearch.ingest.exif.read_exif`). File reads and hashing release the GIL.
2. **Decode** a batch with ``torchvision.io.decode_jpeg(list, device=...)`` (nvJPEG's batched decoder
   on CUDA, the encoded bytes copied into one pinned host buffer first; libjpeg-turbo on the CPU).
3. **Preprocess** where the pixels are (:mod:`mmsearch.ingest.tensor_pixels`): orientation, resize,
   crop, normalise, fp16 on CUDA. The batch goes to the encoder without leaving the device.

What this path does not take goes the CPU way *in the same run*: files not named like JPEGs stay
with the decode workers (:mod:`mmsearch.ingest.pipeline`); a ``.jpg`` that is not a baseline RGB or
grey Huffman-coded JPEG (CMYK, arithmetic coding, PNG bytes: :func:`jpeg_header`) or that ``decode_jpeg`` rejects is
decoded by :mod:`mmsearch.ingest.decode` from the bytes already read (an error only if that fails
too, with that path's reason). A batch that runs out of GPU memory is halved and retried
(:class:`~mmsearch.ingest.backoff.Halving`); an image too big for the GPU on its own goes the CPU way.

``device`` is a parameter: the same code runs on ``"cpu"`` tensors, which is how it is tested on a
machine without a GPU (``gpu_decode = "on"`` with a torch encoder on the CPU).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from mmsearch.ingest.backoff import Halving
from mmsearch.ingest.decode import (MAX_FILE_BYTES, MAX_IMAGE_PIXELS, BadInput, Loaded, decode_picture,
                                    prepare_picture, read_file)
from mmsearch.ingest.discover import Candidate
from mmsearch.ingest.exif import Exif, read_exif
from mmsearch.ingest.pixels import plan

MODES = ("auto", "on", "off")
JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")
BATCH = 256  # images per decode call (halved on out-of-memory)
THREADS = min(16, max(2, os.cpu_count() or 2))  # readers: I/O, sha256 and header parsing

Decode = Callable[[list[Any], str], list[Any]]  # (uint8 byte tensors, device) → uint8 (3, H, W) tensors


def has_decode_jpeg() -> bool:
    """Whether torchvision with ``decode_jpeg`` is importable (without importing it: cheap)."""
    import importlib.util

    return importlib.util.find_spec("torchvision") is not None


def device_for(mode: str, encoder: Any) -> tuple[str | None, str | None]:
    """(the device JPEGs are decoded on, None: the CPU workers; a notice for the report, or None).

    ``auto``: the encoder's CUDA device when it runs on torch there and torchvision is installed;
    ``on``: the encoder's device whatever it is (the tensor path on the CPU too), for a torch encoder;
    ``off``: never."""
    if mode == "off":
        return None, None
    extra = getattr(getattr(encoder, "space", None), "extra", None) or {}
    torch_run = extra.get("runtime") == "torch" and callable(getattr(encoder, "image_recipe", None))
    device = str(extra.get("device") or "")
    if mode == "auto":
        return (device, None) if torch_run and device.startswith("cuda") and has_decode_jpeg() else (None, None)
    if not torch_run:
        return None, (f"gpu_decode=on needs an image model on the torch runtime (this one runs on "
                      f"{extra.get('runtime') or 'another runtime'}: pass --runtime torch); JPEGs were "
                      f"decoded by the CPU workers")
    if not has_decode_jpeg():
        return None, "gpu_decode=on needs torchvision (pip install torchvision); JPEGs were decoded by the CPU workers"
    return device, None


def takes(c: Candidate) -> bool:
    """Whether a candidate is the tensor path's to try: an image named like a JPEG."""
    return c.modality == "image" and os.path.splitext(c.path)[1].lower() in JPEG_SUFFIXES


def torch_decode(datas: list[Any], device: str) -> list[Any]:
    """``torchvision.io.decode_jpeg`` as RGB (its deprecation notice kept quiet; orientation is applied
    by :func:`mmsearch.ingest.tensor_pixels.orient`, on every device)."""
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its image decoders (for TorchCodec's)
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg

        return list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=device))


def jpeg_header(data: bytes) -> tuple[int, int, bytes | None] | None:
    """(width, height, the EXIF segment or None) of a JPEG that ``decode_jpeg`` renders as Pillow does:
    Huffman-coded (baseline, extended or progressive), 1 or 3 components, no Adobe colour transform
    marker. None for anything else (CMYK, arithmetic coding, not a JPEG): the CPU path takes it.

    A walk over the markers up to the frame header: ~10 µs in Python where opening the file with Pillow
    and reading its EXIF takes ~75 µs, all of it under the GIL (at 6,000 img/s the parent has ~170 µs
    an image for everything)."""
    if data[:2] != b"\xff\xd8":
        return None
    at, end, exif = 2, len(data), None
    while at + 4 <= end:
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length
            at += 2
            continue
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if marker == 0xE1 and exif is None and data[at + 4 : at + 10] == b"Exif\x00\x00":
            exif = data[at + 4 : at + 2 + length]
        elif marker == 0xE1 and b"tiff:Orientation" in data[at + 4 : at + 2 + length]:
            return None  # XMP orientation, which Pillow applies when EXIF has none: the CPU path's to read
        elif marker == 0xEE and data[at + 4 : at + 9] == b"Adobe":
            return None  # Adobe's transform flag: RGB or YCCK stored as is; Pillow's reading decides
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a frame header (SOFn)
            if marker not in (0xC0, 0xC1, 0xC2) or at + 10 > end or data[at + 9] not in (1, 3):
                return None
            return int.from_bytes(data[at + 7 : at + 9], "big"), int.from_bytes(data[at + 5 : at + 7], "big"), exif
        elif marker == 0xDA:  # scan data before a frame header: not a JPEG Pillow opens
            return None
        at += 2 + length
    return None


def _exif(segment: bytes | None) -> Exif:
    """The metadata of an EXIF segment, read by :func:`mmsearch.ingest.exif.read_exif` as the workers do."""
    if segment is None:
        return Exif()
    from PIL import Image

    exif = Image.Exif()
    try:
        exif.load(segment)
    except Exception:
        return Exif()
    return read_exif(SimpleNamespace(getexif=lambda: exif))


@dataclass
class _Raw:
    """A file read and its header checked: ready for ``decode_jpeg``."""

    item: Loaded  # sha256, size, mtime, width/height (as displayed), exif filled; pixels not yet
    data: bytes
    orientation: int


class TensorDecode:
    """Map JPEG candidates to :class:`Loaded` items whose ``pixels`` is a normalised ``(3, H, W)`` tensor
    on ``device`` (or, where this path fell back, the CPU path's ``uint8`` crop; or an ``error``).

    ``decode``: the batch decoder (default :func:`torch_decode`; tests pass one that rejects some files).
    ``paths``: the files that went through the tensor path (the rest of those given went the CPU way)."""

    def __init__(self, recipe: dict[str, Any], device: str, limits: dict[str, Any] | None = None, *,
                 batch: int = BATCH, threads: int = THREADS, decode: Decode | None = None) -> None:
        import torch

        self.recipe, self.plan, self.device = recipe, plan(recipe), device
        self.limits = limits or {}
        self.threads, self.decode = threads, decode or torch_decode
        self.cuda = device.startswith("cuda")
        self.dtype = torch.float16 if self.cuda else torch.float32
        errors: tuple[type[BaseException], ...] = (torch.cuda.OutOfMemoryError,)
        self.halving: Halving = Halving(batch, errors, recover=torch.cuda.empty_cache if self.cuda else None)
        self.batch = batch
        self.paths: set[str] = set()

    def map(self, candidates: Iterable[Candidate]) -> Iterator[Loaded]:
        """The items of ``candidates``, read a few batches ahead, decoded a batch at a time (in order
        within a batch; files the readers settled, errors and CPU fall-backs, as soon as they are read)."""
        with ThreadPoolExecutor(self.threads, thread_name_prefix="mmsearch-jpeg") as pool:
            pending: deque[Future] = deque()
            group: list[_Raw] = []
            try:
                for c in candidates:
                    pending.append(pool.submit(self._read, c))
                    while len(pending) > 2 * self.batch:
                        yield from self._take(pending.popleft().result(), group)
                while pending:
                    yield from self._take(pending.popleft().result(), group)
                if group:
                    yield from self._finish(group)
            finally:
                for f in pending:
                    f.cancel()

    def _take(self, got: Loaded | _Raw, group: list[_Raw]) -> Iterator[Loaded]:
        if isinstance(got, Loaded):
            yield got
            return
        group.append(got)
        if len(group) >= self.batch:
            done, group[:] = list(group), []
            yield from self._finish(done)

    # ---- reading (threads) ------------------------------------------------------------------------
    def _read(self, c: Candidate) -> Loaded | _Raw:
        """Read and hash one file, check its header; a file this path cannot take is decoded the CPU
        way here (a settled :class:`Loaded`)."""
        out = Loaded(c.path, c.modality)
        try:
            data, st = read_file(c.path, int(self.limits.get("max_file_bytes", MAX_FILE_BYTES)))
            out.size, out.mtime_ns = st.st_size, st.st_mtime_ns
            out.sha256 = hashlib.sha256(data).hexdigest()
            orientation = self._header(out, data)
            if orientation is None:
                return self._cpu(out, data)
            return _Raw(out, data, orientation)
        except BadInput as exc:
            out.error = str(exc)
        except MemoryError:
            out.error = "out of memory while decoding"
        return out

    def _header(self, out: Loaded, data: bytes) -> int | None:
        """Fill the size as displayed and the metadata from the header; the EXIF orientation, or None
        when the file is not one for ``decode_jpeg`` (the CPU path decides and words any error)."""
        head = jpeg_header(data)
        if head is None:
            return None
        w, h, exif = head
        if w * h > self._max_pixels() or w < 1 or h < 1:
            return None
        out.exif = _exif(exif)
        orientation = out.exif.orientation or 1
        out.width, out.height = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
        return orientation

    def _max_pixels(self) -> int:
        return int(self.limits.get("max_image_pixels", MAX_IMAGE_PIXELS))

    def _cpu(self, out: Loaded, data: bytes) -> Loaded:
        """The CPU path on bytes already read: Pillow decode (reduced DCT), numpy resize and crop."""
        try:
            pic = decode_picture(data, self.recipe, self._max_pixels())
            out.width, out.height, out.exif = pic.width, pic.height, pic.exif
            out.pixels = prepare_picture(pic, self.plan)
        except BadInput as exc:
            out.error, out.pixels = str(exc), None
        except MemoryError:
            out.error, out.pixels = "out of memory while decoding", None
        return out

    # ---- decoding (this thread) -------------------------------------------------------------------
    def _finish(self, group: Sequence[_Raw]) -> list[Loaded]:
        """Decode and preprocess one batch (halved on out-of-memory); rejected files the CPU way.
        A list, not a generator: inference mode must not stay on while the caller runs."""
        import torch

        done: list[Loaded] = []
        with torch.inference_mode():
            for chunk, got in self.halving.run(list(group), self._batch):
                if isinstance(got, BaseException):  # one image alone does not fit the device
                    done.append(self._cpu(chunk[0].item, chunk[0].data))
                    continue
                pixels, rejected = got
                for j, raw in enumerate(chunk):
                    if j in rejected:
                        done.append(self._cpu(raw.item, raw.data))
                    else:
                        raw.item.pixels = pixels[j]
                        self.paths.add(raw.item.path)
                        done.append(raw.item)
        return done

    def _batch(self, chunk: list[_Raw]) -> tuple[Any, set[int]]:
        """(normalised batch, indices the decoder or the plan rejected: their rows are left unset)."""
        from mmsearch.ingest import tensor_pixels

        images = self._decode_all([raw.data for raw in chunk])
        rejected = {i for i, im in enumerate(images) if im is None}
        upright = [tensor_pixels.orient(im, raw.orientation) for im, raw in zip(images, chunk) if im is not None]
        keep = [i for i in range(len(chunk)) if i not in rejected]
        if not upright:
            return None, rejected
        try:
            batch = tensor_pixels.prepare(upright, self.plan, self.dtype)
        except ValueError:  # an image the recipe cannot resize: the CPU path words the error
            return None, set(range(len(chunk)))
        return _Scatter(batch, keep), rejected

    def _decode_all(self, datas: list[bytes]) -> list[Any]:
        """Decoded ``uint8 (3, H, W)`` tensors, None for each file the decoder rejects (a batch that fails
        is decoded file by file to find them; out-of-memory propagates, for the back-off)."""
        import torch

        tensors = self._host(datas)
        try:
            return self.decode(tensors, self.device)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception:
            pass
        out: list[Any] = []
        for t in tensors:
            try:
                out.append(self.decode([t], self.device)[0])
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception:
                out.append(None)
        return out

    def _host(self, datas: list[bytes]) -> list[Any]:
        """The encoded bytes as uint8 tensors: views of one pinned buffer on CUDA (a faster copy to the
        device; torch caches pinned blocks, so a buffer per batch costs no new allocation)."""
        import torch

        if not self.cuda:
            return [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
        buf = torch.empty(sum(map(len, datas)), dtype=torch.uint8, pin_memory=True)
        host = buf.numpy()
        out, at = [], 0
        for d in datas:
            host[at : at + len(d)] = np.frombuffer(d, np.uint8)
            out.append(buf[at : at + len(d)])
            at += len(d)
        return out


class _Scatter:
    """A batch of the accepted images of a chunk, indexed by their place in the chunk."""

    def __init__(self, batch: Any, keep: list[int]) -> None:
        self.batch, self.row = batch, {i: j for j, i in enumerate(keep)}

    def __getitem__(self, i: int) -> Any:
        return self.batch[self.row[i]]
