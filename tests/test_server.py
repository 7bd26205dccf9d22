"""`mmsearch serve`: the HTTP API is a thin layer whose answers equal the Engine's."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
from fastapi.testclient import TestClient  # noqa: E402

from mmsearch import Engine, StoreError  # noqa: E402
from mmsearch.server import create_app  # noqa: E402
from tests.kit import cli, stop_process  # noqa: E402

# `indexed` (tests/conftest.py): the kit's default corpus, 6 images and 3 texts
# ("hello there", "general kenobi", "a red bicycle"), indexed by the tiny model.


@pytest.fixture
def client(indexed):
    with TestClient(create_app(indexed.store)) as c:
        yield c


def _no_traceback(resp) -> None:
    assert "Traceback" not in resp.text and 'File "' not in resp.text


@pytest.mark.parametrize("params", [
    {"q": "hello there", "k": 3, "type": "text"},
    {"q": "a picture", "k": 4},
    {"q": "kenobi", "k": 20, "type": "any"},
])
def test_text_search_equals_the_engine(indexed, client, params):
    r = client.get("/api/search", params=params)
    assert r.status_code == 200, r.text
    got = r.json()
    with Engine.open(indexed.store, create=False) as eng:
        want = [h.to_dict() for h in eng.search(text=params["q"], k=params["k"], type=params.get("type"))]
    assert want  # a comparison of two empty lists would prove nothing
    assert [g["path"] for g in got] == [w["path"] for w in want]
    assert [g["id"] for g in got] == [w["id"] for w in want]
    assert [round(g["score"], 5) for g in got] == [round(w["score"], 5) for w in want]


def test_text_hits_carry_their_text(client):
    assert client.get("/api/search", params={"q": "hello there", "type": "text", "k": 1}).json()[0]["text"] == "hello there"


def test_under_filters_by_folder(indexed, client):
    r = client.get("/api/search", params={"q": "x", "type": "any", "k": 50, "under": str(indexed.text_dir)})
    assert r.status_code == 200
    assert sorted(h["text"] for h in r.json()) == sorted(indexed.corpus.texts)


@pytest.mark.parametrize("i", [2, 5])
def test_image_upload_ranks_the_same_image_first(indexed, client, i):
    img = indexed.images[i]
    r = client.post("/api/search/image", params={"k": 3}, files={"file": (img.name, img.read_bytes(), "image/png")})
    assert r.status_code == 200, r.text
    hits = r.json()
    assert hits[0]["path"] == str(img) and hits[0]["score"] > 0.99 and len(hits) == 3


def test_image_upload_can_search_texts(indexed, client):
    r = client.post("/api/search/image", params={"type": "text", "k": 2},
                    files={"file": ("q.png", indexed.images[0].read_bytes(), "image/png")})
    assert r.status_code == 200 and [h["modality"] for h in r.json()] == ["text", "text"]


def test_search_takes_a_space_and_search_parameters(indexed, client, tiny_model):
    r = client.get("/api/search", params={"q": "kenobi", "type": "any", "k": 4, "space": tiny_model, "nprobe": 2,
                                          "ef_search": 8})
    assert r.status_code == 200, r.text
    with Engine.open(indexed.store, create=False) as eng:
        want = [h.to_dict() for h in eng.search(text="kenobi", type="any", k=4, space=tiny_model)]
    assert [h["id"] for h in r.json()] == [h["id"] for h in want]
    r = client.get("/api/search", params={"q": "x", "nprobe": 0})
    assert r.status_code == 422 and "nprobe" in r.json()["error"]
    r = client.get("/api/search", params={"q": "x", "space": "no-such-space"})  # the server loads no model a request names
    assert r.status_code == 404 and "not in this store" in r.json()["error"] and tiny_model in r.json()["error"]
    _no_traceback(r)


def test_the_cli_endpoint_requires_the_token(indexed):
    with TestClient(create_app(indexed.store, token="the-token")) as c:
        for headers in ({}, {"X-Mmsearch-Token": "wrong"}, {"X-Mmsearch-Token": ""}):
            r = c.post("/api/query", params={"q": "hello there", "type": "text"}, headers=headers)
            assert r.status_code == 403 and "X-Mmsearch-Token" in r.json()["error"]
        r = c.post("/api/query", params={"q": "hello there", "type": "text", "k": 2}, headers={"X-Mmsearch-Token": "the-token"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert [h["text"] for h in body["hits"]][:1] == ["hello there"] and len(body["hits"]) == 2
        assert body["notices"] == []
        img = indexed.images[3]
        r = c.post("/api/query", params={"k": 1}, content=img.read_bytes(), headers={"X-Mmsearch-Token": "the-token"})
        assert r.status_code == 200 and r.json()["hits"][0]["path"] == str(img)
        assert c.get("/api/search", params={"q": "x"}).status_code == 200  # the page's API needs no token


@pytest.mark.parametrize("params, status, code, word", [
    ({"q": "x", "type": "movie"}, 400, 2, "type='movie'"),
    ({"q": "x", "k": "many"}, 400, 2, "k='many'"),
    ({"q": "x", "k": "0"}, 400, 2, "k=0"),
    ({"k": "3"}, 400, 2, "exactly one"),
    ({"q": "x", "space": "local-dir:/no/such/model"}, 500, 4, "error"),
])
def test_the_cli_endpoint_reports_errors_with_their_exit_code(indexed, params, status, code, word):
    app = create_app(indexed.store)
    with TestClient(app) as c:
        r = c.post("/api/query", params=params, headers={"X-Mmsearch-Token": app.state.token})
    assert r.status_code == status and r.json()["exit_code"] == code, r.text
    assert word in r.json()["error"] or word == "error"
    _no_traceback(r)


def test_stats_and_errors_match_the_engine(indexed, client):
    r = client.get("/api/stats")
    assert r.status_code == 200
    with Engine.open(indexed.store, create=False) as eng:
        want = eng.stats().to_dict()
    got = r.json()
    assert got["items"] == want["items"] == {"image": 6, "text": 3}
    assert got["spaces"] == want["spaces"] and got["generation"] == want["generation"]
    r = client.get("/api/errors")
    assert r.status_code == 200 and r.json() == []


def test_file_serves_indexed_images_only(client):
    hit = client.get("/api/search", params={"q": "x", "k": 1, "type": "image"}).json()[0]
    r = client.get(f"/api/file/{hit['id']}")
    assert r.status_code == 200
    assert r.content == open(hit["path"], "rb").read() and r.headers["content-type"] == "image/png"
    text_hit = client.get("/api/search", params={"q": "x", "k": 1, "type": "text"}).json()[0]
    r = client.get(f"/api/file/{text_hit['id']}")  # a text item is not served as a file
    assert r.status_code == 404 and "no indexed image" in r.json()["error"]
    os.remove(hit["path"])  # indexed, but gone from disk
    r = client.get(f"/api/file/{hit['id']}")
    assert r.status_code == 404 and "disk" in r.json()["error"]


@pytest.mark.parametrize("bad, status, word", [
    ("999999", 404, "no indexed image"),
    ("0", 422, "content_id"),
    (str(2**63), 422, "content_id"),
    ("..%2F..%2Fetc%2Fpasswd", 404, "Not Found"),
])
def test_file_of_an_unknown_or_invalid_id_is_an_error(client, bad, status, word):
    r = client.get(f"/api/file/{bad}")
    assert r.status_code == status and word in r.json()["error"], r.text
    _no_traceback(r)


@pytest.mark.parametrize("params,status,word", [
    ({"q": "x", "k": 0}, 422, "k"),
    ({"q": "x", "k": 1001}, 422, "k"),
    ({"q": "x", "k": "many"}, 422, "k"),
    ({"q": "x", "type": "movie"}, 422, "type"),
    ({"k": 3}, 422, "q"),
    ({"q": "   "}, 422, "q"),  # the schema says a query has a character that is not whitespace
    ({"q": "\u3000\x1c"}, 422, "q"),
])
def test_bad_params_give_a_message_and_no_traceback(client, params, status, word):
    r = client.get("/api/search", params=params)
    assert r.status_code == status, r.text
    assert word in r.json()["error"]
    _no_traceback(r)


@pytest.mark.parametrize("files, status, word", [
    ({"file": ("x.png", b"not an image", "image/png")}, 400, "query image"),
    ({"file": ("x.png", b"", "image/png")}, 422, "empty"),
    (None, 422, "file"),
], ids=["not-an-image", "empty", "no-file"])
def test_bad_upload_is_an_error_with_a_message(client, files, status, word):
    r = client.post("/api/search/image", files=files)
    assert r.status_code == status and word in r.json()["error"], r.text
    _no_traceback(r)


def test_wrong_model_is_a_500_with_the_message(indexed):
    with TestClient(create_app(indexed.store, model="local-dir:/no/such/model")) as c:
        r = c.get("/api/search", params={"q": "x"})
    assert r.status_code == 500 and "error" in r.json()
    _no_traceback(r)


def test_missing_store_fails_at_app_creation(tmp_path):
    with pytest.raises(StoreError, match="no mmsearch store"):
        create_app(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()  # read side: never creates a store


def test_page_is_served(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "/api/search" in r.text and "/api/file/" in r.text and 'type="file"' in r.text
    assert "http://" not in r.text and "https://" not in r.text  # no CDN: works offline


def test_concurrent_requests_agree(indexed, client):
    imgs = indexed.images
    want = client.get("/api/search", params={"q": "general kenobi", "type": "any", "k": 5}).json()

    def one(i: int):
        if i % 3 == 0:
            return client.get("/api/search", params={"q": "general kenobi", "type": "any", "k": 5}).json()
        if i % 3 == 1:
            return client.post("/api/search/image", params={"k": 1},
                               files={"file": ("q.png", imgs[1].read_bytes(), "image/png")}).json()[0]["path"]
        return client.get("/api/stats").json()["items"]

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(one, range(24)))
    for i, g in enumerate(got):
        assert g == (want if i % 3 == 0 else str(imgs[1]) if i % 3 == 1 else {"image": 6, "text": 3})


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_command_runs_a_real_server(indexed, tmp_path):
    pytest.importorskip("uvicorn")
    store = indexed.store
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmsearch", "serve", "--store", str(store), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        stats = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{base}/api/stats", timeout=5) as r:
                    stats = json.load(r)
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.25)
        log.seek(0)
        assert stats is not None, f"server did not come up: {log.read()}"
        assert stats["items"] == {"image": 6, "text": 3}
        with urllib.request.urlopen(f"{base}/api/search?q=hello+there&type=text&k=2", timeout=30) as r:
            hits = json.load(r)
        assert hits[0]["text"] == "hello there" and len(hits) == 2
    finally:
        stop_process(proc)
        log.close()


def test_serve_reports_a_missing_store_before_listening(tmp_path):
    r = cli("serve", "--store", tmp_path / "missing", "--port", _free_port())
    assert r.exit_code == 3 and "no mmsearch store" in r.output


def test_serve_without_the_extra_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi → ImportError
    r = cli("serve", "--store", tmp_path)
    assert r.exit_code == 2 and "pip install 'mmsearch[server]'" in r.output
