"""``mmsearch serve``: a thin HTTP layer over :class:`mmsearch.Engine` (FastAPI + a static page).

FastAPI and uvicorn are an optional extra (``pip install 'mmsearch[server]'``); this module imports
them only when a server is made, so the rest of mmsearch works without them.

Modules: ``app`` (the routes), ``params`` (their parameters and error answers), ``patterns`` (the
filter grammar as the schema's patterns), ``files`` (originals and thumbnails), ``auth`` (the token
and CORS), ``served_query`` (the CLI's endpoint), ``running``
(uvicorn, announcing the server in ``<store>/server.json``), ``discovery`` (that file) and ``client``
(the served path of `mmsearch query`); the last two use the standard library only, so a served query
imports neither numpy nor the model.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Sequence

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
               device: str | None = None, token: str | None = None, *, access_token: str | None = None,
               cors: list[str] | None = None, **more: Any) -> "FastAPI":
    """The FastAPI app serving one store (see :func:`mmsearch.server.app.create_app`)."""
    _require("fastapi", "multipart")
    from mmsearch.server.app import create_app as _create

    return _create(store_path, model=model, device=device, token=token, access_token=access_token, cors=cors, **more)


def make_server(store_path: str | os.PathLike | None = None, *, model: str | None = None,
                device: str | None = None, host: str = "127.0.0.1", port: int = 8765, log_level: str = "info",
                on_ready: Any = None, token: str | None = None, cors: list[str] | None = None,
                db: str | None = None) -> Any:
    """Open the store and make its uvicorn server (``.run()`` blocks; ``.should_exit = True`` stops it).

    ``token``: what every request must carry (see :mod:`mmsearch.server.auth`); on a host other than
    loopback one is generated when none is given (``server.access_token``, and in the URL passed to
    ``on_ready``). ``cors``: origins allowed to call the API from a browser.

    Once listening it writes ``<store>/server.json`` (url, pid, CLI token …; mode 0600) so that
    `mmsearch query` sends its queries here, and calls ``on_ready(store_root, url)`` (the page's address,
    with ``?token=`` when one is required); on shutdown it removes the file if it is still its own.
    ``port=0``: any free port. ``db``: the store's PostgreSQL URL (see :meth:`mmsearch.Engine.open`).
    """
    _require("fastapi", "multipart", "uvicorn")
    from mmsearch.server.auth import access_token, check_origins
    from mmsearch.server.running import make_server as _make

    required, _generated = access_token(host, token)  # a bad --token or --cors is refused before the store opens
    check_origins(cors)
    app = create_app(store_path, model=model, device=device, access_token=required,
                     cors=cors, db=db)  # store errors surface here, before binding
    return _make(app, host=host, port=port, log_level=log_level, on_ready=on_ready)


def serve(store_path: str | os.PathLike | None = None, *, model: str | None = None, device: str | None = None,
          host: str = "127.0.0.1", port: int = 8765, log_level: str = "info", on_ready: Any = None,
          token: str | None = None, cors: list[str] | None = None,
          watch: Sequence[str | os.PathLike] | None = None, on_watch: Any = None, db: str | None = None) -> Any:
    """Open the store, then serve it with uvicorn until interrupted (blocks); see :func:`make_server`.

    ``watch``: folders to keep the store in sync with while serving (:meth:`mmsearch.Engine.watch` in a
    thread of this process, with an engine of its own, writing through the store's writer lock; the
    server keeps answering while it writes). ``on_watch`` hears of each sync; returns the watch's
    :class:`mmsearch.types.WatchReport` (None without ``watch``). If the watch fails, the server stops
    and its error is raised.
    """
    if not watch:
        make_server(store_path, model=model, device=device, host=host, port=port, log_level=log_level,
                    on_ready=on_ready, token=token, cors=cors, db=db).run()
        return None
    return _watching(store_path, model, device, db, list(watch), on_watch,
                     lambda: make_server(store_path, model=model, device=device, host=host, port=port,
                                         log_level=log_level, on_ready=on_ready, token=token, cors=cors, db=db))


def _watching(store_path: Any, model: str | None, device: str | None, db: str | None, paths: list, on_watch: Any,
              make: Any) -> Any:
    """Run the server ``make()`` gives while a watcher thread syncs ``paths``; stop both together."""
    import threading

    from mmsearch.engine import Engine

    writer = Engine.open(store_path, model=model, device=device, db=db)  # first: it makes a new store, which the server opens
    try:
        server, stop, out = make(), threading.Event(), {}

        def run() -> None:
            try:
                out["report"] = writer.watch(paths, on_sync=on_watch, stop_event=stop)
            except BaseException as exc:  # told in the main thread once the server has stopped
                out["error"] = exc
                server.should_exit = True

        thread = threading.Thread(target=run, name="mmsearch-watch", daemon=True)
        thread.start()
        try:
            server.run()
        finally:
            stop.set()  # the watch stops between committed batches
            while thread.is_alive():
                try:
                    thread.join()
                except KeyboardInterrupt:  # another Ctrl-C: it is stopping already; wait for its summary
                    pass
        if "error" in out:
            raise out["error"]
        return out["report"]
    finally:
        writer.close()
