"""A query → one unit vector in a given space: text through the space's text tower, an image through
the very decode and preprocessing indexing uses (the same reduced JPEG decode, :func:`prepare` and
:func:`to_batch` of :mod:`mmsearch.ingest.pixels`, so an indexed image finds itself at cosine 1), a
sound through the same decode, windows and mean as indexed sounds (:mod:`mmsearch.ingest.audio`), or a
raw vector. An already decoded PIL image is prepared at the size it has (no reduced decode to share)."""

from __future__ import annotations

import builtins
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from mmsearch.ann.faiss_index import SearchParams
from mmsearch.encoders.base import Encoder
from mmsearch.errors import ModelError, UsageError
from mmsearch.store.schema import Space

TYPES = ("image", "audio", "text", "any")


@dataclass(frozen=True)
class Query:
    """One validated search request (exactly one of ``text``, ``image``, ``vector``)."""

    text: str | None = None
    image: Any = None
    vector: np.ndarray | None = None
    k: int = 10
    type: str | None = None
    under: str | None = None  # absolute folder
    params: SearchParams = SearchParams()
    audio: Any = None  # a path or the bytes of a sound file
    min_score: float | None = None  # on the calibrated score
    max_audio_seconds: float = 600.0  # a query sound is read as far as indexed sounds are

    @property
    def modality(self) -> str | None:
        """What the query itself is (None for a raw vector, which belongs to one space)."""
        if self.text is not None:
            return "text"
        return "image" if self.image is not None else ("audio" if self.audio is not None else None)

    @classmethod
    def make(cls, text: str | None = None, image: Any = None, vector: Any = None, *, audio: Any = None,
             k: int = 10, type: str | None = None, under: Any = None, nprobe: int | None = None,
             ef_search: int | None = None, min_score: float | None = None,
             max_audio_seconds: float = 600.0) -> "Query":
        """Check every argument; a bad one is a :class:`UsageError` naming it."""
        if sum(x is not None for x in (text, image, vector, audio)) != 1:
            raise UsageError("give exactly one of text, image, audio or vector")
        if min_score is not None and (isinstance(min_score, bool) or not isinstance(min_score, (int, float))
                                      or not np.isfinite(min_score)):
            raise UsageError(f"min_score={min_score!r}: must be a number")
        if audio is not None and not isinstance(audio, (str, os.PathLike, bytes, bytearray)):
            raise UsageError(f"audio must be a path or the bytes of a sound file, not {builtins.type(audio).__name__}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise UsageError(f"k={k!r}: must be a positive whole number")
        if type is not None and type not in TYPES:
            raise UsageError(f"type={type!r}: expected one of {', '.join(TYPES)}")
        if text is not None and not isinstance(text, str):
            raise UsageError(f"text must be a string, not {builtins.type(text).__name__}")
        if text is not None and not text.strip():
            raise UsageError("the query text is empty")
        for name, value in (("nprobe", nprobe), ("ef_search", ef_search)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UsageError(f"{name}={value!r}: must be a positive whole number")
        if under is not None and not isinstance(under, (str, os.PathLike)):
            raise UsageError(f"under must be a folder path, not {builtins.type(under).__name__}")
        if vector is not None:
            try:
                vector = np.asarray(vector, dtype=np.float32).reshape(-1)
            except (TypeError, ValueError):
                raise UsageError("vector must be a sequence of numbers") from None
        return cls(text, image, vector, k, type, os.path.abspath(under) if under is not None else None,
                   SearchParams(nprobe=nprobe, ef_search=ef_search), audio,
                   None if min_score is None else float(min_score), float(max_audio_seconds))


def embed_query(query: Query, space: Space, encoder: Callable[[str], Encoder]) -> np.ndarray:
    """The query as a unit vector of ``space`` (``encoder(spec)`` loads the space's model when needed)."""
    if query.vector is not None:
        if query.vector.shape[0] != space.dim:
            raise UsageError(f"vector has {query.vector.shape[0]} dimensions, space {space.spec} has {space.dim}")
        return query.vector
    enc = encoder(space.spec)
    if enc.space.key != space.key:
        raise ModelError(f"model {space.spec!r} now loads different weights than the store was built with",
                         hint="re-index, or point --model at the original weights")
    if query.text is not None:
        return enc.embed_texts([query.text])[0]
    if query.audio is not None:
        if not hasattr(enc, "audio_recipe"):
            raise UsageError(f"model {space.spec!r} does not embed sounds")
        windows = enc.embed_audio_batch(query_sound(query.audio, enc.audio_recipe(),  # type: ignore[attr-defined]
                                                    query.max_audio_seconds))
        mean = windows.mean(axis=0)
        return mean / max(float(np.linalg.norm(mean)), 1e-12)
    from mmsearch.ingest.pixels import to_batch

    recipe = enc.image_recipe()
    return enc.embed_image_batch(to_batch([query_image(query.image, recipe)], recipe))[0]


def query_image(image: Any, recipe: dict[str, Any]) -> np.ndarray:
    """A query image (path, bytes or PIL image) decoded and prepared as indexing does files → ``uint8 (H, W, 3)``."""
    from mmsearch.ingest.decode import MAX_FILE_BYTES, BadInput, Picture, decode_picture, prepare_picture, read_file, to_rgb

    try:
        if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
            rgb = to_rgb(image)
            return prepare_picture(Picture(rgb, *rgb.size), recipe)
        if isinstance(image, (bytes, bytearray)):
            return prepare_picture(decode_picture(bytes(image), recipe), recipe)
        if not isinstance(image, (str, os.PathLike)):
            raise UsageError(f"image must be a path, bytes or a PIL image, not {type(image).__name__}")
        data, _ = read_file(os.fspath(image), MAX_FILE_BYTES)
        return prepare_picture(decode_picture(data, recipe), recipe)
    except BadInput as exc:
        where = None if isinstance(image, (bytes, bytearray)) or hasattr(image, "convert") else os.fspath(image)
        raise UsageError(f"query image: {exc}", path=where) from None


def query_sound(audio: Any, recipe: dict[str, Any], max_seconds: float = 600.0) -> np.ndarray:
    """A query sound (path or bytes) decoded and cut into windows as indexing does files → log-mel windows."""
    import tempfile

    from mmsearch.ingest.audio import decode_audio, windows
    from mmsearch.ingest.decode import BadInput

    where = None if isinstance(audio, (bytes, bytearray)) else os.fspath(audio)
    try:
        if where is not None:
            if not os.path.isfile(where):
                raise BadInput("no such file")
            sound = decode_audio(where, recipe["sampling_rate"], max_seconds)
        else:
            with tempfile.NamedTemporaryFile(prefix="mmsearch-query-", suffix=".sound") as f:
                f.write(bytes(audio))
                f.flush()
                sound = decode_audio(f.name, recipe["sampling_rate"], max_seconds)
        return windows(sound.samples, recipe)[0]
    except BadInput as exc:
        raise UsageError(f"query sound: {exc}", path=where) from None
