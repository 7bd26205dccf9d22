"""The one embed-and-upsert path: a batch of read items → vectors for what is new → one transaction.

Folder ingest and added texts both commit through :func:`commit`, so they count, deduplicate and
link known content the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from mmsearch.encoders.base import Encoder
from mmsearch.ingest.decode import Loaded
from mmsearch.ingest.discover import display
from mmsearch.store.schema import Space
from mmsearch.store.store import Store, Upsert

Partial = Callable[[float], None]  # fraction of this batch's model work done


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


def commit(store: Store, encoder: Encoder, space: Space, items: Sequence[Loaded], *, kind: str = "file",
           errors: Sequence[tuple[str, str]] = (), partial: Partial | None = None,
           vectors: Mapping[str, np.ndarray] | None = None) -> Committed:
    """Embed the items whose content has no vector in ``space``, then write the batch in one transaction.

    ``vectors``: sha256 → vector already embedded for some items (streamed ingest); only the rest are embedded.

    ``kind``: what the items' paths are (``file`` paths or ``text`` uris). Items with an error, and
    ``errors``, are recorded as errors (paths stored as printable text: a non-UTF-8 name cannot be a
    database string).
    """
    ok = [x for x in items if x.error is None]
    errors = [(display(p), r) for p, r in errors] + [(display(x.path), x.error) for x in items if x.error is not None]
    known = store.contents_by_sha([x.sha256 for x in ok], space.id)
    previous = store.lookup_sources([x.path for x in ok])
    need: dict[str, Loaded] = {}
    result = Committed(0, (), (), errors)
    for x in ok:
        hit = known.get(x.sha256)
        prev = previous.get(x.path)
        same_source = hit is not None and prev is not None and prev.content_id == hit[0]
        result.relinked += not same_source
        if hit is not None and hit[1]:
            result.unchanged += same_source  # touched, same bytes
            result.reused += not same_source
        elif x.sha256 in need:
            result.reused += 1  # duplicate within this batch
        else:
            need[x.sha256] = x
    given = {sha: v for sha, v in (vectors or {}).items() if sha in need}
    vectors = {**given, **embed(encoder, [x for sha, x in need.items() if sha not in given], partial)}
    res = store.apply([Upsert(uri=x.path, kind=kind, size=x.size, mtime_ns=x.mtime_ns, sha256=x.sha256,
                              modality=x.modality, width=x.width, height=x.height, text=x.text,
                              vector=vectors.get(x.sha256)) for x in ok], space.id, errors=errors)
    result.generation, result.indexed = res.generation, len(vectors)
    result.paths, result.failed = tuple(x.path for x in ok), tuple(p for p, _ in errors)
    return result


def embed(encoder: Encoder, items: Sequence[Loaded], partial: Partial | None = None) -> dict[str, np.ndarray]:
    """sha256 → vector for decoded items, in encoder-sized steps (``partial`` hears of each step).

    Images arrive as the workers' ``uint8`` crops; the normalised float32 batch the encoder takes is
    made here, one step at a time (:func:`mmsearch.ingest.pixels.to_batch`).
    """
    from mmsearch.ingest.pixels import to_batch

    step = int(getattr(encoder, "batch_size", 64) or 64)
    images = [x for x in items if x.modality == "image"]
    texts = [x for x in items if x.modality == "text"]
    total = max(len(images) + len(texts), 1)
    recipe = encoder.image_recipe() if images else None
    vectors: dict[str, np.ndarray] = {}
    done = 0
    for group, fn in ((images, lambda part: encoder.embed_image_batch(to_batch([x.pixels for x in part], recipe))),
                      (texts, lambda part: encoder.embed_texts([x.text for x in part]))):
        for start in range(0, len(group), step):
            part = group[start : start + step]
            vectors.update(zip((x.sha256 for x in part), fn(part)))
            done += len(part)
            if partial is not None:
                partial(done / total)
    return vectors


def text_items(pairs: Sequence[tuple[str, str]]) -> list[Loaded]:
    """Added texts (``(key, text)``) as items with ``text:<key>`` uris, ready for :func:`commit`."""
    from mmsearch.ingest.texts import text_sha

    return [Loaded(path=f"text:{key}", modality="text", size=len(t.encode()), mtime_ns=0, sha256=text_sha(t), text=t)
            for key, t in pairs]


