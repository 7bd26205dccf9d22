"""Search breadth tuned at build time to a recall target, for the queries the index will get.

An approximate index (IVF, PQ, HNSW) trades recall for speed through one knob: ``nprobe`` (lists
visited) or ``efSearch`` (graph breadth). FAISS's defaults say nothing about the recall a user gets,
and the recall depends on the *queries*: text→image queries lie outside the distribution of the
image vectors the index was built from, and an IVF or HNSW walk that finds 0.99 of an image query's
neighbours finds far fewer of a text query's (RoarGraph, VLDB 2024; OOD-DiskANN). So when an index is
built, the knob is turned up until **every kind of query** reaches the target (default Recall@10 ≥ 0.95
against exact search), and what was measured is kept with the index and shown by ``stats``:

* queries of the index's own kind: a random sample of its stored vectors, each leaving itself out
  (image→image for an image index);
* text queries (text→image): generic prompts embedded by the space's own text tower and the store's
  own texts (:class:`Probes`; the engine supplies them without loading a model).

Exact neighbours are found in the same pass that fills the index (:class:`TopK` over its blocks), so
tuning costs one batched search per candidate value, not another read of the store. A value is taken
when the recall's lower bound (mean − 2√2 standard errors over the queries) reaches the target: a margin
for the probes' own noise (tests/ann/test_tuning.py holds 1000 fresh queries of each kind to the target).

Recall counts ties (:data:`TIE`), as ann-benchmarks' recall does: a neighbour found whose exact score is
within 0.001 of the 10th true neighbour's counts as one of the 10. That epsilon is a policy, ann-benchmarks'
choice, not a law: exact search and the index score the same stored fp16 vectors, so neither reorders
what the other sees. What fp16 storage does change is the model's own order: rounding moves a unit vectors'
inner product by ~3e-5 typically (64-d vectors, bench_ivf_quantizer.py; at most 2⁻¹¹·|q|·|x| ≈ 0.0005),
so where neighbours crowd (1M scenes of one world: the 10th and 11th differ by 0.00005,
benchmarks/RESULTS.md) their order is partly the storage's; reproducing it id for id would ask for a
search 2× wider. The ids-alone recall is kept beside it (``Tuned.strict``) and shown by ``stats``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from mmsearch.ann.faiss_index import MAX_EF, SearchParams

K = 10
TARGET = 0.95
#: Found neighbours scoring within this of the k-th true neighbour count as true ones (ann-benchmarks'
#: epsilon, a policy choice; the ids-alone recall is kept too).
TIE = 1e-3
QUERIES = 400  # per kind of query: the standard error of a recall near 0.95 is then ~0.004


def _steps(first: int, last: int) -> tuple[int, ...]:
    """Candidate values from ``first`` to ``last``: every value up to 8, then four per doubling (8, 10, 12,
    14, 16, 20, …). A value one step wider costs at most 25 % more per query, so the chosen one is never far
    past the narrowest that meets the target (steps of 1.5× cost up to 50 %: at 1M, nprobe 32 where 20–28
    would do, benchmarks/RESULTS.md)."""
    small = range(1, 8)
    grown = (p * q // 4 for e in range(3, 31) for p in (2 ** e,) for q in (4, 5, 6, 7))
    return tuple(v for v in (*small, *grown) if first <= v < last) + (last,)


#: Candidate values, widest last; each is tried only up to what the index has (IVF: its list count).
NPROBES = _steps(1, 65536)
EFS = _steps(16, MAX_EF)

#: ``search(queries, k, params)``: (scores, ids) of the best ``k`` per query, best first, as users get
#: them; the scores exact (inner products of the stored vectors: re-ranked where the codes are compressed).
Searcher = Callable[[np.ndarray, int, SearchParams], tuple[np.ndarray, np.ndarray]]


@dataclass
class Probe:
    """Queries of one kind. ``ids``: each query's own id in the index (left out of its neighbours), -1 for
    queries that are not stored vectors (prompts)."""

    kind: str
    vectors: np.ndarray
    ids: np.ndarray

    @classmethod
    def outside(cls, kind: str, vectors: np.ndarray) -> "Probe":
        return cls(kind, np.asarray(vectors, np.float32), np.full(len(vectors), -1, np.int64))


@dataclass
class Tuned:
    """What tuning chose and measured: ``param`` (``nprobe``/``ef_search``) = ``value``; ``recall`` per kind of
    query (R@10 against exact search, ties within :data:`TIE` counted); ``strict``: the same by ids alone;
    ``met``: every kind reached ``target`` (else ``value`` is the widest tried)."""

    param: str
    value: int
    target: float
    recall: dict[str, float] = field(default_factory=dict)
    queries: dict[str, int] = field(default_factory=dict)
    n: int = 0
    seconds: float = 0.0
    met: bool = True
    strict: dict[str, float] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, rec: Any) -> "Tuned | None":
        """The record kept in an index's pointer; None when absent or unreadable (an index from before)."""
        if not isinstance(rec, dict):
            return None
        try:
            return cls(str(rec["param"]), int(rec["value"]), float(rec["target"]),
                       {str(k): float(v) for k, v in rec.get("recall", {}).items()},
                       {str(k): int(v) for k, v in rec.get("queries", {}).items()},
                       int(rec.get("n", 0)), float(rec.get("seconds", 0.0)), bool(rec.get("met", True)),
                       {str(k): float(v) for k, v in rec.get("strict", {}).items()})
        except (KeyError, TypeError, ValueError):
            return None

    def params(self) -> SearchParams:
        return SearchParams(nprobe=self.value) if self.param == "nprobe" else SearchParams(ef_search=self.value)


class TopK:
    """The exact best ``k`` neighbours of fixed queries, kept up to date over blocks of (ids, vectors)."""

    def __init__(self, queries: np.ndarray, k: int) -> None:
        self.queries = np.ascontiguousarray(queries, np.float32)
        self.k = k
        self.scores = np.full((len(queries), 0), -np.inf, np.float32)
        self.ids = np.zeros((len(queries), 0), np.int64)

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        if not len(self.queries) or not len(ids):
            return
        scores = np.concatenate([self.scores, self.queries @ np.asarray(vecs, np.float32).T], axis=1)
        allids = np.concatenate([self.ids, np.broadcast_to(np.asarray(ids, np.int64), (len(self.queries), len(ids)))],
                                axis=1)
        keep = min(self.k, scores.shape[1])
        top = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
        self.scores = np.take_along_axis(scores, top, axis=1)
        self.ids = np.take_along_axis(allids, top, axis=1)

    def ranked(self) -> np.ndarray:
        """The neighbours' ids per query, best first."""
        return self.best()[1]

    def best(self) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the neighbours per query, best first."""
        order = np.argsort(-self.scores, axis=1, kind="stable")
        return np.take_along_axis(self.scores, order, axis=1), np.take_along_axis(self.ids, order, axis=1)


def recall_at(found: np.ndarray, truth: np.ndarray, own: np.ndarray, k: int = K, *,
              found_scores: np.ndarray | None = None, truth_scores: np.ndarray | None = None,
              tie: float = 0.0) -> np.ndarray:
    """Per query, the share of its ``k`` true neighbours among the ``k`` found, itself left out of both
    (``found`` and ``truth`` hold k + 1 each, best first, so k others remain either way).

    With scores given and ``tie`` > 0, a found neighbour that is not among the true ids still counts when
    it scores within ``tie`` of the k-th true neighbour (an equally good one, in rounding's order)."""
    ties = tie > 0 and found_scores is not None and truth_scores is not None
    out = np.ones(len(truth))
    for r, (f, t, me) in enumerate(zip(found, truth, own)):
        keep_t = [j for j, i in enumerate(t) if i >= 0 and i != me][:k]
        keep_f = [j for j, i in enumerate(f) if i >= 0 and i != me][:k]
        if not keep_t:
            continue
        want = {int(t[j]) for j in keep_t}
        hits = sum(int(f[j]) in want for j in keep_f)
        if ties:
            floor = float(truth_scores[r][keep_t[-1]]) - tie
            hits += sum(int(f[j]) not in want and float(found_scores[r][j]) >= floor for j in keep_f)
        out[r] = min(hits, len(want)) / len(want)
    return out


def candidates(kind: str, limit: int) -> list[int]:
    """The values tried for an index kind, narrowest first; ``limit``: IVF's list count, HNSW's size."""
    if kind == "hnsw":
        return [e for e in EFS if e <= max(limit, EFS[0])] or [EFS[0]]
    return sorted({p for p in NPROBES if p < limit} | {limit})


def lower_bound(r: np.ndarray) -> float:
    """Mean recall less 2·√2 standard errors (the difference of two samples' means has √2 times one's
    standard error): a margin for the noise of the tuner's own sample. Not a guarantee: the tuner takes
    the first breadth whose bound passes, which favours a sample that happens to run high. In the test
    world a tuned HNSW measured 0.961 on its 400 text probes and 0.950–0.952 on 1000 fresh ones
    (tests/ann/test_tuning.py holds 1000 fresh queries of each kind to the target)."""
    if len(r) < 2:
        return float(r.mean()) if len(r) else 1.0
    return float(r.mean() - 2.0 * math.sqrt(2.0) * r.std(ddof=1) / math.sqrt(len(r)))


def tune(kind: str, limit: int, search: Searcher, probes: list[Probe],
         truth: dict[str, tuple[np.ndarray, np.ndarray]], *, target: float = TARGET, n: int = 0, k: int = K,
         tie: float = TIE) -> Tuned:
    """The narrowest value of the kind's knob at which every probe's recall bound reaches ``target``;
    ``truth``: per probe kind, the exact (scores, ids) of its k + 1 best (:meth:`TopK.best`)."""
    t0 = time.perf_counter()
    param = "ef_search" if kind == "hnsw" else "nprobe"
    probes = [p for p in probes if len(p.vectors)]
    tried = candidates(kind, limit)
    best: dict[str, float] = {}
    strict: dict[str, float] = {}
    chosen = tried[-1]
    met = False
    for value in tried:
        p = SearchParams(ef_search=value) if param == "ef_search" else SearchParams(nprobe=value)
        recalls = {}
        for pr in probes:
            scores, ids = search(pr.vectors, k + 1, p)
            t_scores, t_ids = truth[pr.kind]
            strict[pr.kind] = float(recall_at(ids, t_ids, pr.ids, k).mean())
            recalls[pr.kind] = recall_at(ids, t_ids, pr.ids, k, found_scores=scores, truth_scores=t_scores, tie=tie)
        best = {name: float(r.mean()) for name, r in recalls.items()}
        if all(lower_bound(r) >= target for r in recalls.values()):
            chosen, met = value, True
            break
    return Tuned(param, chosen, target, {name: round(v, 4) for name, v in best.items()},
                 {pr.kind: len(pr.vectors) for pr in probes}, n, round(time.perf_counter() - t0, 3), met,
                 {name: round(v, 4) for name, v in strict.items()})
