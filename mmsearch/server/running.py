"""A uvicorn server that announces itself in ``<store>/server.json`` while it listens (see discovery)."""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any, Callable

import uvicorn

from mmsearch.server import discovery

log = logging.getLogger("mmsearch.server")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class Server(uvicorn.Server):
    """Writes the server file once the socket listens, removes it (if still its own) on shutdown.

    ``on_ready(root, url)`` is called once listening, with the real port (``port=0`` picks a free one).
    Stop it from another thread with ``server.should_exit = True``.
    """

    def __init__(self, config: uvicorn.Config, *, host: str, on_ready: Callable[[Any, str], None] | None = None) -> None:
        super().__init__(config)
        self.app = config.app
        self.host = host
        self.on_ready = on_ready
        self.url: str | None = None  # where clients on this machine reach it, once listening
        self.announced: Any = None  # the server file, while it is written

    @property
    def root(self) -> Any:
        return self.app.state.engine.store.root

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        bound, port = self.servers[0].sockets[0].getsockname()[:2]
        local = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(bound, bound)  # every interface: reach it on loopback
        self.url = f"http://{_url_host(local)}:{port}"
        self._announce()
        if self.on_ready is not None:
            from mmsearch.server.auth import page_url

            self.on_ready(self.root, page_url(f"http://{_url_host(self.host)}:{port}/", self.app.state.access_token))

    def _announce(self) -> None:
        eng = self.app.state.engine
        info = {"url": self.url, "pid": os.getpid(), "started_at": time.time(), "store": str(self.root),
                "version": _version(), "protocol": discovery.PROTOCOL, "model": eng.settings.model,
                **{name: getattr(eng.settings, name, None) for name in discovery.ENCODER_SETTINGS},
                "token": self.app.state.token}
        try:
            self.announced = discovery.write(self.root, info)
        except OSError as exc:  # a read-only store folder: serve anyway; the CLI will not find this server
            log.warning("cannot write %s (%s): `mmsearch query` will not use this server",
                        discovery.path_of(self.root), exc.strerror or exc)

    def withdraw(self) -> None:
        """Remove the server file if it is still the one this server wrote."""
        if self.announced is not None:
            discovery.remove_if_ours(self.root, pid=os.getpid(), token=self.app.state.token)
            self.announced = None

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.withdraw()  # first: no new client should pick a server that is stopping
        await super().shutdown(sockets)

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            super().run(sockets)
        finally:
            self.withdraw()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mmsearch")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def make_server(app: Any, *, host: str, port: int, log_level: str = "info",
                on_ready: Callable[[Any, str], None] | None = None) -> Server:
    return Server(uvicorn.Config(app, host=host, port=port, log_level=log_level), host=host, on_ready=on_ready)
