"""Text→video retrieval quality on a captioned set of videos (MSR-VTT and the like), for ``mmsearch eval``.

Sets (:func:`mmsearch.query.datasets.load_dataset` reads them; a set is of videos when most of its
files have a video extension, :data:`mmsearch.ingest.video.VIDEO_EXTENSIONS`):

* a CSV ``video,caption`` (paths relative to the CSV's folder, or ``root``, or absolute; several rows
  per video are several captions), or the JSONL form, like the image and sound sets;
* MSR-VTT's test CSV, ``key,vid_key,video_id,sentence`` (``MSRVTT_JSFUSION_test.csv``: the 1k-A split,
  1,000 videos, one sentence each): a row's video is ``<video_id>.mp4`` below ``root`` (default: the
  CSV's folder, or ``videos/``, ``videos/all/`` beside it or above it).

Protocol (CLIP4Clip's, and Portillo-Quintero et al. 2021's zero-shot CLIP baseline): every caption is a
text→video query, correct within K when its own video is among the first K; the median rank is the
median over captions of that video's rank. The ranking is the engine's own (:meth:`Engine.search` with
``type="video"``, the caption as literal text: what a user gets), once per pooling
(:data:`~mmsearch.query.moments.POOLINGS`): ``peak`` ranks a video by its best moment, ``mean`` by its
frames' (and windows') mean vector, the literature's "mean-pooled frames". Every space the caption is
embedded in takes part (frames in image spaces, soundtrack windows in sound spaces), fused on
calibrated scores. Ranks are looked for in the first :data:`DEPTH` hits; a median beyond that is
reported as unknown (``None``).

Every video the set names must be there: one missing changes the candidate pool, and the figures would
no longer compare with published ones, so it is an error naming the file and its row. A video that
is there but cannot be decoded is left out with its captions and listed in ``failed_videos``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from mmsearch.errors import UsageError
from mmsearch.query.datasets import Dataset, captions_of
from mmsearch.query.evaluate import left_out
from mmsearch.query.moments import POOLINGS
from mmsearch.query.parse import Term, parse

if TYPE_CHECKING:
    from mmsearch.engine import Engine

KS = (1, 5, 10)
DEPTH = 50  # hits looked at per caption: ranks beyond count as "not found"
#: A published figure to read ours against (not a claim about ours): zero-shot CLIP ViT-B/32, each
#: video its frames' mean embedding, MSR-VTT 1k-A text→video.
REFERENCE = {"model": "CLIP ViT-B/32", "pooling": "mean", "dataset": "MSR-VTT 1k-A", "zero_shot": True,
             "R@1": 31.2, "R@5": 53.7, "R@10": 64.2, "source": "Portillo-Quintero et al. 2021",
             "note": "published reference, not measured here"}


@dataclass
class VideoEvalRow:
    pooling: str  # "peak" or "mean"
    recall: dict[int, float]
    median_rank: float | None  # None: the median caption's video was not in the first DEPTH hits
    queries: int
    qps: float
    direction: str = "text→video"


@dataclass
class VideoEvalReport:
    dataset: str
    model: str  # the spaces the captions were searched in
    videos: int  # videos evaluated
    captions: int
    rows: list[VideoEvalRow] = field(default_factory=list)
    failed_videos: list[tuple[str, str]] = field(default_factory=list)  # left out, with the reason
    notes: list[str] = field(default_factory=list)
    depth: int = DEPTH
    reference: dict[str, Any] = field(default_factory=lambda: dict(REFERENCE))
    modality: str = "video"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for r in d["rows"]:
            r["recall"] = {f"R@{k}": v for k, v in r["recall"].items()}
        d["failed_videos"] = [{"path": p, "reason": r} for p, r in self.failed_videos]
        return {"kind": "retrieval", **d}


# ---- loading ------------------------------------------------------------------------------------------
def msrvtt_pairs(p: Path, rows: list[dict]) -> list[tuple[str, str, str]]:
    """MSR-VTT test CSV rows (``key,vid_key,video_id,sentence``) → (``<video_id>.mp4``, sentence, "row N")."""
    from mmsearch.ingest.video import VIDEO_EXTENSIONS

    out = []
    for i, r in enumerate(rows):
        at = f"row {i + 2}"
        vid = (r.get("video_id") or "").strip()
        if not vid:
            raise UsageError(f"{p} {at}: needs a video_id")
        name = vid if os.path.splitext(vid)[1].lower() in VIDEO_EXTENSIONS else f"{vid}.mp4"
        out.extend((name, c, at) for c in captions_of(r, f"{p} {at}"))
    return out


def require_all(data: Dataset, where: str | Path = "") -> None:
    """A usage error naming the first of the set's videos that is not there, and its row."""
    if not data.missing:
        return
    path, reason = data.missing[0]
    at = data.named_at.get(path)
    more = f" (and {len(data.missing) - 1} more)" if len(data.missing) > 1 else ""
    raise UsageError(f"{at + ': ' if at else ''}video {path}: {reason}{more}; a video eval needs every video of the set "
                     f"(give their folder with --videos-root)", path=str(where or data.name))


# ---- evaluation ---------------------------------------------------------------------------------------
def evaluate_videos(engine: "Engine", data: Dataset, *, ks: Sequence[int] = KS, where: str | Path = "") -> VideoEvalReport:
    """Index ``data``'s videos into the engine's store, then rank them for every caption, each pooling."""
    require_all(data, where)
    report_idx = engine.index(data.files)
    sources = engine.store.lookup_sources(data.files)
    meta = engine.store.content_meta(sorted({s.content_id for s in sources.values()}))
    content_of = {f: sources[f].content_id for f in data.files
                  if f in sources and sources[f].content_id in meta and meta[sources[f].content_id].modality == "video"}
    failed = left_out(report_idx.errors, [f for f in data.files if f not in content_of])
    kept = [i for i, owner in enumerate(data.caption_image) if data.files[owner] in content_of]
    if not kept:
        first = f" (first: {failed[0][0]}: {failed[0][1]})" if failed else ""
        raise UsageError(f"none of the dataset's {len(data.files)} videos could be indexed{first}")
    ours = set(content_of.values())
    out = VideoEvalReport(data.name, " + ".join(engine.models()), len(content_of), len(kept), failed_videos=failed)
    for pooling in POOLINGS:
        t0 = time.perf_counter()
        ranks = [_rank(engine, data.captions[i], content_of[data.files[data.caption_image[i]]], ours, pooling)
                 for i in kept]
        seconds = time.perf_counter() - t0
        out.rows.append(VideoEvalRow(pooling, recall_of(ranks, ks), median_rank(ranks), len(kept),
                                     len(kept) / max(seconds, 1e-9)))
    return out


def _rank(engine: "Engine", caption: str, truth: int, ours: set[int], pooling: str) -> int | None:
    """Where ``truth`` comes among the set's videos for the caption (1: first; None: not in DEPTH hits)."""
    hits = engine.search(literal(caption), type="video", pooling=pooling, k=DEPTH)
    ranked = [h.id for h in hits if h.id in ours]
    return ranked.index(truth) + 1 if truth in ranked else None


def literal(text: str) -> str:
    """``text`` as a query the query language reads as exactly one term, that text (``" - "`` and a
    leading ``2:`` kept as words; a double quote inside becomes a single one)."""
    if parse(text) == (Term(text, 1.0, 1),):
        return text
    return '1: "' + text.replace('"', "'") + '"'


def recall_of(ranks: Sequence[int | None], ks: Sequence[int]) -> dict[int, float]:
    n = max(len(ranks), 1)
    return {k: sum(r is not None and r <= k for r in ranks) / n for k in ks}


def median_rank(ranks: Sequence[int | None]) -> float | None:
    """The median rank (a rank not found counts as beyond every found one); None when it is one of those."""
    if not ranks:
        return None
    m = float(np.median([math.inf if r is None else float(r) for r in ranks]))
    return m if math.isfinite(m) else None
