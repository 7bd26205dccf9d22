"""`mmsearch serve` fit to expose: the token beyond loopback, CORS only where named, thumbnails cached
in the store with caching headers, originals downloadable, and only files the index saw are served."""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
from fastapi.testclient import TestClient  # noqa: E402

from mmsearch.server import create_app, make_server  # noqa: E402
from tests.kit import cli, free_port, serving  # noqa: E402

TOKEN = "a-token-for-the-tests-0123"


def _first_image(c, **kw) -> dict:
    return c.get("/api/search", params={"q": "x", "k": 1, "type": "image"}, **kw).json()[0]


# ---- the token --------------------------------------------------------------------------------------
@pytest.fixture
def gated(indexed):
    with TestClient(create_app(indexed.store, token="cli-token", access_token=TOKEN)) as c:
        yield c


@pytest.mark.parametrize("path", ["/api/search?q=x", "/api/stats", "/api/errors", "/api/file/1", "/api/thumb/1",
                                  "/openapi.json", "/"])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": TOKEN},
                                     {"Cookie": f"mmsearch_x={TOKEN}"}])
def test_without_the_token_every_request_is_401(gated, path, headers):
    r = gated.get(path, headers=headers, follow_redirects=False)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert "token" in r.json()["error"]


def test_the_bearer_token_opens_the_api(gated):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert gated.get("/api/stats", headers=auth).json()["items"] == {"image": 6, "text": 3}
    hit = _first_image(gated, headers=auth)
    assert gated.get(f"/api/thumb/{hit['id']}", headers=auth).status_code == 200


def test_the_printed_url_sets_a_strict_httponly_cookie_and_drops_the_token(gated):
    r = gated.get(f"/?token={TOKEN}&q=red", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/?q=red"  # the token leaves the address bar
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN in cookie
    page = gated.get("/")  # the client keeps the cookie, as a browser does
    assert page.status_code == 200 and "/api/search" in page.text
    assert gated.get("/api/stats").status_code == 200
    assert gated.get("/?token=wrong-token-wrong-token", follow_redirects=False).status_code in (200, 303)  # cookie held


def test_a_browser_without_the_token_gets_a_page_that_says_what_to_do(gated):
    r = gated.get("/", headers={"Accept": "text/html"})
    assert r.status_code == 401 and r.headers["content-type"].startswith("text/html") and "?token=" in r.text


def test_the_cli_endpoint_keeps_its_own_token(gated):
    r = gated.post("/api/query", params={"q": "hello there", "type": "text", "k": 1}, headers={"X-Mmsearch-Token": "cli-token"})
    assert r.status_code == 200 and r.json()["hits"][0]["text"] == "hello there"
    r = gated.post("/api/query", params={"q": "x"}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 403  # the page's token is not the CLI's


def test_the_schema_declares_the_token(gated):
    schema = gated.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert schema["security"] == [{"bearer": []}, {"cookie": []}]
    assert schema["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    for path in schema["paths"].values():
        for op in path.values():
            assert {"401", "422", "503"} <= set(op["responses"])
            assert op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")


def test_loopback_needs_no_token_by_default(indexed):
    with TestClient(create_app(indexed.store)) as c:
        assert c.get("/api/stats").status_code == 200
        assert "security" not in c.get("/openapi.json").json()


@pytest.mark.parametrize("host, given, required", [
    ("127.0.0.1", None, False), ("localhost", None, False), ("::1", None, False),
    ("0.0.0.0", None, True), ("192.168.1.20", None, True), ("myhost.example", None, True),
    ("127.0.0.1", TOKEN, True), ("0.0.0.0", TOKEN, True),
])
def test_a_token_is_required_beyond_loopback_and_generated_when_none_is_given(indexed, host, given, required):
    server = make_server(indexed.store, host=host, port=0, token=given)
    token = server.app.state.access_token
    assert (token is not None) == required
    if given:
        assert token == given
    elif required:
        assert len(token) >= 24  # generated


@pytest.mark.parametrize("bad", ["short", "has a space in it 0123456", "ünïcödé-token-0123456789"])
def test_a_weak_token_is_refused_before_the_store_opens(tmp_path, bad):
    r = cli("serve", "--store", tmp_path / "missing", "--token", bad, "--port", free_port())
    assert r.exit_code == 2 and "--token" in r.output


def test_serve_on_every_interface_prints_a_url_with_a_generated_token(indexed, tmp_path):
    with serving(indexed.store, log=tmp_path / "serve.log") as base:  # loopback: no token
        assert urllib.request.urlopen(f"{base}/api/stats", timeout=10).status == 200
    with serving(indexed.store, host="0.0.0.0", log=tmp_path / "all.log") as base:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/api/stats", timeout=10)
        assert refused.value.code == 401
        printed = (tmp_path / "all.log").read_text()
        token = re.search(r"\?token=([A-Za-z0-9_-]+)", printed)[1]
        req = urllib.request.Request(f"{base}/api/stats", headers={"Authorization": f"Bearer {token}"})
        assert urllib.request.urlopen(req, timeout=10).status == 200


# ---- CORS ---------------------------------------------------------------------------------------------
def test_cors_is_off_unless_an_origin_is_named(indexed):
    pre = {"Origin": "https://app.example", "Access-Control-Request-Method": "GET"}
    with TestClient(create_app(indexed.store)) as c:
        assert "access-control-allow-origin" not in c.get("/api/stats", headers={"Origin": "https://app.example"}).headers
        assert "access-control-allow-origin" not in c.options("/api/stats", headers=pre).headers
    with TestClient(create_app(indexed.store, access_token=TOKEN, cors=["https://app.example"])) as c:
        r = c.options("/api/stats", headers={**pre, "Access-Control-Request-Headers": "authorization"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
        r = c.get("/api/stats", headers={"Origin": "https://app.example", "Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
        r = c.get("/api/stats", headers={"Origin": "https://evil.example", "Authorization": f"Bearer {TOKEN}"})
        assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("bad", ["*", "example.org", "https://example.org/app"])
def test_a_bad_cors_origin_is_refused_before_the_store_opens(tmp_path, bad):
    r = cli("serve", "--store", tmp_path / "missing", "--cors", bad, "--port", free_port())
    assert r.exit_code == 2 and "--cors" in r.output


# ---- thumbnails and originals ----------------------------------------------------------------------------
@pytest.fixture
def client(indexed):
    with TestClient(create_app(indexed.store)) as c:
        yield c


def _thumbs(store) -> list:
    return sorted((store / "thumbs").glob("*/*.jpg"))


@pytest.mark.parametrize("size", [128, 256])
def test_a_thumbnail_is_made_once_cached_in_the_store_and_immutable(indexed, client, size):
    from PIL import Image
    import io

    hit = _first_image(client)
    r = client.get(f"/api/thumb/{hit['id']}", params={"size": size})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert "immutable" in r.headers["cache-control"] and r.headers["etag"]
    with Image.open(io.BytesIO(r.content)) as im:
        assert im.format == "JPEG" and max(im.size) <= size
    cached = _thumbs(indexed.store)
    assert len(cached) == 1 and cached[0].read_bytes() == r.content
    os.remove(hit["path"])  # served from the cache now, without the file
    again = client.get(f"/api/thumb/{hit['id']}", params={"size": size})
    assert again.status_code == 200 and again.content == r.content
    assert client.get(f"/api/thumb/{hit['id']}", headers={"If-None-Match": r.headers["etag"]}, params={"size": size}).status_code == 304


def test_a_thumbnail_of_a_big_photo_is_small_and_upright(tmp_path, tiny_model):
    from PIL import Image
    import io

    from mmsearch import Engine

    folder = tmp_path / "photos"
    folder.mkdir()
    im = Image.new("RGB", (1200, 600), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated: 600 wide, 1200 high
    im.save(folder / "big.jpg", exif=exif, quality=90)
    with Engine.open(tmp_path / "store", model=tiny_model, workers=0) as eng:
        eng.index([folder])
    with TestClient(create_app(tmp_path / "store")) as c:
        hit = _first_image(c)
        r = c.get(f"/api/thumb/{hit['id']}", params={"size": 128})
    with Image.open(io.BytesIO(r.content)) as t:
        assert t.size == (64, 128)
    assert len(r.content) < (folder / "big.jpg").stat().st_size


def test_the_thumbnail_cache_stays_within_its_bound(indexed):
    with TestClient(create_app(indexed.store, thumb_cache_bytes=3000)) as c:
        hits = c.get("/api/search", params={"q": "x", "k": 6, "type": "image"}).json()
        for h in hits:
            for size in (128, 256, 512):
                assert c.get(f"/api/thumb/{h['id']}", params={"size": size}).status_code == 200
    total = sum(p.stat().st_size for p in _thumbs(indexed.store))
    assert 0 < total <= 3000


@pytest.mark.parametrize("bad, status", [("0", 422), ("999999", 404)])
def test_a_thumbnail_of_nothing_is_an_error(client, bad, status):
    assert client.get(f"/api/thumb/{bad}").status_code == status
    assert client.get("/api/thumb/1", params={"size": 100}).status_code == 422


def test_a_text_has_no_thumbnail(client):
    text = client.get("/api/search", params={"q": "x", "k": 1, "type": "text"}).json()[0]
    r = client.get(f"/api/thumb/{text['id']}")
    assert r.status_code == 404 and "no indexed image" in r.json()["error"]


def test_an_original_is_downloadable_and_cacheable(client):
    hit = _first_image(client)
    name = os.path.basename(hit["path"])
    r = client.get(f"/api/file/{hit['id']}", params={"download": True})
    assert r.status_code == 200 and r.content == open(hit["path"], "rb").read()
    assert r.headers["content-disposition"].startswith("attachment;") and name in r.headers["content-disposition"]
    inline = client.get(f"/api/file/{hit['id']}")
    assert inline.headers["content-disposition"].startswith("inline;")
    assert client.get(f"/api/file/{hit['id']}", headers={"If-None-Match": r.headers["etag"]}).status_code == 304


# ---- only what the index saw ------------------------------------------------------------------------------
@pytest.mark.parametrize("endpoint", ["/api/file", "/api/thumb"])
@pytest.mark.parametrize("swap", ["symlink-outside", "symlink-inside", "edited"])
def test_a_file_swapped_since_indexing_is_not_served(indexed, tmp_path, endpoint, swap):
    secret = tmp_path / "outside" / "secret.png"
    secret.parent.mkdir()
    secret.write_bytes(indexed.images[5].read_bytes() + b"secret")
    with TestClient(create_app(indexed.store)) as c:
        hit = _first_image(c)
        path = hit["path"]
        os.remove(path)
        if swap == "symlink-outside":
            os.symlink(secret, path)
        elif swap == "symlink-inside":
            other = next(str(p) for p in indexed.images if str(p) != path)
            os.symlink(other, path)
        else:
            with open(path, "wb") as f:
                f.write(indexed.images[5].read_bytes())
        r = c.get(f"{endpoint}/{hit['id']}")
    assert r.status_code == 404 and "unchanged since it was indexed" in r.json()["error"], r.text
    assert b"secret" not in r.content


def test_a_symlink_the_index_followed_is_served(tmp_path, tiny_model):
    from mmsearch import Engine
    from tests.kit import write_images

    outside = write_images(tmp_path / "elsewhere", 1)[0]
    photos = tmp_path / "photos"
    photos.mkdir()
    os.symlink(outside, photos / "linked.png")
    with Engine.open(tmp_path / "store", model=tiny_model, workers=0) as eng:
        eng.index([photos])
    with TestClient(create_app(tmp_path / "store")) as c:
        hit = _first_image(c)
        r = c.get(f"/api/file/{hit['id']}")
    assert r.status_code == 200 and r.content == outside.read_bytes()


@pytest.mark.parametrize("ext", ["jpg", "webp", "gif", "bmp", "tiff"])
def test_a_thumbnail_is_made_for_every_format_index_reads(tmp_path, tiny_model, ext):
    import io

    from PIL import Image

    from mmsearch import Engine

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (300, 200), (10, 120, 200)).save(folder / f"photo.{ext}")
    with Engine.open(tmp_path / "store", model=tiny_model, workers=0) as eng:
        assert eng.index([folder]).indexed == 1
    with TestClient(create_app(tmp_path / "store")) as c:
        hit = _first_image(c)
        r = c.get(f"/api/thumb/{hit['id']}", params={"size": 128})
    assert r.status_code == 200, r.text
    with Image.open(io.BytesIO(r.content)) as t:
        assert t.format == "JPEG" and t.size == (128, 85)
