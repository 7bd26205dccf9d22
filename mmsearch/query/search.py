"""Search: which spaces and modalities a query reaches, each searched through its ANN index, merged.

A query that can be embedded in several spaces (a text query, with two CLIP models in one store)
searches each; one space's hits are ordered by raw cosine, several spaces' lists are merged on a
calibrated score (:mod:`mmsearch.query.calibrate`), an item found in two spaces shown once.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from mmsearch.ann.faiss_index import SearchParams
from mmsearch.ann.indexes import IndexSet, modalities
from mmsearch.ann.space_index import SpaceIndex
from mmsearch.encoders.base import Encoder
from mmsearch.errors import ModelError, StoreError, UsageError
from mmsearch.query.calibrate import Calibration
from mmsearch.query.encode import Query, embed_query
from mmsearch.store.schema import Space
from mmsearch.store.store import Store
from mmsearch.types import Hit
from mmsearch.util import is_under

#: Index kinds whose scores are approximate (compressed codes): their candidates are re-scored with
#: the exact vectors from the database. PQ alone kept 0.77 of the true top 10 on real embeddings.
RERANKED = ("pq",)
RERANK_FACTOR = 10


# ---- which spaces -------------------------------------------------------------------------------------
def resolve_space(spaces: Sequence[Space], wanted: str, key_of: Callable[[str], str]) -> Space:
    """The space a model spec, space key or id names; ``key_of(spec)`` loads a model to match its weights."""
    for sp in spaces:
        if wanted in (sp.spec, sp.key, str(sp.id)):
            return sp
    key = key_of(wanted)  # same weights under another spec (e.g. a moved local-dir)
    for sp in spaces:
        if sp.key == key:
            return sp
    held = ", ".join(sp.spec for sp in spaces)
    raise ModelError(f"store has no vectors for model {wanted!r}; it holds: {held}",
                     hint="query with one of those (--model), or index with this model first")


def require_spaces(store: Store, spaces: Sequence[Space]) -> None:
    if not spaces:
        raise StoreError("store is empty", path=str(store.root), hint="run `mmsearch index PATH` first")


def targets(store: Store, spaces: Sequence[Space], query: Query, chosen: Space | None) -> list[tuple[Space, list[str]]]:
    """(space, modalities to search) for a query: the chosen space, else every space that can embed it."""
    require_spaces(store, spaces)
    if chosen is not None:
        candidates = [chosen]
    elif query.modality is None:  # a raw vector belongs to one space: the first, unless named
        candidates = [spaces[0]]
    else:
        candidates = [sp for sp in spaces if query.modality in modalities(sp)] or [spaces[0]]
    wanted = query.type or default_type(store, candidates)
    out = []
    for sp in candidates:
        mods = modalities(sp)
        if wanted == "any":
            out.append((sp, mods))
        elif wanted in mods:
            out.append((sp, [wanted]))
    if not out:
        held = "; ".join(f"model {sp.spec} holds {', '.join(modalities(sp))}" for sp in candidates)
        raise UsageError(f"type={query.type!r}: {held}")
    return out


def default_type(store: Store, spaces: Sequence[Space]) -> str:
    """What a query returns without ``type``: images when any of the spaces holds some, else texts
    (decided once for all spaces, so a merged list never mixes an image answer with a text one)."""
    if any("image" in modalities(sp) and store.has_vectors(sp.id, "image") for sp in spaces):
        return "image"
    mods = modalities(spaces[0])
    return "text" if any("text" in modalities(sp) for sp in spaces) else mods[0]


# ---- one space ------------------------------------------------------------------------------------------
def _reranked(store: Store, idx: SpaceIndex, q: np.ndarray, k: int, params: SearchParams | None) -> list[tuple[float, int]]:
    """``RERANK_FACTOR``·k candidates from a compressed index, re-scored exactly, best ``k`` kept."""
    _, ids = idx.search(q, max(k * RERANK_FACTOR, 100), params)
    cand = [int(i) for i in ids[0] if i >= 0]
    exact = store.vectors_for(cand, idx.space_id)
    return sorted(((float(exact[i] @ q[0]), i) for i in cand if i in exact), key=lambda t: (-t[0], t[1]))[:k]


def top_ids(store: Store, idx: SpaceIndex, queries: np.ndarray, k: int,
            params: SearchParams | None = None) -> list[list[tuple[float, int]]]:
    """Best ``k`` (score, id) per query row, as users get them (compressed indexes re-ranked exactly)."""
    q = np.asarray(queries, dtype=np.float32).reshape(len(queries), -1)
    if idx.ann is not None and idx.ann.kind in RERANKED:
        return [_reranked(store, idx, q[i : i + 1], k, params) for i in range(len(q))]
    scores, ids = idx.search(q, k, params)
    return [[(float(s), int(i)) for s, i in zip(srow, irow) if i >= 0] for srow, irow in zip(scores, ids)]


def search_space(store: Store, indexes: dict[str, SpaceIndex], query: np.ndarray, *, k: int,
                 modalities: Sequence[str], space_spec: str, under: str | None = None,
                 params: SearchParams | None = None) -> list[Hit]:
    """Top-``k`` hits for one unit query vector across ``modalities`` of one space.

    With ``under``, the candidates are the contents with a file below that folder, scored exactly
    (one range scan of the database), instead of asking the ANN index for ever more results.
    """
    q = np.asarray(query, dtype=np.float32).reshape(1, -1)
    scored: list[tuple[float, int, str]] = []
    if under is not None:
        ids, mods, vecs = store.vectors_under(next(iter(indexes.values())).space_id, under, modalities)
        sims = vecs @ q[0]
        scored = [(float(sims[j]), int(ids[j]), mods[j]) for j in np.argsort(-sims, kind="stable")[:k]]
    else:
        for modality in modalities:
            scored += [(s, i, modality) for s, i in top_ids(store, indexes[modality], q, k, params)[0]]
    scored.sort(key=lambda t: (-t[0], t[1]))
    meta = store.content_meta([i for _, i, _ in scored])
    hits: list[Hit] = []
    for score, cid, modality in scored:
        m = meta.get(cid)
        if m is None:  # removed after the index snapshot; skip rather than show a ghost
            continue
        paths = m.uris if under is None else tuple(p for p in m.uris if is_under(p, under))
        files = [p for p in paths if not p.startswith("text:")]
        hits.append(Hit(rank=len(hits) + 1, id=cid, score=score, modality=modality, path=files[0] if files else None,
                        paths=paths, text=m.text, width=m.width, height=m.height, space=space_spec))
        if len(hits) == k:
            break
    return hits


# ---- several spaces -----------------------------------------------------------------------------------
def merge(lists: Sequence[list[Hit]], k: int) -> list[Hit]:
    """One ranking from several spaces' lists, by calibrated score (every hit must carry one); an item
    found in several spaces appears once, with its best."""
    best: dict[int, Hit] = {}
    for hits in lists:
        for h in hits:
            if h.id not in best or (h.calibrated or 0.0) > (best[h.id].calibrated or 0.0):
                best[h.id] = h
    ranked = sorted(best.values(), key=lambda h: (-(h.calibrated or 0.0), h.id))[:k]
    return [dataclasses.replace(h, rank=r) for r, h in enumerate(ranked, 1)]


def run(store: Store, indexes: IndexSet, plan: Sequence[tuple[Space, list[str]]], query: Query,
        encoder: Callable[[str], Encoder], calibration: Calibration, generation: int) -> tuple[list[Hit], list[str]]:
    """Search every (space, modalities) of ``plan``; returns (hits, notices of index repairs)."""
    notices: list[str] = []
    lists = []
    for space, mods in plan:
        notices += indexes.sync(space, mods, save=False, generation=generation)  # only what is searched
        vec = embed_query(query, space, encoder)
        hits = search_space(store, {m: indexes.get(space, m) for m in mods}, vec, k=query.k, modalities=mods,
                            space_spec=space.spec, under=query.under, params=query.params)
        if len(plan) > 1:
            hits = [dataclasses.replace(h, calibrated=float(c)) for h, c in
                    zip(hits, _calibrated(calibration, space, hits, vec))]
        lists.append(hits)
    return (lists[0] if len(lists) == 1 else merge(lists, query.k)), notices


def _calibrated(calibration: Calibration, space: Space, hits: list[Hit], vec: np.ndarray) -> list[float]:
    out = [0.0] * len(hits)
    for modality in {h.modality for h in hits}:
        at = [i for i, h in enumerate(hits) if h.modality == modality]
        for i, c in zip(at, calibration(space, modality, vec, np.array([hits[i].score for i in at]))):
            out[i] = float(c)
    return out
