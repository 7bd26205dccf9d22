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
from tests.conftest import write_images, write_texts  # noqa: E402

TEXTS = ["hello there", "general kenobi", "a red bicycle"]


@pytest.fixture
def indexed(tmp_path, engine_factory):
    """A store with 6 images and 3 text files; returns (store path, image paths)."""
    data = tmp_path / "data"
    imgs = write_images(data / "img", 6)
    write_texts(data / "notes", TEXTS)
    store = tmp_path / "store"
    eng = engine_factory(store)
    rep = eng.index([data])
    assert rep.indexed == 9 and rep.ok
    eng.close()
    return store, imgs


@pytest.fixture
def client(indexed):
    store, _ = indexed
    with TestClient(create_app(store)) as c:
        yield c


def _no_traceback(resp) -> None:
    assert "Traceback" not in resp.text and 'File "' not in resp.text


def test_text_search_equals_the_engine(indexed, client):
    store, _ = indexed
    for params in ({"q": "hello there", "k": 3, "type": "text"}, {"q": "a picture", "k": 4},
                   {"q": "kenobi", "k": 20, "type": "any"}):
        r = client.get("/api/search", params=params)
        assert r.status_code == 200, r.text
        got = r.json()
        with Engine.open(store, create=False) as eng:
            want = [h.to_dict() for h in eng.search(text=params["q"], k=params["k"], type=params.get("type"))]
        assert [g["path"] for g in got] == [w["path"] for w in want]
        assert [g["id"] for g in got] == [w["id"] for w in want]
        assert [round(g["score"], 5) for g in got] == [round(w["score"], 5) for w in want]
    assert client.get("/api/search", params={"q": "hello there", "type": "text", "k": 1}).json()[0]["text"] == "hello there"


def test_under_filters_by_folder(indexed, client, tmp_path):
    r = client.get("/api/search", params={"q": "x", "type": "any", "k": 50, "under": str(tmp_path / "data" / "notes")})
    assert r.status_code == 200
    assert sorted(h["text"] for h in r.json()) == sorted(TEXTS)


def test_image_upload_ranks_the_same_image_first(indexed, client):
    _, imgs = indexed
    for img in (imgs[2], imgs[5]):
        r = client.post("/api/search/image", params={"k": 3}, files={"file": (img.name, img.read_bytes(), "image/png")})
        assert r.status_code == 200, r.text
        hits = r.json()
        assert hits[0]["path"] == str(img) and hits[0]["score"] > 0.99 and len(hits) == 3
    r = client.post("/api/search/image", params={"type": "text", "k": 2},
                    files={"file": ("q.png", imgs[0].read_bytes(), "image/png")})
    assert r.status_code == 200 and [h["modality"] for h in r.json()] == ["text", "text"]


def test_stats_and_errors_match_the_engine(indexed, client):
    store, _ = indexed
    r = client.get("/api/stats")
    assert r.status_code == 200
    with Engine.open(store, create=False) as eng:
        want = eng.stats().to_dict()
    got = r.json()
    assert got["items"] == want["items"] == {"image": 6, "text": 3}
    assert got["spaces"] == want["spaces"] and got["generation"] == want["generation"]
    r = client.get("/api/errors")
    assert r.status_code == 200 and r.json() == []


def test_file_serves_indexed_images_only(indexed, client):
    _, imgs = indexed
    hit = client.get("/api/search", params={"q": "x", "k": 1, "type": "image"}).json()[0]
    r = client.get(f"/api/file/{hit['id']}")
    assert r.status_code == 200
    assert r.content == open(hit["path"], "rb").read() and r.headers["content-type"] == "image/png"
    for bad in (999999, 0):
        r = client.get(f"/api/file/{bad}")
        assert r.status_code in (404, 422) and "error" in r.json()
    text_hit = client.get("/api/search", params={"q": "x", "k": 1, "type": "text"}).json()[0]
    r = client.get(f"/api/file/{text_hit['id']}")  # a text item is not served as a file
    assert r.status_code == 404
    r = client.get("/api/file/..%2F..%2Fetc%2Fpasswd")
    assert r.status_code in (404, 422) and "error" in r.json()
    os.remove(hit["path"])  # indexed, but gone from disk
    r = client.get(f"/api/file/{hit['id']}")
    assert r.status_code == 404 and "disk" in r.json()["error"]


@pytest.mark.parametrize("params,status,word", [
    ({"q": "x", "k": 0}, 422, "k"),
    ({"q": "x", "k": 1001}, 422, "k"),
    ({"q": "x", "k": "many"}, 422, "k"),
    ({"q": "x", "type": "video"}, 422, "type"),
    ({"k": 3}, 422, "q"),
    ({"q": "   "}, 400, "empty"),
])
def test_bad_params_give_a_message_and_no_traceback(client, params, status, word):
    r = client.get("/api/search", params=params)
    assert r.status_code == status, r.text
    assert word in r.json()["error"]
    _no_traceback(r)


def test_bad_upload_is_a_400(client):
    r = client.post("/api/search/image", files={"file": ("x.png", b"not an image", "image/png")})
    assert r.status_code == 400 and "query image" in r.json()["error"]
    _no_traceback(r)
    r = client.post("/api/search/image", files={"file": ("x.png", b"", "image/png")})
    assert r.status_code == 400 and "empty" in r.json()["error"]
    r = client.post("/api/search/image")
    assert r.status_code == 422 and "file" in r.json()["error"]


def test_wrong_model_is_a_500_with_the_message(indexed):
    store, _ = indexed
    with TestClient(create_app(store, model="local-dir:/no/such/model")) as c:
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
    _, imgs = indexed
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
    store, _ = indexed
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
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_serve_reports_a_missing_store_before_listening(tmp_path):
    from typer.testing import CliRunner

    from mmsearch.cli import app

    r = CliRunner().invoke(app, ["serve", "--store", str(tmp_path / "missing"), "--port", str(_free_port())])
    assert r.exit_code == 3 and "no mmsearch store" in r.output


def test_serve_without_the_extra_says_how_to_install(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from mmsearch.cli import app

    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi → ImportError
    r = CliRunner().invoke(app, ["serve", "--store", str(tmp_path)])
    assert r.exit_code == 2 and "pip install 'mmsearch[server]'" in r.output
