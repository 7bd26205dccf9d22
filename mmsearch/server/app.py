"""The HTTP API and web page over one read-side :class:`mmsearch.Engine`. Translates, holds no logic.

Endpoints (all JSON unless noted)::

    GET  /                          the search page (static HTML + vanilla JS)
    GET  /api/search?q=…&k=&type=&under=&space=&nprobe=&ef_search=&min_score=
                                    text query → list of hits (Hit.to_dict())
    POST /api/search/image?k=&type=&under=&space=&nprobe=&ef_search=&min_score=
                                    image query (multipart field ``file``)
    POST /api/search/audio?k=&type=&under=&space=&nprobe=&ef_search=&min_score=
                                    sound query (multipart field ``file``); sound hits carry ``duration``
                                    and the best-matching window ``start``/``end`` (seconds)
    GET  /api/stats                 Stats.to_dict()
    GET  /api/errors                files that could not be indexed
    GET  /api/file/{content_id}     the file of an indexed image or sound content (thumbnails, players):
                                    media type by content; ``Range: bytes=…`` answered with 206 (seeking)
    POST /api/query?q=&k=&type=&under=&space=&nprobe=&ef_search=&min_score=&media=
                                    the CLI's endpoint (`mmsearch query` on a served store): header
                                    ``X-Mmsearch-Token`` required; the body is the query image's bytes, or
                                    the query sound's with ``media=audio`` (empty for a text query);
                                    answers ``{"hits": [...], "notices": [...]}``

``type`` is ``image``, ``audio``, ``text`` or ``any``; ``min_score`` keeps hits whose calibrated score
(Hit.calibrated, comparable across models) is at least that.

Errors are ``{"error": message}``: 400 bad argument (UsageError), 413 upload too large, 422 invalid
parameter, 404 unknown item, 500 model problem (ModelError), 503 store problem (StoreError). A file
range that starts past the end is 416 with ``Content-Range: bytes */SIZE``.
``/api/query`` adds ``"exit_code"`` (what in-process `mmsearch query` exits with) to an mmsearch
error, and answers 403 without the right token.

The token: ``mmsearch serve`` puts a random token in ``<store>/server.json`` (mode 0600, see
:mod:`mmsearch.server.discovery`); only ``/api/query`` requires it. It lets the CLI know it talks to
the server that wrote the file it read (not whatever took the port since), and nobody can use the
CLI endpoint without reading that private file. The page's endpoints stay open, as before, so a
browser on this machine needs no token: they answer the same searches, which is why the default
``--host`` is 127.0.0.1 and the README says to keep it unless the network is trusted.

Thread safety: endpoints are plain ``def`` (FastAPI runs them in a thread pool). The Engine's
query path updates shared caches (loaded encoders, the space list, the in-memory FAISS indexes,
which are caught up when a writer has committed since), so every Engine call is made under one
lock. This costs little: the model forward pass is serialised by the encoder's own lock anyway,
and a FAISS search over the cached index is fast. Reads that touch only the database (the file
lookup) need no lock: the store gives each thread its own snapshot.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import secrets
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional, TypeVar

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from mmsearch.engine import Engine
from mmsearch.errors import MmsearchError, ModelError, StoreError, UsageError
from mmsearch.server.discovery import MAX_UPLOAD_BYTES, QUERY_PATH, TOKEN_HEADER

log = logging.getLogger("mmsearch.server")

STATIC = Path(__file__).resolve().parent / "static"
MAX_K = 1000
T = TypeVar("T")

# Shared query parameters (module level: FastAPI resolves the string annotations in module globals).
K = Annotated[int, Query(ge=1, le=MAX_K, description="How many results.")]
Type = Annotated[Optional[Literal["image", "audio", "text", "any"]],
                 Query(description="What to return [default: the files (images, sounds) the store "
                                   "holds that the query reaches; texts when it holds nothing else].")]
Under = Annotated[Optional[str], Query(description="Only results below this folder (on the server).")]
Space = Annotated[Optional[str], Query(description="One model's space (spec, key or id) [default: every space].")]
NProbe = Annotated[Optional[int], Query(ge=1, description="IVF lists to visit.")]
EfSearch = Annotated[Optional[int], Query(ge=1, description="HNSW search breadth.")]
MinScore = Annotated[Optional[float], Query(allow_inf_nan=False,
                                           description="Only hits whose calibrated score is at least this.")]
ContentId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="A content id from a search hit.")]


def _media_type(path: str) -> str:
    """The media type by content, not extension (a PNG named .jpg is indexed, so it is served as PNG)."""
    from PIL import Image

    try:
        with Image.open(path) as im:  # reads the header only
            return Image.MIME.get(im.format or "", "application/octet-stream")
    except Exception:  # unreadable or not an image any more
        return "application/octet-stream"


_ASF = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")  # the ASF header object's GUID (WMA)


def _sound_type(head: bytes) -> str:
    """The media type of a sound file by its first bytes (sounds are indexed by content too)."""
    h = bytes(head)
    if h[:4] in (b"RIFF", b"RF64", b"BW64") and h[8:12] == b"WAVE":
        return "audio/wav"
    if h[:4] == b"fLaC":
        return "audio/flac"
    if h[:4] == b"OggS":
        return "audio/ogg"
    if h[:3] == b"ID3":
        return "audio/mpeg"
    if h[4:8] == b"ftyp":
        return "audio/mp4"
    if h[:4] == b"FORM" and h[8:12] in (b"AIFF", b"AIFC"):
        return "audio/aiff"
    if h[:4] == b"\x1a\x45\xdf\xa3":  # EBML: Matroska / WebM
        return "audio/webm" if b"webm" in h[:64] else "audio/x-matroska"
    if h[:4] == b"caff":
        return "audio/x-caf"
    if h[:4] == b".snd":
        return "audio/basic"
    if h.startswith(b"#!AMR"):
        return "audio/amr"
    if h[:16] == _ASF:
        return "audio/x-ms-wma"
    if len(h) >= 2 and h[0] == 0xFF and h[1] & 0xE0 == 0xE0:  # an MPEG audio frame header
        return "audio/aac" if h[1] & 0x06 == 0 else "audio/mpeg"  # layer bits 00: AAC in ADTS
    return "application/octet-stream"


def _sound_media_type(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return _sound_type(f.read(64))
    except OSError:
        return "application/octet-stream"


#: whether this Starlette's FileResponse answers ``Range`` itself (0.39 and later); else :func:`_ranged`
_FILE_RESPONSE_RANGES = hasattr(FileResponse, "_parse_range_header")


_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.ASCII | re.IGNORECASE)


def _byte_range(header: str, size: int) -> tuple[int, int] | str | None:
    """``Range: bytes=FIRST-LAST`` (or ``FIRST-``, ``-SUFFIX``) as (first, last) inclusive, clipped to the
    file; ``"unsatisfiable"`` when it starts past the end; None for anything else (several ranges, other
    units, malformed), which is answered with the whole file, as RFC 9110 lets a server do."""
    m = _RANGE.fullmatch(header)
    if m is None or not (m[1] or m[2]):
        return None
    if not m[1]:  # the last N bytes
        n = int(m[2])
        return (max(0, size - n), size - 1) if n > 0 and size > 0 else "unsatisfiable"
    first = int(m[1])
    if first >= size:
        return "unsatisfiable"
    last = size - 1 if not m[2] else min(int(m[2]), size - 1)
    return (first, last) if last >= first else None


def _ranged(path: str, header: str, media_type: str, headers: dict[str, str]) -> Response:
    """The answer to a ranged request, for a Starlette whose FileResponse ignores ``Range`` (before 0.39)."""
    size = os.path.getsize(path)
    got = _byte_range(header, size)
    if got is None:
        return FileResponse(path, media_type=media_type, headers=headers)
    if isinstance(got, str):
        return JSONResponse({"error": f"range {header!r} is outside the file ({size} bytes)"}, status_code=416,
                            headers={"Content-Range": f"bytes */{size}"})
    first, last = got

    def chunks():  # streamed: a sound file may be hundreds of MiB and the range open-ended
        with open(path, "rb") as f:
            f.seek(first)
            left = last - first + 1
            while left > 0:
                data = f.read(min(left, 1 << 16))
                if not data:
                    break
                left -= len(data)
                yield data

    return StreamingResponse(chunks(), status_code=206, media_type=media_type,
                             headers={**headers, "Content-Length": str(last - first + 1),
                                      "Content-Range": f"bytes {first}-{last}/{size}"})


class _ErrorResponse(Exception):
    """An HTTP error with a JSON ``{"error": …}`` body (for cases that are not MmsearchErrors)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _status_for(exc: MmsearchError) -> int:
    if isinstance(exc, UsageError):
        return 400
    if isinstance(exc, ModelError):
        return 500
    if isinstance(exc, StoreError):
        return 503
    return 500


def create_app(store_path: str | os.PathLike | None = None, *, model: str | None = None,
               device: str | None = None, token: str | None = None) -> FastAPI:
    """An app serving the store at ``store_path`` (default: the configured store).

    The store is opened now, read-only (``create=False``): a missing or damaged store raises
    :class:`StoreError` here, before anything listens. The model loads on the first query.
    ``token``: what ``/api/query`` requires in its header (default: a new random one, ``app.state.token``).
    """
    engine = Engine.open(store_path, model=model, device=device, create=False)
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

    _error_handlers(app)
    _routes(app, engine, locked)
    _cli_route(app, engine, locked)
    return app


def _error_handlers(app: FastAPI) -> None:
    """Errors: one JSON shape, never a traceback."""
    @app.exception_handler(MmsearchError)
    async def _mmsearch_error(_req: Request, exc: MmsearchError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=_status_for(exc))

    @app.exception_handler(_ErrorResponse)
    async def _http_error(_req: Request, exc: _ErrorResponse) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(_req: Request, exc: StarletteHTTPException) -> JSONResponse:  # 404, 405 …
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("query", "body", "path"))
            problems.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
        return JSONResponse({"error": "; ".join(problems) or "invalid request"}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception) -> JSONResponse:  # a bug: log it, do not leak it
        log.exception("unexpected error")
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)


def _routes(app: FastAPI, engine: Engine, locked: Callable[[Callable[[], Any]], Any]) -> None:
    # ---- search ------------------------------------------------------------------------------------
    def _search(**kw: Any) -> list[dict[str, Any]]:
        return [h.to_dict() for h in locked(lambda: engine.search(**kw))]

    def _upload(file: UploadFile, what: str) -> bytes:
        data = file.file.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise _ErrorResponse(413, f"query {what} is over {MAX_UPLOAD_BYTES >> 20} MiB")
        if not data:
            raise UsageError(f"the uploaded query {what} is empty")
        return data

    @app.get("/api/search")
    def search_text(q: Annotated[str, Query(description="What to look for, in words.")], k: K = 10,
                    type: Type = None, under: Under = None, space: Space = None, nprobe: NProbe = None,
                    ef_search: EfSearch = None, min_score: MinScore = None) -> list[dict[str, Any]]:
        return _search(text=q, k=k, type=type, under=under, space=space, nprobe=nprobe, ef_search=ef_search,
                       min_score=min_score)

    @app.post("/api/search/image")
    def search_image(file: Annotated[UploadFile, File(description="The query image.")], k: K = 10,
                     type: Type = None, under: Under = None, space: Space = None, nprobe: NProbe = None,
                     ef_search: EfSearch = None, min_score: MinScore = None) -> list[dict[str, Any]]:
        return _search(image=_upload(file, "image"), k=k, type=type, under=under, space=space, nprobe=nprobe,
                       ef_search=ef_search, min_score=min_score)

    @app.post("/api/search/audio")
    def search_audio(file: Annotated[UploadFile, File(description="The query sound.")], k: K = 10,
                     type: Type = None, under: Under = None, space: Space = None, nprobe: NProbe = None,
                     ef_search: EfSearch = None, min_score: MinScore = None) -> list[dict[str, Any]]:
        return _search(audio=_upload(file, "sound"), k=k, type=type, under=under, space=space, nprobe=nprobe,
                       ef_search=ef_search, min_score=min_score)

    # ---- store -------------------------------------------------------------------------------------
    @app.get("/api/stats")
    def stats() -> dict[str, Any]:
        return locked(engine.stats).to_dict()

    @app.get("/api/errors")
    def errors() -> list[dict[str, Any]]:
        return [e.to_dict() for e in locked(engine.errors)]

    @app.get("/api/file/{content_id}", response_class=FileResponse)
    def file(content_id: ContentId, request: Request) -> Response:
        """The file of an indexed image or sound: only paths the store lists for that content are served.

        Byte ranges are answered (206), so an ``<audio>`` element can seek without fetching the whole file.
        """
        path = engine.file_of(content_id, "image")  # only files the store lists for that content
        if path is not None:
            media_type = _media_type(path)
        elif (path := engine.file_of(content_id, "audio")) is not None:
            media_type = _sound_media_type(path)
        else:
            raise _ErrorResponse(404, f"no indexed image or sound with id {content_id} has a file on disk")
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=60"}
        if not _FILE_RESPONSE_RANGES:  # an older Starlette: the app answers ranges itself
            headers["Accept-Ranges"] = "bytes"
            wanted = request.headers.get("range")
            if wanted is not None:
                return _ranged(path, wanted, media_type, headers)
        return FileResponse(path, media_type=media_type, headers=headers)

    # ---- the page ----------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))


def _cli_route(app: FastAPI, engine: Engine, locked: Callable[..., Any]) -> None:
    """``POST /api/query``: what `mmsearch query` sends when a server runs (mmsearch.server.client).

    Arguments go to Engine.search unchecked, so a bad one raises the very UsageError it raises
    in-process; the error answer carries that error's exit code.
    """
    token = app.state.token.encode()

    def integer(params: Any, name: str) -> int | None:
        raw = params.get(name)
        if raw is None:
            return None
        try:
            return int(raw)
        except ValueError:
            raise UsageError(f"{name}={raw!r}: must be a positive whole number") from None

    def number(params: Any, name: str) -> float | None:
        raw = params.get(name)
        if raw is None:
            return None
        try:
            return float(raw)  # nan and inf parse: Engine.search refuses them with its own message
        except ValueError:
            raise UsageError(f"{name}={raw!r}: must be a number") from None

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
                raise _ErrorResponse(413, f"query {what} is over {MAX_UPLOAD_BYTES >> 20} MiB")
        notes: list[str] = []
        try:
            if media not in ("image", "audio"):
                raise UsageError(f"media={media!r}: must be image or audio")
            k = integer(p, "k")
            query = bytes(body) if body else None
            kw = dict(text=p.get("q"), image=query if media == "image" else None,
                      audio=query if media == "audio" else None, k=10 if k is None else k,
                      type=p.get("type"), under=p.get("under"), space=p.get("space"),
                      nprobe=integer(p, "nprobe"), ef_search=integer(p, "ef_search"),
                      min_score=number(p, "min_score"))
            hits = await run_in_threadpool(locked, lambda: engine.search(**kw), notes)
        except MmsearchError as exc:
            return JSONResponse({"error": str(exc), "exit_code": exc.exit_code}, status_code=_status_for(exc))
        return JSONResponse({"hits": [h.to_dict() for h in hits], "notices": notes})
