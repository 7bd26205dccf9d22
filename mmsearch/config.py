"""Settings: defaults < config file < environment < explicit arguments.

Config file: ``$MMSEARCH_CONFIG`` or ``~/.config/mmsearch/config.toml``, e.g.::

    store = "~/pictures-index"
    model = "ViT-B-16:laion2b_s34b_b88k"   # or a list: ["ViT-B-16:laion2b_s34b_b88k", "hf-hub:laion/clap-htsat-unfused"]
    device = "cuda"
    runtime = "auto"        # auto | torch | onnx  (auto: ONNX Runtime on the CPU, torch on CUDA/MPS)
    precision = "auto"      # auto | fp32 | int8   (CPU runtime; auto: fastest that keeps fidelity)
    batch_size = 128
    gpu_decode = "auto"     # auto | on | off  (JPEGs decoded by nvJPEG and preprocessed on the GPU of a CUDA model)
    max_audio_seconds = 600 # longer sounds: the first this-many seconds are indexed
    video_every = 1.5       # seconds between a video's sampled frames
    max_video_frames = 600  # frames kept per video at most (a longer video is sampled more sparsely)
    k = 20                  # results per query (`mmsearch query -k`)
    recall_target = 0.95    # approximate indexes are tuned at build to this Recall@10 against exact search
    index_memory = "auto"   # bytes of full vectors `--index auto` keeps in RAM ("8GB"; auto: a quarter of RAM)
    search_device = "auto"  # auto | cpu | cuda  (auto: large flat/IVF indexes on a GPU when CUDA works)
    db = "postgresql+psycopg://mm@db.example/photos"  # the store's truth on a server (default: its folder's SQLite)

`mmsearch config` shows every setting, its value and where it came from.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from mmsearch.errors import UsageError

DEFAULT_MODEL = "ViT-B-32:laion2b_s34b_b79k"
DEFAULT_AUDIO_MODEL = "hf-hub:laion/clap-htsat-unfused"
#: The model each kind of file is embedded with when neither --model nor the store names one.
DEFAULT_MODELS = {"image": DEFAULT_MODEL, "audio": DEFAULT_AUDIO_MODEL}
DEFAULT_STORE = "indexes/default"
#: ANN index kinds (``mmsearch.ann`` builds them; listed here so settings validate without importing it).
INDEX_KINDS = ("auto", "flat", "ivf", "hnsw", "pq", "ondisk")
#: Encoder runtimes and CPU precisions (``mmsearch.encoders.runtime`` uses them; listed here for the same reason).
RUNTIMES = ("auto", "torch", "onnx")
PRECISIONS = ("auto", "fp32", "int8")
#: Where searches run (``mmsearch.ann.placement``): auto (a GPU for large indexes when CUDA works), cpu, cuda.
SEARCH_DEVICES = ("auto", "cpu", "cuda")
#: Whether JPEGs take the tensor path (``mmsearch.ingest.gpu_decode``): auto (a torch model on CUDA), on, off.
GPU_DECODE = ("auto", "on", "off")


@dataclass(frozen=True)
class Settings:
    store: str = DEFAULT_STORE
    model: str | tuple[str, ...] | None = None  # None: the store's models, else DEFAULT_MODELS for a new store
    device: str | None = None  # None/auto: cuda when a driver and torch see one, else cpu
    runtime: str | None = None  # None/auto | torch | onnx (see mmsearch.encoders.runtime)
    precision: str | None = None  # None/auto | fp32 | int8 (the CPU runtime's precision)
    batch_size: int = 64
    workers: int | None = None  # decode processes; None: cores - 1
    gpu_decode: str = "auto"  # auto | on | off: JPEGs decoded on the model's device (see GPU_DECODE)
    index: str = "auto"  # auto | flat | ivf | hnsw | pq
    max_audio_seconds: float = 600.0  # a longer sound is indexed by its first this-many seconds (recorded)
    video_every: float = 1.5  # seconds between a video's sampled frames (mmsearch.ingest.video)
    max_video_frames: int = 600  # frames kept per video at most: a longer one is sampled more sparsely
    k: int = 10  # results per query when a query does not say
    recall_target: float | None = None  # R@10 approximate indexes are tuned to; None: each keeps its own (0.95 new)
    index_memory: str = "auto"  # full vectors `auto` keeps in RAM before it builds IVF-PQ ("8GB"; auto: RAM/4)
    search_device: str = "auto"  # auto | cpu | cuda: where searches run (mmsearch.ann.placement)
    db: str | None = None  # a PostgreSQL URL the store keeps its truth in (None: <store>/mmsearch.sqlite3)

    def index_budget(self) -> int | None:
        """``index_memory`` in bytes; None for ``auto`` (a share of physical memory, see mmsearch.ann)."""
        return memory_bytes(self.index_memory)

    def limits(self) -> dict[str, float]:
        """What decode is bounded by (see :mod:`mmsearch.ingest.decode`)."""
        return {"max_audio_seconds": self.max_audio_seconds, "video_every": self.video_every,
                "max_video_frames": self.max_video_frames}

    @classmethod
    def resolve(cls, **explicit: Any) -> "Settings":
        return cls.layered(**explicit)[0]

    @classmethod
    def layered(cls, **explicit: Any) -> tuple["Settings", dict[str, str]]:
        """The settings, and for each where its value came from: ``default``, the config file's path,
        ``MMSEARCH_<NAME>`` or ``argument`` (each layer overrides the one before)."""
        s, sources = cls(), {f.name: "default" for f in fields(cls)}
        for values, source in ((_from_file(), lambda _: str(config_path())),
                               (_from_env(), lambda name: f"MMSEARCH_{name.upper()}"),
                               ({k: v for k, v in explicit.items() if v is not None}, lambda _: "argument")):
            s = replace(s, **values)
            sources.update({name: source(name) for name in values})
        return s.checked(), sources

    def checked(self) -> "Settings":
        """These settings validated (a bad value is a :class:`UsageError` naming it), lists normalised."""
        s = self
        if s.batch_size < 1:
            raise UsageError(f"--batch-size {s.batch_size}: must be at least 1")
        if isinstance(s.model, (list, tuple)):
            s = replace(s, model=tuple(s.model) if len(s.model) != 1 else s.model[0])
            if not s.model:
                s = replace(s, model=None)
        if not s.max_audio_seconds > 0:
            raise UsageError(f"--max-audio-seconds {s.max_audio_seconds}: must be above 0")
        if not s.video_every > 0:
            raise UsageError(f"video_every {s.video_every}: must be above 0 (seconds between sampled frames)")
        if not 1 <= s.max_video_frames <= 4096:
            raise UsageError(f"max_video_frames {s.max_video_frames}: must be 1 to 4096")
        if s.k < 1:
            raise UsageError(f"-k {s.k}: must be at least 1")
        if s.workers is not None and s.workers < 0:
            raise UsageError(f"--workers {s.workers}: must be 0 or more")
        for name, allowed in (("runtime", RUNTIMES), ("precision", PRECISIONS), ("gpu_decode", GPU_DECODE),
                               ("search_device", SEARCH_DEVICES)):
            value = getattr(s, name)
            if value is not None and value not in allowed:
                what = f"--{name.replace('_', '-')}" if name != "search_device" else \
                    "search_device (MMSEARCH_SEARCH_DEVICE or the config file)"
                raise UsageError(f"{what} {value!r}: expected one of {', '.join(allowed)}")
        if s.recall_target is not None and not 0.0 < s.recall_target <= 1.0:
            raise UsageError(f"--recall-target {s.recall_target}: must be above 0 and at most 1")
        memory_bytes(s.index_memory)  # a usage error now, not at the first large build
        if s.index not in INDEX_KINDS:  # a usage error now, not after hours of indexing
            raise UsageError(f"--index {s.index!r}: expected one of {', '.join(INDEX_KINDS)}")
        return s


_NAMES = {f.name for f in fields(Settings)}
_INTS = {"batch_size", "workers", "k", "max_video_frames"}
_FLOATS = {"max_audio_seconds", "recall_target", "video_every"}
_BYTES = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20,
          "gib": 2**30, "tib": 2**40}


def without_password(url: str | None) -> str | None:
    """A database URL fit to show: ``postgresql://user:secret@host/db`` → ``postgresql://user:***@host/db``."""
    import re

    return None if url is None else re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url, count=1)


def memory_bytes(text: str) -> int | None:
    """``"8GB"``, ``"512MiB"``, ``"1000000"`` → bytes; ``"auto"`` → None. A bad value is a UsageError."""
    import re

    if str(text).strip().lower() == "auto":
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _BYTES or float(m.group(1)) <= 0:
        raise UsageError(f"index_memory {text!r}: expected auto or a size such as 8GB or 512MiB")
    return int(float(m.group(1)) * _BYTES[unit])


def _coerce(name: str, value: Any, where: str) -> Any:
    if name in _INTS:
        try:
            return int(value)
        except (TypeError, ValueError):
            raise UsageError(f"{where}: {name} must be a whole number, got {value!r}") from None
    if name in _FLOATS:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UsageError(f"{where}: {name} must be a number, got {value!r}") from None
    if name == "model" and isinstance(value, list):  # a config file may list several models
        return tuple(str(v) for v in value)
    return str(value)


def config_path() -> Path:
    env = os.environ.get("MMSEARCH_CONFIG")
    return Path(env).expanduser() if env else Path.home() / ".config" / "mmsearch" / "config.toml"


def _from_file() -> dict[str, Any]:
    path = config_path()
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read config file: {exc}", path=str(path)) from exc
    unknown = set(data) - _NAMES
    if unknown:
        raise UsageError(f"unknown settings {sorted(unknown)}", path=str(path))
    return {k: _coerce(k, v, str(path)) for k, v in data.items()}


def _from_env() -> dict[str, Any]:
    out = {}
    for name in _NAMES:
        value = os.environ.get(f"MMSEARCH_{name.upper()}")
        if value:
            out[name] = _coerce(name, value, f"MMSEARCH_{name.upper()}")
    return out
