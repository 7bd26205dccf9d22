"""Spec string → encoder. Built-ins are registered exactly like plugins would be.

A spec ``PREFIX:REST`` goes to the factory registered for ``PREFIX``; a spec with no registered
prefix goes to the fallback (open_clip's ``ARCH:PRETRAINED`` names). A factory is called as
``factory(spec, rest, device=..., batch_size=...)`` (plus ``runtime=``/``precision=`` when the user
set them; take ``**kw``) and returns an :class:`Encoder`.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from mmsearch.encoders.base import Encoder
from mmsearch.encoders.spec import ModelRef, builtin_ref, local_dir_ref, named_ref
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


def prefetch(spec: str, tower: str, *, device: str | None = None, batch_size: int = 64, runtime: str | None = None,
             precision: str | None = None) -> None:
    """Start loading ``spec`` (and its ``tower``, when the encoder has ``warm``) on a daemon thread.

    The next :func:`load_encoder` with the same arguments takes that encoder instead of loading its own,
    so a cold query loads its model while the rest of mmsearch is still importing. Any failure is left
    for that :func:`load_encoder` to raise (it loads again).
    """
    import threading
    from concurrent.futures import Future

    key = _key(spec, device, batch_size, runtime, precision)
    if key in _PREFETCHED:
        return
    future: Future = Future()
    _PREFETCHED[key] = future

    def load() -> None:
        try:
            enc = load_encoder(spec, device=device, batch_size=batch_size, runtime=runtime, precision=precision,
                               _prefetched=False)
            getattr(enc, "warm", lambda _tower: None)(tower)
            future.set_result(enc)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller of load_encoder, which loads again
            future.set_exception(exc)

    threading.Thread(target=load, name=f"mmsearch-prefetch-{tower}", daemon=True).start()


_PREFETCHED: dict[tuple, Any] = {}


def prefetching() -> list[str]:
    """The specs :func:`prefetch` started that no :func:`load_encoder` has taken yet."""
    return [key[0] for key in _PREFETCHED]


def _key(spec: str, *options: Any) -> tuple:
    return (spec.strip(), *options)


def load_encoder(spec: str, *, device: str | None = None, batch_size: int = 64, runtime: str | None = None,
                 precision: str | None = None, _prefetched: bool = True) -> Encoder:
    """Load the encoder a spec names. Raises :class:`ModelError` with a fix when it cannot.

    ``runtime`` (``auto``, ``torch``, ``onnx``) and ``precision`` (``auto``, ``fp32``, ``int8``) reach
    the factory only when given, so a plugin that knows nothing of them keeps working. An encoder that
    :func:`prefetch` started with the same arguments is taken over.
    """
    if _prefetched:
        future = _PREFETCHED.pop(_key(spec, device, batch_size, runtime, precision), None)
        if future is not None and future.exception() is None:
            return future.result()
    spec = spec.strip()
    prefix, sep, rest = spec.partition(":")
    factory = _PREFIXES.get(prefix) if sep else None
    options = {k: v for k, v in (("runtime", runtime), ("precision", precision)) if v is not None}
    if factory is not None:
        return factory(spec, rest, device=device, batch_size=batch_size, **options)
    for fallback in _FALLBACK:
        return fallback(spec, spec, device=device, batch_size=batch_size, **options)
    raise ModelError(f"no encoder understands model spec {spec!r}")


@dataclass(frozen=True)
class Portable:
    """A spec resolved here, to be loaded in another process (a Ray actor, ``index --ray``).

    It holds the factory this process's registry resolved the spec to, so an encoder registered here
    (a plugin, a test's) loads there too: a module-level factory travels by name (its module is imported
    there), a closure by value (Ray pickles with cloudpickle). ``device``, ``batch_size``, ``runtime``
    and ``precision`` are this process's choices; :meth:`load` may override the first two.
    """

    spec: str
    factory: Factory
    rest: str
    device: str | None = None
    batch_size: int = 64
    options: tuple[tuple[str, str], ...] = ()

    def load(self, *, device: str | None = None, batch_size: int | None = None) -> Encoder:
        return self.factory(self.spec, self.rest, device=device or self.device,
                            batch_size=batch_size or self.batch_size, **dict(self.options))


def portable(spec: str, *, device: str | None = None, batch_size: int = 64, runtime: str | None = None,
             precision: str | None = None) -> Portable:
    """The :class:`Portable` form of :func:`load_encoder`'s arguments (nothing is loaded here)."""
    spec = spec.strip()
    prefix, sep, rest = spec.partition(":")
    factory = _PREFIXES.get(prefix) if sep else None
    if factory is None:
        if not _FALLBACK:
            raise ModelError(f"no encoder understands model spec {spec!r}")
        factory, rest = _FALLBACK[0], spec
    options = tuple((k, v) for k, v in (("runtime", runtime), ("precision", precision)) if v is not None)
    return Portable(spec, factory, rest, device, batch_size, options)


def open_clip_encoder(ref: ModelRef, *, device: str | None = None, batch_size: int = 64, runtime: str | None = None,
                      precision: str | None = None) -> Encoder:
    """A model on the runtime its device gets (:mod:`mmsearch.encoders.runtime`): an open_clip CLIP, or a
    transformers CLAP when the reference's files say so (``ref.kind``).

    On the CPU: the cached ONNX export (made now, once, when there is none), so nothing imports torch
    once it exists. On CUDA/MPS, or with ``runtime="torch"``: the model on torch.
    """
    from mmsearch.encoders.runtime import check_precision, choose

    chosen, device = choose(device, runtime)
    precision = check_precision(precision)
    clap = ref.kind == "clap"
    if chosen == "torch":
        if clap:
            from mmsearch.encoders.clap import ClapEncoder

            return ClapEncoder(ref, device=device, batch_size=batch_size)
        from mmsearch.encoders.clip import OpenClipEncoder

        return OpenClipEncoder(ref, device=device, batch_size=batch_size)
    from mmsearch.encoders.cache import Entry
    from mmsearch.encoders.export import ensure_export
    from mmsearch.encoders.onnx import OnnxClapEncoder, OnnxClipEncoder

    entry = Entry.for_key(ref.key, ref.identity)
    kind = OnnxClapEncoder if clap else OnnxClipEncoder
    return kind(ref, entry, ensure_export(ref, entry), precision=precision, batch_size=batch_size)


@register("local-dir")
def _local_dir(spec: str, rest: str, **kw: Any) -> Encoder:
    return open_clip_encoder(local_dir_ref(spec, Path(rest)), **kw)


@register("builtin")
def _builtin(spec: str, rest: str, **kw: Any) -> Encoder:
    return open_clip_encoder(builtin_ref(spec, rest), **kw)


@register("hf-hub")
def _hf_hub(spec: str, rest: str, **kw: Any) -> Encoder:
    return open_clip_encoder(named_ref(spec), **kw)


@register(None)
def _open_clip_name(spec: str, rest: str, **kw: Any) -> Encoder:
    return open_clip_encoder(named_ref(spec), **kw)
