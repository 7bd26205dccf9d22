"""Model spec → :class:`ModelRef`: what a spec names, worked out without importing torch or open_clip.

The reference carries the space key (family, weights tag, preprocessing version), which is all a
store needs to recognise its space and all the runtime cache needs to find an export. Checking that
an architecture or tag exists needs open_clip, so it happens when the model is really loaded.

Spec grammar (see :mod:`mmsearch.encoders.clip`): ``ARCH:TAG``, ``ARCH:random[@SEED]``,
``hf-hub:ORG/REPO``, ``local-dir:PATH``, ``builtin:NAME``.

The model's *kind* comes from its files, not its name: a folder with ``open_clip_config.json`` is an
open_clip CLIP (images + texts); one with a ``config.json`` whose ``model_type`` is ``clap`` is a
transformers CLAP (sounds + texts, :mod:`mmsearch.encoders.clap`). A hub repo is looked up in the
local Hugging Face cache the same way; one not cached yet is taken as CLAP when its name says so
(``laion/clap-htsat-unfused``, ``laion/larger_clap_general`` …), else as open_clip.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from mmsearch.encoders.base import PREPROCESS_VERSION
from mmsearch.errors import ModelError, UsageError


@dataclass(frozen=True)
class ModelRef:
    """One open_clip model as a spec names it."""

    spec: str  # as the user wrote it
    model_name: str  # what open_clip's factory takes: ARCH, hf-hub:ORG/REPO or local-dir:/abs/path
    pretrained: str | None  # open_clip pretrained tag (None: weights come with model_name)
    weights: str  # the weights tag in the space key
    random_seed: int | None = None
    identity: str = ""  # what the key leaves out but an export depends on (a local model's config, weights size)
    kind: str = "open_clip"  # open_clip (images + texts) | clap (sounds + texts, transformers)

    @property
    def family(self) -> str:
        local = self.model_name.startswith("local-dir:")
        if self.kind == "clap":
            return "clap-local-dir" if local else f"clap:{self.model_name}"
        return "open_clip-local-dir" if local else self.model_name

    @property
    def folder(self) -> Path | None:
        """The model's folder for a ``local-dir:`` (or built-in) model."""
        return Path(self.model_name.split(":", 1)[1]) if self.model_name.startswith("local-dir:") else None

    @property
    def modalities(self) -> tuple[str, ...]:
        return ("audio", "text") if self.kind == "clap" else ("image", "text")

    @property
    def key(self) -> str:
        """The space key (:attr:`mmsearch.encoders.base.SpaceInfo.key`) the model's vectors carry."""
        return f"{self.family}|{self.weights}|pp{PREPROCESS_VERSION}"


def weights_fingerprint(path: Path) -> str:
    """A cheap, content-based tag for a weights file: size + first and last MiB."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read())
    return "sha256-" + h.hexdigest()[:16]


def find_weights(folder: Path) -> Path | None:
    for pattern in ("*.safetensors", "*.bin", "*.pth", "*.pt"):
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
    return None


def builtin_dir(name: str) -> Path:
    return Path(__file__).resolve().parent.parent / "models" / name


def local_dir_ref(spec: str, folder: Path) -> ModelRef:
    """A ``local-dir:`` folder (config and weights checked here: open_clip would run random weights)."""
    folder = folder.expanduser().resolve()
    if not folder.is_dir():
        raise ModelError(f"model folder not found for {spec!r}", path=str(folder))
    config = folder / "open_clip_config.json"
    if not config.is_file() and _is_clap_config(folder / "config.json"):
        return _clap_local_ref(spec, folder)
    if not config.is_file():
        raise ModelError("not a model folder: neither open_clip_config.json (open_clip) nor a CLAP config.json "
                         "(transformers) is there", path=str(folder))
    try:
        json.loads(config.read_text(encoding="utf-8"))["model_cfg"]
    except (ValueError, KeyError) as exc:
        raise ModelError(f"invalid open_clip_config.json ({exc})", path=str(config)) from exc
    weights = find_weights(folder)
    if weights is None:
        raise ModelError("no weights file (*.safetensors, *.bin, *.pth) in model folder", path=str(folder))
    identity = hashlib.sha256(config.read_bytes()).hexdigest()[:16] + f":{weights.stat().st_size}" + _side_files(folder)
    return ModelRef(spec, f"local-dir:{folder}", None, weights_fingerprint(weights), identity=identity)


#: Files beside ``open_clip_config.json`` that a model with a Hugging Face text side reads (its text model's
#: config, its tokenizer): an export made with other ones is not this model's.
SIDE_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _side_files(folder: Path) -> str:
    """A digest of the :data:`SIDE_FILES` present ("" when none is: the identity of a plain CLIP is unchanged),
    each by :func:`weights_fingerprint` (a 30 MB tokenizer.json is not read whole at every load)."""
    found = [folder / name for name in SIDE_FILES if (folder / name).is_file()]
    if not found:
        return ""
    h = hashlib.sha256()
    for path in found:
        h.update(f"{path.name}={weights_fingerprint(path)};".encode())
    return ":" + h.hexdigest()[:16]


def _is_clap_config(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("model_type") == "clap"
    except (OSError, ValueError, AttributeError):
        return False


def _clap_local_ref(spec: str, folder: Path) -> ModelRef:
    weights = find_weights(folder)
    if weights is None:
        raise ModelError("no weights file (*.safetensors, *.bin) in CLAP model folder", path=str(folder))
    config = folder / "config.json"
    identity = hashlib.sha256(config.read_bytes()).hexdigest()[:16] + f":{weights.stat().st_size}"
    return ModelRef(spec, f"local-dir:{folder}", None, weights_fingerprint(weights), identity=identity, kind="clap")


def _hub_kind(repo: str) -> str:
    """open_clip or clap for a hub repo: by its cached config files, else by its name."""
    try:
        from huggingface_hub import try_to_load_from_cache

        for name, kind in (("open_clip_config.json", "open_clip"), ("config.json", "clap")):
            found = try_to_load_from_cache(repo, name)
            if isinstance(found, str):
                return kind if kind == "open_clip" or _is_clap_config(Path(found)) else "open_clip"
    except Exception:  # no hub library or an odd cache: decide by name
        pass
    return "clap" if "clap" in repo.lower() else "open_clip"


def builtin_ref(spec: str, name: str) -> ModelRef:
    folder = builtin_dir(name)
    if not folder.is_dir():
        available = sorted(p.name for p in folder.parent.glob("*/")
                           if (p / "open_clip_config.json").exists() or (p / "config.json").exists())
        raise ModelError(f"no built-in model {name!r}", hint=f"built-in models: {', '.join(available) or 'none'}")
    return local_dir_ref(spec, folder)


def named_ref(spec: str) -> ModelRef:
    """``ARCH:TAG``, ``ARCH:random[@seed]`` or ``hf-hub:org/repo`` (names checked when loaded)."""
    if spec.startswith("hf-hub:"):
        repo = spec.split(":", 1)[1]
        return ModelRef(spec, spec, None, repo, kind=_hub_kind(repo))
    arch, sep, tag = spec.partition(":")
    if not sep or not tag or not arch:
        raise UsageError(
            f"--model {spec!r}: expected ARCH:PRETRAINED (e.g. ViT-B-32:laion2b_s34b_b79k), "
            "hf-hub:ORG/REPO, local-dir:PATH or builtin:NAME"
        )
    if tag == "random" or tag.startswith("random@"):
        try:
            seed = int(tag.split("@", 1)[1]) if "@" in tag else 0
        except ValueError:
            raise UsageError(f"--model {spec!r}: the seed after 'random@' must be a whole number") from None
        return ModelRef(spec, arch, None, f"random@{seed}", random_seed=seed)
    return ModelRef(spec, arch, tag, tag)
