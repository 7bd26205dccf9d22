"""The one embed-and-upsert path: a batch of read items → vectors for what is new → one transaction.

Folder ingest and added texts both commit through :func:`commit`, so they count, deduplicate and
link known content the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Collection, Mapping, Sequence

import numpy as np

from mmsearch.encoders.base import Encoder
from mmsearch.ingest.decode import Loaded
from mmsearch.ingest.discover import display
from mmsearch.store.schema import Space
from mmsearch.store.store import Store, Upsert

Partial = Callable[[float], None]  # fraction of this batch's model work done
#: sha256 → a sound's windows: ((start, end) seconds per window, (n, dim) window vectors)
Segments = dict[str, tuple[list[tuple[float, float]], np.ndarray]]


@dataclass
class Committed:
    """What one committed batch did (counted only once durable)."""

    generation: int
    paths: tuple[str, ...]  # committed items (indexed, linked or unchanged)
    failed: tuple[str, ...]  # items whose error was recorded
    errors: list[tuple[str, str]]
    indexed: int = 0  # embedded now
    reused: int = 0  # known content (moved, copied, duplicate): linked without embedding
    unchanged: int = 0  # the same source already pointed at this content, with a vector
    relinked: int = 0  # sources that are new or now point at other content


def commit(store: Store, encoder: Encoder | None, space: Space | None, items: Sequence[Loaded], *, kind: str = "file",
           errors: Sequence[tuple[str, str]] = (), partial: Partial | None = None,
           vectors: Mapping[str, np.ndarray] | None = None, segments: Segments | None = None,
           counted: Collection[str] | None = None, error_space: int = 0) -> Committed:
    """Embed the items whose content has no vector in ``space``, then write the batch in one transaction.

    ``vectors``: sha256 → vector already embedded for some items (streamed ingest), with ``segments``
    for sounds among them; only the rest are embedded.

    ``counted``: the modalities whose items count in the result's indexed/reused/unchanged (default all:
    a text embedded into a second space is not a second file).

    ``kind``: what the items' paths are (``file`` paths or ``text`` uris). Items with an error, and
    ``errors``, are recorded as errors of ``space`` (paths stored as printable text: a non-UTF-8 name
    cannot be a database string); with no space, of ``error_space`` (0: about the file itself).
    """
    ok = [x for x in items if x.error is None]
    errors = [(display(p), r) for p, r in errors] + [(display(x.path), x.error) for x in items if x.error is not None]
    if space is None:  # errors only
        res = store.apply([], None, errors=errors, error_space=error_space)
        return Committed(res.generation, (), tuple(p for p, _ in errors), errors)
    known = store.contents_by_sha([x.sha256 for x in ok], space.id)
    previous = store.lookup_sources([x.path for x in ok])
    need: dict[str, Loaded] = {}
    result = Committed(0, (), (), errors)
    for x in ok:
        hit = known.get(x.sha256)
        prev = previous.get(x.path)
        same_source = hit is not None and prev is not None and prev.content_id == hit[0]
        result.relinked += not same_source
        counts = counted is None or x.modality in counted
        if hit is not None and hit[1]:
            result.unchanged += counts and same_source  # touched, same bytes
            result.reused += counts and not same_source
        elif x.sha256 in need:
            result.reused += counts  # duplicate within this batch
        else:
            need[x.sha256] = x
    given = {sha: v for sha, v in (vectors or {}).items() if sha in need}
    fresh, windows = embed(encoder, [x for sha, x in need.items() if sha not in given], partial)
    vectors, windows = {**given, **fresh}, {**(segments or {}), **windows}
    res = store.apply([upsert(x, kind, vectors.get(x.sha256), windows.get(x.sha256)) for x in ok], space.id,
                      errors=errors)
    result.generation = res.generation
    result.indexed = sum(1 for sha, x in need.items() if sha in vectors and (counted is None or x.modality in counted))
    result.paths, result.failed = tuple(x.path for x in ok), tuple(p for p, _ in errors)
    return result


def upsert(x: Loaded, kind: str, vector: np.ndarray | None, segments: tuple | None) -> Upsert:
    """The store row of one read item (a sound's metadata and windows included)."""
    info = dict(x.info) if getattr(x, "info", None) else None
    if getattr(x, "truncated", False):  # only the first minutes were read: say how far
        info = {**(info or {}), "truncated": True, "decoded_seconds": float(x.spans[-1][1]) if x.spans else None}
    return Upsert(uri=x.path, kind=kind, size=x.size, mtime_ns=x.mtime_ns, sha256=x.sha256, modality=x.modality,
                  width=x.width, height=x.height, text=x.text, vector=vector, duration=getattr(x, "duration", None),
                  sample_rate=getattr(x, "sample_rate", None), channels=getattr(x, "channels", None), info=info,
                  segments=segments if vector is not None else None,
                  exif=x.exif.columns() if getattr(x, "exif", None) is not None else None)


def embed(encoder: Encoder, items: Sequence[Loaded], partial: Partial | None = None) -> tuple[dict[str, np.ndarray], Segments]:
    """(sha256 → vector, sha256 → segments) for decoded items, in encoder-sized steps (``partial`` hears
    of each step).

    Images arrive as the workers' ``uint8`` crops; the normalised float32 batch the encoder takes is
    made here, one step at a time (:func:`mmsearch.ingest.pixels.to_batch`). JPEGs from the tensor path
    (:mod:`mmsearch.ingest.gpu_decode`) arrive normalised on the encoder's device, and the step is
    assembled there (:func:`mmsearch.ingest.tensor_pixels.assemble`). Items made of several inputs
    (a sound's log-mel windows; a video's sampled frames or its soundtrack's windows) are embedded
    input by input, about one encoder batch per call across items, and an item's vector is the
    normalised mean of its inputs' (each input's vector is kept as a segment, to say where a query
    matched). A video with nothing for this model (a silent one in a sound space) gets no vector.
    """
    step = int(getattr(encoder, "batch_size", 64) or 64)
    groups = {"image": [x for x in items if x.modality == "image"],
              "text": [x for x in items if x.modality == "text"],
              "audio": [x for x in items if x.modality in ("audio", "video") and x.windows is not None],
              "frames": [x for x in items if x.modality == "video" and x.windows is None and x.pixels is not None]}
    total = max(sum(map(len, groups.values())), 1)
    recipe = encoder.image_recipe() if groups["image"] or groups["frames"] else None
    vectors: dict[str, np.ndarray] = {}
    segments: Segments = {}
    done = 0

    def pictures(rows: Sequence[np.ndarray]) -> np.ndarray:
        return encoder.embed_image_batch(_image_input(list(rows), recipe))

    runs = {"image": lambda part: pictures([x.pixels for x in part]),
            "text": lambda part: encoder.embed_texts([x.text for x in part]),
            "audio": lambda part: _pooled(part, lambda x: x.windows, encoder.embed_audio_batch, step, segments),
            "frames": lambda part: _pooled(part, lambda x: x.pixels, pictures, step, segments)}
    for modality, group in groups.items():
        if modality in ("image", "text"):
            parts = [group[a : a + step] for a in range(0, len(group), step)]
        else:  # about one encoder batch of inputs per part (a long item alone)
            parts = _by_rows(group, lambda x: len(x.windows if modality == "audio" else x.pixels), step)
        for part in parts:
            vectors.update(zip((x.sha256 for x in part), runs[modality](part)))
            done += len(part)
            if partial is not None:
                partial(done / total)
    return vectors, segments


def _pooled(part: Sequence[Loaded], rows_of: Callable[[Loaded], np.ndarray], run: Callable[[np.ndarray], np.ndarray],
            step: int, segments: Segments) -> np.ndarray:
    """The vectors of items made of inputs (rows): every row embedded, at most ``step`` rows per call
    (rows of several items together, a long item over several calls); each item's rows' vectors kept
    in ``segments`` with its spans, its own vector their normalised mean."""
    pieces = [(i, rows_of(x)[a : a + step]) for i, x in enumerate(part) for a in range(0, len(rows_of(x)), step)]
    calls: list[list[tuple[int, np.ndarray]]] = [[]]
    for piece in pieces:
        if calls[-1] and sum(len(p) for _, p in calls[-1]) + len(piece[1]) > step:
            calls.append([])
        calls[-1].append(piece)
    got: list[list[np.ndarray]] = [[] for _ in part]
    for call in (c for c in calls if c):
        vecs = np.asarray(run(np.concatenate([p for _, p in call]) if len(call) > 1 else call[0][1]), np.float32)
        at = 0
        for i, p in call:
            got[i].append(vecs[at : at + len(p)])
            at += len(p)
    out = []
    for x, parts in zip(part, got):
        mine = np.concatenate(parts)
        segments[x.sha256] = (list(x.spans or []), mine)
        out.append(_unit_mean(mine))
    return np.stack(out)


def _unit_mean(rows: np.ndarray) -> np.ndarray:
    mean = rows.mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


class WhileDecoding:
    """A sink for one video decoded in this process (:func:`mmsearch.ingest.video.load_video`): its frames
    are embedded on a thread as they come, while the rest decode (the encoders' runtimes, ONNX Runtime and
    torch, release the GIL), so a lone video's decode and model overlap instead of taking turns.
    :meth:`result` gives what :func:`embed` would: the video's vector and its frames as segments."""

    def __init__(self, encoder: Encoder) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.encoder, self.recipe = encoder, encoder.image_recipe()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="mmsearch-frames")
        self.parts: list = []

    def __call__(self, rows: np.ndarray) -> None:
        failed = next((f for f in self.parts if f.done() and f.exception() is not None), None)
        if failed is not None:  # the model failed on an earlier step: stop decoding now, not at the end
            raise failed.exception()  # type: ignore[misc]
        self.parts.append(self.pool.submit(self._embed, rows))

    def _embed(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.encoder.embed_image_batch(_image_input(list(rows), self.recipe)), np.float32)

    def result(self, x: Loaded) -> tuple[dict[str, np.ndarray], Segments]:
        """({sha256: vector}, {sha256: segments}) of ``x`` once its frames are embedded (nothing when it failed)."""
        try:
            rows = [f.result() for f in self.parts]
        finally:
            self.close()
        if x.error is not None or not rows:
            return {}, {}
        mine = np.concatenate(rows)
        return {x.sha256: _unit_mean(mine)}, {x.sha256: (list(x.spans or []), mine)}

    def close(self) -> None:
        """Stop: steps not started are dropped (an interrupted or failed decode)."""
        self.pool.shutdown(wait=True, cancel_futures=True)


def _image_input(pixels: list, recipe: dict) -> object:
    """A step's encoder input: a numpy batch from the workers' crops, else a tensor batch on the device."""
    from mmsearch.ingest.pixels import plan, to_batch

    if all(isinstance(p, np.ndarray) for p in pixels):
        return to_batch(pixels, recipe)
    from mmsearch.ingest.tensor_pixels import assemble

    return assemble(pixels, plan(recipe))


def _by_rows(items: Sequence[Loaded], rows: Callable[[Loaded], int], step: int) -> list[list[Loaded]]:
    """Consecutive runs of items holding about ``step`` inputs each (a long item alone)."""
    runs: list[list[Loaded]] = [[]]
    count = 0
    for x in items:
        if runs[-1] and count + rows(x) > step:
            runs.append([])
            count = 0
        runs[-1].append(x)
        count += rows(x)
    return [r for r in runs if r]


def text_items(pairs: Sequence[tuple[str, str]]) -> list[Loaded]:
    """Added texts (``(key, text)``) as items with ``text:<key>`` uris, ready for :func:`commit`."""
    from mmsearch.ingest.texts import text_sha

    return [Loaded(path=f"text:{key}", modality="text", size=len(t.encode()), mtime_ns=0, sha256=text_sha(t), text=t)
            for key, t in pairs]


