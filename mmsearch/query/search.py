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
from mmsearch.query.encode import Query, able_spaces, embed_query
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


def targets(store: Store, spaces: Sequence[Space], query: Query, chosen: bool) -> list[tuple[Space, list[str]]]:
    """(space, modalities to search) for a query: those of ``spaces`` (the ``chosen`` ones, else the store's)
    that can embed it."""
    require_spaces(store, spaces)
    if query.modality is None:  # a raw vector belongs to one space: the first, unless named
        candidates = [spaces[0]]
    else:  # the spaces that embed every kind of term the query holds
        candidates = able_spaces(query, spaces)[0]
    wanted = [query.type] if query.type and query.type != "any" else None
    if wanted is None:
        wanted = ["image", "audio", "text"] if query.type == "any" else default_types(store, candidates)
    out = [(sp, [m for m in modalities(sp) if m in wanted]) for sp in candidates]
    out = [(sp, mods) for sp, mods in out if mods]
    if not out:
        held = "; ".join(f"model {sp.spec} holds {', '.join(modalities(sp))}" for sp in candidates)
        raise UsageError(f"type={query.type!r}: {held}")
    return out


def default_types(store: Store, spaces: Sequence[Space]) -> list[str]:
    """What a query returns without ``type``: every kind of file (images, sounds) the spaces hold, else
    texts (decided once for all spaces, so one answer never mixes in texts unasked)."""
    found = [m for m in ("image", "audio") if any(m in modalities(sp) and store.has_vectors(sp.id, m) for sp in spaces)]
    if found:
        return found
    return ["text"] if any("text" in modalities(sp) for sp in spaces) else [modalities(spaces[0])[0]]


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
                        paths=paths, text=m.text, width=m.width, height=m.height, space=space_spec,
                        duration=m.duration))
        if len(hits) == k:
            break
    return located(store, hits, q[0], next(iter(indexes.values())).space_id)


def located(store: Store, hits: list[Hit], query: np.ndarray, space_id: int) -> list[Hit]:
    """Sound hits with the stretch of the file that matched best: the window whose vector scores highest."""
    sounds = [h.id for h in hits if h.modality == "audio"]
    if not sounds:
        return hits
    windows = store.segments(sounds, space_id)
    out = []
    for h in hits:
        found = windows.get(h.id)
        if found is not None and len(found[1]):
            best = int(np.argmax(found[1] @ query))
            h = dataclasses.replace(h, start=round(float(found[0][best][0]), 3), end=round(float(found[0][best][1]), 3))
        out.append(h)
    return out


# ---- several spaces -----------------------------------------------------------------------------------
def merge(lists: Sequence[list[Hit]], k: int) -> list[Hit]:
    """One ranking from several spaces' lists, by calibrated score (every hit must carry one); an item
    found in several spaces appears once, with its best."""
    best: dict[int, Hit] = {}
    for hits in lists:
        for h in hits:
            if h.id not in best or (h.calibrated or 0.0) > (best[h.id].calibrated or 0.0):
                best[h.id] = h
    ranked = sorted(best.values(), key=lambda h: (-(h.calibrated or 0.0), -h.score, h.id))[:k]
    return [dataclasses.replace(h, rank=r) for r, h in enumerate(ranked, 1)]


def run(store: Store, indexes: IndexSet, plan: Sequence[tuple[Space, list[str]]], query: Query,
        encoder: Callable[[str], Encoder], calibration: Calibration, generation: int) -> tuple[list[Hit], list[str]]:
    """Search every (space, modalities) of ``plan``; returns (hits, notices of index repairs).

    Every hit carries its calibrated score; several spaces' or kinds' lists are merged on it, and
    ``query.min_score`` drops what scores below it."""
    notices: list[str] = []
    lists = []
    for space, mods in plan:
        notices += indexes.sync(space, mods, save=False, generation=generation)  # only what is searched
        vec = embed_query(query, space, encoder)
        for m in mods:  # per kind: one model's cosines to texts and to sounds are not comparable either
            hits = search_space(store, {m: indexes.get(space, m)}, vec, k=query.k, modalities=[m],
                                space_spec=space.spec, under=query.under, params=query.params)
            lists.append(explained(calibration, space, query.modality or "vector", hits))
    hits = lists[0] if len(lists) == 1 else merge(lists, query.k)
    if query.min_score is not None:
        hits = [dataclasses.replace(h, rank=r) for r, h in
                enumerate((h for h in hits if (h.calibrated or 0.0) >= query.min_score), 1)]
    return hits, notices


def explained(calibration: Calibration, space: Space, query_modality: str, hits: list[Hit]) -> list[Hit]:
    """Hits with their calibrated score and its making (raw cosine, background mean and spread)."""
    out = []
    for h in hits:
        stats = calibration.stats(space, query_modality, h.modality)
        cal = float(calibration(space, query_modality, h.modality, np.array([h.score]))[0])
        why = {"raw": round(h.score, 6), "space": space.spec, "query": query_modality, "items": h.modality,
               "background_mean": None if stats is None else round(stats[0], 6),
               "background_std": None if stats is None else round(stats[1], 6)}
        if h.start is not None:
            why["window"] = [h.start, h.end]
        out.append(dataclasses.replace(h, calibrated=round(cal, 4), why=why))
    return out
