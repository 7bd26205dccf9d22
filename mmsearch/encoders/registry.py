"""Spec string → encoder. Built-ins are registered exactly like plugins would be."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from mmsearch.encoders.base import Encoder
from mmsearch.errors import ModelError

Factory = Callable[..., Encoder]
_PREFIXES: dict[str, Factory] = {}
_FALLBACK: list[Factory] = []


def register(prefix: str | None) -> Callable[[Factory], Factory]:
    """Register a factory for specs starting with ``prefix:`` (``None``: the fallback for bare specs)."""

    def deco(fn: Factory) -> Factory:
        if prefix is None:
            _FALLBACK.append(fn)
        else:
            _PREFIXES[prefix] = fn
        return fn

    return deco


def load_encoder(spec: str, *, device: str | None = None, batch_size: int = 64) -> Encoder:
    """Load the encoder a spec names. Raises :class:`ModelError` with a fix when it cannot."""
    spec = spec.strip()
    prefix, sep, rest = spec.partition(":")
    factory = _PREFIXES.get(prefix) if sep else None
    if factory is not None:
        return factory(spec, rest, device=device, batch_size=batch_size)
    for fallback in _FALLBACK:
        return fallback(spec, spec, device=device, batch_size=batch_size)
    raise ModelError(f"no encoder understands model spec {spec!r}")


@register("local-dir")
def _local_dir(spec: str, rest: str, **kw: Any) -> Encoder:
    from mmsearch.encoders.clip import load_local_dir

    return load_local_dir(spec, Path(rest), **kw)


@register("builtin")
def _builtin(spec: str, rest: str, **kw: Any) -> Encoder:
    from mmsearch.encoders.clip import builtin_dir, load_local_dir

    folder = builtin_dir(rest)
    if not folder.is_dir():
        available = sorted(p.name for p in folder.parent.glob("*/") if (p / "open_clip_config.json").exists())
        raise ModelError(f"no built-in model {rest!r}", hint=f"built-in models: {', '.join(available) or 'none'}")
    return load_local_dir(spec, folder, **kw)


@register("hf-hub")
def _hf_hub(spec: str, rest: str, **kw: Any) -> Encoder:
    from mmsearch.encoders.clip import load_open_clip

    return load_open_clip(spec, **kw)


@register(None)
def _open_clip_name(spec: str, rest: str, **kw: Any) -> Encoder:
    from mmsearch.encoders.clip import load_open_clip

    return load_open_clip(spec, **kw)
