"""Spec string → encoder. Built-ins are registered exactly like plugins would be.

A spec ``PREFIX:REST`` goes to the factory registered for ``PREFIX``; a spec with no registered
prefix goes to the fallback (open_clip's ``ARCH:PRETRAINED`` names). A factory is called as
``factory(spec, rest, device=..., batch_size=...)`` and returns an :class:`Encoder`.

Registering and removing a factory (plugins, and tests that need a fake or wrapping encoder)::

    @register("mine")                      # specs "mine:..." now load through this factory
    def _mine(spec, rest, **kw): ...

    unregister("mine")                     # gone again: returns the factory it removed

    with registered("fake", factory):      # only inside the block; on leaving, whatever
        load_encoder("fake:x")             # "fake" named before (even a built-in) is back

A factory may itself call :func:`load_encoder` on ``rest`` to wrap another encoder; a wrapper
should keep the inner encoder's ``space``, so a store sees the vectors of the same space.
Built-in prefixes: ``local-dir``, ``builtin``, ``hf-hub``.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

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


def unregister(prefix: str) -> Factory:
    """Remove the factory for ``prefix:`` specs and return it. :class:`KeyError` if none is registered."""
    try:
        return _PREFIXES.pop(prefix)
    except KeyError:
        raise KeyError(f"no encoder factory registered for prefix {prefix!r}") from None


@contextmanager
def registered(prefix: str, factory: Factory) -> Iterator[Factory]:
    """Register ``factory`` for ``prefix:`` specs inside a ``with`` block only.

    On leaving, the factory that held the prefix before (if any, e.g. a built-in) is restored,
    else the prefix is unregistered; this also holds when the block raises.
    """
    if not isinstance(prefix, str) or not prefix or ":" in prefix:
        raise ValueError(f"a spec prefix is a non-empty name without ':', not {prefix!r}")
    previous = _PREFIXES.get(prefix)
    register(prefix)(factory)
    try:
        yield factory
    finally:
        if previous is None:
            _PREFIXES.pop(prefix, None)
        else:
            _PREFIXES[prefix] = previous


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
