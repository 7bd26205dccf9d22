"""Zero-shot classification of a labelled set of sounds (or images), and AudioCaps' file naming, for
:mod:`mmsearch.query.evaluate` (``mmsearch eval``).

Labelled sets (:func:`mmsearch.query.datasets.load_dataset` tells them apart from captions):

* ESC-50's ``meta/esc50.csv`` (``filename,fold,target,category,esc10,src_file,take``) with the sounds
  in ``audio/`` beside ``meta/``, as ESC-50 ships it (found without ``root``); the ``ESC-50-master``
  folder itself works too.
* Any CSV with a file column (``filename``, ``file``, ``path``, ``audio``, ``slice_file_name`` …), a
  label column (``category``, ``class`` or ``label``) and no caption, optionally ``fold`` and a class
  number (``target``/``classID``: the classes' order). UrbanSound8K's ``metadata/UrbanSound8K.csv``
  reads as is (its sounds in ``audio/fold<N>/``).
* A folder ``root/<label>/…``: every sound (or image) at any depth below a label folder.

Protocol (CLIP's and LAION-CLAP's zero-shot classification): each class becomes a text, ``prompt``
with ``{}`` replaced by the class name (``_`` → space); default ``"the sound of {}"`` for sounds
(LAION-CLAP's ESC-50 figure uses ``"This is a sound of {}."``) and ``"a photo of a {}."`` for images.
A file is predicted the class whose text embedding is closest (cosine) to its own; top-1 accuracy and
top-5 (top-N for fewer classes) over the files. All classes of the set are candidates, also when
``fold`` keeps one fold's files. The embeddings are the engine's: the files are indexed into its
store (a sound as the store keeps any sound: the mean of its windows' embeddings), the class texts
embedded by the same model's text tower. A file that does not exist or cannot be decoded is left
out and listed in the report.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from mmsearch.errors import UsageError
from mmsearch.query.datasets import FILE_KEYS, LABEL_KEYS, captions_of, modality_of, pick_root
from mmsearch.query.evaluate import left_out, space_for

if TYPE_CHECKING:
    from mmsearch.engine import Engine

DEFAULT_PROMPTS = {"audio": "the sound of {}", "image": "a photo of a {}."}
TOP = 5
_CLASS_NUMBER = ("target", "classID", "class_id", "label_id")


@dataclass
class LabelledSet:
    files: list[str]  # absolute paths
    labels: list[int]  # file i is of class classes[labels[i]]
    classes: list[str]  # every class of the set (also those a fold holds no file of)
    modality: str = "audio"
    name: str = ""
    fold: int | None = None
    missing: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): left out


@dataclass
class ClassifyReport:
    dataset: str
    model: str
    prompt: str
    classes: int
    items: int  # files classified (sounds, for a set of sounds)
    accuracy: float  # top-1
    top5: float  # the right class among the best min(5, classes)
    fold: int | None = None
    modality: str = "audio"
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)  # class → {"accuracy", "count"}
    failed: list[tuple[str, str]] = field(default_factory=list)  # left out, with the reason

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["failed"] = [{"path": p, "reason": r} for p, r in self.failed]
        noun = "sounds" if self.modality == "audio" else "images"  # named for what they count
        return {"kind": "classification", **{{"items": noun, "failed": f"failed_{noun}"}.get(k, k): v for k, v in d.items()}}


# ---- loading ------------------------------------------------------------------------------------------
def load_labelled_csv(p: Path, rows: list[dict], columns: Sequence[str], *, root: Path | None,
                      fold: int | None) -> LabelledSet:
    file_col = next((c for c in (*FILE_KEYS, "slice_file_name") if c in columns), None)
    if file_col is None:
        raise UsageError(f"a labelled CSV needs a file column ({', '.join(FILE_KEYS)})", path=str(p))
    label_col = next(c for c in LABEL_KEYS if c in columns)
    number_col = next((c for c in _CLASS_NUMBER if c in columns), None)
    items: list[tuple[str, str, int | None]] = []
    numbers: dict[str, float] = {}
    for i, r in enumerate(rows):
        name, label = (r.get(file_col) or "").strip(), (r.get(label_col) or "").strip()
        if not name or not label:
            raise UsageError(f"row {i + 2}: needs a {file_col} and a {label_col}", path=str(p))
        items.append((name, label, _int(r.get("fold"), f"row {i + 2}: fold", p) if "fold" in columns else None))
        if number_col is not None:
            numbers.setdefault(label, _number(r.get(number_col)))
    classes = sorted({lab for _, lab, _ in items}, key=lambda c: (numbers.get(c, 0.0), c))
    if fold is not None:
        if "fold" not in columns:
            raise UsageError("--fold: this dataset has no fold column", path=str(p))
        folds = sorted({f for _, _, f in items if f is not None})
        items = [it for it in items if it[2] == fold]
        if not items:
            raise UsageError(f"no files in fold {fold} (folds: {', '.join(map(str, folds))})", path=str(p))

    def variants(name: str, f: int | None = None) -> list[str]:
        return [name] if f is None else [name, f"fold{f}/{name}"]

    folds_of = {name: f for name, _, f in items}
    base = root if root is not None else pick_root(p, [n for n, _, _ in items], variants=lambda n: variants(n, folds_of.get(n)))
    index = {c: j for j, c in enumerate(classes)}
    files, labels, missing = [], [], []
    for name, label, f in items:
        found = next((str((base / v).resolve()) for v in variants(name, f) if os.path.isfile(base / v)), None)
        if found is None:
            missing.append((str((base / name).resolve()), "no such file"))
            continue
        files.append(found)
        labels.append(index[label])
    return _labelled_set(p, files, labels, classes, fold, missing, base)


def load_folder(p: Path, *, fold: int | None = None) -> LabelledSet:
    """``p/<label>/…`` (the ESC-50 folder itself: its ``meta/esc50.csv``)."""
    meta = p / "meta" / "esc50.csv"
    if meta.is_file():
        from mmsearch.query.datasets import load_dataset

        return load_dataset(meta, fold=fold)  # type: ignore[return-value]
    if fold is not None:
        raise UsageError("--fold needs a CSV with a fold column (ESC-50's meta/esc50.csv); a folder has no folds",
                         path=str(p))
    from mmsearch.ingest.audio import AUDIO_EXTENSIONS
    from mmsearch.ingest.discover import IMAGE_EXTENSIONS

    known = AUDIO_EXTENSIONS | IMAGE_EXTENSIONS
    classes, files, labels = [], [], []
    for d in sorted(x for x in p.iterdir() if x.is_dir() and not x.name.startswith(".")):
        found = sorted(str(f.resolve()) for f in d.rglob("*") if f.is_file() and not f.name.startswith(".")
                       and f.suffix.lower() in known)
        if found:
            files += found
            labels += [len(classes)] * len(found)
            classes.append(d.name)
    if not files:
        raise UsageError("expected a folder of labelled files, <folder>/<label>/<sounds or images>", path=str(p))
    return _labelled_set(p, files, labels, classes, None, [], p)


def _labelled_set(p: Path, files: list[str], labels: list[int], classes: list[str], fold: int | None,
                  missing: list[tuple[str, str]], base: Path) -> LabelledSet:
    modality = modality_of(files or [m for m, _ in missing], p)
    if not files:
        raise UsageError(f"none of the dataset's {len(missing)} files exist (looked in {base}; give the folder with "
                         f"--{'audio' if modality == 'audio' else 'images'}-root)", path=str(p))
    return LabelledSet(files, labels, classes, modality, p.name, fold, missing)


def _int(value: Any, what: str, p: Path) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise UsageError(f"{what} must be a whole number, got {value!r}", path=str(p)) from None


def _number(value: Any) -> float:
    try:
        return float(str(value).strip())
    except ValueError:
        return 0.0


def audiocaps_pairs(p: Path, rows: list[dict], root: Path | None) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """AudioCaps rows → ((sound path, caption) pairs, (what, reason) of the rows whose sound is not there)."""
    from mmsearch.ingest.audio import AUDIO_EXTENSIONS

    base = root if root is not None else p.parent
    stems: dict[str, str] = {}
    for folder, dirs, names in os.walk(base):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for n in sorted(names):
            stem, ext = os.path.splitext(n)
            if ext.lower() in AUDIO_EXTENSIONS:
                stems.setdefault(stem, str(Path(folder, n).resolve()))
    pairs, unfound = [], {}
    for i, r in enumerate(rows):
        at = f"{p} row {i + 2}"
        yid, start, cap_id = ((r.get(k) or "").strip() for k in ("youtube_id", "start_time", "audiocap_id"))
        captions = captions_of(r, at)
        hit = next((stems[n] for n in _audiocaps_names(yid, start, cap_id) if n in stems), None)
        if hit is None:
            unfound.setdefault(str(base / yid), f"no sound named by youtube_id {yid!r} or audiocap_id {cap_id!r} below {base}")
        else:
            pairs.extend((hit, c) for c in captions)
    return pairs, sorted(unfound.items())


def _audiocaps_names(yid: str, start: str, cap_id: str) -> list[str]:
    starts = [start] if start else []
    try:
        s = float(start)
        starts += [str(int(s))] if s.is_integer() else []
        starts += [f"{s:.3f}", f"{s:.3f}_{s + 10:.3f}", f"{s:.1f}_{s + 10:.1f}"]
    except ValueError:
        pass
    names = ([yid, f"Y{yid}"] + [f"{y}_{x}" for y in (yid, f"Y{yid}") for x in starts]) if yid else []
    return names + ([cap_id] if cap_id else [])


# ---- classification ---------------------------------------------------------------------------------
def classify(engine: "Engine", data: LabelledSet, *, prompt: str | None = None) -> ClassifyReport:
    """Index ``data``'s files into the engine's store and classify each zero-shot (see the module's docstring)."""
    prompt = prompt if prompt is not None else DEFAULT_PROMPTS.get(data.modality, "{}")
    if "{}" not in prompt:
        raise UsageError(f"--prompt {prompt!r}: needs a {{}} where the class name goes, e.g. \"this is a sound of {{}}\"")
    report_idx = engine.index(data.files)
    store = engine.store
    space = space_for(engine, data.modality)
    enc = engine.encoder(space.spec)
    if "text" not in enc.space.modalities:
        raise UsageError(f"{space.spec} has no text tower: it cannot classify zero-shot")
    ids, vecs = store.vectors(space.id, data.modality)
    row_of = {int(c): j for j, c in enumerate(ids)}
    sources = store.lookup_sources(data.files)
    done = [(i, row_of[sources[f].content_id]) for i, f in enumerate(data.files)
            if f in sources and sources[f].content_id in row_of]
    have = {data.files[i] for i, _ in done}
    failed = list(data.missing) + left_out(report_idx.errors, [f for f in data.files if f not in have])
    if not done:
        first = f" (first: {failed[0][0]}: {failed[0][1]})" if failed else ""
        raise UsageError(f"none of the dataset's {len(data.files)} files could be indexed{first}")
    texts = [prompt.replace("{}", c.replace("_", " ")) for c in data.classes]
    sims = vecs[[j for _, j in done]] @ np.asarray(enc.embed_texts(texts), np.float32).T
    k = min(TOP, len(data.classes))
    best = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    truth = np.array([data.labels[i] for i, _ in done])
    top1, topk = best[:, 0] == truth, (best == truth[:, None]).any(axis=1)
    per_class = {data.classes[c]: {"accuracy": float(top1[truth == c].mean()), "count": int((truth == c).sum())}
                 for c in range(len(data.classes)) if (truth == c).any()}
    return ClassifyReport(data.name, space.spec, prompt, len(data.classes), len(done), float(top1.mean()),
                          float(topk.mean()), data.fold, data.modality, per_class, failed)

