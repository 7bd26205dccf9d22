"""Near-duplicates: clusters of one space's images (or sounds) that look alike, and folding them in results.

Exact copies are one content already (vectors are keyed by the sha256 of the bytes): a content with
several files is a cluster of its own. Near-duplicates (resized, recompressed, slightly cropped) are
contents whose vectors are within a cosine ``threshold``: each vector's neighbours above it come from
an exact range search, block by block (``block`` query vectors at a time, so memory holds the
vectors and one block's neighbours, never an N×N matrix), and neighbours are joined into clusters by
union-find.

:data:`DEFAULT_THRESHOLD` (0.95), measured with ``builtin:shapes`` on its world (60 scenes × 7
kinds of copy against 300 scenes; README "Duplicates"): resized copies score ≥ 0.997 and 5 % crops
≥ 0.987 (all found), 10 % crops 97 % found; pairs of different colour or shape never above 0.88.
Under CLIP ViT-B-32 near-duplicates typically score ≥ 0.95 too (Immich, stricter, uses 0.99).

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
from mmsearch.store.schema import Space
from mmsearch.store.store import Store
from mmsearch.types import DupCluster, DupMember, Hit
from mmsearch.util import chunks, is_under

#: Cosine at or above which two items are near-duplicates (see the module doc for the measurements).
DEFAULT_THRESHOLD = 0.95
#: Query vectors per range search: what one step holds besides the vectors themselves.
BLOCK = 4096
KINDS = ("image", "audio")


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
        if modality not in chosen.modalities.split(","):
            raise UsageError(f"model {chosen.spec} holds no {modality} vectors (it embeds {chosen.modalities})")
        return chosen
    holding = [sp for sp in spaces if modality in sp.modalities.split(",")]
    return next((sp for sp in holding if sp.spec in preferred), holding[0] if holding else None)


def roots_of(under: str | os.PathLike | Sequence[str | os.PathLike] | None) -> list[str] | None:
    """``under`` as absolute folders (None: the whole store)."""
    if under is None:
        return None
    items = [under] if isinstance(under, (str, os.PathLike)) else list(under) if isinstance(under, (list, tuple)) else [under]
    if not all(isinstance(u, (str, os.PathLike)) for u in items):
        raise UsageError("under must be a folder path or a list of them")
    return [os.path.abspath(u) for u in items] or None


# ---- the vectors compared -------------------------------------------------------------------------
def _vectors(store: Store, space: Space, modality: str, roots: list[str] | None, block: int):
    """(content ids, flat inner-product index of their vectors, added block by block)."""
    import faiss

    index = faiss.IndexFlatIP(space.dim)
    parts: list[np.ndarray] = []
    if roots is None:
        blocks: Iterable[tuple[np.ndarray, np.ndarray]] = store.iter_vectors(space.id, modality, block=block)
    else:
        blocks = _under_blocks(store, space.id, modality, roots, block)
    for ids, vecs in blocks:
        parts.append(ids)
        index.add(np.ascontiguousarray(vecs, dtype=np.float32))
    return (np.concatenate(parts) if parts else np.zeros(0, np.int64)), index


def _under_blocks(store: Store, space_id: int, modality: str, roots: list[str], block: int):
    seen: set[int] = set()
    for root in roots:
        ids, _, vecs = store.vectors_under(space_id, root, [modality])
        fresh = np.array([int(i) not in seen for i in ids], dtype=bool)
        seen.update(int(i) for i in ids)
        ids, vecs = ids[fresh], vecs[fresh]
        for start in range(0, len(ids), block):
            yield ids[start:start + block], vecs[start:start + block]


# ---- clusters -------------------------------------------------------------------------------------
class _Sets:
    """Union-find over positions 0..n-1 (path halving, union by size); only joined positions are tracked."""

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
        """Every set of more than one position, each in position order."""
        out: dict[int, list[int]] = {}
        for a in sorted(self.parent):
            out.setdefault(self.find(a), []).append(a)
        return list(out.values())


def near_groups(index, threshold: float, block: int) -> list[list[int]]:
    """Positions (in the index) joined by any neighbour pair with cosine ≥ ``threshold``."""
    sets = _Sets()
    for start in range(0, index.ntotal, block):
        n = min(block, index.ntotal - start)
        q = index.reconstruct_n(start, n)
        lims, _, found = index.range_search(q, float(np.nextafter(np.float32(threshold), np.float32(-1))))
        for row in range(n):
            for j in found[lims[row]:lims[row + 1]]:
                if j > start + row:
                    sets.union(start + row, int(j))
    return sets.groups()


def duplicate_clusters(store: Store, space: Space, modality: str, *, threshold: float | None = None,
                       under: list[str] | None = None, block: int | None = None) -> list[DupCluster]:
    """Near-duplicate clusters of one space's items of ``modality``, surest first (then larger)."""
    threshold, block = check_threshold(threshold), check_block(block)
    with store.snapshot():
        ids, index = _vectors(store, space, modality, under, block)
        groups = near_groups(index, threshold, block)
        grouped = {p for g in groups for p in g}
        files = _files(store, ids.tolist(), under)  # every content: one alone may still have several files
    clusters = [_cluster(g, ids, index, files, modality, space.spec, threshold) for g in groups]
    clusters += [_cluster([p], ids, index, files, modality, space.spec, threshold)
                 for p in range(len(ids)) if p not in grouped and len(files.get(int(ids[p]), ((), None))[0]) > 1]
    clusters = [c for c in clusters if c is not None]
    clusters.sort(key=lambda c: (-c.similarity, -len(c.duplicates), c.keep))
    return clusters


def _files(store: Store, content_ids: list[int], under: list[str] | None) -> dict[int, tuple[tuple[str, ...], object]]:
    """content id → (its file paths, within ``under`` when given; its metadata), read in chunks."""
    out: dict[int, tuple[tuple[str, ...], object]] = {}
    for part in chunks(content_ids, 4096):
        meta = store.content_meta(list(part))
        paths = {cid: tuple(p for p in m.uris if not p.startswith("text:")
                            and (under is None or any(is_under(p, r) for r in under))) for cid, m in meta.items()}
        sizes = store.lookup_sources([p for ps in paths.values() for p in ps])
        for cid, m in meta.items():
            size = max((sizes[p].size for p in paths[cid] if p in sizes), default=None)
            out[cid] = (paths[cid], (m, size))
    return out


def _cluster(group: list[int], ids: np.ndarray, index, files: dict, modality: str, spec: str,
             threshold: float) -> DupCluster | None:
    members = []
    for p in group:
        paths, (meta, size) = files.get(int(ids[p]), ((), (None, None)))
        if paths:  # removed meanwhile, or no file below ``under``: nothing to show
            members.append((p, DupMember(int(ids[p]), paths, 1.0, meta.width, meta.height, meta.duration, size)))
    if not members or (len(members) == 1 and len(members[0][1].paths) < 2):
        return None
    members.sort(key=lambda pm: _rank(pm[1]))
    first = index.reconstruct(members[0][0])
    vecs = np.stack([index.reconstruct(p) for p, _ in members])
    sims = np.minimum(vecs @ first, 1.0)
    out = tuple(dataclasses.replace(m, similarity=1.0 if i == 0 else round(float(s), 6))
                for i, ((_, m), s) in enumerate(zip(members, sims)))
    mean = 1.0 if len(out) == 1 else round(float(np.mean([m.similarity for m in out[1:]])), 6)
    return DupCluster(modality, spec, threshold, mean, out)


def _rank(m: DupMember) -> tuple:
    """Best first: most pixels (or longest sound), then the largest file, then the oldest content."""
    pixels = (m.width or 0) * (m.height or 0)
    return (-pixels, -(m.duration or 0.0), -(m.size or 0), m.id)


# ---- at query time ---------------------------------------------------------------------------------
def fold(hits: Sequence[Hit], vectors: Callable[[str, list[int]], dict[int, np.ndarray]],
         threshold: float) -> list[Hit]:
    """Hits with each one within ``threshold`` of a higher-ranked kept hit (same space and kind) folded into
    that one (its paths added to the kept hit's ``duplicates``); ranks renumbered."""
    by_space: dict[str, dict[int, np.ndarray]] = {}
    for spec in {h.space for h in hits}:
        by_space[spec] = vectors(spec, [h.id for h in hits if h.space == spec])
    kept: list[Hit] = []
    for h in hits:
        v = by_space[h.space].get(h.id)
        home = None
        if v is not None:
            for i, other in enumerate(kept):
                w = by_space[other.space].get(other.id)
                if other.space == h.space and other.modality == h.modality and w is not None and v @ w >= threshold:
                    home = i
                    break
        if home is None:
            kept.append(h)
        else:
            kept[home] = dataclasses.replace(kept[home], duplicates=kept[home].duplicates + h.paths + h.duplicates)
    return [dataclasses.replace(h, rank=r) for r, h in enumerate(kept, 1)]


def collapsed(search: Callable[[int], list[Hit]], vectors: Callable[[str, list[int]], dict[int, np.ndarray]],
              k: int, threshold: float) -> list[Hit]:
    """``k`` distinct hits: ``search(n)`` (the top ``n``) fetched with room for folding, again with more while
    folding left fewer than ``k`` and the search returned all it was asked for."""
    threshold = check_threshold(threshold)
    n = 2 * k
    while True:
        hits = search(n)
        kept = fold(hits, vectors, threshold)
        if len(kept) >= k or len(hits) < n:
            return kept[:k]
        n *= 4
