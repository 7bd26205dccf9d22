"""The HTTP API and web page over one read-side :class:`mmsearch.Engine`. Translates, holds no logic.

Endpoints (JSON unless noted; the OpenAPI schema at ``/openapi.json`` is the contract, checked by
schemathesis in tests/test_server_contract.py)::

    GET  /                          the search page (static HTML + vanilla JS, no network needed)
    GET  /api/search?q=…&OPTIONS    text query → list of hits (Hit.to_dict()); q in the query language
    GET  /api/similar/{content_id}?OPTIONS
                                    more like an indexed item (its stored vectors), plus OPTIONS' like/unlike
    POST /api/search/image?OPTIONS  image query (multipart field ``file``)
    POST /api/search/audio?OPTIONS  sound query (multipart field ``file``); sound hits carry ``duration``
                                    and the best-matching window ``start``/``end`` (seconds)
    GET  /api/stats                 Stats.to_dict()
    GET  /api/errors                files that could not be indexed
    GET  /api/dups?threshold=&type=&under=
                                    near-duplicate clusters (DupCluster.to_dict(); members by content id)
    GET  /api/file/{content_id}     the original file of an indexed image, sound or video (byte ranges, ETag,
                                    ``?download=true`` for an attachment); see :mod:`mmsearch.server.files`
    GET  /api/thumb/{content_id}?size=128|256|512&t=SECONDS
                                    a JPEG thumbnail of an indexed image, or a video's frame at ``t``
                                    (default 1 s), made once, cached in the store
    POST /api/query                 the CLI's endpoint (:mod:`mmsearch.server.served_query`; not in the schema)

OPTIONS are :class:`mmsearch.server.params.SearchOptions` (k, type, moments, pooling, under, space, nprobe,
ef_search, min_score, the filters where/since/until/path, collapse_dups/dups_threshold, like/unlike content ids),
declared once for every search endpoint and passed to :meth:`Engine.search` as they are. The filters are
read by the engine's reader first (a bad one is a 422 naming the term); unknown like/unlike ids are 404. ``space`` names one of the store's spaces; the
server never loads a model a request names (an unknown space is 404).

Errors are ``{"error": message}``: 400 bad argument the schema cannot express (UsageError), 401 no or
wrong token (:mod:`mmsearch.server.auth`), 404 unknown item, 413 upload too large, 416 range outside the
file, 422 invalid parameter, 500 model problem (ModelError), 503 store problem (StoreError).

Thread safety: endpoints are plain ``def`` (FastAPI runs them in a thread pool). The Engine's
query path updates shared caches (loaded encoders, the space list, the in-memory FAISS indexes,
which are caught up when a writer has committed since), so every Engine call is made under one
lock. This costs little: the model forward pass is serialised by the encoder's own lock anyway,
and a FAISS search over the cached index is fast. Reads that touch only the database (file and
thumbnail lookups) need no lock: the store gives each thread its own snapshot.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Callable, TypeVar

from fastapi import Depends, FastAPI, Header, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from mmsearch.engine import Engine
from mmsearch.errors import MmsearchError, UsageError
from mmsearch.server import files, served_query
from mmsearch.server.auth import guard
from mmsearch.server.discovery import MAX_UPLOAD_BYTES
from mmsearch.server.params import (NOT_BLANK, Download, DupsThreshold, DupsType, HTTPError, SearchOptions, Text,
                                    ThumbAt, ThumbSize, Under, errors, narrow_to_store, status_for, upload,
                                    upload_schema)

log = logging.getLogger("mmsearch.server")

STATIC = Path(__file__).resolve().parent / "static"
T = TypeVar("T")

ContentId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="A content id from a search hit.")]
Options = Annotated[SearchOptions, Depends()]
ImageUpload = upload("image")
SoundUpload = upload("sound")


def create_app(store_path: str | os.PathLike | None = None, *, model: str | None = None,
               device: str | None = None, token: str | None = None, access_token: str | None = None,
               cors: list[str] | None = None, thumb_cache_bytes: int = files.THUMB_CACHE_BYTES,
               db: str | None = None) -> FastAPI:
    """An app serving the store at ``store_path`` (default: the configured store).

    The store is opened now, read-only (``create=False``): a missing or damaged store raises
    :class:`StoreError` here, before anything listens. The model loads on the first query.
    ``token``: what ``/api/query`` requires in its header (default: a new random one, ``app.state.token``).
    ``access_token``: what every other request requires (None: nothing; see :mod:`mmsearch.server.auth`).
    ``cors``: origins allowed to call the API from a browser (None: no CORS). ``db``: the store's
    PostgreSQL URL (see :meth:`mmsearch.Engine.open`).
    """
    engine = Engine.open(store_path, model=model, device=device, create=False, db=db)
    lock = threading.Lock()

    def locked(call: Callable[[], T], notes: list[str] | None = None) -> T:
        with lock:
            try:
                return call()
            finally:
                for note in engine.notices:  # repairs the engine made on its own (e.g. an index caught up)
                    log.warning("note: %s", note)
                if notes is not None:
                    notes.extend(engine.notices)
                engine.notices.clear()

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        try:
            yield
        finally:
            engine.close()

    app = FastAPI(title="mmsearch", summary="Cross-modal search over one mmsearch store.", lifespan=lifespan)
    app.state.engine = engine
    app.state.engine_lock = lock
    app.state.token = token or secrets.token_urlsafe(32)
    app.state.access_token = access_token

    _error_handlers(app)
    _search_routes(app, engine, locked)
    _store_routes(app, engine, locked, files.Thumbnails(engine.store, thumb_cache_bytes))
    served_query.add_route(app, engine, locked)
    narrow_to_store(app, engine.store.spaces())
    guard(app, access_token, cors)
    return app


def _error_handlers(app: FastAPI) -> None:
    """Errors: one JSON shape, never a traceback."""
    @app.exception_handler(MmsearchError)
    async def _mmsearch_error(_req: Request, exc: MmsearchError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=status_for(exc))

    @app.exception_handler(HTTPError)
    async def _http_error(_req: Request, exc: HTTPError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(files.NotServed)
    async def _not_served(_req: Request, exc: files.NotServed) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=404)

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(_req: Request, exc: StarletteHTTPException) -> JSONResponse:  # 404, 405 …
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            loc = list(e.get("loc", ()))
            where = ".".join(str(p) for p in (loc[1:] if loc[:1] in (["query"], ["body"], ["path"], ["header"]) else loc))
            msg = str(e.get("msg", "invalid"))
            if e.get("type") == "string_pattern_mismatch" and (e.get("ctx") or {}).get("pattern") == NOT_BLANK:
                msg = "must hold something other than whitespace"
            problems.append(f"{where}: {msg}" if where else msg)
        return JSONResponse({"error": "; ".join(problems) or "invalid request"}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception) -> JSONResponse:  # a bug: log it, do not leak it
        log.exception("unexpected error")
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)


def _search_routes(app: FastAPI, engine: Engine, locked: Callable[[Callable[[], Any]], Any]) -> None:
    def search(opts: SearchOptions, like: tuple[int, ...] = (), **query: Any) -> list[dict[str, Any]]:
        args = opts.engine_args()
        if args["space"] is not None:
            args["space"] = _known_space(engine, args["space"])
        _check_filters(opts)
        args["like"] = like + args["like"]
        _known_items(engine, args["like"] + args["unlike"])
        return [h.to_dict() for h in locked(lambda: engine.search(**query, **args))]

    def read(file: UploadFile, what: str) -> bytes:
        data = file.file.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise HTTPError(413, f"query {what} is over {MAX_UPLOAD_BYTES >> 20} MiB")
        if not data:
            raise HTTPError(422, f"file: the uploaded query {what} is empty")
        return data

    @app.get("/api/search", responses=errors(400, 404, 500))
    def search_text(q: Text, opts: Options) -> list[dict[str, Any]]:
        """Search by text, in the query language (`beach + sunset - people`, `2:dog + cat`; a term the
        language rejects is a 422 naming it), with the items ``like``/``unlike`` added."""
        return search(opts, text=q)

    @app.get("/api/similar/{content_id}", responses=errors(400, 404, 500))
    def search_similar(content_id: ContentId, opts: Options) -> list[dict[str, Any]]:
        """More like an indexed item (by its stored vectors), and like/unlike the items ``like``/``unlike``."""
        return search(opts, like=(content_id,))

    @app.post("/api/search/image", responses=errors(400, 404, 413, 500), openapi_extra=upload_schema("image/*"))
    def search_image(file: ImageUpload, opts: Options) -> list[dict[str, Any]]:
        """Search with an image (400 when the upload is not an image the server can decode)."""
        return search(opts, image=read(file, "image"))

    @app.post("/api/search/audio", responses=errors(400, 404, 413, 500), openapi_extra=upload_schema("audio/*"))
    def search_audio(file: SoundUpload, opts: Options) -> list[dict[str, Any]]:
        """Search with a sound (400 when the upload is not a sound the server can decode)."""
        return search(opts, audio=read(file, "sound"))

    @app.get("/api/dups", responses=errors(400, 500))
    def dups(threshold: DupsThreshold = None, type: DupsType = "image", under: Under = None) -> list[dict[str, Any]]:
        """Near-duplicate clusters of the store's images (or sounds), surest first (DupCluster.to_dict();
        each member's ``id`` gives its thumbnail and file)."""
        return [c.to_dict() for c in locked(lambda: engine.dups(threshold, type=type, under=under))]


def _check_filters(opts: SearchOptions) -> None:
    """The filters, read by the engine's own reader before searching: a bad one is a 422 naming it."""
    from mmsearch.query.filters import Filters

    try:
        Filters.make(**opts.filters())
    except UsageError as exc:
        raise HTTPError(422, str(exc)) from None


def _known_items(engine: Engine, ids: tuple[int, ...]) -> None:
    """Every example id is an item of this store; else 404 naming it."""
    if not ids:
        return
    found = engine.store.content_meta(list(set(ids)))
    missing = [i for i in ids if i not in found]
    if missing:
        raise HTTPError(404, f"no item with content id {missing[0]} in this store (like/unlike take the ids of hits)")


def _known_space(engine: Engine, name: str) -> str:
    """``name`` when it is one of the store's spaces (spec, key or id); else 404. Loads no model."""
    spaces = engine.store.spaces()
    if any(name in (sp.spec, sp.key, str(sp.id)) for sp in spaces):
        return name
    held = ", ".join(sp.spec for sp in spaces) or "none"
    raise HTTPError(404, f"space {name!r} is not in this store; it holds: {held} (see /api/stats)")


def _store_routes(app: FastAPI, engine: Engine, locked: Callable[[Callable[[], Any]], Any],
                  thumbs: files.Thumbnails) -> None:
    @app.get("/api/stats", responses=errors())
    def stats() -> dict[str, Any]:
        """What the store holds: items per kind, spaces, index kinds, size on disk."""
        return locked(engine.stats).to_dict()

    @app.get("/api/errors", responses=errors())
    def errors_() -> list[dict[str, Any]]:
        """Files that could not be indexed, with the reason."""
        return [e.to_dict() for e in locked(engine.errors)]

    @app.get("/api/file/{content_id}", response_class=Response, responses={
        200: {"content": {"image/*": {}, "audio/*": {}, "video/*": {}}, "description": "The file."},
        206: {"content": {"image/*": {}, "audio/*": {}, "video/*": {}}, "description": "The requested byte range."},
        304: {"description": "The client's copy (If-None-Match) is current."}, **errors(404, 416)})
    def file(content_id: ContentId, download: Download = False,
             range: Annotated[str | None, Header(description="bytes=FIRST-LAST, FIRST- or -SUFFIX")] = None,
             if_none_match: Annotated[str | None, Header()] = None) -> Response:
        """The original file of an indexed image, sound or video, while it is unchanged since indexing."""
        opened = files.open_indexed(engine.store, content_id, ("image", "audio", "video"))
        return files.original(opened, range, download, if_none_match)

    @app.get("/api/thumb/{content_id}", response_class=Response, responses={
        200: {"content": {"image/jpeg": {}}, "description": "A JPEG fitting SIZE×SIZE."},
        304: {"description": "The client's copy (If-None-Match) is current."}, **errors(404)})
    def thumb(content_id: ContentId, size: ThumbSize = 256, t: ThumbAt = None,
              if_none_match: Annotated[str | None, Header()] = None) -> Response:
        """A thumbnail of an indexed image, or of a video: its frame at ``t`` seconds (made once, then
        served from the store's cache)."""
        data, tag = thumbs.get(content_id, int(size), t)
        etag = f'"{tag}"'
        headers = {"ETag": etag, "Cache-Control": files.IMMUTABLE, "X-Content-Type-Options": "nosniff"}
        if if_none_match is not None and etag in [t.strip() for t in if_none_match.split(",")]:
            return Response(status_code=304, headers=headers)
        return Response(data, media_type="image/jpeg", headers=headers)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"),
                            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
                                     "Content-Security-Policy": _CSP, "Referrer-Policy": "no-referrer"})


# the page loads nothing from elsewhere: scripts and styles are inline, images and sounds come from /api
_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' blob: data:; media-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'")
