"""`mmsearch serve` with sounds: the audio-upload query, min_score, sound files served with byte ranges
(an <audio> element seeks), and the page's player, whose file names go in as text, never as HTML."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
sf = pytest.importorskip("soundfile")
pytest.importorskip("transformers")
from fastapi.testclient import TestClient  # noqa: E402

from mmsearch.server import app as app_module  # noqa: E402
from mmsearch.server import files as files_module  # noqa: E402
from mmsearch.server import served_query  # noqa: E402
from mmsearch.server import create_app  # noqa: E402
from tests.kit import make_tiny_clap  # noqa: E402
from tests.kit import PAGE_DOM, page_script, tone, write_images, write_texts  # noqa: E402

RATE = 16000
MARKUP = "<b>x<b>.wav"  # a file name that is also markup ("</b>" cannot be: "/" separates folders)
TOKEN = "the-token"


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model, runtime_cache):
    """One store for the module (2 images, 1 note, 3 sounds: wav, flac, a markup-named wav, indexed by the
    tiny CLIP and the tiny CLAP) and a client of an app over it. Built before the per-test `_isolate`
    runs, so the model cache is pointed at the session's one here as well. The models run in torch: the
    ONNX export (tested on its own) would cost most of this module's time and nothing it tests."""
    from mmsearch import Engine

    root = tmp_path_factory.mktemp("served-audio")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMSEARCH_CACHE", str(runtime_cache))
        mp.setenv("MMSEARCH_CONFIG", str(root / "no-config.toml"))
        mp.delenv("MMSEARCH_MODEL", raising=False)
        mp.setenv("MMSEARCH_RUNTIME", "torch")  # read when the engines open (also the app's, below)
        clap = "local-dir:" + str(make_tiny_clap(root / "clap"))
        data = root / "data"
        images = write_images(data / "img", 2)
        write_texts(data / "txt", ["a rising whistle"])
        snd = data / "snd"
        snd.mkdir(parents=True)
        sounds = {"wav": snd / "tone.wav", "flac": snd / "noise.flac", "markup": snd / MARKUP}
        sf.write(sounds["wav"], tone(3.0, RATE, 440.0), RATE)
        noise = np.random.default_rng(0).standard_normal(2 * RATE).astype(np.float32) * 0.3
        sf.write(sounds["flac"], noise, RATE)
        sf.write(sounds["markup"], tone(2.0, RATE, 1500.0), RATE)
        store = root / "store"
        with Engine.open(store, model=[tiny_model, clap], workers=0) as eng:
            report = eng.index([data])
        assert report.ok and report.indexed == 6, report
        app = create_app(store, token=TOKEN)
        with TestClient(app) as client:
            yield {"client": client, "app": app, "sounds": sounds, "images": images, "clap": clap, "snd": snd}


def _upload(path: Path, mime: str = "audio/wav"):
    return {"file": (path.name, path.read_bytes(), mime)}


def _engine(served, **kw):
    app = served["app"]
    with app.state.engine_lock:
        return [h.to_dict() for h in app.state.engine.search(**kw)]


def _no_traceback(resp) -> None:
    assert "Traceback" not in resp.text and 'File "' not in resp.text


# ---- the audio-upload query ---------------------------------------------------------------------------
@pytest.mark.parametrize("which, mime", [("wav", "audio/wav"), ("flac", "audio/flac")])
def test_audio_upload_ranks_the_same_sound_first_with_its_window(served, which, mime):
    path = served["sounds"][which]
    r = served["client"].post("/api/search/audio", params={"k": 5}, files=_upload(path, mime))
    assert r.status_code == 200, r.text
    hits = r.json()
    assert len(hits) == 3 and {h["modality"] for h in hits} == {"audio"}  # the sounds, not the images
    assert hits[0]["path"] == str(path) and hits[0]["score"] > 0.99
    want = _engine(served, audio=str(path), k=5)
    assert [h["id"] for h in hits] == [h["id"] for h in want]
    for h in hits:
        assert h["duration"] > 0 and h["calibrated"] is not None and isinstance(h["why"], dict)
        assert 0 <= h["start"] < h["end"] <= h["duration"] + 1e-6
    assert hits[0]["duration"] == pytest.approx(sf.info(str(path)).duration, abs=0.01)


def test_audio_upload_takes_the_search_parameters(served):
    c, snd = served["client"], served["snd"]
    r = c.post("/api/search/audio", params={"k": 1, "type": "audio", "space": served["clap"], "under": str(snd)},
               files=_upload(served["sounds"]["wav"]))
    assert r.status_code == 200, r.text
    assert [h["path"] for h in r.json()] == [str(served["sounds"]["wav"])]
    r = c.post("/api/search/audio", params={"type": "text", "k": 1}, files=_upload(served["sounds"]["wav"]))
    assert r.status_code == 200 and [h["modality"] for h in r.json()] == ["text"]  # sound → notes
    r = c.post("/api/search/audio", params={"k": 0}, files=_upload(served["sounds"]["wav"]))
    assert r.status_code == 422 and "k" in r.json()["error"]


@pytest.mark.parametrize("files, status, word", [
    ({"file": ("x.wav", b"not a sound at all", "audio/wav")}, 400, "query sound"),
    ({"file": ("x.wav", b"", "audio/wav")}, 422, "empty"),
    (None, 422, "file"),
], ids=["not-a-sound", "empty", "no-file"])
def test_bad_audio_upload_is_an_error_with_a_message(served, files, status, word):
    r = served["client"].post("/api/search/audio", files=files)
    assert r.status_code == status and word in r.json()["error"], r.text
    _no_traceback(r)


@pytest.mark.parametrize("endpoint, what", [("/api/search/audio", "sound"), ("/api/search/image", "image")])
def test_an_upload_over_the_limit_is_413(served, monkeypatch, endpoint, what):
    monkeypatch.setattr(app_module, "MAX_UPLOAD_BYTES", 1024)
    r = served["client"].post(endpoint, files=_upload(served["sounds"]["wav"]))
    assert r.status_code == 413 and f"query {what} is over" in r.json()["error"], r.text


# ---- min_score ----------------------------------------------------------------------------------------
def _threshold(hits: list[dict]) -> float:
    """A calibrated score that keeps some of ``hits`` and drops others."""
    scores = sorted({h["calibrated"] for h in hits}, reverse=True)
    assert len(scores) >= 2, hits  # else min_score could not be seen to filter
    return (scores[0] + scores[1]) / 2


def test_min_score_filters_text_queries_on_the_calibrated_score(served):
    c = served["client"]
    params = {"q": "a rising whistle", "type": "any", "k": 10}
    everything = c.get("/api/search", params=params).json()
    t = _threshold(everything)
    r = c.get("/api/search", params={**params, "min_score": t})
    assert r.status_code == 200, r.text
    kept = r.json()
    assert 0 < len(kept) < len(everything)
    assert [h["id"] for h in kept] == [h["id"] for h in everything if h["calibrated"] >= t]
    assert [h["rank"] for h in kept] == list(range(1, len(kept) + 1))
    assert [h["id"] for h in kept] == [h["id"] for h in _engine(served, text=params["q"], type="any", k=10,
                                                                   min_score=t)]


@pytest.mark.parametrize("endpoint, path_of", [
    ("/api/search/audio", lambda s: s["sounds"]["wav"]),
    ("/api/search/image", lambda s: s["images"][0]),
])
def test_min_score_filters_uploads(served, endpoint, path_of):
    c, path = served["client"], path_of(served)
    everything = c.post(endpoint, params={"k": 10}, files=_upload(path)).json()
    assert everything
    lowest = min(h["calibrated"] for h in everything)
    highest = max(h["calibrated"] for h in everything)
    r = c.post(endpoint, params={"k": 10, "min_score": lowest}, files=_upload(path))
    assert r.status_code == 200 and [h["id"] for h in r.json()] == [h["id"] for h in everything]
    r = c.post(endpoint, params={"k": 10, "min_score": highest + 1}, files=_upload(path))
    assert r.status_code == 200 and r.json() == []


@pytest.mark.parametrize("bad", ["high", "nan", "inf"])
def test_a_bad_min_score_is_422(served, bad):
    r = served["client"].get("/api/search", params={"q": "x", "min_score": bad})
    assert r.status_code == 422 and "min_score" in r.json()["error"], r.text
    _no_traceback(r)


# ---- the CLI's endpoint -------------------------------------------------------------------------------
def test_the_cli_endpoint_takes_a_sound_and_min_score(served):
    c, wav = served["client"], served["sounds"]["wav"]
    head = {"X-Mmsearch-Token": TOKEN}
    r = c.post("/api/query", params={"k": 5, "media": "audio"}, content=wav.read_bytes(), headers=head)
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert hits[0]["path"] == str(wav) and {h["modality"] for h in hits} == {"audio"}
    assert hits == c.post("/api/search/audio", params={"k": 5}, files=_upload(wav)).json()
    r = c.post("/api/query", params={"k": 5, "media": "audio", "min_score": 1e9}, content=wav.read_bytes(),
               headers=head)
    assert r.status_code == 200 and r.json()["hits"] == []
    img = served["images"][1]  # without media: the body is an image, as before
    r = c.post("/api/query", params={"k": 1}, content=img.read_bytes(), headers=head)
    assert r.status_code == 200 and r.json()["hits"][0]["path"] == str(img)
    everything = c.get("/api/search", params={"q": "a rising whistle", "type": "any", "k": 10}).json()
    t = _threshold(everything)
    r = c.post("/api/query", params={"q": "a rising whistle", "type": "any", "k": 10, "min_score": t}, headers=head)
    assert [h["id"] for h in r.json()["hits"]] == [h["id"] for h in everything if h["calibrated"] >= t]


@pytest.mark.parametrize("params, body, word", [
    ({"q": "x", "min_score": "high"}, b"", "min_score='high': must be a number"),
    ({"q": "x", "min_score": "nan"}, b"", "min_score"),
    ({"media": "video"}, b"RIFF", "media='video'"),
    ({"media": "audio"}, b"not a sound", "query sound"),
])
def test_the_cli_endpoint_reports_bad_sound_arguments(served, params, body, word):
    r = served["client"].post("/api/query", params=params, content=body, headers={"X-Mmsearch-Token": TOKEN})
    assert r.status_code == 400 and r.json()["exit_code"] == 2 and word in r.json()["error"], r.text
    _no_traceback(r)


def test_the_cli_endpoint_names_a_sound_over_the_limit(served, monkeypatch):
    monkeypatch.setattr(served_query, "MAX_UPLOAD_BYTES", 1024)
    r = served["client"].post("/api/query", params={"media": "audio"}, content=served["sounds"]["wav"].read_bytes(),
                              headers={"X-Mmsearch-Token": TOKEN})
    assert r.status_code == 413 and "query sound is over" in r.json()["error"]


# ---- files and ranges ---------------------------------------------------------------------------------
def _id_of(served, path: Path) -> int:
    hits = _engine(served, text="x", type="any", k=50)
    return next(h["id"] for h in hits if str(path) in h["paths"])


@pytest.mark.parametrize("which, mime", [("wav", "audio/wav"), ("flac", "audio/flac"), ("markup", "audio/wav")])
def test_file_serves_indexed_sounds_by_content_type(served, which, mime):
    path = served["sounds"][which]
    r = served["client"].get(f"/api/file/{_id_of(served, path)}")
    assert r.status_code == 200, r.text
    assert r.content == path.read_bytes() and r.headers["content-type"] == mime
    assert r.headers["x-content-type-options"] == "nosniff"


def test_file_ranges_let_a_player_seek(served):
    c, path = served["client"], served["sounds"]["wav"]
    data, cid = path.read_bytes(), _id_of(served, path)
    size = len(data)
    for header, first, last in [("bytes=100-199", 100, 199), ("bytes=1000-", 1000, size - 1),
                                ("bytes=-64", size - 64, size - 1), (f"bytes=0-{size + 500}", 0, size - 1)]:
        r = c.get(f"/api/file/{cid}", headers={"Range": header})
        assert r.status_code == 206, (header, r.status_code, r.text[:200])
        assert r.content == data[first:last + 1], header
        assert r.headers["content-range"] == f"bytes {first}-{last}/{size}", header
        assert int(r.headers["content-length"]) == last - first + 1
        assert r.headers["content-type"] == "audio/wav"
    r = c.get(f"/api/file/{cid}")
    assert r.status_code == 200 and r.content == data and r.headers.get("accept-ranges") == "bytes"
    for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}"):
        r = c.get(f"/api/file/{cid}", headers={"Range": header})
        assert r.status_code == 416, (header, r.status_code)
        assert r.headers["content-range"] == f"bytes */{size}"
        _no_traceback(r)
    img = served["images"][0]  # images are ranged too
    r = c.get(f"/api/file/{_id_of(served, img)}", headers={"Range": "bytes=0-7"})
    assert r.status_code == 206 and r.content == img.read_bytes()[:8] and r.headers["content-type"] == "image/png"


def test_file_of_a_text_or_unknown_id_is_404(served):
    c = served["client"]
    text = next(h for h in _engine(served, text="x", type="text", k=5))
    for cid in (text["id"], 999999):
        r = c.get(f"/api/file/{cid}")
        assert r.status_code == 404 and "no indexed image or sound" in r.json()["error"], r.text
        r = c.get(f"/api/file/{cid}", headers={"Range": "bytes=0-9"})
        assert r.status_code == 404


@pytest.mark.parametrize("head, mime", [
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "audio/wav"),
    (b"RF64\xff\xff\xff\xffWAVEds64", "audio/wav"),
    (b"fLaC\x00\x00\x00\x22", "audio/flac"),
    (b"OggS\x00\x02" + bytes(22) + b"\x01vorbis", "audio/ogg"),
    (b"ID3\x04\x00\x00\x00\x00\x00\x00", "audio/mpeg"),
    (b"\xff\xfb\x90\x64\x00", "audio/mpeg"),
    (b"\xff\xf1\x50\x80\x02", "audio/aac"),
    (b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00", "audio/mp4"),
    (b"FORM\x00\x00\x00\x00AIFFCOMM", "audio/aiff"),
    (b"just some bytes", "application/octet-stream"),
    (b"", "application/octet-stream"),
])
def test_sound_media_type_is_sniffed(head, mime):
    assert files_module.sound_type(head) == mime


# ---- the page -----------------------------------------------------------------------------------------
def test_page_has_the_sound_player_and_upload(served):
    r = served["client"].get("/")
    assert r.status_code == 200
    page = r.text
    assert 'accept="audio/*"' in page and "/api/search/audio" in page
    assert 'createElement("audio")' in page and 'preload = "none"' in page and "/api/file/" in page
    assert "currentTime" in page and "calibrated" in page
    for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
        assert unsafe not in page  # every file- or user-supplied string goes in as text
    assert "http://" not in page and "https://" not in page


_CHECK = r"""
render(HITS, "a query");
const all = (e) => [e, ...(e.children || []).flatMap(all)];
const nodes = all(document.getElementById("results"));
const player = nodes.find((n) => n.tagName === "AUDIO");
const win = nodes.find((n) => n.className === "window");
win.onclick();
const before = player.currentTime;
player.readyState = 1;
(player.listeners.loadedmetadata || []).forEach((f) => f());
console.log(JSON.stringify({
  tags: [...new Set(made.map((n) => n.tagName))],
  text: document.getElementById("results").textContent,
  status: document.getElementById("status").textContent,
  titles: nodes.map((n) => n.title).filter(Boolean),
  player: { src: player.src, preload: player.preload, controls: player.controls, played: !!player.played,
            before: before === undefined ? null : before, at: player.currentTime },
  window: win.textContent,
}));
"""


def _clock(t: float) -> str:
    s = int(t)
    return f"{s // 60}:{s % 60:02d}"


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's script")
def test_page_renders_a_markup_named_sound_as_text_and_seeks_to_its_window(served, tmp_path):
    markup = served["sounds"]["markup"]
    hits = served["client"].post("/api/search/audio", params={"k": 1}, files=_upload(markup)).json()
    assert hits[0]["path"] == str(markup) and MARKUP in hits[0]["path"]  # JSON: the name as it is
    hit = {**hits[0], "start": 1.0, "end": 2.0}  # a window away from 0, so the seek shows
    page = served["client"].get("/").text
    script = page_script(page)
    js = tmp_path / "page.js"
    js.write_text(PAGE_DOM + script + f"\nconst HITS = {json.dumps([hit])};\n" + _CHECK, encoding="utf-8")
    out = subprocess.run(["node", str(js)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert "B" not in got["tags"] and "IMG" not in got["tags"]  # the name made no element
    assert MARKUP in got["text"] and str(markup.parent) in got["text"]
    assert got["player"] == {"src": f"/api/file/{hit['id']}", "preload": "none", "controls": True, "played": True,
                             "before": None, "at": 1.0}
    assert got["window"] == f"{_clock(1.0)}–{_clock(2.0)}"
    assert f"length {_clock(hit['duration'])}" in got["text"]
    assert f"{hit['calibrated']:+.2f}" in got["text"]  # the calibrated score, as `mmsearch query` shows it
    assert any(str(markup) in t for t in got["titles"])  # the full path, as a title (an attribute, not HTML)
