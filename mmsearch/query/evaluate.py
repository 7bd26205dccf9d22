"""Retrieval quality on a captioned image set: Recall@K, text→image and image→text, exact vs ANN.

Datasets (image paths are relative to the dataset file, or to ``images_root``):

* CSV with columns ``image`` (or ``filepath``/``file_name``) and ``caption`` (or ``text``/``title``);
  several rows per image are several captions.
* JSONL, one object per line: ``{"image": …, "caption": …}`` or ``{"image": …, "captions": […]}``.
* COCO captions JSON (``images`` + ``annotations``), e.g. ``captions_val2017.json``.
* Karpathy split JSON (``dataset_flickr30k.json``, ``dataset_coco.json``): filter with ``split``.

Protocol (as in CLIP and open_clip's benchmarks): every caption is a text→image query, correct when
its own image is in the top K; every image is an image→text query, correct when any of its captions
is in the top K. Identical images (or captions) share one vector in a store, so a hit on shared
content counts for every image (caption) that holds it.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from mmsearch.errors import UsageError
from mmsearch.query.search import top_ids

if TYPE_CHECKING:
    from mmsearch.engine import Engine

KS = (1, 5, 10)


@dataclass
class Dataset:
    images: list[str]  # absolute paths
    captions: list[str]
    caption_image: list[int]  # caption i describes images[caption_image[i]]
    name: str = ""


@dataclass
class EvalRow:
    direction: str  # "text→image" or "image→text"
    method: str  # "exact" or the index kind
    recall: dict[int, float]
    queries: int
    qps: float


@dataclass
class EvalReport:
    dataset: str
    model: str
    images: int
    captions: int
    rows: list[EvalRow] = field(default_factory=list)
    failed_images: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for r in d["rows"]:
            r["recall"] = {f"R@{k}": v for k, v in r["recall"].items()}
        d["failed_images"] = [{"path": p, "reason": r} for p, r in self.failed_images]
        return d


# ---- loading ------------------------------------------------------------------------------------------
def load_dataset(path: str | Path, *, images_root: str | Path | None = None, split: str | None = None) -> Dataset:
    p = Path(path)
    if not p.is_file():
        raise UsageError("no such dataset file", path=str(p))
    root = Path(images_root) if images_root is not None else p.parent
    pairs: list[tuple[str, str]] = []
    suffix = p.suffix.lower()
    try:
        if suffix == ".csv":
            pairs = _csv_pairs(p)
        elif suffix in (".jsonl", ".ndjson"):
            pairs = _jsonl_pairs(p)
        elif suffix == ".json":
            pairs = _json_pairs(p, split)
        else:
            raise UsageError("expected a .csv, .jsonl or .json (COCO / Karpathy) dataset", path=str(p))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read dataset: {exc}", path=str(p)) from None
    if not pairs:
        raise UsageError("dataset has no (image, caption) pairs" + (f" in split {split!r}" if split else ""), path=str(p))
    images: list[str] = []
    index: dict[str, int] = {}
    captions, owner = [], []
    for image, caption in pairs:
        full = str((root / image).resolve()) if not Path(image).is_absolute() else image
        if full not in index:
            index[full] = len(images)
            images.append(full)
        captions.append(caption)
        owner.append(index[full])
    return Dataset(images, captions, owner, name=p.name)


def _pick(row: dict, names: Sequence[str], where: str) -> str:
    for n in names:
        if row.get(n) not in (None, ""):
            return str(row[n])
    raise UsageError(f"{where}: needs one of the columns/keys {', '.join(names)}")


def _csv_pairs(p: Path) -> list[tuple[str, str]]:
    with open(p, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    return [(_pick(r, ("image", "filepath", "file_name", "path"), f"{p} row {i + 2}"),
             _pick(r, ("caption", "text", "title"), f"{p} row {i + 2}")) for i, r in enumerate(rows)]


def _jsonl_pairs(p: Path) -> list[tuple[str, str]]:
    out = []
    for n, line in enumerate(p.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        obj = json.loads(line)
        image = _pick(obj, ("image", "filepath", "file_name", "path"), f"{p} line {n}")
        caps = obj.get("captions")
        if isinstance(caps, list):
            out.extend((image, str(c)) for c in caps)
        else:
            out.append((image, _pick(obj, ("caption", "text", "title"), f"{p} line {n}")))
    return out


def _json_pairs(p: Path, split: str | None) -> list[tuple[str, str]]:
    data = json.loads(p.read_text(encoding="utf-8"))
    if isinstance(data, dict) and "annotations" in data and "images" in data:  # COCO captions
        files = {im["id"]: im["file_name"] for im in data["images"]}
        return [(files[a["image_id"]], a["caption"].strip()) for a in data["annotations"] if a["image_id"] in files]
    if isinstance(data, dict) and isinstance(data.get("images"), list) and data["images"] and "sentences" in data["images"][0]:
        out = []  # Karpathy split
        for im in data["images"]:
            if split is not None and im.get("split") != split:
                continue
            name = str(Path(im.get("filepath", "")) / im["filename"]) if im.get("filepath") else im["filename"]
            out.extend((name, s["raw"].strip()) for s in im["sentences"])
        return out
    raise UsageError("unrecognised JSON: expected COCO captions (images + annotations) or a Karpathy split file", path=str(p))


# ---- evaluation ------------------------------------------------------------------------------------------
def _content_maps(store, data: Dataset) -> tuple[dict[int, set[int]], dict[int, set[int]], dict[str, int | None]]:
    """Content ids ↔ dataset positions (identical images / captions share a content): (content → images,
    content → images its captions describe, image path → content)."""
    img_sources = store.lookup_sources(data.images)
    img_content = {p: (img_sources[p].content_id if p in img_sources else None) for p in data.images}
    content_images: dict[int, set[int]] = {}
    for i, p in enumerate(data.images):
        if img_content[p] is not None:
            content_images.setdefault(img_content[p], set()).add(i)
    cap_uris = [f"text:eval:{i}" for i in range(len(data.captions))]
    cap_sources = store.lookup_sources(cap_uris)
    content_caps: dict[int, set[int]] = {}
    for i, uri in enumerate(cap_uris):
        content_caps.setdefault(cap_sources[uri].content_id, set()).add(data.caption_image[i])
    return content_images, content_caps, img_content


def evaluate(engine: "Engine", data: Dataset, *, ks: Sequence[int] = KS) -> EvalReport:
    """Index the images and captions into ``engine``'s store, then measure Recall@K both ways."""
    report_idx = engine.index(data.images)
    engine.add_texts({f"eval:{i}": c for i, c in enumerate(data.captions)})
    store = engine.store
    space = engine.space()
    enc = engine.encoder(space.spec)
    kmax = max(ks)

    content_images, content_caps, img_content = _content_maps(store, data)
    ids_img, vec_img = store.vectors(space.id, "image")
    ids_txt, vec_txt = store.vectors(space.id, "text")
    keep_img = np.isin(ids_img, list(content_images))
    ids_img, vec_img = ids_img[keep_img], vec_img[keep_img]
    keep_txt = np.isin(ids_txt, list(content_caps))
    ids_txt, vec_txt = ids_txt[keep_txt], vec_txt[keep_txt]

    q_txt = enc.embed_texts(data.captions)
    valid_imgs = [i for i, p in enumerate(data.images) if img_content[p] is not None]
    q_img = vec_img[np.searchsorted(ids_img, [img_content[data.images[i]] for i in valid_imgs])] if valid_imgs else np.zeros((0, space.dim), np.float32)

    def t2i_correct(ranked_ids: np.ndarray, qi: int) -> list[bool]:
        return [data.caption_image[qi] in content_images.get(int(c), ()) for c in ranked_ids]

    def i2t_correct(ranked_ids: np.ndarray, qi: int) -> list[bool]:
        return [valid_imgs[qi] in content_caps.get(int(c), ()) for c in ranked_ids]

    out = EvalReport(data.name, space.spec, len(valid_imgs), len(data.captions), failed_images=report_idx.errors)
    for direction, queries, ids, vecs, correct, modality in (
        ("text→image", q_txt, ids_img, vec_img, t2i_correct, "image"),
        ("image→text", q_img, ids_txt, vec_txt, i2t_correct, "text"),
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
