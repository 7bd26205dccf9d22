"""What an open_clip model needs besides its own config and weights, and where it finds it offline.

Models whose text side is a Hugging Face model (multilingual CLIP: ``xlm-roberta-base-ViT-B-32``,
whose text tower is transformers' XLM-RoBERTa) or whose tokenizer is a Hugging Face one (SigLIP and
SigLIP 2: ``hf_tokenizer_name`` in the config, e.g. the Gemma tokenizer of ``timm/ViT-B-16-SigLIP2``)
read more files than open_clip's own: the text model's ``config.json`` and the tokenizer's files.

* A ``local-dir:`` copy keeps them inside the folder: open_clip already reads the tokenizer from the
  folder; :func:`local_overrides` also points the text tower's config there (``config.json`` of the
  text model beside ``open_clip_config.json``), so nothing is looked up on the hub.
* A hub spec (``hf-hub:ORG/REPO``, ``ARCH:TAG``) finds them in the Hugging Face cache
  (``HF_HUB_CACHE``) as open_clip and transformers download them. :func:`missing` looks them up
  there without the network, so an offline load that cannot work says which files of which repos
  are missing instead of open_clip's first exception (or, for a hub repo without cached weights,
  instead of silently running random weights).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmsearch.encoders.spec import ModelRef

#: open_clip's weights files in a hub repo, safetensors first (as open_clip looks for them).
WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
#: A tokenizer is there when one of these is.
TOKENIZER = ("tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class Need:
    """One file (any of ``files``) of a hub repo a model reads."""

    repo: str
    files: tuple[str, ...]
    what: str
    or_absent: bool = False  # also met by the cache's record that the repo has no such file

    def __str__(self) -> str:
        record = ", or the record that the repo has none, which an online load leaves" if self.or_absent else ""
        return f"{self.what} ({self.repo}: {' or '.join(self.files)}{record})"

    def met(self) -> bool:
        return any(cached(self.repo, f, or_absent=self.or_absent) is not None for f in self.files)


def offline() -> bool:
    """Whether the Hugging Face libraries will not reach the hub (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``)."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return bool(constants.HF_HUB_OFFLINE) or flag.strip().lower() in ("1", "true", "yes", "on")


def cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def cached(repo: str, filename: str, *, or_absent: bool = False) -> str | None:
    """The cached path of ``filename`` in hub repo ``repo`` (latest cached revision of main), or None;
    ``or_absent``: ``""`` (not None) when the cache records that the repo has no such file (``.no_exist``)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo, filename)
    except Exception:  # an odd repo id or cache layout: not there
        return None
    if isinstance(found, str):
        return found
    return "" if or_absent and found is not None else None


def model_config(ref: ModelRef) -> dict[str, Any] | None:
    """The model's ``model_cfg`` without loading it, or None when it cannot be read (a hub repo not cached)."""
    path: str | Path | None
    if ref.folder is not None:
        path = ref.folder / "open_clip_config.json"
    elif ref.model_name.startswith("hf-hub:"):
        path = cached(ref.model_name.split(":", 1)[1], "open_clip_config.json")
    else:
        import open_clip

        cfg = open_clip.get_model_config(ref.model_name)
        return dict(cfg) if cfg else None
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))["model_cfg"] if path else None
    except (OSError, ValueError, KeyError):
        return None


def needs(ref: ModelRef, cfg: dict[str, Any] | None) -> list[Need]:
    """The hub files loading ``ref`` reads (none for a ``local-dir:`` model)."""
    if ref.folder is not None:
        return []
    found: list[Need] = []
    if ref.model_name.startswith("hf-hub:"):
        repo = ref.model_name.split(":", 1)[1]
        found.append(Need(repo, ("open_clip_config.json",), "model config"))
        found.append(Need(repo, WEIGHTS, "weights"))
    elif ref.pretrained is not None:
        found += _tag_weights(ref.model_name, ref.pretrained)
    text = (cfg or {}).get("text_cfg", {})
    if text.get("hf_model_name"):
        found.append(Need(text["hf_model_name"], ("config.json",), "text model config"))
    name = text.get("hf_tokenizer_name")
    if name:
        found.append(Need(name, TOKENIZER, "tokenizer"))
        if name != text.get("hf_model_name"):  # transformers' AutoTokenizer reads the repo's config.json first
            found.append(Need(name, ("config.json",), "the tokenizer's model config", or_absent=True))
    return found


def _tag_weights(arch: str, tag: str) -> list[Need]:
    import open_clip

    pcfg = open_clip.get_pretrained_cfg(arch, tag) or {}
    location = pcfg.get("hf_hub", "")
    if not location or "file" in pcfg:  # weights from a URL (torch's cache) or a file: not the hub cache's business
        return []
    repo, filename = os.path.split(location)  # "org/repo/" names the default weights file
    if not filename or filename == WEIGHTS[1]:
        return [Need(repo, WEIGHTS, "weights")]
    stem = filename.rsplit(".", 1)[0]
    alternatives = (f"{stem}.safetensors", filename) if filename.endswith((".bin", ".pth")) else (filename,)
    return [Need(repo, alternatives, "weights")]


def missing(ref: ModelRef) -> list[Need]:
    """The hub files ``ref`` reads that the local cache lacks (the config's own needs once it is cached)."""
    cfg = model_config(ref)
    return [n for n in needs(ref, cfg) if not n.met()]


def missing_in_folder(ref: ModelRef, cfg: dict[str, Any] | None) -> list[str]:
    """What a ``local-dir:`` copy with a Hugging Face text side lacks: the tokenizer's files (open_clip
    reads them from the folder), and, offline, the text model's ``config.json`` when neither the folder
    nor the hub cache has it."""
    folder, text = ref.folder, (cfg or {}).get("text_cfg", {})
    if folder is None:
        return []
    absent = []
    if text.get("hf_tokenizer_name") and not any((folder / f).is_file() for f in TOKENIZER):
        absent.append(f"the tokenizer ({' or '.join(TOKENIZER)}, as {text['hf_tokenizer_name']}'s save_pretrained "
                      "writes them)")
    name = text.get("hf_model_name")
    if name and text_model_config(folder) is None and not cached(name, "config.json") and offline():
        absent.append(f"the text model's config.json ({name}'s)")
    return absent


def explain(ref: ModelRef, absent: list[Need]) -> str:
    return (f"cannot load model {ref.spec!r}: the Hugging Face hub cannot be reached (offline) and the "
            f"local cache ({cache_dir()}) lacks " + "; ".join(str(n) for n in absent))


def local_overrides(ref: ModelRef, cfg: dict[str, Any] | None) -> dict[str, Any]:
    """open_clip model arguments for a ``local-dir:`` copy whose text tower is a transformers model:
    its config is the folder's ``config.json`` (kept beside ``open_clip_config.json``), not the hub's."""
    folder = ref.folder
    text = (cfg or {}).get("text_cfg", {})
    if folder is None or not text.get("hf_model_name") or not text_model_config(folder):
        return {}
    return {"text_cfg": {**text, "hf_model_name": str(folder), "hf_model_pretrained": False}}


def text_model_config(folder: Path) -> dict[str, Any] | None:
    """The transformers text model config in a model folder (``config.json`` with a ``model_type``)."""
    try:
        found = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and found.get("model_type") not in (None, "clap") else None
