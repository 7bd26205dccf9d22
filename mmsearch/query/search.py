"""Search one space: per-modality ANN indexes, merged by score, joined with metadata."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from mmsearch.ann.faiss_index import SearchParams
from mmsearch.ann.sync import SpaceIndex
from mmsearch.store.store import Store
from mmsearch.types import Hit

TYPES = ("image", "text", "any")
#: Index kinds whose scores are approximate (compressed codes): their candidates are re-scored with
#: the exact vectors from the database. PQ alone kept 0.77 of the true top 10 on real embeddings.
RERANKED = ("pq",)
RERANK_FACTOR = 10


def _reranked(store: Store, idx: SpaceIndex, q: np.ndarray, k: int, params: SearchParams | None) -> list[tuple[float, int]]:
    """``RERANK_FACTOR``·k candidates from a compressed index, re-scored exactly, best ``k`` kept."""
    _, ids = idx.search(q, max(k * RERANK_FACTOR, 100), params)
    cand = [int(i) for i in ids[0] if i >= 0]
    exact = store.vectors_for(cand, idx.space_id)
    scored = sorted(((float(exact[i] @ q[0]), i) for i in cand if i in exact), key=lambda t: (-t[0], t[1]))
    return scored[:k]


def search_space(
    store: Store,
    indexes: dict[str, SpaceIndex],
    query: np.ndarray,
    *,
    k: int,
    modalities: Sequence[str],
    space_spec: str,
    under: str | None = None,
    params: SearchParams | None = None,
) -> list[Hit]:
    """Top-``k`` hits for one unit query vector across ``modalities`` of one space.

    With ``under``, the candidates are the contents with a file below that folder, scored exactly
    (one range scan of the database), instead of asking the ANN index for ever more results.
    """
    q = np.asarray(query, dtype=np.float32).reshape(1, -1)
    scored: list[tuple[float, int, str]] = []
    if under is not None:
        space_id = next(iter(indexes.values())).space_id
        ids, mods, vecs = store.vectors_under(space_id, under, modalities)
        sims = vecs @ q[0]
        for j in np.argsort(-sims, kind="stable")[:k]:
            scored.append((float(sims[j]), int(ids[j]), mods[j]))
    else:
        for modality in modalities:
            idx = indexes[modality]
            if idx.ann is not None and idx.ann.kind in RERANKED:
                scored.extend((s, i, modality) for s, i in _reranked(store, idx, q, k, params))
            else:
                scores, ids = idx.search(q, k, params)
                scored.extend((float(s), int(i), modality) for s, i in zip(scores[0], ids[0]) if i >= 0)
    scored.sort(key=lambda t: (-t[0], t[1]))
    meta = store.content_meta([i for _, i, _ in scored])
    hits: list[Hit] = []
    prefix = under.rstrip(os.sep) + os.sep if under is not None else ""
    for score, cid, modality in scored:
        m = meta.get(cid)
        if m is None:  # removed after the index snapshot; skip rather than show a ghost
            continue
        paths = m.uris if under is None else tuple(p for p in m.uris if p == under or p.startswith(prefix))
        files = [p for p in paths if not p.startswith("text:")]
        hits.append(
            Hit(rank=len(hits) + 1, id=cid, score=score, modality=modality, path=files[0] if files else None,
                paths=paths, text=m.text, width=m.width, height=m.height, space=space_spec)
        )
        if len(hits) == k:
            break
    return hits
