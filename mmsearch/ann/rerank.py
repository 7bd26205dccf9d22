"""Exact re-ranking of a compressed index's candidates with the stored vectors.

PQ codes alone kept 0.77 of the true top 10 on real embeddings (benchmarks/RESULTS.md), so a ``pq``
search takes :data:`RERANK_FACTOR`·k candidates (at least 100, more as the index grows: :func:`pool_size`) and scores them again with the exact
vectors from the database; four times as many under a filter (its true neighbours stand among many
near-equal codes: 0.97 of the top 10 at 10 % kept with the plain pool, bench_filters.py). Queries
and build-time tuning (:mod:`mmsearch.ann.tuning`) go through this one function, so the recall
tuned for is the recall users get.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from mmsearch.ann.faiss_index import SearchParams

if TYPE_CHECKING:
    from mmsearch.ann.faiss_index import AnnIndex
    from mmsearch.store.store import Store

#: Index kinds whose scores are approximate (compressed codes): their candidates are re-scored exactly.
RERANKED = ("pq", "ondisk")
RERANK_FACTOR = 10
#: The widest pool an index's size asks for: each candidate is one stored vector read from the database,
#: so 4,000 cost ~4 MB of fp16 reads per query; past that, longer codes (more bytes per vector) are the
#: better lever than a wider pool.
POOL_MAX = 4000


def pool_size(k: int, filtered: bool, n: int = 0) -> int:
    """How many candidates a compressed index gives for the best ``k`` of ``n`` vectors.

    The floor is :data:`RERANK_FACTOR`·k (at least 100). It grows like ``sqrt(n)`` (``k·sqrt(n)/20``,
    at most :data:`POOL_MAX`): with PQ's distortion fixed, the vectors whose codes score as well as a
    true neighbour's grow with n, so a fixed pool loses recall as the store grows. Measured at 1M × 512
    (benchmarks/RESULTS.md "On-disk IVF-PQ"): a pool of 200 kept 0.943 of the true top 10, 500 kept
    0.983; ``10·sqrt(1M)/20`` = 500. Linear growth would match the density argument but costs a
    database read per candidate; ``sqrt`` reaches the measured need at 1M and stays under 2,000 at 10M.
    Below ~40,000 vectors the floor applies (today's pool). Under a filter, four times as many.
    """
    grown = min(math.ceil(k * math.sqrt(max(n, 0)) / 20), POOL_MAX)
    return max(k * RERANK_FACTOR, 100, grown) * (4 if filtered else 1)


def reranked(store: "Store", space_id: int, ann: "AnnIndex", queries: np.ndarray, k: int,
             params: SearchParams | None = None, allowed: np.ndarray | None = None,
             pool: int | None = None, modality: str | None = None) -> list[list[tuple[float, int]]]:
    """Best ``k`` (score, id) per query row: a pool of candidates from ``ann`` (default :func:`pool_size`),
    re-scored with the exact stored vectors (fetched once for every row), ties broken by id. ``modality``:
    the index's kind (its ids are moments' for :data:`~mmsearch.store.schema.MOMENT`)."""
    q = np.asarray(queries, np.float32).reshape(len(queries), -1)
    _, ids = ann.search(q, pool or pool_size(k, allowed is not None, ann.ntotal), params, allowed)
    wanted = np.unique(ids[ids >= 0])
    exact = store.vectors_for(wanted.tolist(), space_id, modality)
    out = []
    for r, row in enumerate(ids):
        cand = [int(i) for i in row if i >= 0 and int(i) in exact]
        scored = ((float(exact[i] @ q[r]), i) for i in cand)
        out.append(sorted(scored, key=lambda t: (-t[0], t[1]))[:k])
    return out
