"""``mmsearch serve``: a thin HTTP layer over :class:`mmsearch.Engine` (FastAPI + a static page).

FastAPI and uvicorn are an optional extra (``pip install 'mmsearch[server]'``); this module imports
them only when a server is made, so the rest of mmsearch works without them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from mmsearch.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from fastapi import FastAPI

EXTRA_HINT = "install the server extra: pip install 'mmsearch[server]'"


class ServerExtraMissing(UsageError):
    """FastAPI, uvicorn or python-multipart is not installed."""


def _require(*modules: str) -> None:
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            raise ServerExtraMissing(f"`mmsearch serve` needs the package {name!r}: {EXTRA_HINT}") from None


def create_app(store_path: str | os.PathLike | None = None, model: str | None = None,
               device: str | None = None) -> "FastAPI":
    """The FastAPI app serving one store (see :func:`mmsearch.server.app.create_app`)."""
    _require("fastapi", "multipart")
    from mmsearch.server.app import create_app as _create

    return _create(store_path, model=model, device=device)


def serve(store_path: str | os.PathLike | None = None, *, model: str | None = None, device: str | None = None,
          host: str = "127.0.0.1", port: int = 8765, log_level: str = "info", on_ready: Any = None) -> None:
    """Open the store, then serve it with uvicorn until interrupted (blocks)."""
    _require("fastapi", "multipart", "uvicorn")
    import uvicorn

    app = create_app(store_path, model=model, device=device)  # store errors surface here, before binding
    if on_ready is not None:
        on_ready(app.state.engine.store.root, f"http://{host}:{port}/")
    uvicorn.run(app, host=host, port=port, log_level=log_level)
