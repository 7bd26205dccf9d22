"""Retrieval quality on a captioned set of images or sounds: Recall@K text→file and file→text, exact
vs ANN; and zero-shot classification of a labelled set (ESC-50 and the like:
:mod:`mmsearch.query.evaluate_audio`). The sets and their formats: :mod:`mmsearch.query.datasets`,
whose :func:`~mmsearch.query.datasets.load_dataset` tells the kind by the file; its modality (images
or sounds) by the extensions of the files it names (sounds: :data:`mmsearch.ingest.audio.AUDIO_EXTENSIONS`;
a set that mixes both is refused).

Protocol (as in CLIP, open_clip's and LAION-CLAP's benchmarks): every caption is a text→file query,
correct when its own file is in the top K; every file is a file→text query, correct when any of its
captions is in the top K. Identical files (or captions) share one vector in a store, so a hit on
shared content counts for every file (caption) that holds it. A file that does not exist or cannot
be decoded is left out with its captions (neither a query nor a candidate) and listed in the
report's ``failed_images`` (``failed_sounds`` in its JSON for sounds). A set of videos is measured
text→video, for each pooling, by :mod:`mmsearch.query.evaluate_video`.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from mmsearch.errors import UsageError
from mmsearch.query.datasets import Dataset, load_dataset
from mmsearch.query.search import top_ids

if TYPE_CHECKING:
    from mmsearch.engine import Engine
    from mmsearch.query.evaluate_audio import ClassifyReport, LabelledSet
    from mmsearch.query.evaluate_video import VideoEvalReport
    from mmsearch.store.schema import Space

KS = (1, 5, 10)

@dataclass
class EvalRow:
    direction: str  # "text→image", "image→text", "text→audio" or "audio→text"
    method: str  # "exact" or the index kind
    recall: dict[int, float]
    queries: int
    qps: float


@dataclass
class EvalReport:
    dataset: str
    model: str
    images: int  # files evaluated (sounds, for a set of sounds)
    captions: int
    rows: list[EvalRow] = field(default_factory=list)
    failed_images: list[tuple[str, str]] = field(default_factory=list)  # left out, with the reason
    modality: str = "image"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for r in d["rows"]:
            r["recall"] = {f"R@{k}": v for k, v in r["recall"].items()}
        d["failed_images"] = [{"path": p, "reason": r} for p, r in self.failed_images]
        if self.modality == "audio":  # named for what they count
            d = {{"images": "sounds", "failed_images": "failed_sounds"}.get(k, k): v for k, v in d.items()}
        return {"kind": "retrieval", **d}


# ---- evaluation ------------------------------------------------------------------------------------------
def evaluate_dataset(engine: "Engine", path: str | Path, *, root: str | Path | None = None, split: str | None = None,
                     fold: int | None = None, prompt: str | None = None) -> "EvalReport | ClassifyReport | VideoEvalReport":
    """:func:`load_dataset` then :func:`evaluate`: what ``mmsearch eval`` runs."""
    return evaluate(engine, load_dataset(path, images_root=root, split=split, fold=fold), prompt=prompt)


def evaluate(engine: "Engine", data: "Dataset | LabelledSet", *, ks: Sequence[int] = KS,
             prompt: str | None = None) -> "EvalReport | ClassifyReport | VideoEvalReport":
    """Index the files and captions into ``engine``'s store, then measure Recall@K both ways (a labelled
    set: zero-shot accuracy, :func:`mmsearch.query.evaluate_audio.classify`, with ``prompt``; videos:
    text→video Recall@K and median rank for each pooling, :mod:`mmsearch.query.evaluate_video`)."""
    if not isinstance(data, Dataset):
        from mmsearch.query.evaluate_audio import classify

        return classify(engine, data, prompt=prompt)
    if prompt is not None:
        raise UsageError("--prompt applies to zero-shot classification (a labelled dataset), not to captions")
    if data.modality == "video":
        from mmsearch.query.evaluate_video import evaluate_videos

        return evaluate_videos(engine, data, ks=ks)
    mod = data.modality
    report_idx = engine.index(data.images)
    engine.add_texts({f"eval:{i}": c for i, c in enumerate(data.captions)})
    store = engine.store
    space = space_for(engine, mod)
    enc = engine.encoder(space.spec)
    kmax = max(ks)

    ids_img, vec_img = store.vectors(space.id, mod)
    sources = store.lookup_sources(data.images)
    with_vec = set(ids_img.tolist())
    img_content = {p: sources[p].content_id for p in data.images if p in sources and sources[p].content_id in with_vec}
    failed = list(data.missing) + left_out(report_idx.errors, [p for p in data.images if p not in img_content])
    valid_imgs = [i for i, p in enumerate(data.images) if p in img_content]
    kept_caps = [i for i, owner in enumerate(data.caption_image) if data.images[owner] in img_content]

    content_images: dict[int, set[int]] = {}
    for i in valid_imgs:
        content_images.setdefault(img_content[data.images[i]], set()).add(i)
    cap_sources = store.lookup_sources([f"text:eval:{i}" for i in kept_caps])
    content_caps: dict[int, set[int]] = {}
    for i in kept_caps:
        src = cap_sources.get(f"text:eval:{i}")
        if src is not None:
            content_caps.setdefault(src.content_id, set()).add(data.caption_image[i])
    keep_img = np.isin(ids_img, list(content_images))
    ids_img, vec_img = ids_img[keep_img], vec_img[keep_img]
    ids_txt, vec_txt = store.vectors(space.id, "text")
    keep_txt = np.isin(ids_txt, list(content_caps))
    ids_txt, vec_txt = ids_txt[keep_txt], vec_txt[keep_txt]

    q_txt = enc.embed_texts([data.captions[i] for i in kept_caps]) if kept_caps else np.zeros((0, space.dim), np.float32)
    q_img = (vec_img[np.searchsorted(ids_img, [img_content[data.images[i]] for i in valid_imgs])] if valid_imgs
             else np.zeros((0, space.dim), np.float32))

    def t2i_correct(ranked_ids: np.ndarray, qi: int) -> list[bool]:
        return [data.caption_image[kept_caps[qi]] in content_images.get(int(c), ()) for c in ranked_ids]

    def i2t_correct(ranked_ids: np.ndarray, qi: int) -> list[bool]:
        return [valid_imgs[qi] in content_caps.get(int(c), ()) for c in ranked_ids]

    out = EvalReport(data.name, space.spec, len(valid_imgs), len(kept_caps), failed_images=failed, modality=mod)
    if kept_caps and not len(ids_txt):
        out.notes.append(f"the captions were not embedded in {space.spec}'s space (give that model with --model): "
                         f"no {mod}→text rows")
    for direction, queries, ids, vecs, correct, modality in (
        (f"text→{mod}", q_txt, ids_img, vec_img, t2i_correct, mod),
        (f"{mod}→text", q_img, ids_txt, vec_txt, i2t_correct, "text"),
    ):
        if len(queries) == 0 or len(ids) == 0:
            continue
        t0 = time.perf_counter()
        exact = _exact_topk(queries, vecs, kmax)
        t_exact = time.perf_counter() - t0
        out.rows.append(EvalRow(direction, "exact", recall_at([ids[r] for r in exact], correct, ks), len(queries),
                                len(queries) / max(t_exact, 1e-9)))
        engine.indexes.sync(space, [modality], save=False)
        idx = engine.indexes.get(space, modality)
        t0 = time.perf_counter()
        ann_ids = [np.array([i for _, i in row], np.int64) for row in top_ids(store, idx, queries, kmax)]
        t_ann = time.perf_counter() - t0  # as users get them: a PQ index's candidates re-ranked exactly
        out.rows.append(EvalRow(direction, idx.ann.kind, recall_at(ann_ids, correct, ks), len(queries),
                                len(queries) / max(t_ann, 1e-9)))
    return out


def space_for(engine: "Engine", modality: str) -> "Space":
    """The space files of ``modality`` were embedded into: the first given model that embeds them, else
    the store's first space that holds them."""
    for spec in engine.models():
        if modality in engine.encoder(spec).space.modalities:
            return engine.space(spec)
    for sp in engine.store.spaces():
        if modality in sp.modalities.split(","):
            return sp
    kind = "sounds" if modality == "audio" else f"{modality}s"
    raise UsageError(f"no model of this store embeds {kind}: give one with --model")


def left_out(errors: Sequence[tuple[str, str]], unindexed: Sequence[str]) -> list[tuple[str, str]]:
    """(path, reason) for each file that has no vector: the index run's reason, where it gave one."""
    reasons = {os.path.realpath(p): r for p, r in errors}
    return [(p, reasons.get(os.path.realpath(p), "not indexed")) for p in unindexed]


def _exact_topk(q: np.ndarray, x: np.ndarray, k: int, block: int = 1024) -> list[np.ndarray]:
    out = []
    for s in range(0, len(q), block):
        sims = q[s : s + block] @ x.T
        k_ = min(k, x.shape[0])
        part = np.argpartition(-sims, k_ - 1, axis=1)[:, :k_]
        order = np.take_along_axis(sims, part, axis=1).argsort(axis=1)[:, ::-1]
        out.extend(np.take_along_axis(part, order, axis=1))
    return out


def recall_at(ranked: Sequence[np.ndarray], correct, ks: Sequence[int]) -> dict[int, float]:
    hits = {k: 0 for k in ks}
    for qi, r in enumerate(ranked):
        ok = correct(np.asarray(r)[np.asarray(r) >= 0], qi)
        for k in ks:
            hits[k] += any(ok[:k])
    n = max(len(ranked), 1)
    return {k: hits[k] / n for k in ks}
