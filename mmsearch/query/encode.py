"""A query → one unit vector in a given space: text through the space's text tower, an image through
the very decode and preprocessing indexing uses (the same reduced JPEG decode, :func:`prepare` and
:func:`to_batch` of :mod:`mmsearch.ingest.pixels`, so an indexed image finds itself at cosine 1), a
sound through the same decode, windows and mean as indexed sounds (:mod:`mmsearch.ingest.audio`), or a
raw vector. An already decoded PIL image is prepared at the size it has (no reduced decode to share).

A query is a list of terms (:class:`Part`): the terms of its text (:mod:`mmsearch.query.parse`), each
image, the sound, each ``like`` (+1) and ``unlike`` (-1) example. In each space that embeds every kind
of term (:func:`able_spaces`) each term becomes a unit vector, the vectors are added by signed weight
and the sum normalised (:func:`embed_query`); a query of one term is exactly that term's vector."""

from __future__ import annotations

import builtins
import os
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mmsearch.ann.faiss_index import SearchParams
from mmsearch.encoders.base import Encoder
from mmsearch.errors import ModelError, UnanswerableQuery, UsageError
from mmsearch.query.parse import parse
from mmsearch.store.schema import Space, item_kinds
from mmsearch.store.store import Store

TYPES = ("image", "audio", "video", "text", "any")
KINDS = ("text", "image", "audio")  # what a query term can be
#: A combined query's kind (which background calibrates its scores): the first kind among its terms, in
#: this order. An image or sound term's cosines to items run higher and spread wider than a text's (in
#: CLIP an image matches its look-alikes near 0.8 and unrelated images near 0.45, a text its match near
#: 0.3), so they set the scale of the combined cosine: a text-and-image query is scored against the
#: image background, a text-only combination against the text one.
CALIBRATED_AS = ("image", "audio", "text")
#: The weight of an ``unlike`` example (a ``like`` counts +1): negative feedback counts less, as in Rocchio's
#: relevance feedback, so the query stays anchored on what is liked. On the shapes world, like a red circle
#: and unlike a pink one: at -1 the shared "circle" cancels and red squares come first; at -0.5 the top 30
#: still hold every red circle the like alone found, and no pink circle.
UNLIKE_WEIGHT = 0.5
#: A combination shorter than this share of its weights' sum has no direction left ("dog - dog").
CANCELLED = 1e-3


@dataclass(frozen=True, eq=False)
class Part:
    """One term of a query: what it is (``kind``: text, image or audio), the text or file (``value``; path,
    bytes or PIL image), its signed ``weight``, how messages name it (``label``), and for an indexed example
    the vector it has in each space (``stored``: space id → unit vector)."""

    kind: str
    value: Any
    weight: float = 1.0
    label: str = ""
    stored: Mapping[int, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Query:
    """One validated search request: terms (``parts``) of text, images, sound and examples, or a raw ``vector``.

    ``text`` is parsed by the query language (:mod:`mmsearch.query.parse`); every term is embedded in each
    space searched, the unit vectors are added by signed weight and the sum normalised (:func:`embed_query`).
    ``like``/``unlike``: examples (paths or content ids; +1 and -0.5 each), made parts by :func:`with_examples`.
    """

    text: str | tuple[str, ...] | None = None
    image: Any = None
    vector: np.ndarray | None = None
    k: int = 10
    type: str | None = None
    under: str | None = None  # absolute folder
    params: SearchParams = SearchParams()
    audio: Any = None  # a path or the bytes of a sound file
    min_score: float | None = None  # on the calibrated score
    max_audio_seconds: float = 600.0  # a query sound is read as far as indexed sounds are
    parts: tuple[Part, ...] = ()
    like: tuple[Any, ...] = ()
    unlike: tuple[Any, ...] = ()
    moments: int = 1  # a video hit's moments listed (mmsearch.query.moments)
    pooling: str = "peak"  # how a video scores: its best moment ("peak") or its mean vector ("mean")

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds of term the query holds (a space must embed each of them to be searched)."""
        return tuple(k for k in KINDS if any(p.kind == k for p in self.parts))

    @property
    def modality(self) -> str | None:
        """What the query is, for calibration (None for a raw vector, which belongs to one space): image when
        any term is an image, else audio when any is a sound, else text (see :data:`CALIBRATED_AS`)."""
        return next((k for k in CALIBRATED_AS if k in self.kinds), None)

    @classmethod
    def make(cls, text: str | Sequence[str] | None = None, image: Any = None, vector: Any = None, *,
             audio: Any = None, like: Any = (), unlike: Any = (), k: int = 10, type: str | None = None,
             under: Any = None, nprobe: int | None = None, ef_search: int | None = None,
             min_score: float | None = None, max_audio_seconds: float = 600.0, moments: int = 1,
             pooling: str = "peak") -> "Query":
        """Check every argument; a bad one is a :class:`UsageError` naming it."""
        texts, images = _texts(text), _many(image)
        like, unlike = _examples("like", like), _examples("unlike", unlike)
        given = bool(texts or images or like or audio is not None)
        if vector is not None and (given or unlike):
            raise UsageError("a vector is searched alone: give exactly one of vector or text, image, audio, like")
        if vector is None and not given:
            raise UsageError("unlike needs something to search for: a text, image, audio or like" if unlike else
                             "give a query: text, image, audio or like examples (several combine), "
                             "or exactly one vector")
        if min_score is not None and (isinstance(min_score, bool) or not isinstance(min_score, (int, float))
                                      or not np.isfinite(min_score)):
            raise UsageError(f"min_score={min_score!r}: must be a number")
        if audio is not None and not isinstance(audio, (str, os.PathLike, bytes, bytearray)):
            raise UsageError(f"audio must be a path or the bytes of a sound file, not {builtins.type(audio).__name__}")
        for name, value in (("k", k), ("moments", moments)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name}={value!r}: must be a positive whole number")
        if pooling not in ("peak", "mean"):
            raise UsageError(f"pooling={pooling!r}: expected peak or mean")
        if type is not None and type not in TYPES:
            raise UsageError(f"type={type!r}: expected one of {', '.join(TYPES)}")
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
        parts = [Part("text", t.text, t.weight, t.text) for q in texts for t in parse(q)]
        parts += [Part("image", im, 1.0, _label("image", im)) for im in images]
        if audio is not None:
            parts.append(Part("audio", audio, 1.0, _label("sound", audio)))
        return cls(text if isinstance(text, str) or text is None else tuple(texts), image, vector, k, type,
                   os.path.abspath(under) if under is not None else None,
                   SearchParams(nprobe=nprobe, ef_search=ef_search), audio,
                   None if min_score is None else float(min_score), float(max_audio_seconds), tuple(parts),
                   like, unlike, moments, pooling)


def _texts(text: Any) -> list[str]:
    """One query text or several (a list or tuple of them), each checked."""
    texts = _many(text)
    for t in texts:
        if not isinstance(t, str):
            raise UsageError(f"text must be a string, not {builtins.type(t).__name__}")
        if not t.strip():
            raise UsageError("the query text is empty")
    return texts


def _many(value: Any) -> list[Any]:
    """One query text, image or example, or several (a list or tuple of them)."""
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def _examples(name: str, items: Any) -> tuple[Any, ...]:
    """Examples: paths or content ids (one, or a sequence of them)."""
    if items is None:
        return ()
    found = tuple(_many(items))
    for x in found:
        if isinstance(x, bool) or not isinstance(x, (str, os.PathLike, int)):
            raise UsageError(f"{name} takes paths or content ids, not {builtins.type(x).__name__}")
    return found


def _label(what: str, value: Any) -> str:
    return f"query {what} {os.fspath(value)}" if isinstance(value, (str, os.PathLike)) else f"query {what}"


def with_examples(query: Query, store: Store) -> Query:
    """The query with its ``like`` (weight +1) and ``unlike`` (-:data:`UNLIKE_WEIGHT`) examples as parts: an
    indexed file or a content id brings its stored vector in each space (and its file or text, for a space
    without one); a file not indexed is embedded as a query image or sound."""
    extra = [_example(store, x, sign, name) for name, sign, xs in
             (("like", 1.0, query.like), ("unlike", -UNLIKE_WEIGHT, query.unlike)) for x in xs]
    return replace(query, parts=query.parts + tuple(extra)) if extra else query


def _example(store: Store, item: Any, weight: float, name: str) -> Part:
    label = f"{name} {item if isinstance(item, int) else os.fspath(item)}"
    if isinstance(item, int):
        meta = store.content_meta([item]).get(item)
        if meta is None:
            raise UsageError(f"{label}: no item with content id {item} in this store")
        return _indexed(store, meta, weight, label, None)
    given = os.fspath(item)
    uri = given if given.startswith("text:") else os.path.abspath(given)
    found = store.lookup_sources([uri]).get(uri)
    if found is not None:
        meta = store.content_meta([found.content_id]).get(found.content_id)
        if meta is not None:
            return _indexed(store, meta, weight, label, uri)
    if uri.startswith("text:"):
        raise UsageError(f"{label}: no such added text in this store")
    if not os.path.isfile(uri):
        raise UsageError(f"{label}: no such file, nor an indexed item")
    from mmsearch.ingest.decode import BadInput
    from mmsearch.ingest.discover import classify, sniffed

    try:
        kind = classify(uri) or sniffed(uri)
    except BadInput as exc:
        raise UsageError(f"{label}: {exc}") from None
    if kind not in ("image", "audio"):
        raise UsageError(f"{label}: not an image or sound file", hint="index it first: any indexed item is an example")
    return Part(kind, uri, weight, label)


def _indexed(store: Store, meta: Any, weight: float, label: str, uri: str | None) -> Part:
    """An indexed item as a part: its stored vector in each space; its file or text where a space has none.
    A video is its frames' mean where an image model read it (an image term), else its soundtrack's (a sound
    term); it has no file to embed again as either."""
    stored, seen = {}, False
    for sp in store.spaces():
        if meta.modality in item_kinds(sp):
            vec = store.vectors_for([meta.id], sp.id).get(meta.id)
            if vec is not None:
                stored[sp.id] = vec / max(float(np.linalg.norm(vec)), 1e-12)
                seen = seen or "image" in sp.modalities.split(",")
    if meta.modality == "video":
        kind = "image" if seen else "audio"
        images = {sp.id for sp in store.spaces() if ("image" in sp.modalities.split(",")) == seen}
        return Part(kind, None, weight, label, {i: v for i, v in stored.items() if i in images})
    if meta.modality == "text":
        value = meta.text
    else:
        files = [u for u in ([uri] if uri else []) + list(meta.uris) if not u.startswith("text:")]
        value = next((f for f in files if os.path.isfile(f)), None)
    return Part(meta.modality, value, weight, label, stored)


# ---- which spaces -------------------------------------------------------------------------------------
def able_spaces(query: Query, spaces: Sequence[Space]) -> tuple[list[Space], list[str]]:
    """The spaces that embed every kind of term of the query, and a notice for each space skipped
    that embeds some of them; a :class:`UsageError` when none embeds them all."""
    kinds = query.kinds
    held = {sp.id: sp.modalities.split(",") for sp in spaces}
    able = [sp for sp in spaces if all(k in held[sp.id] for k in kinds)]
    if not able:
        what = f"a {kinds[0]} query" if len(kinds) == 1 else f"every part of this query ({_and(kinds)})"
        models = "; ".join(f"model {sp.spec} embeds {', '.join(held[sp.id])}" for sp in spaces)
        raise UnanswerableQuery(f"no model in this store embeds {what} ({models})",
                                hint="index with a model that does (--model)" if len(kinds) == 1 else
                                "search with the parts one model embeds")
    partly = [sp for sp in spaces if sp not in able and any(k in held[sp.id] for k in kinds)]
    notices = [f"model {sp.spec} not searched: it does not embed the query's "
               f"{_and([k for k in kinds if k not in held[sp.id]])}" for sp in partly]
    return able, notices


def _and(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


# ---- one space ------------------------------------------------------------------------------------------
def embed_query(query: Query, space: Space, encoder: Callable[[str], Encoder]) -> np.ndarray:
    """The query as a unit vector of ``space`` (``encoder(spec)`` loads the space's model when needed):
    each term's unit vector times its signed weight, summed, normalised. A query of one term with
    positive weight is that term's vector exactly as embedded."""
    if query.vector is not None:
        if query.vector.shape[0] != space.dim:
            raise UsageError(f"vector has {query.vector.shape[0]} dimensions, space {space.spec} has {space.dim}")
        return query.vector
    vectors = _embedded(query, space, encoder)
    weights = np.array([p.weight for p in query.parts], np.float64)
    if len(vectors) == 1 and weights[0] > 0:
        return vectors[0]
    total = (weights[:, None] * np.asarray(vectors, np.float64)).sum(axis=0)
    norm = float(np.linalg.norm(total))
    if norm < CANCELLED * float(np.abs(weights).sum()):
        raise UsageError(f"the query's terms cancel out in model {space.spec} ({_written(query.parts)}): "
                         "nothing is left to search for", hint="drop a term or change a weight")
    return (total / norm).astype(np.float32)


def _written(parts: Sequence[Part]) -> str:
    """The terms as the query language writes them: ``a red circle - 2:red``."""
    signed = [("- " if p.weight < 0 else "+ ") + (f"{abs(p.weight):g}:" if abs(p.weight) != 1 else "") + p.label
              for p in parts]
    return " ".join(signed)[2:]


def _embedded(query: Query, space: Space, encoder: Callable[[str], Encoder]) -> list[np.ndarray]:
    """Each part's unit vector in ``space``, in order (texts and images in one batch each; the model is
    loaded only when some part has no stored vector there)."""
    out: dict[int, np.ndarray] = {i: p.stored[space.id] for i, p in enumerate(query.parts) if space.id in p.stored}
    todo = [(i, p) for i, p in enumerate(query.parts) if i not in out]
    if todo:
        enc = encoder(space.spec)
        if enc.space.key != space.key:
            raise ModelError(f"model {space.spec!r} now loads different weights than the store was built with",
                             hint="re-index, or point --model at the original weights")
        for i, p in todo:
            if p.value is None:
                raise UsageError(f"{p.label}: no vector in model {space.spec} and no file to embed it from",
                                 hint="re-index it, or give it by path")
        texts = [(i, p) for i, p in todo if p.kind == "text"]
        if texts:
            out.update(zip((i for i, _ in texts), enc.embed_texts([p.value for _, p in texts])))
        images = [(i, p) for i, p in todo if p.kind == "image"]
        if images:
            from mmsearch.ingest.pixels import to_batch

            recipe = enc.image_recipe()
            pixels = to_batch([query_image(p.value, recipe) for _, p in images], recipe)
            out.update(zip((i for i, _ in images), enc.embed_image_batch(pixels)))
        for i, p in todo:
            if p.kind == "audio":
                out[i] = _sound_vector(enc, space, p.value, query.max_audio_seconds)
    return [out[i] for i in range(len(query.parts))]


def _sound_vector(enc: Encoder, space: Space, audio: Any, max_seconds: float) -> np.ndarray:
    if not hasattr(enc, "audio_recipe"):
        raise UsageError(f"model {space.spec!r} does not embed sounds")
    windows = enc.embed_audio_batch(query_sound(audio, enc.audio_recipe(), max_seconds))  # type: ignore[attr-defined]
    mean = windows.mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


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

    from mmsearch.ingest.audio import decode_windows
    from mmsearch.ingest.decode import BadInput

    where = None if isinstance(audio, (bytes, bytearray)) else os.fspath(audio)
    try:
        if where is not None:
            if not os.path.isfile(where):
                raise BadInput("no such file")
            sound = decode_windows(where, recipe, max_seconds)
        else:
            with tempfile.NamedTemporaryFile(prefix="mmsearch-query-", suffix=".sound") as f:
                f.write(bytes(audio))
                f.flush()
                sound = decode_windows(f.name, recipe, max_seconds)
        return sound.features
    except BadInput as exc:
        raise UsageError(f"query sound: {exc}", path=where) from None
