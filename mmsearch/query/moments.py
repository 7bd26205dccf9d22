"""Videos answered with the moment: frame and soundtrack evidence mapped onto each video's time line.

A video is kept as segments in every space that reads it (its sampled frames in an image space, its
soundtrack's windows in a sound space; :mod:`mmsearch.ingest.video`), and those segments are indexed
as *moments* (:data:`~mmsearch.store.schema.MOMENT`). A query reaching videos:

1. **Candidates.** In each space it is embedded in, the moment index gives the best segments; their
   videos (up to :data:`CANDIDATES` per space, ranked by their best segment) are the candidates. With
   ``pooling="mean"`` the candidates come from the video index instead (each video's mean vector:
   the "mean-pooled frames" baseline of the text→video literature), of the image spaces alone when
   the query reaches one (a sound space's mean soundtrack vector is scored only without one).
2. **Evidence.** Every segment of a candidate, in every space, is scored exactly and calibrated
   (:mod:`mmsearch.query.calibrate`, per space, against that space's moments), so a frame's and a
   window's scores are comparable.
3. **Time line.** Per second of the video, ``seen`` is the best frame covering it, ``heard`` the best
   window; the evidence is their max. The video's score is its peak (``peak`` pooling), or its best
   mean-vector score (``mean`` pooling).
4. **Moments.** Around a peak, neighbouring seconds within :data:`MOMENT_DROP` of it (a one-second dip
   bridged) merge into one moment; further moments are the next peaks outside it, down to
   :data:`MOMENT_FLOOR` below the best. A moment says which evidence carried it: ``seen``, ``heard`` or
   ``both`` (each reaching within :data:`MOMENT_DROP` of the peak somewhere in the moment).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from mmsearch.ann.indexes import IndexSet
from mmsearch.query.calibrate import Calibration, scale
from mmsearch.query.filters import Filters
from mmsearch.query.search import conditions, described, top_ids
from mmsearch.store.schema import MOMENT, Space
from mmsearch.store.store import Store
from mmsearch.types import Hit, Moment
from mmsearch.util import MOMENT_SLOTS, is_under

CANDIDATES = 64  # videos per space whose whole time line is scored (at least 4 × k)
POOL = 512  # moments asked of a space's moment index to find them
EXACT_MAX = 2_000  # a filtered set of at most this many videos is scored from its segments directly
MOMENT_DROP = 1.0  # calibrated units: seconds this close to a peak belong to its moment
MOMENT_FLOOR = 2.0  # a further moment peaks at most this far below the video's best
POOLINGS = ("peak", "mean")


@dataclass
class Evidence:
    """One space's view of the query: its unit query vector, whether it sees (frames) or hears."""

    space: Space
    vector: np.ndarray
    seen: bool
    z: Callable[[np.ndarray], np.ndarray] | None = None  # raw cosine → calibrated, against the space's moments


@dataclass
class _Line:
    """A video's time line: per second, the best seen and heard calibrated scores (-inf: none)."""

    seen: np.ndarray
    heard: np.ndarray
    frame_at: np.ndarray  # per second, the time of the best frame covering it (nan: none)
    raw: dict[str, tuple[str, float]]  # "seen"/"heard" → (the space's spec, its best raw cosine)

    @property
    def fused(self) -> np.ndarray:
        return np.maximum(self.seen, self.heard)


def video_hits(store: Store, indexes: IndexSet, evidence: Sequence[Evidence], calibration: Calibration,
               query_modality: str, *, k: int, moments: int = 1, pooling: str = "peak",
               filters: Filters | None = None, under: str | None = None) -> list[Hit]:
    """The best ``k`` videos for a query embedded as ``evidence`` (one per space), each with its best
    ``moments``; scores are calibrated (comparable with the other kinds' hits)."""
    conds = conditions(filters, under)
    evidence = [dataclasses.replace(ev, z=scale(calibration, ev.space, query_modality, MOMENT)) for ev in evidence]
    want = max(CANDIDATES, 4 * k)
    allowed: dict[int, np.ndarray | None] = {}
    found: dict[int, float] = {}
    # mean pooling is the literature's mean of frame embeddings: scored by what is seen where a space sees
    scoring = [ev for ev in evidence if ev.seen] or evidence if pooling == "mean" else evidence
    for ev in scoring:
        if conds:
            allowed[ev.space.id] = store.filtered_ids(conds, ev.space.id, "video")
        for cid, z in _candidates(store, indexes, ev, want, pooling, allowed.get(ev.space.id)).items():
            found[cid] = max(found.get(cid, -math.inf), z)
    ranked = sorted(found, key=lambda c: (-found[c], c))[: want]
    meta = store.content_meta(ranked)
    lines = _lines(store, evidence, ranked, meta)
    hits = []
    for cid in ranked:
        m, line = meta.get(cid), lines.get(cid)
        if m is None or line is None:
            continue  # removed after the index snapshot
        paths = tuple(p for p in m.uris if (under is None or is_under(p, under)) and (filters is None or filters.shows(p)))
        score = found[cid] if pooling == "mean" else float(line.fused.max())
        hits.append(_hit(m, paths, line, score, moments, pooling, query_modality))
    hits.sort(key=lambda h: (-(h.calibrated or 0.0), h.id))
    return [dataclasses.replace(h, rank=r) for r, h in enumerate(hits[:k], 1)]


def _candidates(store: Store, indexes: IndexSet, ev: Evidence, want: int, pooling: str,
                allowed: np.ndarray | None) -> dict[int, float]:
    """video id → its calibrated score in one space (its best moment's, or its mean vector's)."""
    q = ev.vector.reshape(1, -1).astype(np.float32)
    kind = "video" if pooling == "mean" else MOMENT
    idx = indexes.get(ev.space, kind)
    # A video's mean vector is calibrated as its segments are: a space holds few videos to learn from,
    # and the same background keeps mean and peak scores on one scale.
    if idx.ann is None or (allowed is not None and len(allowed) == 0):  # no videos in this space
        return {}
    if allowed is not None and len(allowed) <= EXACT_MAX:  # a small filtered set: every segment, exactly
        return _exact(store, ev, allowed, pooling)
    ids = None if allowed is None else (allowed if kind == "video" else store.moment_ids(allowed, ev.space.id))
    pairs = top_ids(store, idx, q, want if kind == "video" else POOL, allowed=ids)[0]
    best: dict[int, float] = {}
    for raw, i in pairs:
        cid = i if kind == "video" else i // MOMENT_SLOTS
        best[cid] = max(best.get(cid, -math.inf), raw)
    if not best:
        return {}
    cids = list(best)
    z = ev.z(np.array([best[c] for c in cids]))
    return dict(zip(cids, map(float, z)))


def _exact(store: Store, ev: Evidence, videos: np.ndarray, pooling: str) -> dict[int, float]:
    """video id → calibrated score of each of a small set of videos, from their stored vectors."""
    if pooling == "mean":
        found = store.vectors_for(videos.tolist(), ev.space.id)
        cids = list(found)
        raw = np.array([float(found[c] @ ev.vector) for c in cids])
        return dict(zip(cids, map(float, ev.z(raw)))) if cids else {}
    out = {}
    for cid, (_, vecs) in store.segments(videos.tolist(), ev.space.id).items():
        if len(vecs):
            out[cid] = float(ev.z(np.array([float((vecs @ ev.vector).max())]))[0])
    return out


def _lines(store: Store, evidence: Sequence[Evidence], videos: Sequence[int], meta: dict) -> dict[int, _Line]:
    """Each video's time line from its segments in every space of ``evidence``."""
    lines: dict[int, _Line] = {}
    for cid in videos:
        if cid in meta:
            n = max(1, math.ceil((meta[cid].duration or 0.0) - 1e-6))
            lines[cid] = _Line(np.full(n, -np.inf), np.full(n, -np.inf), np.full(n, np.nan), {})
    for ev in evidence:
        for cid, (spans, vecs) in store.segments(list(lines), ev.space.id).items():
            if not len(vecs):
                continue
            raw = vecs @ ev.vector
            z = ev.z(raw)
            line = lines[cid]
            side = "seen" if ev.seen else "heard"
            if float(raw.max()) > line.raw.get(side, ("", -math.inf))[1]:
                line.raw[side] = (ev.space.spec, float(raw.max()))
            _paint(line, spans, z, ev.seen)
    return lines


def _paint(line: _Line, spans: np.ndarray, z: np.ndarray, seen: bool) -> None:
    """Each segment's score onto the seconds it covers (a second keeps its best)."""
    n = len(line.seen)
    target = line.seen if seen else line.heard
    for (a, b), s in zip(spans, z):
        first = min(int(math.floor(a)), n - 1)
        last = max(first + 1, min(int(math.ceil(b - 1e-6)), n))
        part = slice(first, last)
        better = s > target[part]
        target[part] = np.where(better, s, target[part])
        if seen:
            line.frame_at[part] = np.where(better, a, line.frame_at[part])


def moments_of(line: _Line, n: int, duration: float) -> list[Moment]:
    """The best ``n`` moments of a time line (see the module doc)."""
    fused = line.fused
    free = np.isfinite(fused)
    out: list[Moment] = []
    best = float(fused[free].max()) if free.any() else -math.inf
    while len(out) < n and free.any():
        t = int(np.flatnonzero(free)[np.argmax(fused[free])])
        peak = float(fused[t])
        if out and peak < best - MOMENT_FLOOR:
            break
        a, b = _extent(fused, free, t, peak - MOMENT_DROP)
        free[a:b] = False
        seen_ok = line.seen[a:b].max() >= peak - MOMENT_DROP
        heard_ok = line.heard[a:b].max() >= peak - MOMENT_DROP
        evidence = "both" if seen_ok and heard_ok else "seen" if seen_ok else "heard"
        at = float(line.frame_at[t]) if np.isfinite(line.frame_at[t]) else t + 0.5
        out.append(Moment(start=float(a), end=round(min(float(b), max(duration, a)), 3), peak=round(min(at, duration), 3),
                          score=round(peak, 4), evidence=evidence))
    return out


def _extent(fused: np.ndarray, free: np.ndarray, t: int, floor: float) -> tuple[int, int]:
    """The seconds around ``t`` at or above ``floor`` (a single second below it bridged), not yet taken."""
    def ok(i: int) -> bool:
        return 0 <= i < len(fused) and bool(free[i]) and fused[i] >= floor

    a = t
    while ok(a - 1) or (ok(a - 2) and 0 <= a - 1 and free[a - 1]):
        a -= 1
    b = t + 1
    while ok(b) or (ok(b + 1) and b < len(fused) and free[b]):
        b += 1
    return a, b


def _hit(m, paths: tuple[str, ...], line: _Line, score: float, n: int, pooling: str, query_modality: str) -> Hit:
    duration = float(m.duration or len(line.seen))
    found = moments_of(line, max(n, 1), duration)
    files = [p for p in paths if not p.startswith("text:")]
    first = found[0] if found else None
    sides = ["seen", "heard"] if first is None or first.evidence == "both" else [first.evidence]
    space = " + ".join(line.raw[s][0] for s in sides if s in line.raw)
    raw = max((line.raw[s][1] for s in sides if s in line.raw), default=0.0)
    why = {"raw": round(raw, 6), "space": space, "query": query_modality, "items": "video", "pooling": pooling,
           "evidence": first.evidence if first else None}
    return Hit(rank=0, id=m.id, score=float(raw), modality="video", path=files[0] if files else None, paths=paths,
               width=m.width, height=m.height, space=space, calibrated=round(score, 4), duration=m.duration,
               start=first.start if first else None, end=first.end if first else None, why=why,
               moments=tuple(found[:n]), **described(m))
