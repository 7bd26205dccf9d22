"""The datasets `mmsearch eval` reads: captioned sets of images, sounds or videos, and labelled sets.

Captioned datasets (file paths are relative to ``root``; without one, to the dataset file's folder,
or to the folder beside it where most of them are: ``<split>/``, ``audio/``, ``audio/<split>/``,
``../audio/``, ``videos/``, ``videos/all/``, ``../videos/``, ``../videos/all/``, with ``<split>`` the file's
name, ``clotho_captions_<split>.csv`` → ``<split>``):

* CSV with a file column (``image``, ``audio``, ``video``, ``file``, ``path``, ``filepath``, ``file_name``,
  ``filename``, ``sound``) and a ``caption`` (or ``text``/``title``/``description``/``sentence``) column and/or
  numbered ones (``caption_1`` … ``caption_N``); several rows per file are several captions.
  Clotho ships this: ``clotho_captions_evaluation.csv`` (``file_name,caption_1..caption_5``) beside
  its ``evaluation/`` folder of sounds, found without ``root``.
* AudioCaps CSV (``audiocap_id,youtube_id,start_time,caption``; AudioCaps ships no audio, so no
  file column): a row's sound is the file below ``root`` (default: the CSV's folder, searched
  recursively) named, without its extension, by the youtube_id, ``Y<youtube_id>``,
  ``<youtube_id>_<start_time>``, the AudioSet form ``[Y]<youtube_id>_<start>.000_<start+10>.000``, or
  the audiocap_id. A file column, when there is one, wins.
* MSR-VTT's test CSV (``key,vid_key,video_id,sentence``, e.g. ``MSRVTT_JSFUSION_test.csv``, the 1k-A
  split; no file column): a row's video is ``<video_id>.mp4`` below ``root``
  (:func:`mmsearch.query.evaluate_video.msrvtt_pairs`).
* JSONL, one object per line: ``{"image"|"audio"|"file"|"path": …, "caption": …}`` or ``"captions": […]``
  (or ``caption_1`` … keys).
* COCO captions JSON (``images`` + ``annotations``), e.g. ``captions_val2017.json``.
* Karpathy split JSON (``dataset_flickr30k.json``, ``dataset_coco.json``): filter with ``split``.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from mmsearch.errors import UsageError

if TYPE_CHECKING:
    from mmsearch.query.evaluate_audio import LabelledSet

FILE_KEYS = ("image", "audio", "video", "file", "path", "filepath", "file_name", "filename", "sound")
CAPTION_KEYS = ("caption", "text", "title", "description", "sentence")
LABEL_KEYS = ("category", "class", "label")
_NUMBERED = re.compile(r"^caption_?\d+$")


@dataclass
class Dataset:
    images: list[str]  # absolute paths of the files (sounds, for a set of sounds)
    captions: list[str]
    caption_image: list[int]  # caption i describes images[caption_image[i]]
    name: str = ""
    modality: str = "image"  # "image", "audio" or "video"
    missing: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): left out with their captions
    named_at: dict[str, str] = field(default_factory=dict)  # missing path → where the dataset names it ("row 3")

    @property
    def files(self) -> list[str]:
        return self.images


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
            if "video_id" in columns and not any(c in columns for c in FILE_KEYS):
                from mmsearch.query.evaluate_video import msrvtt_pairs

                return _dataset(p, msrvtt_pairs(p, rows), root, "video")
            pairs = _row_pairs(rows, p, "row", 2)
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


def _dataset(p: Path, pairs: Sequence[tuple[str, ...]], root: Path | None, modality: str | None,
             unfound: Sequence[tuple[str, str]] = ()) -> Dataset:
    """Pairs (file, caption[, where: "row 3"]) → a Dataset: files resolved (``root`` or the likeliest
    folder), missing ones left out with their captions (``unfound``: those already known missing, with
    the reason), the modality told by the extensions."""
    base = root if root is not None else pick_root(p, [f for f, *_ in pairs])
    images: list[str] = []
    index: dict[str, int] = {}
    captions, owner = [], []
    missing: dict[str, str] = dict(unfound)
    named_at: dict[str, str] = {}
    for name, caption, *at in pairs:
        full = name if os.path.isabs(name) else str((base / name).resolve())
        if not os.path.isfile(full):
            missing.setdefault(full, "no such file")
            if at:
                named_at.setdefault(full, at[0])
            continue
        if full not in index:
            index[full] = len(images)
            images.append(full)
        captions.append(caption)
        owner.append(index[full])
    modality = modality or modality_of(images or list(missing), p)
    if not images:
        raise UsageError(f"none of the dataset's {len(missing)} files exist (looked in {base}; give the folder with "
                         f"--{ROOT_OPTION.get(modality, 'images')}-root)", path=str(p))
    return Dataset(images, captions, owner, name=p.name, modality=modality, missing=sorted(missing.items()),
                   named_at=named_at)


ROOT_OPTION = {"audio": "audio", "video": "videos", "image": "images"}  # --<this>-root names the folder


def modality_of(files: Sequence[str], where: Path | str = "") -> str:
    """"audio" when most files are sounds (by extension), "video" when most are videos, else "image"; a
    mix of kinds is a usage error."""
    from mmsearch.ingest.audio import AUDIO_EXTENSIONS  # lazily: the audio code loads with its first use
    from mmsearch.ingest.discover import IMAGE_EXTENSIONS
    from mmsearch.ingest.video import VIDEO_EXTENSIONS

    exts = [os.path.splitext(f)[1].lower() for f in files]
    counts = {"sounds": sum(e in AUDIO_EXTENSIONS for e in exts), "videos": sum(e in VIDEO_EXTENSIONS for e in exts),
              "images": sum(e in IMAGE_EXTENSIONS for e in exts)}
    kinds = [f"{n} {kind}" for kind, n in counts.items() if n]
    if len(kinds) > 1:
        raise UsageError(f"the dataset mixes {' and '.join(kinds)}: evaluate each on its own", path=str(where))
    if counts["videos"] * 2 > len(files):
        return "video"
    return "audio" if counts["sounds"] * 2 > len(files) else "image"


def root_candidates(p: Path) -> list[Path]:
    """Folders a dataset's relative paths may be relative to, likeliest first (see the module's docstring)."""
    here = p.parent
    m = re.match(r"clotho_captions_(\w+)$", p.stem, re.I)
    split = m.group(1) if m else p.stem
    seen, out = set(), []
    for c in (here, here / split, here / "audio", here / "audio" / split, here.parent / "audio",
              here.parent / "audio" / split, here.parent / split, here / "videos", here / "videos" / "all",
              here.parent / "videos", here.parent / "videos" / "all"):
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


def _row_pairs(rows: list[dict], p: Path, word: str, first: int) -> list[tuple[str, str, str]]:
    """(file, caption, "row N") for every caption of every row (``word``: "row" or "line")."""
    out = []
    for i, r in enumerate(rows):
        here = f"{word} {i + first}"
        name = pick(r, FILE_KEYS, f"{p} {here}")
        out.extend((name, c, here) for c in captions_of(r, f"{p} {here}"))
    return out


def _jsonl_pairs(p: Path) -> list[tuple[str, str, str]]:
    out = []
    for n, line in enumerate(p.read_text(encoding="utf-8-sig").splitlines(), 1):
        if line.strip():
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise UsageError(f"line {n}: expected a JSON object", path=str(p))
            out.extend(_row_pairs([obj], p, "line", n))
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
