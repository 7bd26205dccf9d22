"""Videos over HTTP: the search API carries type=video, moments and pooling and answers what the Engine
answers; a served `mmsearch query --moments` gets the same moments; a video's thumbnail is its frame at
``t`` (the shot the ground truth shows then); the original plays (video/* type, byte ranges); the page
renders a video hit as a player starting at its moment, a chip per moment seeking there.

The store: the bundled sample videos (samples/videos, truth.json) indexed with builtin:shapes and
builtin:tones (tests/kit.py ``videos_store``).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
pytest.importorskip("av")
from fastapi.testclient import TestClient  # noqa: E402

from mmsearch import Engine  # noqa: E402
from mmsearch.server import create_app, discovery  # noqa: E402
from mmsearch.server import client as served_client  # noqa: E402
from mmsearch.server.files import video_type  # noqa: E402
from mmsearch.types import Moment  # noqa: E402
from tests.kit import PAGE_DOM, cli, page_script, serving, shown_colour, videos_store  # noqa: E402


@pytest.fixture(scope="module")
def vids(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    store, videos, truth = videos_store(root)
    with TestClient(create_app(store)) as c:
        ids = {h["path"]: h["id"] for h in c.get("/api/search", params={"q": "a", "type": "video", "k": 10}).json()}
        yield {"store": store, "client": c, "videos": videos, "truth": truth, "root": root,
               "id": {name: ids[str(p)] for name, p in videos.items()}}


def _engine(vids, **kw) -> list[dict]:
    with Engine.open(vids["store"], create=False) as eng:
        return [h.to_dict() for h in eng.search(**kw)]


def _same(got: list[dict], want: list[dict]) -> None:
    assert want  # two empty lists prove nothing
    assert [(g["id"], g["modality"], g["start"], g["end"]) for g in got] == \
           [(w["id"], w["modality"], w["start"], w["end"]) for w in want]
    assert [round(g["score"], 5) for g in got] == [round(w["score"], 5) for w in want]
    assert [g["moments"] for g in got] == [w["moments"] for w in want]


SEARCHES = {
    "video-moments": {"q": "a blue square", "type": "video", "moments": 2},
    "heard-mean": {"q": "a rising whistle", "type": "video", "moments": 3, "pooling": "mean"},
    "default-type": {"q": "a pink cross", "moments": 3},
    "any": {"q": "fast beeps", "type": "any", "k": 2},
}


@pytest.mark.parametrize("name", SEARCHES)
def test_video_search_carries_moments_and_equals_the_engine(vids, name):
    params = SEARCHES[name]
    r = vids["client"].get("/api/search", params=params)
    assert r.status_code == 200, r.text
    kw = {("text" if k == "q" else k): v for k, v in params.items()}
    want = _engine(vids, **kw)
    _same(r.json(), want)
    assert all(h["modality"] == "video" and 1 <= len(h["moments"]) <= params.get("moments", 1) for h in r.json())
    assert set(r.json()[0]["moments"][0]) == {"start", "end", "peak", "score", "evidence"}


def test_the_best_moment_is_the_ground_truth_shot(vids):
    hit = vids["client"].get("/api/search", params={"q": "a blue square", "type": "video", "k": 1}).json()[0]
    assert hit["path"].endswith("holiday.mp4") and (hit["start"], hit["end"]) == (3.0, 6.0)
    assert hit["moments"][0]["evidence"] == "seen"


@pytest.mark.parametrize("params, word", [
    ({"moments": 0}, "moments"),
    ({"moments": "two"}, "moments"),
    ({"moments": 10_000}, "moments"),
    ({"pooling": "max"}, "pooling"),
    ({"pooling": ""}, "pooling"),
    ({"type": "movie"}, "type"),
])
def test_bad_video_params_are_422_naming_the_parameter(vids, params, word):
    r = vids["client"].get("/api/search", params={"q": "a blue square", **params})
    assert r.status_code == 422 and r.json()["error"].startswith(f"{word}:"), r.text
    assert "Traceback" not in r.text


@pytest.mark.parametrize("params, word", [({"moments": "0"}, "moments"), ({"pooling": "max"}, "pooling"),
                                          ({"type": "movie"}, "type")])
def test_the_cli_endpoint_reports_bad_video_arguments(vids, params, word):
    c = vids["client"]
    r = c.post(discovery.QUERY_PATH, params={"q": "a blue square", **params},
               headers={discovery.TOKEN_HEADER: c.app.state.token})
    assert r.status_code == 400 and word in r.json()["error"] and r.json()["exit_code"] == 2, r.text


def test_the_schema_offers_video_moments_and_pooling(vids):
    ops = vids["client"].get("/openapi.json").json()["paths"]["/api/search"]["get"]["parameters"]
    by = {p["name"]: p["schema"] for p in ops}
    assert "video" in by["type"]["anyOf"][0]["enum"]
    assert by["moments"]["minimum"] == 1 and by["pooling"]["enum"] == ["peak", "mean"]


# ---- served `mmsearch query` -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(vids):
    with serving(vids["store"], log=vids["root"] / "serve.log") as base:
        yield base


def _log(vids) -> str:
    return (vids["root"] / "serve.log").read_text()


@pytest.mark.parametrize("args", [
    ("a blue square", "--type", "video", "--moments", "2"),
    ("a rising whistle", "--moments", "3", "--pooling", "mean"),
    ("a yellow star", "--type", "video"),
], ids=["moments", "mean", "type-video"])
def test_served_query_returns_the_moments_in_process_returns(vids, served, args):
    before = _log(vids).count("POST /api/query")
    got = cli("query", *args, "--store", vids["store"], "--json")
    want = cli("query", *args, "--store", vids["store"], "--json", "--no-server")
    assert got.exit_code == want.exit_code == 0, got.output + want.output
    assert _log(vids).count("POST /api/query") == before + 1  # the server answered the first
    _same(json.loads(got.stdout), json.loads(want.stdout))


def test_the_client_parses_moments_into_moments(vids, served):
    answer = served_client.search(vids["store"], text="a blue square", type="video", moments=2)
    assert answer is not None
    with Engine.open(vids["store"], create=False) as eng:
        want = eng.search(text="a blue square", type="video", moments=2)
    assert [h.moments for h in answer.hits] == [h.moments for h in want]
    assert all(isinstance(m, Moment) for h in answer.hits for m in h.moments)
    assert [h.to_dict() for h in answer.hits] == [h.to_dict() for h in want]


@pytest.mark.parametrize("kw, asked", [
    ({}, True),  # what protocol 3 carried: sent
    ({"moments": 2}, False),  # a protocol-3 server would drop it
    ({"pooling": "mean"}, False),
    ({"type": "video"}, False),
])
def test_a_protocol_3_server_is_asked_only_what_protocol_3_carried(vids, served, kw, asked):
    path = discovery.path_of(vids["store"])
    info = json.loads(path.read_text())
    assert info["protocol"] == discovery.PROTOCOL == 4
    try:
        discovery.write(vids["store"], {**info, "protocol": 3})
        answer = served_client.search(vids["store"], text="a blue square", **kw)
    finally:
        discovery.write(vids["store"], info)
    assert (answer is not None) == asked


# ---- thumbnails, originals --------------------------------------------------------------------------
def _shots(truth: dict, pick: str) -> list[tuple[float, str]]:
    """(time, colour shown then) for each shot: its middle, or its start (the frame a moment's peak names)."""
    return [((s["start"] + s["end"]) / 2 if pick == "middle" else s["start"], s["label"].split()[0])
            for s in truth["shots"]]


@pytest.mark.parametrize("pick", ["middle", "start"])
@pytest.mark.parametrize("name", ["holiday.mp4", "garden.webm", "phone.mov"])
def test_a_video_thumbnail_is_its_frame_at_t(vids, name, pick):
    from PIL import Image

    truth, c = vids["truth"][name], vids["client"]
    for t, colour in _shots(truth, pick):
        r = c.get(f"/api/thumb/{vids['id'][name]}", params={"t": t, "size": 128})
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg", r.text
        im = Image.open(io.BytesIO(r.content))
        w, h = truth["size"]
        assert max(im.size) <= 128 and (im.width > im.height) == (w > h)  # shown upright (phone.mov: portrait)
        assert shown_colour(im) == colour, (name, t)
        assert r.headers["etag"].endswith(f'-128-t{round(t * 10)}"')


def test_video_thumbnails_are_cached_per_tenth_of_a_second(vids):
    from PIL import Image

    c, vid = vids["client"], vids["id"]["holiday.mp4"]
    a, b, other = (c.get(f"/api/thumb/{vid}", params={"t": t, "size": 256}) for t in (4.52, 4.48, 7.5))
    assert a.headers["etag"] == b.headers["etag"] != other.headers["etag"] and a.content == b.content
    sha = a.headers["etag"].strip('"').split("-")[0]
    assert (vids["store"] / "thumbs" / sha[:2] / f"{sha}-256-t45.jpg").read_bytes() == a.content
    assert c.get(f"/api/thumb/{vid}", params={"t": 4.5, "size": 256},
                 headers={"If-None-Match": a.headers["etag"]}).status_code == 304
    default = c.get(f"/api/thumb/{vid}")  # no t: the frame at 1 s
    assert default.status_code == 200 and default.headers["etag"].endswith('-256-t10"')
    late = c.get(f"/api/thumb/{vid}", params={"t": 3600})  # past the end: the last frame
    assert late.status_code == 200 and shown_colour(Image.open(io.BytesIO(late.content))) == "yellow"


@pytest.mark.parametrize("t", [-1, "nan", "inf", "soon"])
def test_a_bad_thumbnail_time_is_422_naming_t(vids, t):
    r = vids["client"].get(f"/api/thumb/{vids['id']['holiday.mp4']}", params={"t": t})
    assert r.status_code == 422 and r.json()["error"].startswith("t:"), r.text


@pytest.mark.parametrize("name, mime", [("holiday.mp4", "video/mp4"), ("garden.webm", "video/webm"),
                                        ("phone.mov", "video/quicktime")])
def test_a_video_original_has_its_type_and_byte_ranges(vids, name, mime):
    c, vid, data = vids["client"], vids["id"][name], vids["videos"][name].read_bytes()
    whole = c.get(f"/api/file/{vid}")
    assert whole.status_code == 200 and whole.headers["content-type"] == mime and whole.content == data
    assert whole.headers["accept-ranges"] == "bytes"
    part = c.get(f"/api/file/{vid}", headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206 and part.headers["content-type"] == mime
    assert part.headers["content-range"] == f"bytes 100-1099/{len(data)}" and part.content == data[100:1100]
    tail = c.get(f"/api/file/{vid}", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    assert c.get(f"/api/file/{vid}", headers={"Range": f"bytes={len(data)}-"}).status_code == 416


@pytest.mark.parametrize("head, mime", [
    (b"\0\0\0\x20ftypisom" + b"\0" * 20, "video/mp4"),
    (b"\0\0\0\x14ftypqt  " + b"\0" * 20, "video/quicktime"),
    (b"\0\0\0\x14ftyp3gp5" + b"\0" * 20, "video/3gpp"),
    (b"\0\0\0\x08wide\0\0\0\0mdat", "video/quicktime"),
    (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm", "video/webm"),
    (b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\x82\x88matroska", "video/x-matroska"),
    (b"RIFF\0\0\0\0AVI LIST", "video/x-msvideo"),
    (b"FLV\x01\x05", "video/x-flv"),
    (b"\0\0\x01\xba\x44", "video/mpeg"),
    (b"G" + b"\0" * 187 + b"G" + b"\0" * 10, "video/mp2t"),
    (b"not a video at all", "application/octet-stream"),
])
def test_video_media_type_is_sniffed(head, mime):
    assert video_type(head) == mime


# ---- the page ---------------------------------------------------------------------------------------
_CHECK = r"""
render(HITS, "a query");
const all = (e) => [e, ...(e.children || []).flatMap(all)];
const nodes = all(document.getElementById("results"));
const player = nodes.find((n) => n.tagName === "VIDEO");
const chips = nodes.filter((n) => (n.className || "").split(" ").includes("moment"));
const src = player.src;
chips[chips.length - 1].onclick();
player.readyState = 1;
(player.listeners.loadedmetadata || []).forEach((f) => f());
console.log(JSON.stringify({
  tags: [...new Set(made.map((n) => n.tagName))],
  text: document.getElementById("results").textContent,
  src, poster: player.poster, preload: player.preload, controls: player.controls, played: !!player.played,
  at: player.currentTime, chips: chips.map((c) => c.textContent), current: chips.map((c) => c.className),
}));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's script")
def test_the_page_plays_a_video_hit_from_its_moment_and_seeks_to_a_chip(vids, tmp_path):
    c = vids["client"]
    hit = c.get("/api/search", params={"q": "a rising whistle", "type": "video", "moments": 3, "k": 1}).json()[0]
    hit = {**hit, "path": hit["path"].replace("holiday", "<b>holiday<b>")}  # a name that is markup stays text
    assert len(hit["moments"]) >= 2, hit
    page = c.get("/").text
    assert "<option>video</option>" in page and 'id="moments"' in page and 'id="pooling"' in page
    js = tmp_path / "page.js"
    js.write_text(PAGE_DOM + page_script(page) + f"\nconst HITS = {json.dumps([hit])};\n" + _CHECK, encoding="utf-8")
    out = subprocess.run(["node", str(js)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    first, last = hit["moments"][0], hit["moments"][-1]
    assert "B" not in got["tags"] and "<b>holiday<b>.mp4" in got["text"]
    assert got["src"] == f"/api/file/{hit['id']}#t={first['start']:.1f}"
    assert got["poster"] == f"/api/thumb/{hit['id']}?size=256&t={first['peak']:.1f}"
    assert got["preload"] == "none" and got["controls"] and got["played"] and got["at"] == last["start"]
    clock = lambda t: f"{int(t) // 60}:{int(t) % 60:02d}"  # noqa: E731
    assert got["chips"] == [f"{clock(m['start'])}–{clock(m['end'])} · {m['evidence']}" for m in hit["moments"]]
    assert got["current"][-1] == "moment at" and "at" not in got["current"][0].split()
