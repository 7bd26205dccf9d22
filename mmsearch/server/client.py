"""The served path of `mmsearch query`: send the query to a running `mmsearch serve` on the same store.

Standard library only (plus :mod:`mmsearch.types`, :mod:`mmsearch.config` and :mod:`mmsearch.errors`,
which are light): a query answered by a server costs a CLI start and one local HTTP request instead
of loading numpy, SQLAlchemy, FAISS and the model.

:func:`search` returns ``None`` whenever no server can answer exactly as the in-process search
would, and the caller then searches in-process:

* no ``server.json`` in the store, or it is not ours, readable by others or malformed, or its pid is gone;
* the file names another store (a copied folder) or a protocol this client does not speak (an older
  server answers only what its protocol carried: protocol 2 one text, no filters; protocol 3 no
  ``moments``, ``pooling`` or ``type=video``), the server embeds queries
  with other settings (device, runtime, precision: :data:`discovery.ENCODER_SETTINGS`), or it was
  started with ``--model`` while this query searches every space;
* nothing listens (connect timeout :data:`CONNECT_TIMEOUT`), the token is refused, the endpoint is
  unknown, the server fails (not an mmsearch error) or does not answer within :data:`READ_TIMEOUT`;
* the query image cannot be read here or is over the upload limit (in-process names the problem).

An mmsearch error the server reports (bad argument, model or store problem) is raised as
:class:`ServedError` with the same message and exit code as in-process.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from dataclasses import dataclass, fields
from typing import Any, Sequence

from mmsearch.errors import MmsearchError
from mmsearch.server import discovery
from mmsearch.types import Hit, Moment

CONNECT_TIMEOUT = 0.5  # seconds; a local server accepts at once, a refused port fails at once
READ_TIMEOUT = 120.0  # seconds; the first query of a fresh server loads the model
_HIT_FIELDS = {f.name for f in fields(Hit)}
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class ServedError(MmsearchError):
    """An mmsearch error reported by the server; ``exit_code`` is the one the server's error has."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Served:
    hits: list[Hit]
    notices: list[str]
    url: str


def search(store: str | os.PathLike | None = None, *, model: str | None = None, device: str | None = None,
           text: str | Sequence[str] | None = None, image: str | os.PathLike | None = None, k: int = 10,
           type: str | None = None, under: str | os.PathLike | None = None, nprobe: int | None = None,
           ef_search: int | None = None, audio: str | os.PathLike | None = None, min_score: float | None = None,
           where: Sequence[str] = (), since: str | None = None, until: str | None = None,
           path: str | None = None, collapse_dups: bool = False, moments: int = 1,
           pooling: str = "peak") -> Served | None:
    """The query answered by the store's running server, or None: search in-process then."""
    from mmsearch.config import Settings

    settings = Settings.resolve(store=os.fspath(store) if store is not None else None, model=model, device=device)
    root = os.path.abspath(os.path.expanduser(settings.store))  # as Store computes its root
    info = discovery.read(root)
    texts = [text] if isinstance(text, str) else list(text or ())
    needs = _protocol_needed(texts, where, since, until, path, collapse_dups, type, moments, pooling)
    if info is None or info["protocol"] not in discovery.UNDERSTOOD or info["protocol"] < needs:
        return None
    if any(getattr(settings, name, None) != info.get(name) for name in discovery.ENCODER_SETTINGS):
        return None  # another device, runtime or precision embeds the query differently
    if os.path.realpath(info["store"]) != os.path.realpath(root):
        return None  # a copied store folder: its file names the original's server
    params: list[tuple[str, Any]] = [("k", k)]
    if settings.model != info.get("model"):
        if settings.model is None:
            return None  # the server reads one space; this query searches them all
        params.append(("space", settings.model))
    body = b""
    params += [("q", t) for t in texts]
    media = image if image is not None else audio
    if media is not None:
        body = _read_image(media)
        if body is None:
            return None
        if audio is not None:
            params.append(("media", "audio"))
    for name, value in (("type", type), ("nprobe", nprobe), ("ef_search", ef_search), ("min_score", min_score),
                        ("since", since), ("until", until)):
        if value is not None:
            params.append((name, value))
    params += [("where", w) for w in where]
    if collapse_dups:
        params.append(("collapse_dups", "1" if collapse_dups is True else collapse_dups))
    if moments != 1 or pooling != "peak":
        params += [("moments", moments), ("pooling", pooling)]
    if under is not None:
        params.append(("under", os.path.abspath(under)))  # relative to this process's folder, as in-process
    if path is not None:
        params.append(("path", _absolute(path)))
    answer = _post(info, f"{discovery.QUERY_PATH}?{urllib.parse.urlencode(params)}", body)
    if answer is None:
        return None
    status, data = answer
    if status == 200:
        return _served(data, info["url"])
    error = data.get("error") if isinstance(data, dict) else None
    code = data.get("exit_code") if isinstance(data, dict) else None
    if not isinstance(error, str) or not isinstance(code, int) or isinstance(code, bool):
        return None  # not an mmsearch error (refused token, unknown endpoint, a bug): in-process decides
    if media is not None and error.startswith(("query image:", "query sound:")):
        error = f"{os.fspath(media)}: {error}"  # in-process names the file it read
    raise ServedError(error, code)


def _protocol_needed(texts: list[str], where: Sequence[str], since: str | None, until: str | None,
                     path: str | None, collapse_dups: bool | float, type: str | None, moments: int,
                     pooling: str) -> int:
    """The oldest protocol that carries this query (a server of an older one would drop a part of it)."""
    if moments != 1 or pooling != "peak" or type == "video":
        return 4
    if len(texts) > 1 or where or since is not None or until is not None or path is not None or collapse_dups:
        return 3
    return 2


def _absolute(pattern: str) -> str:
    """A ``--path`` glob or prefix as this process reads it: from its folder when relative (the server
    makes a prefix a glob, as in-process; see :func:`mmsearch.query.filters.Filters.make`)."""
    pattern = os.path.expanduser(pattern)
    if pattern.strip() and not pattern.startswith(("*", "?", "[")) and not os.path.isabs(pattern):
        pattern = os.path.join(os.getcwd(), pattern)
    return pattern


def _read_image(image: str | os.PathLike) -> bytes | None:
    try:
        with open(image, "rb") as f:
            data = f.read(discovery.MAX_UPLOAD_BYTES + 1)
    except OSError:
        return None
    return data if 0 < len(data) <= discovery.MAX_UPLOAD_BYTES else None


def _post(info: dict[str, Any], target: str, body: bytes) -> tuple[int, Any] | None:
    """(status, parsed JSON) of one POST through :mod:`http.client`, or None when no answer came (or no JSON)."""
    import http.client

    url = urllib.parse.urlsplit(info["url"])
    token = info["token"]
    if url.scheme != "http" or not url.hostname or url.port is None or not _TOKEN_CHARS.issuperset(token):
        return None
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=CONNECT_TIMEOUT)
    try:
        conn.connect()
        conn.sock.settimeout(READ_TIMEOUT)  # connecting is quick or refused; the first answer may load a model
        conn.request("POST", target, body=body, headers={discovery.TOKEN_HEADER: token, "Accept": "application/json",
                                                          "Content-Type": "application/octet-stream"})
        response = conn.getresponse()
        status, payload = response.status, response.read()
    except (OSError, http.client.HTTPException):  # refused, timed out, reset, cut short
        return None
    finally:
        conn.close()
    try:
        return status, json.loads(payload.decode("utf-8"))
    except ValueError:
        return None


def _hit(h: dict[str, Any]) -> Hit:
    """A hit as the server's JSON gives it (Hit.to_dict()), with its tuples and moments as Hit has them."""
    known = {k: v for k, v in h.items() if k in _HIT_FIELDS}
    known["paths"] = tuple(h["paths"])
    known["duplicates"] = tuple(h.get("duplicates") or ())
    known["moments"] = tuple(Moment(**m) for m in h.get("moments") or ())
    if known.get("gps") is not None:
        known["gps"] = tuple(known["gps"])
    return Hit(**known)


def _served(data: Any, url: str) -> Served | None:
    try:
        hits = [_hit(h) for h in data["hits"]]
        notices = [str(n) for n in data.get("notices", [])]
    except (TypeError, KeyError, AttributeError):
        return None
    return Served(hits, notices, url)
