"""Who may use a server: a token for anything but loopback, and CORS only for the origins named.

Policy (:func:`access_token`): a server bound to a loopback address (127.0.0.0/8, ::1, ``localhost``)
needs no token unless one is given; any other address requires one, and one is generated (and
printed by `mmsearch serve`) when none is given.

With a token, every request needs it (:class:`TokenGate`), as ``Authorization: Bearer TOKEN`` or as the
cookie the page gets: opening ``http://host:port/?token=TOKEN`` answers with an HttpOnly, SameSite=Strict
cookie and a redirect to ``/`` (so the token leaves the address bar and the history), and the page's own
requests carry the cookie. The cookie's name is derived from the token (several servers on one host
keep theirs apart). Without it: 401 (``WWW-Authenticate: Bearer``), JSON ``{"error": …}``.
``/api/query``, the CLI's endpoint, keeps its own token (``X-Mmsearch-Token`` from ``<store>/server.json``)
and is not gated twice: the CLI on the server's machine reads that private file, not the page's token.

Tokens are compared in constant time (:func:`hmac.compare_digest`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import urllib.parse
from typing import Any

from mmsearch.errors import UsageError
from mmsearch.server.discovery import QUERY_PATH

COOKIE_PREFIX = "mmsearch_"
MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    if host.strip().lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def new_token() -> str:
    return secrets.token_urlsafe(24)


def access_token(host: str, token: str | None) -> tuple[str | None, bool]:
    """(the token the server will require or None, whether it was generated) for a server bound to ``host``."""
    if token is not None:
        if len(token) < MIN_TOKEN_CHARS or not token.isascii() or not token.isprintable() or " " in token:
            raise UsageError(f"--token: use at least {MIN_TOKEN_CHARS} printable ASCII characters without spaces "
                             "(or give none and one is generated)")
        return token, False
    if is_loopback(host):
        return None, False
    return new_token(), True


def cookie_name(token: str) -> str:
    return COOKIE_PREFIX + hashlib.sha256(token.encode()).hexdigest()[:12]


def page_url(base: str, token: str | None) -> str:
    """The address to open: ``base`` itself, or with ``?token=`` when the server requires one."""
    return base if token is None else f"{base}?token={urllib.parse.quote(token, safe='')}"


class TokenGate:
    """ASGI middleware: every HTTP request needs the token (see the module's docstring)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token.encode()
        self.cookie = cookie_name(token)

    def _ok(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self.token)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] == QUERY_PATH:
            await self.app(scope, receive, send)
            return
        from starlette.requests import Request

        request = Request(scope)
        auth = request.headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        if self._ok(bearer) or self._ok(request.cookies.get(self.cookie)):
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/" and self._ok(request.query_params.get("token")):
            await self._enter(request, send)
            return
        await self._refuse(request, send)

    async def _enter(self, request: Any, send: Any) -> None:
        """The page opened with ?token=: set the cookie and go to the same address without the token."""
        rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        where = "/" + ("?" + urllib.parse.urlencode(rest) if rest else "")
        cookie = f"{self.cookie}={self.token.decode()}; Path=/; HttpOnly; SameSite=Strict"
        await _send(send, 303, b"", [(b"location", where.encode()), (b"set-cookie", cookie.encode()),
                                     (b"cache-control", b"no-store"), (b"referrer-policy", b"no-referrer")])

    async def _refuse(self, request: Any, send: Any) -> None:
        message = ("this server requires a token: send the header `Authorization: Bearer TOKEN`, "
                   "or open the address `mmsearch serve` printed (…/?token=TOKEN) once")
        headers = [(b"www-authenticate", b'Bearer realm="mmsearch"'), (b"cache-control", b"no-store")]
        if request.url.path == "/" and "text/html" in request.headers.get("accept", ""):
            body = ("<!doctype html><meta charset=utf-8><title>mmsearch: token required</title>"
                    "<p>This mmsearch server requires a token. Open the address <code>mmsearch serve</code> "
                    "printed when it started (it ends in <code>?token=…</code>).</p>").encode()
            await _send(send, 401, body, headers + [(b"content-type", b"text/html; charset=utf-8")])
            return
        body = json.dumps({"error": message}).encode()
        await _send(send, 401, body, headers + [(b"content-type", b"application/json")])


async def _send(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = headers + [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def check_origins(cors: list[str] | None) -> None:
    for origin in cors or ():
        if origin == "*" or not origin.startswith(("http://", "https://")) or "/" in origin.split("://", 1)[1].rstrip("/"):
            raise UsageError(f"--cors {origin!r}: give an origin such as https://example.org (no wildcard, no path)")


def guard(app: Any, token: str | None, cors: list[str] | None) -> None:
    """Install the token gate (when ``token``) and CORS for ``cors`` origins (none: no CORS headers at all).

    CORS is outermost, so a browser's preflight (OPTIONS, which carries no credentials) is answered."""
    if token is not None:
        app.add_middleware(TokenGate, token=token)
        _declare_security(app, token)
    if cors:
        from fastapi.middleware.cors import CORSMiddleware

        check_origins(cors)
        app.add_middleware(CORSMiddleware, allow_origins=[o.rstrip("/") for o in cors], allow_credentials=False,
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"],
                           expose_headers=["Content-Range", "Content-Disposition", "ETag"], max_age=600)


def _declare_security(app: Any, token: str) -> None:
    """The schema says what the gate does: a bearer token or the page's cookie, on every operation."""
    make = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = make()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": cookie_name(token)},
            }
            schema["security"] = [{"bearer": []}, {"cookie": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
