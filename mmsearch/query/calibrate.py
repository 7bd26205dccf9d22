"""Scores comparable across spaces and kinds of item: the calibrated score.

Raw cosines of two models are not comparable (one CLAP model's good match is 0.3, one CLIP model's
0.3 is noise), nor are a text query's cosines to sounds and to texts in one model. Every hit
therefore also gets a *calibrated* score: how far its raw cosine stands above what **unrelated
queries** score against the items of that space and kind, in standard deviations::

    calibrated = (cosine − μ) / σ        μ, σ: mean and spread of cos(b, x) over
                                          b ∈ background queries, x ∈ a sample of the items

* For a text query the background queries are :data:`BACKGROUND_PROMPTS` (generic captions:
  "a photo", "a sound", "a chair", "music" …) embedded by the space's own text tower.
* For an image or sound query they are the space's own stored images or sounds (a spread sample;
  pairs of an item with itself left out).

μ and σ are learnt from the store's own vectors (up to :data:`SAMPLE` items per kind, spread over
the store) each time a write changes a space, and kept in the database (``meta`` table, key
``calibration:<space id>``), so a query reads two numbers instead of embedding prompts. A store
written before this existed is calibrated on the fly at query time (the same numbers, not kept).

The score is a monotone map per (space, query kind, item kind): it never reorders one list, it
makes lists from several spaces mergeable, and it gives "nothing relevant" a meaning: a query whose
best hit scores near 0 is no closer to anything than a generic prompt is. ``--min-score`` filters on
it (a calibrated score of 3 is three standard deviations above an unrelated query's typical score).
"""

from __future__ import annotations

import base64
import json
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from mmsearch.encoders.base import Encoder
from mmsearch.store.schema import MOMENT, Space, item_kinds
from mmsearch.store.store import Store

SAMPLE = 512
#: Generic captions, of the kinds of things photos, notes and sounds hold: "unrelated" text queries.
BACKGROUND_PROMPTS = (
    "a photo", "a picture", "an image", "a sound", "a recording", "audio", "a noise", "music", "a song",
    "a voice", "someone talking", "silence", "a thing", "an object", "something", "stuff", "a scene", "a place",
    "a room", "outside", "a person", "people", "an animal", "a plant", "a tree", "a building", "a street",
    "a car", "a chair", "a table", "a cup", "food", "water", "the sky", "a texture", "a pattern", "a colour",
    "a shape", "a document", "some text", "a note", "a page", "a screenshot", "a drawing", "a machine",
    "a tool", "the weather", "a day", "a moment", "an event", "a video", "a clip", "a sample", "a file",
    "a tone", "a beep", "a click", "a hum", "a bell", "footsteps", "wind", "rain", "a crowd", "a city",
)

#: Specific searches of the kind people type (a subject in a setting): with the prompts above, the text
#: queries approximate indexes are tuned with (:mod:`mmsearch.ann.tuning`); embedded once per space.
_SUBJECTS = (
    "a dog", "a cat", "a child", "a baby", "a family", "friends", "a woman", "a man", "a bird", "a horse",
    "a red car", "a bicycle", "a boat", "a train", "a plane", "a birthday cake", "a plate of food", "coffee",
    "flowers", "a garden", "a forest", "a mountain", "a lake", "the sea", "a beach", "a sunset", "snow",
    "a city street", "a bridge", "a church", "a house", "a kitchen", "a living room", "an office", "a desk",
    "a laptop", "a phone", "a book", "a receipt", "a whiteboard", "a map", "a painting", "a statue",
    "a concert", "a football match", "a wedding", "a party", "fireworks", "a dog barking", "birds singing",
    "a piano", "a guitar", "applause", "traffic noise", "a red circle", "a blue square", "a rising whistle",
)
_SETTINGS = ("a photo of {}", "{} at night", "{} in the rain")
TUNING_QUERIES = tuple(t.format(x) for x in _SUBJECTS for t in _SETTINGS)


class Calibration(Protocol):
    def __call__(self, space: Space, query_modality: str, modality: str, scores: np.ndarray) -> np.ndarray:
        """Calibrated scores for raw ``scores`` of a ``query_modality`` query against ``modality`` items."""
        ...

    def stats(self, space: Space, query_modality: str, modality: str) -> tuple[float, float] | None:
        """The background's (mean, spread) behind those scores; None when the space cannot tell."""
        ...


def scaled(found: tuple[float, float] | None) -> Callable[[np.ndarray], np.ndarray]:
    """Raw cosines → calibrated scores against a background's (mean, spread) ``found`` (read once, for
    all of a search's hits of one kind); neutral (0) when there is none, never a raw cosine among z-scores."""
    if found is None:
        return lambda scores: np.zeros(len(scores))
    mu, sigma = found
    return lambda scores: (np.asarray(scores, np.float64) - mu) / sigma


def embedded_once(enc: Encoder, texts: Sequence[str]) -> np.ndarray:
    """``texts`` as the model's text tower embeds them, kept in the user's cache (``prompts/``, by model
    and texts): the 235 generic prompts cost a CLIP text tower ~35 CPU-s on two cores, on every new
    store otherwise. An unreadable or missing file is embedded again."""
    import hashlib

    from mmsearch.encoders.cache import root
    from mmsearch.errors import StoreError
    from mmsearch.store.files import atomic_write_with

    ident = f"{enc.space.key}|{type(enc).__module__}.{type(enc).__qualname__}|" + "\n".join(texts)
    path = root() / "prompts" / (hashlib.sha256(ident.encode()).hexdigest()[:32] + ".npy")
    try:
        found = np.load(path)
        if found.shape[0] == len(texts):
            return found.astype(np.float32)
    except (OSError, ValueError):
        pass
    vectors = np.asarray(enc.embed_texts(list(texts)), np.float32)
    def write(tmp) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save given a path would add ".npy" to it
            np.save(f, vectors)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_with(path, write)
    except (OSError, StoreError):  # a read-only cache: embedded each time, as before
        pass
    return vectors


def _key(space_id: int) -> str:
    return f"calibration:{space_id}"


def _pack(x: np.ndarray) -> str:
    return base64.b64encode(np.asarray(x, np.float16).tobytes()).decode("ascii")


def _unpack(text: str, dim: int) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), np.float16).reshape(-1, dim).astype(np.float32)


def background_stats(background: np.ndarray, items: np.ndarray, same: bool) -> tuple[float, float, int] | None:
    """(μ, σ, pairs) of cosines between background queries and items (``same``: the two are one sample,
    split in halves so no item is compared with itself). None when there is too little to tell."""
    if same:
        half = len(items) // 2
        background, items = items[:half], items[half:]
    if len(background) < 2 or len(items) < 2:
        return None
    sims = (background @ items.T).ravel()
    return float(sims.mean()), max(float(sims.std()), 1e-4), int(sims.size)


class BackgroundZ:
    """The calibrated score of :mod:`this module <mmsearch.query.calibrate>`, per store.

    ``encoder(spec)`` gives a space's model when prompts must be embedded (a store never calibrated).
    """

    def __init__(self, store: Store, encoder: Callable[[str], Encoder] | None = None, sample: int = SAMPLE) -> None:
        self.store = store
        self.encoder = encoder
        self.sample = sample
        self._cache: dict[int, tuple[int, dict[str, Any]]] = {}

    # ---- reading (queries) ------------------------------------------------------------------------
    def stats(self, space: Space, query_modality: str, modality: str) -> tuple[float, float] | None:
        """(μ, σ) of a space for a query kind against an item kind; None when the space cannot tell."""
        gen = self.store.generation()
        cached = self._cache.get(space.id)
        if cached is None or cached[0] != gen:
            record = self.store.meta_value(_key(space.id))
            data = json.loads(record) if record else self.compute(space, None, None, load=True)  # never kept: now
            cached = (gen, data)
            self._cache[space.id] = cached
        found = cached[1].get("stats", {}).get(f"{query_modality}>{modality}")
        return (found[0], found[1]) if found else None


    def prompts(self, space: Space) -> np.ndarray | None:
        """The space's :data:`BACKGROUND_PROMPTS` and :data:`TUNING_QUERIES` as its text tower embedded them
        (kept in its record; no model is loaded): the text queries its indexes are tuned with."""
        record = self.store.meta_value(_key(space.id))
        data = json.loads(record) if record else {}
        found = [_unpack(data[k], space.dim) for k in ("prompts", "queries") if k in data]
        return np.concatenate(found) if found else None

    def __call__(self, space: Space, query_modality: str, modality: str, scores: np.ndarray) -> np.ndarray:
        return scaled(self.stats(space, query_modality, modality))(scores)

    # ---- learning (after writes) ------------------------------------------------------------------
    def compute(self, space: Space, encoder: Encoder | None, previous: dict[str, Any] | None, *,
                load: bool = False) -> dict[str, Any]:
        """The calibration record of a space from its vectors now (prompts embedded by ``encoder``, or
        taken from ``previous``, or with ``load`` embedded through the engine's loader when neither has
        them; else the record has no text statistics, and a text query embeds the prompts)."""
        mods = space.modalities.split(",")  # the kinds of query the model embeds
        items = item_kinds(space)  # the kinds of item it holds (videos and their moments too)
        samples = {m: self.store.spread_vectors(space.id, m, self.sample) for m in items}
        record: dict[str, Any] = {"generation": self.store.generation(), "stats": {}}
        prompts = None
        enc = None
        if "text" in mods and any(len(samples[m]) for m in items):
            enc = encoder if encoder is not None else (self.encoder(space.spec) if self.encoder and load else None)
        if previous and "prompts" in previous:
            prompts = _unpack(previous["prompts"], space.dim)
        elif enc is not None:
            prompts = embedded_once(enc, BACKGROUND_PROMPTS)
        if prompts is not None:
            record["prompts"] = _pack(prompts)
        if previous and "queries" in previous:
            record["queries"] = previous["queries"]
        elif enc is not None and encoder is not None:  # only with the writer's model: never loaded for it
            record["queries"] = _pack(embedded_once(enc, TUNING_QUERIES))
        for q in mods:
            for m in items:
                background, same = prompts if q == "text" else samples[q], q == m and q != "text"
                if q != "text" and len(background) < 2:  # no photos (sounds) of its own: the videos' frames (windows)
                    background, same = samples[MOMENT], m == MOMENT
                if background is None or not len(samples[m]):
                    continue
                found = background_stats(background, samples[m], same=same)
                if found is not None:
                    record["stats"][f"{q}>{m}"] = [round(found[0], 6), round(found[1], 6), found[2]]
        return record

    def refresh(self, written: Sequence[tuple[Encoder, Space]], before: int) -> list[str]:
        """After a write: recompute and keep the record of every space whose vectors changed since ``before``
        (with the prompts embedded by the write's loaded models; no model is loaded for it). Returns
        notices: a calibration that cannot be kept never fails a write that is already committed."""
        from mmsearch.errors import MmsearchError

        loaded = {space.id: enc for enc, space in written}
        notices = []
        for space in self.store.spaces():
            try:
                record = self.store.meta_value(_key(space.id))
                changed = any(sum(self.store.changes(space.id, m, before)) for m in item_kinds(space))
                if record is not None and not changed:
                    continue
                if record is None and not changed and space.id not in loaded:
                    continue
                data = self.compute(space, loaded.get(space.id), json.loads(record) if record else None)
                self.store.set_meta(_key(space.id), json.dumps(data))
            except MmsearchError as exc:
                notices.append(f"score calibration of {space.spec} not updated: {exc}")
        self._cache.clear()
        return notices
