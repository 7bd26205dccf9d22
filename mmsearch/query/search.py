"""Search: which spaces and modalities a query reaches, each searched through its ANN index, merged.

A query that can be embedded in several spaces (a text query, with two CLIP models in one store)
searches each; one space's hits are ordered by raw cosine, several spaces' lists are merged on a
calibrated score (:mod:`mmsearch.query.calibrate`), an item found in two spaces shown once.

Filters (:mod:`mmsearch.query.filters`, and ``under``) apply *before* the vector search, so a
selective filter still returns ``k`` hits when ``k`` exist: the database gives the candidate ids of
each space and kind; the ANN index is searched restricted to them (a FAISS ``IDSelector``, IVF lists
and HNSW breadth widened by how much the filter keeps out), except that a small set in an HNSW or PQ
index is scored exactly from its stored vectors (:data:`SUBSET_MAX`); when the walk meets fewer than
``k`` of them the set is scored exactly after all. Compressed (PQ) candidates are re-ranked exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from mmsearch.ann.faiss_index import SearchParams
from mmsearch.ann.indexes import IndexSet, modalities
from mmsearch.ann.rerank import RERANKED, reranked
from mmsearch.ann.space_index import SpaceIndex
from mmsearch.encoders.base import Encoder
from mmsearch.errors import ModelError, StoreError, UnanswerableQuery
from mmsearch.query.calibrate import Calibration, scaled
from mmsearch.query.encode import Query, able_spaces, embed_query
from mmsearch.query.filters import Filters
from mmsearch.query.language import language_notice
from mmsearch.store.filtering import Cond
from mmsearch.store.schema import MOMENT, Space
from mmsearch.store.store import Store
from mmsearch.types import Hit
from mmsearch.util import is_under

#: Per index kind, the largest filtered candidate set scored exactly from its stored vectors (SQL) rather
#: than through the index restricted by an IDSelector. Measured on 60,000 512-d vectors (2 busy cores):
#: the exact scan reads ~4-25 µs per candidate (15-55 ms for 1,000, 80-250 ms for 20,000), while the
#: index with a selector takes 0.3-5 ms (flat) and 2-4 ms (IVF, lists widened to all of them for a small
#: set). So flat and IVF always use the selector: flat is exact anyway, IVF visits every list when the
#: set is small. HNSW's walk meets few members of a small set (at FAISS's default breadth it found 1 of
#: 3 kept among 1,000) and PQ scores are approximate: up to 2,000 candidates (~10-50 ms) they are scored exactly.
SUBSET_MAX = {"flat": 0, "ivf": 0, "hnsw": 2_000, "pq": 2_000, "ondisk": 2_000}


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
        wanted = ["image", "audio", "video", "text"] if query.type == "any" else default_types(store, candidates)
    out = [(sp, [m for m in modalities(sp) if m in wanted]) for sp in candidates]
    out = [(sp, mods) for sp, mods in out if mods]
    if not out:
        held = "; ".join(f"model {sp.spec} holds {', '.join(modalities(sp))}" for sp in candidates)
        raise UnanswerableQuery(f"type={query.type!r}: {held}")
    return out


def default_types(store: Store, spaces: Sequence[Space]) -> list[str]:
    """What a query returns without ``type``: every kind of file (images, sounds, videos) the spaces hold, else
    texts (decided once for all spaces, so one answer never mixes in texts unasked)."""
    found = [m for m in ("image", "audio", "video") if any(m in modalities(sp) and store.has_vectors(sp.id, m)
                                                           for sp in spaces)]
    if found:
        return found
    return ["text"] if any("text" in modalities(sp) for sp in spaces) else [modalities(spaces[0])[0]]


# ---- one space ------------------------------------------------------------------------------------------
def top_ids(store: Store, idx: SpaceIndex, queries: np.ndarray, k: int,
            params: SearchParams | None = None, allowed: np.ndarray | None = None) -> list[list[tuple[float, int]]]:
    """Best ``k`` (score, id) per query row, as users get them (compressed indexes re-ranked exactly);
    ``allowed``: only these ids (an ANN search restricted by an ``IDSelector``)."""
    q = np.asarray(queries, dtype=np.float32).reshape(len(queries), -1)
    if idx.ann is not None and idx.ann.kind in RERANKED:
        return reranked(store, idx.space_id, idx.ann, q, k, params, allowed, modality=idx.modality)
    scores, ids = idx.search(q, k, params, allowed)
    return [[(float(s), int(i)) for s, i in zip(srow, irow) if i >= 0] for srow, irow in zip(scores, ids)]


def exact_subset(store: Store, space_id: int, q: np.ndarray, k: int, allowed: np.ndarray) -> list[tuple[float, int]]:
    """Best ``k`` (score, id) among ``allowed`` (the ids the filters keep), scored exactly from their stored
    vectors, fetched by key (the filter is not run again)."""
    found = store.vectors_for([int(i) for i in allowed], space_id)
    if not found:
        return []
    ids = np.fromiter(found, np.int64, len(found))
    sims = np.stack([found[int(i)] for i in ids]) @ q.reshape(-1)
    return sorted(((float(sims[j]), int(ids[j])) for j in np.argsort(-sims, kind="stable")[:k]),
                  key=lambda t: (-t[0], t[1]))


def filtered_top(store: Store, idx: SpaceIndex, q: np.ndarray, k: int, conds: Sequence[Cond],
                 params: SearchParams | None = None) -> list[tuple[float, int]]:
    """Best ``k`` (score, id) among the contents the conditions keep: an exact scan of a small set, else
    the ANN index restricted to it, falling back to the exact scan when the walk met fewer than ``k``."""
    allowed = store.filtered_ids(conds, idx.space_id, idx.modality)
    if len(allowed) == 0:
        return []
    if idx.ann is None or len(allowed) <= SUBSET_MAX.get(idx.ann.kind, 0):
        return exact_subset(store, idx.space_id, q, k, allowed)
    found = top_ids(store, idx, q, k, params, allowed)[0]
    if len(found) < min(k, len(allowed)):
        return exact_subset(store, idx.space_id, q, k, allowed)
    return found


def conditions(filters: Filters | None, under: str | None) -> list[Cond]:
    """What the database must hold true of a candidate (the filters' terms and the ``under`` folder)."""
    conds = list(filters.conds) if filters is not None else []
    return conds + ([Cond("under", "under", under)] if under is not None else [])


def search_space(store: Store, indexes: dict[str, SpaceIndex], query: np.ndarray, *, k: int,
                 modalities: Sequence[str], space_spec: str, under: str | None = None,
                 params: SearchParams | None = None, filters: Filters | None = None) -> list[Hit]:
    """Top-``k`` hits for one unit query vector across ``modalities`` of one space.

    With ``under`` or ``filters``, the candidates are the contents the database says pass them
    (:func:`filtered_top`), instead of asking the ANN index for ever more results and dropping some.
    """
    q = np.asarray(query, dtype=np.float32).reshape(1, -1)
    conds = conditions(filters, under)
    scored: list[tuple[float, int, str]] = []
    for modality in modalities:
        idx = indexes[modality]
        if conds:
            found = filtered_top(store, idx, q, k, conds, params)
        else:
            found = top_ids(store, idx, q, k, params)[0]
        scored += [(s, i, modality) for s, i in found]
    scored.sort(key=lambda t: (-t[0], t[1]))
    meta = store.content_meta([i for _, i, _ in scored])
    hits: list[Hit] = []
    for score, cid, modality in scored:
        m = meta.get(cid)
        if m is None:  # removed after the index snapshot; skip rather than show a ghost
            continue
        paths = tuple(p for p in m.uris if (under is None or is_under(p, under))
                      and (filters is None or filters.shows(p)))
        files = [p for p in paths if not p.startswith("text:")]
        hits.append(Hit(rank=len(hits) + 1, id=cid, score=score, modality=modality, path=files[0] if files else None,
                        paths=paths, text=m.text, width=m.width, height=m.height, space=space_spec,
                        duration=m.duration, **described(m)))
        if len(hits) == k:
            break
    return located(store, hits, q[0], next(iter(indexes.values())).space_id)


def described(m) -> dict:
    """The photo metadata a hit shows: ``taken_at`` (ISO 8601, with the offset when the file gives it),
    ``camera`` ("make model", the make once when the model repeats it), ``gps`` ((lat, lon) degrees)."""
    taken = None if m.taken_at is None else m.taken_at.replace(" ", "T") + (m.taken_offset or "")
    make, model = m.camera_make, m.camera_model
    if make and model and model.lower().startswith(make.lower()):
        make = None
    camera = " ".join(x for x in (make, model) if x) or None
    gps = None if m.gps_lat is None or m.gps_lon is None else (m.gps_lat, m.gps_lon)
    return {"taken_at": taken, "camera": camera, "gps": gps}


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
        encoder: Callable[[str], Encoder], calibration: Calibration, generation: int,
        filters: Filters | None = None) -> tuple[list[Hit], list[str]]:
    """Search every (space, modalities) of ``plan``; returns (hits, notices of index repairs).

    Every hit carries its calibrated score; several spaces' or kinds' lists are merged on it, and
    ``query.min_score`` drops what scores below it. ``filters`` restrict the candidates beforehand.
    Videos are found through every space's moments at once (:mod:`mmsearch.query.moments`)."""
    from mmsearch.query.moments import Evidence, video_hits

    notices: list[str] = []
    lists = []
    videos = []
    for space, mods in plan:
        notices += indexes.sync(space, mods, save=False, generation=generation)  # only what is searched
        vec = embed_query(query, space, encoder)
        words = " ".join(str(p.value) for p in query.parts if p.kind == "text" and not p.stored)
        note = language_notice(words, encoder(space.spec).space.extra) if words else None
        if note and note not in notices:  # a query in a script the model does not read: say so
            notices.append(note)
        if "video" in mods:  # every space's evidence is fused per video, below
            notices += indexes.sync(space, [MOMENT], save=False, generation=generation)
            videos.append(Evidence(space, np.asarray(vec, np.float32).reshape(-1), "image" in modalities(space)))
        for m in (m for m in mods if m != "video"):  # per kind: cosines to texts and to sounds are not comparable
            hits = search_space(store, {m: indexes.get(space, m)}, vec, k=query.k, modalities=[m],
                                space_spec=space.spec, under=query.under, params=query.params, filters=filters)
            lists.append(explained(calibration, space, query.modality or "vector", hits))
    if videos:
        lists.append(video_hits(store, indexes, videos, calibration, query.modality or "vector", k=query.k,
                                moments=query.moments, pooling=query.pooling, filters=filters, under=query.under))
    hits = lists[0] if len(lists) == 1 else merge(lists, query.k)
    if query.min_score is not None:
        hits = [dataclasses.replace(h, rank=r) for r, h in
                enumerate((h for h in hits if (h.calibrated or 0.0) >= query.min_score), 1)]
    return hits, notices


def explained(calibration: Calibration, space: Space, query_modality: str, hits: list[Hit]) -> list[Hit]:
    """Hits with their calibrated score and its making (raw cosine, background mean and spread)."""
    out = []
    known: dict[str, tuple] = {}
    for h in hits:
        if h.modality not in known:  # one background lookup per kind of item
            found = calibration.stats(space, query_modality, h.modality)
            known[h.modality] = (found, scaled(found))
        stats, z = known[h.modality]
        cal = float(z(np.array([h.score]))[0])
        why = {"raw": round(h.score, 6), "space": space.spec, "query": query_modality, "items": h.modality,
               "background_mean": None if stats is None else round(stats[0], 6),
               "background_std": None if stats is None else round(stats[1], 6)}
        if h.start is not None:
            why["window"] = [h.start, h.end]
        out.append(dataclasses.replace(h, calibrated=round(cal, 4), why=why))
    return out
