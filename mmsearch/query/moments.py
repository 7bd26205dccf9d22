"""Videos answered with the moment: frame and soundtrack evidence mapped onto each video's time line.

A video is kept as segments in every space that reads it (its sampled frames in an image space, its
soundtrack's windows in a sound space; :mod:`mmsearch.ingest.video`), and those segments are indexed
as *moments* (:data:`~mmsearch.store.schema.MOMENT`). A query reaching videos:

1. **Candidates.** In each space it is embedded in, the moment index gives the best segments; their
   videos (:data:`CANDIDATES` per space, ranked by their best segment) are the candidates, and the
   best ``k`` of them by their best segment in any space are the answer. With
   ``pooling="mean"`` the candidates come from the video index instead (each video's mean vector:
   the "mean-pooled frames" baseline of the text→video literature), of the image spaces alone when
   the query reaches one (a sound space's mean soundtrack vector is scored only without one).
2. **Evidence.** Every segment of those ``k``, in every space, is scored exactly and calibrated
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
from mmsearch.query.calibrate import Calibration, scaled
from mmsearch.query.filters import Filters
from mmsearch.query.search import SUBSET_MAX, conditions, described, filtered_top, top_ids
from mmsearch.store.filtering import Cond
from mmsearch.store.schema import MOMENT, Space
from mmsearch.store.store import Store
from mmsearch.types import Hit, Moment
from mmsearch.util import MOMENT_SLOTS, is_under

CANDIDATES = 64  # videos per space found by their best moments (at least 4 × k)
POOL = 512  # moments first asked of a space's moment index to find them (grown until they are found)
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
    evidence = [dataclasses.replace(ev, z=_calibrated(calibration, ev.space, query_modality)) for ev in evidence]
    want = max(CANDIDATES, 4 * k)
    found: dict[int, float] = {}
    # mean pooling is the literature's mean of frame embeddings: scored by what is seen where a space sees
    scoring = [ev for ev in evidence if ev.seen] or evidence if pooling == "mean" else evidence
    for ev in scoring:
        for cid, z in _candidates(store, indexes, ev, want, pooling, conds).items():
            found[cid] = max(found.get(cid, -math.inf), z)
    ranked = sorted(found, key=lambda c: (-found[c], c))[:k]  # a video's best moment is its peak
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
    hits.sort(key=lambda h: (-(h.calibrated or 0.0), -h.score, h.id))
    return [dataclasses.replace(h, rank=r) for r, h in enumerate(hits, 1)]


def _calibrated(calibration: Calibration, space: Space, query_modality: str) -> Callable[[np.ndarray], np.ndarray]:
    """A space's raw cosine → calibrated score against its moments. A raw vector query borrows the
    background of the space's own kind of query (its frames', its windows', else its texts'); with none
    at all the raw cosine stands (ranks still follow it)."""
    mods = space.modalities.split(",")
    for kind in [query_modality] + ([m for m in ("image", "audio", "text") if m in mods] if query_modality == "vector" else []):
        found = calibration.stats(space, kind, MOMENT)
        if found is not None:
            return scaled(found)
    return lambda scores: np.asarray(scores, np.float64)


def _candidates(store: Store, indexes: IndexSet, ev: Evidence, want: int, pooling: str,
                conds: Sequence[Cond]) -> dict[int, float]:
    """video id → its calibrated score in one space (its best moment's, or its mean vector's), for about
    ``want`` videos among those the conditions keep."""
    q = ev.vector.reshape(1, -1).astype(np.float32)
    kind = "video" if pooling == "mean" else MOMENT
    idx = indexes.get(ev.space, kind)
    if idx.ann is None:  # no videos in this space
        return {}
    if kind == "video":
        pairs = filtered_top(store, idx, q, want, conds) if conds else top_ids(store, idx, q, want)[0]
        best = {i: raw for raw, i in pairs}
    else:
        allowed = None
        if conds:
            videos = store.filtered_ids(conds, ev.space.id, "video")
            if not len(videos):
                return {}
            allowed = store.moment_ids(videos, ev.space.id)
        best = _best_moments(store, idx, q, want, allowed)
    # A video's mean vector is calibrated as its segments are: a space holds few videos to learn from,
    # and the same background keeps mean and peak scores on one scale.
    return dict(zip(best, map(float, ev.z(np.array(list(best.values())))))) if best else {}


def _best_moments(store: Store, idx, q: np.ndarray, want: int, allowed: np.ndarray | None) -> dict[int, float]:
    """video id → its best moment's raw cosine, for ``want`` videos (or all there are): the moment pool
    grows until that many distinct videos are in it (a few long videos can fill a small one). A small
    allowed set in an index whose walk misses members of small sets (HNSW, PQ) is scored from its vectors."""
    if allowed is not None and idx.ann.kind in ("hnsw", "pq", "ondisk") and len(allowed) <= SUBSET_MAX[idx.ann.kind]:
        found = store.vectors_for(allowed.tolist(), idx.space_id, MOMENT)
        pairs = [(float(v @ q[0]), i) for i, v in found.items()]
    else:
        total = idx.ann.ntotal if allowed is None else len(allowed)
        pool = min(POOL, total)
        while True:
            pairs = top_ids(store, idx, q, max(pool, 1), allowed=allowed)[0]
            if len({i // MOMENT_SLOTS for _, i in pairs}) >= want or pool >= total:
                break
            pool = min(pool * 4, total)
    best: dict[int, float] = {}
    for raw, i in pairs:
        cid = i // MOMENT_SLOTS
        best[cid] = max(best.get(cid, -math.inf), raw)
    return best


def _lines(store: Store, evidence: Sequence[Evidence], videos: Sequence[int], meta: dict) -> dict[int, _Line]:
    """Each video's time line from its segments in every space of ``evidence`` (as long as the video, or
    as its last segment where the container did not say how long it is)."""
    kept = [c for c in videos if c in meta]
    found = {ev.space.id: store.segments(kept, ev.space.id) for ev in evidence}
    lines: dict[int, _Line] = {}
    for cid in kept:
        ends = [float(seg[cid][0][:, 1].max()) for seg in found.values() if cid in seg and len(seg[cid][0])]
        n = max(1, math.ceil(max([meta[cid].duration or 0.0] + ends) - 1e-6))
        lines[cid] = _Line(np.full(n, -np.inf), np.full(n, -np.inf), np.full(n, np.nan), {})
    for ev in evidence:
        for cid, (spans, vecs) in found[ev.space.id].items():
            if not len(vecs) or cid not in lines:
                continue
            raw = vecs @ ev.vector
            line = lines[cid]
            side = "seen" if ev.seen else "heard"
            if float(raw.max()) > line.raw.get(side, ("", -math.inf))[1]:
                line.raw[side] = (ev.space.spec, float(raw.max()))
            _paint(line, spans, ev.z(raw), ev.seen)
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
        at = _picture_at(line, t, a, b)
        out.append(Moment(start=float(a), end=round(min(float(b), max(duration, a)), 3), peak=round(min(at, duration), 3),
                          score=round(peak, 4), evidence=evidence))
    return out


def _picture_at(line: _Line, t: int, a: int, b: int) -> float:
    """The time of the frame that pictures a moment [a, b) peaking at second ``t``: the best frame covering
    the peak when it was sampled inside the moment; else the best-scoring frame sampled inside it (a heard
    moment that starts just before the next frame: not the last shot's frame, seconds earlier); else the
    covering one; the peak's middle when no frame covers it."""
    times = line.frame_at[a:b]
    at = float(line.frame_at[t])
    if np.isfinite(at) and at >= a - 1e-6:
        return at
    inside = np.flatnonzero(np.isfinite(times) & (times >= a - 1e-6))
    if len(inside):
        return float(times[inside[np.argmax(line.seen[a:b][inside])]])
    return at if np.isfinite(at) else t + 0.5


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
    raw = max((line.raw[s][1] for s in sides if s in line.raw), default=0.0)
    # the hit's model: the one that sees it where one does (near-duplicate videos are compared by their frames)
    space = line.raw["seen"][0] if "seen" in line.raw else line.raw.get("heard", ("", 0.0))[0]
    why = {"raw": round(raw, 6), "space": " + ".join(line.raw[s][0] for s in sides if s in line.raw),
           "query": query_modality, "items": "video", "pooling": pooling, "evidence": first.evidence if first else None}
    return Hit(rank=0, id=m.id, score=float(raw), modality="video", path=files[0] if files else None, paths=paths,
               width=m.width, height=m.height, space=space, calibrated=round(score, 4), duration=m.duration,
               start=first.start if first else None, end=first.end if first else None, why=why,
               moments=tuple(found[:n]), **described(m))
