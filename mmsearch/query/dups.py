"""Near-duplicates: clusters of one space's images (or sounds) that look alike, and folding them in results.

Exact copies are one content already (vectors are keyed by the sha256 of the bytes): a content with
several files is a cluster of its own. Near-duplicates (resized, recompressed, slightly cropped) are
contents whose vectors are within a cosine ``threshold``: each vector's neighbours above it come from a
range search, ``block`` vectors at a time (memory holds one block and its neighbours, never an N×N
matrix), on the store's own index when it is flat or IVF (:data:`NPROBE` lists), else on an exact
index filled block by block; neighbours are joined into clusters by union-find. Exact search costs
N² (20,000 × 512-d: 15 s on two busy cores); IVF about N^1.5 (3 s).

:data:`DEFAULT_THRESHOLD` (0.95), measured with ``builtin:shapes`` on its world
(benchmarks/bench_dups.py: 60 scenes × 7 kinds of copy among 300 scenes): resized copies score
≥ 0.997 and 5 % crops ≥ 0.987 (all found), 10 % crops 97 % found, 15 % crops 77 %; scenes of a
different colour or shape never above 0.88. JPEG hurts this small model on 64-px scenes (q70: 72 %
found), and it scores two different scenes of the same colour and shape up to 0.999 (it learned
colour and shape, not backgrounds): no threshold separates those. Under CLIP ViT-B-32
near-duplicates typically score ≥ 0.95 (Immich, stricter, uses 0.99).

:func:`collapsed` is the query-time step (``search(collapse_dups=True)``): a hit within the threshold
of a higher-ranked hit of the same space and kind is folded into it, and the search is repeated with
more results until ``k`` distinct ones are kept or the store has no more.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Iterable, Sequence

import numpy as np

from mmsearch.errors import UsageError
from mmsearch.store.filtering import Cond
from mmsearch.store.schema import Space, item_kinds
from mmsearch.store.store import Store
from mmsearch.types import DupCluster, DupMember, Hit
from mmsearch.util import chunks, is_under

#: Cosine at or above which two items are near-duplicates (see the module doc for the measurements).
DEFAULT_THRESHOLD = 0.95
#: Query vectors per range search: what one step holds besides the vectors themselves.
BLOCK = 4096
KINDS = ("image", "audio", "video")  # a video by its vector: the mean of its frames (or soundtrack windows)


def check_threshold(threshold: object) -> float:
    if threshold is None:
        return DEFAULT_THRESHOLD
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise UsageError(f"threshold={threshold!r}: must be a cosine above 0 and at most 1 (e.g. 0.95)")
    return float(threshold)


def check_block(block: object) -> int:
    if block is None:
        return BLOCK
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise UsageError(f"block={block!r}: must be a positive whole number")
    return block


def space_for(spaces: Sequence[Space], modality: str, chosen: Space | None = None,
              preferred: Sequence[str] = ()) -> Space | None:
    """The space whose ``modality`` vectors are compared: ``chosen`` (it must hold them), else the first of
    the ``preferred`` model specs that holds them, else the store's first (None: no space holds that kind)."""
    if modality not in KINDS:
        raise UsageError(f"type={modality!r}: expected one of {', '.join(KINDS)}")
    if chosen is not None:
        if modality not in item_kinds(chosen):
            raise UsageError(f"model {chosen.spec} holds no {modality} vectors (it embeds {chosen.modalities})")
        return chosen
    holding = [sp for sp in spaces if modality in item_kinds(sp)]
    if modality == "video":  # re-encodes of one video look alike; their soundtracks need not tell them apart
        holding.sort(key=lambda sp: "image" not in sp.modalities.split(","))
    return next((sp for sp in holding if sp.spec in preferred), holding[0] if holding else None)


def roots_of(under: str | os.PathLike | Sequence[str | os.PathLike] | None) -> list[str] | None:
    """``under`` as absolute folders (None: the whole store)."""
    if under is None:
        return None
    items = list(under) if isinstance(under, (list, tuple)) else [under]
    if not all(isinstance(u, (str, os.PathLike)) for u in items):
        raise UsageError("under must be a folder path or a list of them")
    return [os.path.abspath(u) for u in items] or None


# ---- neighbours -----------------------------------------------------------------------------------
#: Store index kinds whose range search is used as it is: exact scores (flat), or exact scores in the
#: lists visited (IVF-Flat). HNSW and PQ (approximate scores) get an exact index of their own instead.
STORE_KINDS = ("flat", "ivf")

#: IVF lists visited per vector. Near-duplicates lie in the same or a neighbouring list: on 20,000
#: clustered 512-d vectors with 400 planted copies, 4 lists found all 400 (1 list: 399), 8× faster
#: than exact search; a query's default (an eighth of the lists) was no faster than exact.
NPROBE = 8

Search = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # query block -> (lims, neighbour ids)


def _radius(threshold: float) -> float:
    """FAISS keeps inner products strictly above the radius: just below the threshold keeps it inclusive."""
    return float(np.nextafter(np.float32(threshold), np.float32(-1)))


def _store_search(ann, threshold: float) -> Search:
    """Range search on the store's own index (``ann``: its :class:`~mmsearch.ann.faiss_index.AnnIndex`;
    :data:`NPROBE` IVF lists per vector)."""
    import faiss

    params = None
    if ann.kind == "ivf":
        nlist = faiss.extract_index_ivf(ann.index).nlist
        params = faiss.SearchParametersIVF(nprobe=int(min(nlist, NPROBE)))

    def search(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lims, _, found = ann.index.range_search(np.ascontiguousarray(q, dtype=np.float32), _radius(threshold),
                                                params=params)
        return lims, found

    return search


def _exact(blocks: Iterable[tuple[np.ndarray, np.ndarray]], dim: int, threshold: float):
    """(the blocks again, a range search over all of them): an exact index filled block by block."""
    import faiss

    index, parts = faiss.IndexFlatIP(dim), []
    for ids, vecs in blocks:
        parts.append(ids)
        index.add(np.ascontiguousarray(vecs, dtype=np.float32))
    ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def again(block: int):
        for start in range(0, len(ids), block):
            yield ids[start:start + block], index.reconstruct_n(start, min(block, len(ids) - start))

    def search(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lims, _, found = index.range_search(np.ascontiguousarray(q, dtype=np.float32), _radius(threshold))
        return lims, ids[found]

    return again, search


def _under_blocks(store: Store, space_id: int, modality: str, roots: list[str], block: int):
    seen: set[int] = set()
    for root in roots:
        ids, vecs = store.filtered_vectors([Cond("under", "=", root)], space_id, modality)
        fresh = np.array([int(i) not in seen for i in ids], dtype=bool)
        seen.update(int(i) for i in ids)
        ids, vecs = ids[fresh], vecs[fresh]
        for start in range(0, len(ids), block):
            yield ids[start:start + block], vecs[start:start + block]


# ---- clusters -------------------------------------------------------------------------------------
class _Sets:
    """Union-find over content ids (path halving, union by size); only joined ids are tracked."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        self.size: dict[int, int] = {}

    def find(self, a: int) -> int:
        parent = self.parent
        parent.setdefault(a, a)
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size.get(ra, 1) < self.size.get(rb, 1):
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] = self.size.get(ra, 1) + self.size.get(rb, 1)

    def groups(self) -> list[list[int]]:
        """Every set of more than one id, each in id order."""
        out: dict[int, list[int]] = {}
        for a in sorted(self.parent):
            out.setdefault(self.find(a), []).append(a)
        return list(out.values())


def near_groups(blocks: Iterable[tuple[np.ndarray, np.ndarray]], search: Search) -> tuple[list[list[int]], list[int]]:
    """(ids joined by any pair of neighbours, every id seen): each block's neighbours, then forgotten."""
    sets, seen = _Sets(), []
    for ids, vecs in blocks:
        seen += ids.tolist()
        lims, found = search(vecs)
        rows = np.repeat(ids, np.diff(lims.astype(np.int64)))
        pairs = rows != found  # every vector finds itself
        for a, b in zip(rows[pairs].tolist(), found[pairs].tolist()):
            sets.union(a, b)
    return sets.groups(), seen


def duplicate_clusters(store: Store, space: Space, modality: str, *, threshold: float | None = None,
                       under: list[str] | None = None, block: int | None = None, ann=None) -> list[DupCluster]:
    """Near-duplicate clusters of one space's items of ``modality``, surest first (then larger).

    ``ann``: the store's index of them, current (its range search is used when its kind is in
    :data:`STORE_KINDS` and the whole store is compared); else an exact index is built, block by block.
    """
    threshold, block = check_threshold(threshold), check_block(block)
    with store.snapshot():
        if under is None and ann is not None and ann.kind in STORE_KINDS:
            search = _store_search(ann, threshold)
            groups, seen = near_groups(store.iter_vectors(space.id, modality, block=block), search)
        else:
            rows = store.iter_vectors(space.id, modality, block=block) if under is None else \
                _under_blocks(store, space.id, modality, under, block)
            again, search = _exact(rows, space.dim, threshold)
            groups, seen = near_groups(again(block), search)
        grouped = {i for g in groups for i in g}
        files = _files(store, seen, under, grouped)
        vectors = store.vectors_for(sorted(grouped), space.id)
    clusters = [_cluster(g, vectors, files, modality, space.spec, threshold) for g in groups]
    clusters += [_cluster([i], vectors, files, modality, space.spec, threshold) for i in files if i not in grouped]
    clusters = [c for c in clusters if c is not None]
    clusters.sort(key=lambda c: (-c.similarity, -len(c.duplicates), c.keep))
    return clusters


def _files(store: Store, content_ids: list[int], under: list[str] | None, grouped: set[int]) -> dict[int, tuple]:
    """content id → (its file paths, within ``under`` when given; its metadata; its file size) of the
    ``grouped`` contents and of those with several files (exact copies), read in chunks."""
    out: dict[int, tuple] = {}
    for part in chunks(content_ids, 4096):
        meta = store.content_meta(list(part))
        paths = {cid: tuple(p for p in m.uris if not p.startswith("text:")
                            and (under is None or any(is_under(p, r) for r in under))) for cid, m in meta.items()}
        paths = {cid: ps for cid, ps in paths.items() if cid in grouped or len(ps) > 1}
        sizes = store.lookup_sources([p for ps in paths.values() for p in ps])
        for cid, ps in paths.items():
            out[cid] = (ps, meta[cid], max((sizes[p].size for p in ps if p in sizes), default=None))
    return out


def _cluster(group: list[int], vectors: dict[int, np.ndarray], files: dict, modality: str, spec: str,
             threshold: float) -> DupCluster | None:
    members = []
    for cid in group:
        paths, meta, size = files.get(cid, ((), None, None))
        if paths:  # removed meanwhile, or no file below ``under``: nothing to show
            members.append(DupMember(cid, paths, 1.0, meta.width, meta.height, meta.duration, size))
    members.sort(key=_rank)
    if len(members) > 1:
        members = [m for m in members if m.id in vectors]  # (a vector gone with its model meanwhile)
    if len(members) > 1:
        first = vectors[members[0].id]
        members[1:] = [dataclasses.replace(m, similarity=round(min(float(vectors[m.id] @ first), 1.0), 6))
                       for m in members[1:]]
    if not members or (len(members) == 1 and len(members[0].paths) < 2):
        return None
    mean = 1.0 if len(members) == 1 else round(float(np.mean([m.similarity for m in members[1:]])), 6)
    return DupCluster(modality, spec, threshold, mean, tuple(members))


def _rank(m: DupMember) -> tuple:
    """Best first: most pixels (or longest sound), then the largest file, then the oldest content."""
    pixels = (m.width or 0) * (m.height or 0)
    return (-pixels, -(m.duration or 0.0), -(m.size or 0), m.id)


# ---- at query time ---------------------------------------------------------------------------------
def fold(hits: Sequence[Hit], vectors: Callable[[str, list[int]], dict[int, np.ndarray]],
         threshold: float, *, video_space: str | None = None) -> list[Hit]:
    """Hits with each one within ``threshold`` of a higher-ranked kept hit (same space and kind) folded into
    that one (its paths added to the kept hit's ``duplicates``); ranks renumbered.

    Videos are compared in ``video_space`` (the model :func:`space_for` compares videos in: by their frames)
    whichever evidence found them: two videos heard alike (the same music, silence) are not the same video,
    and a re-encode found by its soundtrack folds into the original found by its frames."""
    framed = vectors(video_space, [h.id for h in hits if h.modality == "video"]) if video_space else {}

    def where(h: Hit) -> str:  # (a video with no frames' vector, e.g. indexed by a sound model alone: its own)
        return video_space if h.modality == "video" and h.id in framed and video_space else h.space

    by_space: dict[str, dict[int, np.ndarray]] = {}
    for spec in {where(h) for h in hits}:
        have = framed if spec == video_space else {}  # the videos' frame vectors: fetched once, above
        rest = [h.id for h in hits if where(h) == spec and h.id not in have]
        by_space[spec] = {**have, **(vectors(spec, rest) if rest else {})}
    kept: list[Hit] = []
    for h in hits:
        v = by_space[where(h)].get(h.id)
        home = None
        if v is not None:
            for i, other in enumerate(kept):
                w = by_space[where(other)].get(other.id)
                if where(other) == where(h) and other.modality == h.modality and w is not None and v @ w >= threshold:
                    home = i
                    break
        if home is None:
            kept.append(h)
        else:
            kept[home] = dataclasses.replace(kept[home], duplicates=kept[home].duplicates + h.paths + h.duplicates)
    return [dataclasses.replace(h, rank=r) for r, h in enumerate(kept, 1)]


def collapsed(search: Callable[[int], list[Hit]], vectors: Callable[[str, list[int]], dict[int, np.ndarray]],
              k: int, threshold: float, *, video_space: str | None = None) -> list[Hit]:
    """``k`` distinct hits: ``search(n)`` (the top ``n``) fetched with room for folding, again with more while
    folding left fewer than ``k`` and the search returned all it was asked for."""
    threshold = check_threshold(threshold)
    n = 2 * k
    while True:
        hits = search(n)
        kept = fold(hits, vectors, threshold, video_space=video_space)
        if len(kept) >= k or len(hits) < n:
            return kept[:k]
        n *= 4
