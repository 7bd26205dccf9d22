"""Retrieval quality on a captioned set of images or sounds: Recall@K text→file and file→text, exact
vs ANN; and zero-shot classification of a labelled set (ESC-50 and the like:
:mod:`mmsearch.query.evaluate_audio`). :func:`load_dataset` tells the kind by the file; its modality
(images or sounds) by the extensions of the files it names (sounds:
:data:`mmsearch.ingest.audio.AUDIO_EXTENSIONS`; a set that mixes both is refused).

Captioned datasets (file paths are relative to ``root``; without one, to the dataset file's folder,
or to the folder beside it where most of them are: ``<split>/``, ``audio/``, ``audio/<split>/``,
``../audio/``, with ``<split>`` the file's name, ``clotho_captions_<split>.csv`` → ``<split>``):

* CSV with a file column (``image``, ``audio``, ``file``, ``path``, ``filepath``, ``file_name``,
  ``filename``, ``sound``) and a ``caption`` (or ``text``/``title``/``description``) column and/or
  numbered ones (``caption_1`` … ``caption_N``); several rows per file are several captions.
  Clotho ships this: ``clotho_captions_evaluation.csv`` (``file_name,caption_1..caption_5``) beside
  its ``evaluation/`` folder of sounds, found without ``root``.
* AudioCaps CSV (``audiocap_id,youtube_id,start_time,caption``; AudioCaps ships no audio, so no
  file column): a row's sound is the file below ``root`` (default: the CSV's folder, searched
  recursively) named, without its extension, by the youtube_id, ``Y<youtube_id>``,
  ``<youtube_id>_<start_time>``, the AudioSet form ``[Y]<youtube_id>_<start>.000_<start+10>.000``, or
  the audiocap_id. A file column, when there is one, wins.
* JSONL, one object per line: ``{"image"|"audio"|"file"|"path": …, "caption": …}`` or ``"captions": […]``
  (or ``caption_1`` … keys).
* COCO captions JSON (``images`` + ``annotations``), e.g. ``captions_val2017.json``.
* Karpathy split JSON (``dataset_flickr30k.json``, ``dataset_coco.json``): filter with ``split``.

Protocol (as in CLIP, open_clip's and LAION-CLAP's benchmarks): every caption is a text→file query,
correct when its own file is in the top K; every file is a file→text query, correct when any of its
captions is in the top K. Identical files (or captions) share one vector in a store, so a hit on
shared content counts for every file (caption) that holds it. A file that does not exist or cannot
be decoded is left out with its captions (neither a query nor a candidate) and listed in the
report's ``failed_images`` (``failed_sounds`` in its JSON for sounds).
"""

from __future__ import annotations

import csv
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from mmsearch.errors import UsageError
from mmsearch.query.search import top_ids

if TYPE_CHECKING:
    from mmsearch.engine import Engine
    from mmsearch.query.evaluate_audio import ClassifyReport, LabelledSet
    from mmsearch.store.schema import Space

KS = (1, 5, 10)
FILE_KEYS = ("image", "audio", "file", "path", "filepath", "file_name", "filename", "sound")
CAPTION_KEYS = ("caption", "text", "title", "description")
LABEL_KEYS = ("category", "class", "label")
_NUMBERED = re.compile(r"^caption_?\d+$")


@dataclass
class Dataset:
    images: list[str]  # absolute paths of the files (sounds, for a set of sounds)
    captions: list[str]
    caption_image: list[int]  # caption i describes images[caption_image[i]]
    name: str = ""
    modality: str = "image"  # "image" or "audio"
    missing: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): left out with their captions

    @property
    def files(self) -> list[str]:
        return self.images


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


# ---- loading ------------------------------------------------------------------------------------------
def load_dataset(path: str | Path, *, images_root: str | Path | None = None, split: str | None = None,
                 fold: int | None = None) -> "Dataset | LabelledSet":
    """A captioned dataset (:class:`Dataset`) or, for an ESC-50-style ``meta.csv`` (a label column,
    ``category``/``class``/``label``, and no caption) or a folder ``root/<label>/<files>``, a labelled
    set (:class:`mmsearch.query.evaluate_audio.LabelledSet`; ``fold``: only that fold's files)."""
    p = Path(path)
    if p.is_dir():
        from mmsearch.query.evaluate_audio import load_folder

        return load_folder(p, fold=fold)
    if not p.is_file():
        raise UsageError("no such dataset file", path=str(p))
    root = Path(images_root) if images_root is not None else None
    suffix = p.suffix.lower()
    try:
        if suffix == ".csv":
            with open(p, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                columns, rows = [c.strip() for c in reader.fieldnames or []], list(reader)
            rows = [{(k or "").strip(): v for k, v in r.items()} for r in rows]
            if _labelled(columns):
                from mmsearch.query.evaluate_audio import load_labelled_csv

                return load_labelled_csv(p, rows, columns, root=root, fold=fold)
            _no_fold(fold)
            if "youtube_id" in columns and not any(c in columns for c in FILE_KEYS):
                from mmsearch.query.evaluate_audio import audiocaps_pairs

                found, unfound = audiocaps_pairs(p, rows, root)
                return _dataset(p, found, root, "audio", unfound)
            pairs = _row_pairs(rows, f"{p} row", 2)
        elif suffix in (".jsonl", ".ndjson"):
            _no_fold(fold)
            pairs = _jsonl_pairs(p)
        elif suffix == ".json":
            _no_fold(fold)
            pairs = _json_pairs(p, split)
        else:
            raise UsageError("expected a .csv, .jsonl or .json (COCO / Karpathy) dataset, or a folder of labelled files",
                             path=str(p))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise UsageError(f"cannot read dataset: {exc}", path=str(p)) from None
    if not pairs:
        raise UsageError("dataset has no (file, caption) pairs" + (f" in split {split!r}" if split else ""), path=str(p))
    return _dataset(p, pairs, root, None)


def _no_fold(fold: int | None) -> None:
    if fold is not None:
        raise UsageError("--fold applies to a labelled dataset (an ESC-50-style meta.csv), not to captions")


def _labelled(columns: Sequence[str]) -> bool:
    return (any(c in columns for c in LABEL_KEYS) and not any(c in columns for c in CAPTION_KEYS)
            and not any(_NUMBERED.match(c) for c in columns))


def _dataset(p: Path, pairs: list[tuple[str, str]], root: Path | None, modality: str | None,
             unfound: Sequence[tuple[str, str]] = ()) -> Dataset:
    """Pairs (file, caption) → a Dataset: files resolved (``root`` or the likeliest folder), missing ones
    left out with their captions (``unfound``: those already known missing, with the reason), the
    modality told by the extensions."""
    base = root if root is not None else pick_root(p, [f for f, _ in pairs])
    images: list[str] = []
    index: dict[str, int] = {}
    captions, owner = [], []
    missing: dict[str, str] = dict(unfound)
    for name, caption in pairs:
        full = name if os.path.isabs(name) else str((base / name).resolve())
        if not os.path.isfile(full):
            missing.setdefault(full, "no such file")
            continue
        if full not in index:
            index[full] = len(images)
            images.append(full)
        captions.append(caption)
        owner.append(index[full])
    modality = modality or modality_of(images or list(missing), p)
    if not images:
        raise UsageError(f"none of the dataset's {len(missing)} files exist (looked in {base}; give the folder with "
                         f"--{'audio' if modality == 'audio' else 'images'}-root)", path=str(p))
    return Dataset(images, captions, owner, name=p.name, modality=modality, missing=sorted(missing.items()))


def modality_of(files: Sequence[str], where: Path | str = "") -> str:
    """"audio" when the files are sounds (by extension), else "image"; a mix of both is a usage error."""
    from mmsearch.ingest.audio import AUDIO_EXTENSIONS  # lazily: the audio code loads with its first use

    sounds = sum(os.path.splitext(f)[1].lower() in AUDIO_EXTENSIONS for f in files)
    if sounds and sounds < len(files):
        from mmsearch.ingest.discover import IMAGE_EXTENSIONS

        images = sum(os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS for f in files)
        if images:
            raise UsageError(f"the dataset mixes {sounds} sounds and {images} images: evaluate each on its own",
                             path=str(where))
    return "audio" if sounds * 2 > len(files) else "image"


def root_candidates(p: Path) -> list[Path]:
    """Folders a dataset's relative paths may be relative to, likeliest first (see the module's docstring)."""
    here = p.parent
    m = re.match(r"clotho_captions_(\w+)$", p.stem, re.I)
    split = m.group(1) if m else p.stem
    seen, out = set(), []
    for c in (here, here / split, here / "audio", here / "audio" / split, here.parent / "audio",
              here.parent / "audio" / split, here.parent / split):
        if c not in seen and c.is_dir():
            seen.add(c)
            out.append(c)
    return out or [here]


def pick_root(p: Path, names: Sequence[str], *, variants: Any = None) -> Path:
    """The candidate folder (:func:`root_candidates`) holding the most of a sample of ``names``
    (``variants(name)``: the relative paths a name may have, e.g. ``fold3/x.wav``)."""
    rel = [n for n in names if not os.path.isabs(n)]
    cands = root_candidates(p)
    if not rel or len(cands) == 1:
        return cands[0]
    sample = rel[:: max(1, len(rel) // 64)][:64]
    best, score = cands[0], -1
    for c in cands:
        n = sum(any(os.path.isfile(c / v) for v in (variants(s) if variants else (s,))) for s in sample)
        if n > score:
            best, score = c, n
        if n == len(sample):
            break
    return best


def pick(row: dict, names: Sequence[str], where: str) -> str:
    for n in names:
        if row.get(n) not in (None, ""):
            return str(row[n])
    raise UsageError(f"{where}: needs one of the columns/keys {', '.join(names)}")


def captions_of(row: dict, where: str) -> list[str]:
    """A row's captions: its ``caption``-like value and its numbered ``caption_N`` values (Clotho)."""
    caps = [str(row[k]).strip() for k in sorted((k for k in row if _NUMBERED.match(str(k))),
                                                key=lambda k: int(re.sub(r"\D", "", k)))
            if row.get(k) not in (None, "")]
    single = next((str(row[k]).strip() for k in CAPTION_KEYS if row.get(k) not in (None, "")), None)
    if single is not None:
        caps.insert(0, single)
    listed = row.get("captions")
    if isinstance(listed, list):
        caps.extend(str(c).strip() for c in listed)
    caps = [c for c in caps if c]
    if not caps:
        raise UsageError(f"{where}: needs one of the columns/keys {', '.join(CAPTION_KEYS)}, caption_1 … or captions")
    return caps


def _row_pairs(rows: list[dict], where: str, first: int) -> list[tuple[str, str]]:
    out = []
    for i, r in enumerate(rows):
        at = f"{where} {i + first}"
        name = pick(r, FILE_KEYS, at)
        out.extend((name, c) for c in captions_of(r, at))
    return out


def _jsonl_pairs(p: Path) -> list[tuple[str, str]]:
    out = []
    for n, line in enumerate(p.read_text(encoding="utf-8-sig").splitlines(), 1):
        if line.strip():
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise UsageError(f"line {n}: expected a JSON object", path=str(p))
            out.extend(_row_pairs([obj], f"{p} line", n))
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
def evaluate_dataset(engine: "Engine", path: str | Path, *, root: str | Path | None = None, split: str | None = None,
                     fold: int | None = None, prompt: str | None = None) -> "EvalReport | ClassifyReport":
    """:func:`load_dataset` then :func:`evaluate`: what ``mmsearch eval`` runs."""
    return evaluate(engine, load_dataset(path, images_root=root, split=split, fold=fold), prompt=prompt)


def evaluate(engine: "Engine", data: "Dataset | LabelledSet", *, ks: Sequence[int] = KS,
             prompt: str | None = None) -> "EvalReport | ClassifyReport":
    """Index the files and captions into ``engine``'s store, then measure Recall@K both ways (a labelled
    set: zero-shot accuracy, :func:`mmsearch.query.evaluate_audio.classify`, with ``prompt``)."""
    if not isinstance(data, Dataset):
        from mmsearch.query.evaluate_audio import classify

        return classify(engine, data, prompt=prompt)
    if prompt is not None:
        raise UsageError("--prompt applies to zero-shot classification (a labelled dataset), not to captions")
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
