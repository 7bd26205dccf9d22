"""The HTTP API's parameters and error answers, declared once: the OpenAPI schema is the contract.

:class:`SearchOptions` is every search endpoint's query parameters (a FastAPI dependency class): a new
search option is one field here (its name is :meth:`mmsearch.Engine.search`'s, or mapped in
:meth:`SearchOptions.engine_args`), and every search endpoint, the page's and the schema's, has it.

No ``from __future__ import annotations`` here: FastAPI reads these annotations at run time.
"""

import dataclasses
from enum import IntEnum
from typing import Annotated, Any, Literal, Optional

from fastapi import File, Query, UploadFile
from pydantic import BaseModel, Field

from mmsearch.server import patterns

MAX_K = 1000
MAX_PROBE = 1 << 16
MAX_QUERY_CHARS = 2000
MAX_MOMENTS = 50  # a video hit's moments listed, at most
# Python's whitespace (str.isspace): a query of only these is empty to the engine, so the schema says so.
_BLANK = ("\\t\\n\\u000b\\u000c\\r\\u001c-\\u001f \\u0085\\u00a0\\u1680\\u2000-\\u200a"
          "\\u2028\\u2029\\u202f\\u205f\\u3000")
NOT_BLANK = f"[^{_BLANK}]"  # somewhere in the text: a character that is not whitespace


class ErrorBody(BaseModel):
    """Every error answer: one line saying what is wrong and, where it helps, what to do."""

    error: str


_WHY = {
    400: "A bad argument the schema cannot express (e.g. an upload that is not an image or sound).",
    401: "This server requires a token (it listens beyond loopback): send `Authorization: Bearer TOKEN`, "
         "or open the page once with ?token=TOKEN.",
    404: "No such item, no file for it that is unchanged since indexing, no such space in this store, or no "
         "model in it that answers this query (one embedding all of its parts, e.g. a like image and a sound, "
         "and holding the type asked for).",
    413: "The upload is over the limit.",
    416: "The byte range starts past the end of the file.",
    422: "A parameter is missing or invalid: the message names it (a `where` term, a date, a query text's "
         "term and column).",
    500: "The model cannot be loaded or run (the message says why).",
    503: "The store cannot be read now (missing, damaged, or being rebuilt).",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route that can answer these error statuses (with :class:`ErrorBody`)."""
    return {c: {"model": ErrorBody, "description": _WHY[c]} for c in (401, 422, 503, *codes)}


# ---- the parameters ----------------------------------------------------------------------------------
MAX_TERMS = 32
MAX_EXAMPLES = 64
#: a ``where`` term; the pattern is declared, not enforced: the engine reads the term (a bad one is a 422
#: naming it, with what the engine says is wrong), so the API accepts exactly what `--where` accepts
WhereTerm = Annotated[str, Field(min_length=1, max_length=patterns.MAX_TERM_CHARS,
                                 json_schema_extra={"pattern": patterns.WHERE_PATTERN})]
ExampleId = Annotated[int, Field(ge=1, le=2**63 - 1)]
Text = Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS, pattern=NOT_BLANK,
                            description="What to look for, in words (not only whitespace).")]
class ThumbSizes(IntEnum):
    small = 128
    medium = 256
    large = 512


ThumbSize = Annotated[ThumbSizes, Query(description="The thumbnail fits SIZE×SIZE pixels.")]
MAX_THUMB_AT = 1e7  # seconds (115 days): a video's thumbnail time, at most
ThumbAt = Annotated[Optional[float], Query(ge=0, le=MAX_THUMB_AT, allow_inf_nan=False, description=
                    "For a video: the time (seconds) whose frame the thumbnail shows, rounded to 0.1 s "
                    "[default: 1 s; a shorter video's last frame]; a hit's moment `peak` is its best frame.")]
Download = Annotated[bool, Query(description="Ask the browser to save the file (Content-Disposition: attachment).")]


def upload(what: str) -> Any:
    """The multipart field ``file`` of an upload endpoint (one image or sound)."""
    return Annotated[UploadFile, File(description=f"The query {what} (not empty).", json_schema_extra={"minLength": 1})]


def upload_schema(media: str) -> dict[str, Any]:
    """``openapi_extra`` for an upload endpoint: the part ``file`` is one ``media`` file, not empty."""
    return {"requestBody": {"content": {"multipart/form-data": {"encoding": {"file": {"contentType": media}}}}}}


@dataclasses.dataclass
class SearchOptions:
    """The options every search takes (query parameters of /api/search, /api/search/image, /api/search/audio)."""

    k: Annotated[int, Query(ge=1, le=MAX_K, description="How many results.")] = 10
    type: Annotated[Optional[Literal["image", "audio", "video", "text", "any"]], Query(
        description="What to return [default: the files (images, sounds, videos) the store holds that the "
                    "query reaches; texts when it holds nothing else].")] = None
    moments: Annotated[int, Query(ge=1, le=MAX_MOMENTS, description="Moments listed per video hit (where in "
                                  "it the query matched, seen and/or heard; `moments` of the hit).")] = 1
    pooling: Annotated[Literal["peak", "mean"], Query(description="How a video scores: `peak` (its best "
                                                      "moment) or `mean` (the mean of its frames/windows).")] = "peak"
    under: Annotated[Optional[str], Query(min_length=1, max_length=4096,
                                          description="Only results below this folder (on the server).")] = None
    space: Annotated[Optional[str], Query(
        min_length=1, max_length=4096,
        description="One of the store's spaces (model spec, space key or id, as /api/stats lists them) "
                    "[default: every space].")] = None
    nprobe: Annotated[Optional[int], Query(ge=1, le=MAX_PROBE, description="IVF lists to visit.")] = None
    ef_search: Annotated[Optional[int], Query(ge=1, le=MAX_PROBE, description="HNSW search breadth.")] = None
    min_score: Annotated[Optional[float], Query(allow_inf_nan=False, description="Only hits whose calibrated score is at least this.")] = None
    where: Annotated[Optional[list[WhereTerm]], Query(
        max_length=MAX_TERMS, description="Only results where this holds (repeatable: all must hold), e.g. "
        "`width>=3000`, `make~canon`, `taken>=2023-06-01`, `size<5MB`, `duration<30`, `gps`, `!gps`. "
        "Fields: " + ", ".join(patterns.FIELDS) + ". Read exactly as `mmsearch query --where`.")] = None
    since: Annotated[Optional[str], Query(max_length=40, json_schema_extra={"pattern": patterns.DATE_PATTERN},
                                          description="Only results taken on or after this date "
                                          "(YYYY[-MM[-DD]]; the file's mtime when it has no EXIF date).")] = None
    until: Annotated[Optional[str], Query(max_length=40, json_schema_extra={"pattern": patterns.DATE_PATTERN},
                                          description="Only results taken on or before this date "
                                          "(the whole day, month or year given).")] = None
    path: Annotated[Optional[str], Query(min_length=1, max_length=4096, pattern=NOT_BLANK,
                                         description="Only files whose path (on the server) matches this glob "
                                         "(`*/2023/*.jpg`; `*` also crosses folders) or starts with it.")] = None
    collapse_dups: Annotated[bool, Query(description="Fold near-duplicates of a higher-ranked hit into it "
                                                     "(listed in its `duplicates`); still k distinct hits.")] = False
    dups_threshold: Annotated[Optional[float], Query(
        gt=0, le=1, allow_inf_nan=False, description="The cosine at or above which two hits are near-duplicates "
        "(implies collapse_dups) [default: 0.95].")] = None
    like: Annotated[Optional[list[ExampleId]], Query(
        max_length=MAX_EXAMPLES, description="More like this item (a content id from a hit; repeatable; +1 each).")] = None
    unlike: Annotated[Optional[list[ExampleId]], Query(
        max_length=MAX_EXAMPLES, description="Less like this item (a content id from a hit; repeatable; "
                                             "-0.5 each).")] = None

    def engine_args(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`mmsearch.Engine.search` these options stand for."""
        args = dataclasses.asdict(self)
        threshold = args.pop("dups_threshold")
        args["collapse_dups"] = threshold if threshold is not None else self.collapse_dups
        for name in ("where", "like", "unlike"):
            args[name] = tuple(args[name] or ())
        return args

    def filters(self) -> dict[str, Any]:
        """The filter arguments alone (:meth:`mmsearch.query.filters.Filters.make`'s)."""
        return {"where": tuple(self.where or ()), "since": self.since, "until": self.until, "path": self.path}


#: the search endpoints by the kind of query they take
_TYPES = ("image", "audio", "video", "text")
QUERY_KINDS = {"/api/search": "text", "/api/search/image": "image", "/api/search/audio": "audio"}


def narrow_to_store(app: Any, spaces: list[Any]) -> None:
    """Make the schema say what this store can answer: the ``type`` a query of each kind can reach (the
    kinds its models hold), and no upload endpoint for a kind of query no model of it embeds (that
    endpoint still answers, 400 with the reason). It reflects the models the store had at start-up."""
    from mmsearch.store.schema import item_kinds

    make = app.openapi
    held = [set(item_kinds(sp)) for sp in spaces]  # a model that sees or hears also reaches videos

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = make()
            for path, kind in QUERY_KINDS.items():
                reach = set().union(*[h for h in held if kind in h])
                ops = schema["paths"].get(path, {})
                if not reach:
                    schema["paths"].pop(path, None)
                    continue
                for op in ops.values():
                    for p in op.get("parameters", []):
                        if p["name"] == "type":
                            p["schema"]["anyOf"][0]["enum"] = [t for t in _TYPES if t in reach] + ["any"]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


# ---- errors ------------------------------------------------------------------------------------------
class HTTPError(Exception):
    """An HTTP error with a JSON ``{"error": …}`` body (for cases that are not MmsearchErrors)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def status_for(exc: Exception) -> int:
    """The status of an mmsearch error: 422 a query text the language rejects, 400 another bad argument,
    500 model problem, 503 store problem."""
    from mmsearch.errors import StoreError, UnanswerableQuery, UsageError
    from mmsearch.query.parse import QuerySyntaxError

    if isinstance(exc, QuerySyntaxError):
        return 422  # the query text's language: the message names the term and its column
    if isinstance(exc, UnanswerableQuery):
        return 404  # no model in this store relates the query's parts (or reaches the type asked for)
    if isinstance(exc, UsageError):
        return 400
    if isinstance(exc, StoreError):
        return 503
    return 500  # ModelError, and anything unforeseen


DupsType = Annotated[Literal["image", "audio"], Query(description="Which files to compare.")]
DupsThreshold = Annotated[Optional[float], Query(gt=0, le=1, allow_inf_nan=False, description=
                          "The cosine at or above which two files are near-duplicates [default: 0.95].")]
Under = Annotated[Optional[str], Query(min_length=1, max_length=4096,
                                       description="Only files below this folder (on the server).")]
