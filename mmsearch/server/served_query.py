"""``POST /api/query``: the CLI's endpoint (`mmsearch query` on a served store, see :mod:`mmsearch.server.client`).

Not in the OpenAPI schema: it is a private exchange between the CLI and its server, versioned by
:data:`mmsearch.server.discovery.PROTOCOL`. Header ``X-Mmsearch-Token`` (from ``<store>/server.json``,
mode 0600) is required (403 without it); the query parameters are Engine.search's (``q`` repeatable:
several texts; ``where`` repeatable; ``since``, ``until``, ``path``, ``collapse_dups`` 0/1/cosine since
protocol 3; ``moments`` and ``pooling`` since protocol 4, whose hits carry their ``moments``), the body
is the query image's bytes, or the query sound's with ``media=audio`` (empty for a text query); the answer is ``{"hits": [...], "notices": [...]}``, or an
mmsearch error with its ``exit_code`` (what in-process `mmsearch query` exits with).

Arguments go to Engine.search unchecked, so a bad one raises the very UsageError it raises in-process.
"""

from __future__ import annotations

import hmac
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from mmsearch.engine import Engine
from mmsearch.errors import MmsearchError, UsageError
from mmsearch.server.discovery import MAX_UPLOAD_BYTES, QUERY_PATH, TOKEN_HEADER
from mmsearch.server.params import HTTPError, status_for


def _integer(params: Any, name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r}: must be a positive whole number") from None


def _number(params: Any, name: str) -> float | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        return float(raw)  # nan and inf parse: Engine.search refuses them with its own message
    except ValueError:
        raise UsageError(f"{name}={raw!r}: must be a number") from None


def _collapse(raw: str | None) -> bool | float:
    """``collapse_dups``: absent or 0 (no), 1 (the default threshold), or a cosine."""
    if raw is None or raw == "0":
        return False
    if raw == "1":
        return True
    try:
        return float(raw)  # Engine.search checks the range with its own message
    except ValueError:
        raise UsageError(f"collapse_dups={raw!r}: must be 0, 1 or a cosine") from None


def add_route(app: FastAPI, engine: Engine, locked: Callable[..., Any]) -> None:
    token = app.state.token.encode()

    @app.post(QUERY_PATH, include_in_schema=False)
    async def query(request: Request) -> JSONResponse:
        if not hmac.compare_digest(request.headers.get(TOKEN_HEADER, "").encode(), token):
            return JSONResponse({"error": f"missing or wrong {TOKEN_HEADER} (see <store>/server.json)"}, status_code=403)
        p = request.query_params
        media = p.get("media", "image")
        what = "sound" if media == "audio" else "image"
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_UPLOAD_BYTES:
                raise HTTPError(413, f"query {what} is over {MAX_UPLOAD_BYTES >> 20} MiB")
        notes: list[str] = []
        try:
            if media not in ("image", "audio"):
                raise UsageError(f"media={media!r}: must be image or audio")
            k, moments = _integer(p, "k"), _integer(p, "moments")
            query = bytes(body) if body else None
            texts = p.getlist("q")
            kw = dict(text=texts[0] if len(texts) == 1 else texts or None, image=query if media == "image" else None,
                      audio=query if media == "audio" else None, k=10 if k is None else k,
                      type=p.get("type"), under=p.get("under"), space=p.get("space"),
                      nprobe=_integer(p, "nprobe"), ef_search=_integer(p, "ef_search"),
                      min_score=_number(p, "min_score"), where=tuple(p.getlist("where")), since=p.get("since"),
                      until=p.get("until"), path=p.get("path"), collapse_dups=_collapse(p.get("collapse_dups")),
                      moments=1 if moments is None else moments, pooling=p.get("pooling", "peak"))
            hits = await run_in_threadpool(locked, lambda: engine.search(**kw), notes)
        except MmsearchError as exc:
            return JSONResponse({"error": str(exc), "exit_code": exc.exit_code}, status_code=status_for(exc))
        return JSONResponse({"hits": [h.to_dict() for h in hits], "notices": notes})
