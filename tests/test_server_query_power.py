"""The HTTP API's query power equals the Engine's: filters, combined queries, like/unlike, collapsed
duplicates, the dups endpoint; bad filters and query texts are 422s that name the term.

One store of bundled sample shapes (builtin:shapes) and two sounds (builtin:tones); half the images
dated 2020 by their mtime, so a date filter narrows.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mmsearch import Engine  # noqa: E402
from mmsearch.server import create_app  # noqa: E402
from mmsearch.server import patterns  # noqa: E402
from tests.kit import SAMPLES  # noqa: E402

OLD = 1_590_000_000  # 2020-05-20: the mtime of every other image


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("power")
    (root / "img").mkdir()
    (root / "snd").mkdir()
    for i, p in enumerate(sorted((SAMPLES / "shapes" / "images").iterdir())[:12]):
        copy = Path(shutil.copy(p, root / "img"))
        if i % 2:
            os.utime(copy, (OLD, OLD))
    for p in sorted((SAMPLES / "sounds").glob("*.wav"))[:2]:
        shutil.copy(p, root / "snd")
    shutil.copy(root / "img" / sorted(os.listdir(root / "img"))[0], root / "img" / "zz_copy.png")  # an exact copy
    with Engine.open(root / "store", model=["builtin:shapes", "builtin:tones"], device="cpu", workers=0) as eng:
        assert eng.index([root / "img", root / "snd"]).ok
    return root / "store"


@pytest.fixture(scope="module")
def client(store):
    with TestClient(create_app(store)) as c:
        yield c


@pytest.fixture(scope="module")
def engine(store):
    with Engine.open(store, create=False) as eng:
        yield eng


def _ids(engine, name: str) -> int:
    """The content id of the first image whose file name holds ``name``."""
    hits = engine.search(text="a shape", k=50, type="image")
    return next(h.id for h in hits if name in Path(h.path).name)


def _same(got: list[dict], want: list) -> None:
    assert want  # two empty answers would prove nothing
    want = [h.to_dict() for h in want]
    assert [(g["id"], g["path"], g["rank"]) for g in got] == [(w["id"], w["path"], w["rank"]) for w in want]
    assert all(abs(g["score"] - w["score"]) < 1e-5 for g, w in zip(got, want))
    assert [g["duplicates"] for g in got] == [w["duplicates"] for w in want]


CASES = {
    "combined": {"q": "a blue star + a green square - a cross", "k": 5},
    "weights": {"q": "2:blue + circle", "k": 4},
    "where": {"q": "a shape", "k": 20, "where": ["width>=10", "size<1MB"]},
    "where-nothing": {"q": "a shape", "k": 5, "where": ["width>99999"]},
    "since": {"q": "a shape", "k": 20, "since": "2021-01-01"},
    "until": {"q": "a shape", "k": 20, "until": "2020-12"},
    "path": {"q": "a shape", "k": 20, "path": "*/blue_*"},
    "like": {"q": "a shape", "k": 5, "like": ["green"]},
    "unlike": {"q": "a blue shape", "k": 5, "unlike": ["blue_star"]},
    "collapse": {"q": "a shape", "k": 6, "collapse_dups": True},
    "collapse-at": {"q": "a shape", "k": 6, "dups_threshold": 0.7},
    "min-score": {"q": "a blue star", "k": 20, "min_score": 1.0},
    "since-ancient": {"q": "a shape", "k": 20, "since": "0001-01-01", "where": ["mtime>=0100"]},  # before 1678
    "until-far": {"q": "a shape", "k": 20, "until": "9998-12-31"},
    "sounds-filtered": {"q": "a tone", "k": 5, "type": "audio", "where": ["duration<60"]},
}


@pytest.mark.parametrize("name", CASES)
def test_each_option_answers_as_the_engine(client, engine, name):
    params = dict(CASES[name])
    for key in ("like", "unlike"):
        if key in params:
            params[key] = [_ids(engine, n) for n in params[key]]
    r = client.get("/api/search", params=params)
    assert r.status_code == 200, r.text
    args = {k: v for k, v in params.items() if k not in ("q", "dups_threshold")}
    if "dups_threshold" in params:
        args["collapse_dups"] = params["dups_threshold"]
    want = engine.search(text=params["q"], **args)
    if name == "where-nothing":
        assert r.json() == [] and want == []
        return
    _same(r.json(), want)
    if name in ("since", "until", "path"):
        assert 0 < len(want) < 13  # the filter narrowed the 13 images


def test_a_date_filter_keeps_exactly_the_dated_files(client):
    old = client.get("/api/search", params={"q": "a shape", "k": 50, "type": "image", "until": "2020"}).json()
    new = client.get("/api/search", params={"q": "a shape", "k": 50, "type": "image", "since": "2021"}).json()
    assert len(old) == len(new) == 6  # 12 images, every other one dated 2020 (the copy is one content with its original)
    assert any(p.endswith("zz_copy.png") for h in new for p in h["paths"])
    assert not {h["id"] for h in old} & {h["id"] for h in new}


def test_collapsing_folds_near_duplicates_and_still_returns_k(client):
    params = {"q": "a shape", "k": 5, "type": "image"}
    plain = client.get("/api/search", params=params).json()
    folded = client.get("/api/search", params={**params, "collapse_dups": "true", "dups_threshold": 0.5}).json()
    assert len(plain) == len(folded) == 5
    assert any(h["duplicates"] for h in folded) and not any(h["duplicates"] for h in plain)
    shown = {h["path"] for h in folded}
    assert not shown & {d["path"] if isinstance(d, dict) else d for h in folded for d in h["duplicates"]}


def test_similar_is_like_an_item(client, engine):
    first = _ids(engine, "green")
    r = client.get(f"/api/similar/{first}", params={"k": 4, "unlike": [_ids(engine, "blue_star")]})
    assert r.status_code == 200, r.text
    _same(r.json(), engine.search(like=[first], unlike=[_ids(engine, "blue_star")], k=4))
    assert r.json()[0]["id"] == first


@pytest.mark.parametrize("params, named", [
    ({"q": "x", "where": ["widht>=10"]}, "widht"),
    ({"q": "x", "where": ["width>=10", "width>=ten"]}, "width>=ten"),
    ({"q": "x", "where": ["make<3"]}, "make<3"),
    ({"q": "x", "where": ["taken=2023-02-30"]}, "2023-02-30"),
    ({"q": "x", "since": "last week"}, "last week"),
    ({"q": "x", "until": "2023-13"}, "2023-13"),
    ({"q": "x", "path": " "}, "path"),
    ({"q": "dog + + cat"}, "column 7"),
    ({"q": "2:dog + \"cat"}, "unclosed quote"),
    ({"q": "x", "dups_threshold": 1.5}, "dups_threshold"),
])
def test_a_bad_filter_or_query_text_is_a_422_naming_it(client, params, named):
    for path in ("/api/search", "/api/similar/1"):
        if path != "/api/search" and "where" not in params and "since" not in params and "until" not in params:
            continue
        r = client.get(path, params=params)
        assert r.status_code == 422, r.text
        assert named in r.json()["error"], r.text


@pytest.mark.parametrize("key", ["like", "unlike"])
def test_an_unknown_example_is_a_404(client, key):
    r = client.get("/api/search", params={"q": "x", key: [424242]})
    assert r.status_code == 404 and "424242" in r.json()["error"]
    assert client.get("/api/similar/424242").status_code == 404


def test_dups_lists_clusters_as_the_engine_with_thumbnails(client, engine):
    r = client.get("/api/dups", params={"threshold": 0.9})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got == [c.to_dict() for c in engine.dups(0.9)]
    exact = [c for c in got if c["exact"]]
    assert exact and exact[0]["files"] == 2 and any(p.endswith("zz_copy.png") for p in exact[0]["duplicates"] + [exact[0]["keep"]])
    for cluster in got:
        assert {"modality", "threshold", "similarity", "keep", "duplicates", "members"} <= set(cluster)
        for m in cluster["members"]:
            assert client.get(f"/api/thumb/{m['id']}", params={"size": 128}).status_code == 200
    looser = client.get("/api/dups", params={"threshold": 0.5, "under": str(engine.store.root.parent / "img")}).json()
    assert sum(c["files"] for c in looser) >= sum(c["files"] for c in got)
    assert client.get("/api/dups", params={"type": "audio"}).json() == [c.to_dict() for c in engine.dups(type="audio")]
    assert client.get("/api/dups", params={"threshold": 0}).status_code == 422


def test_the_schema_declares_the_new_options(client):
    schema = client.get("/openapi.json").json()
    for path in ("/api/search", "/api/similar/{content_id}", "/api/search/image", "/api/search/audio"):
        op = next(iter(schema["paths"][path].values()))
        names = {p["name"] for p in op["parameters"]}
        assert {"where", "since", "until", "path", "collapse_dups", "dups_threshold", "like", "unlike"} <= names
        assert {"400", "404", "422"} <= set(op["responses"])
    assert "/api/dups" in schema["paths"]


# ---- the declared patterns: every string they match is a filter the engine reads -------------------------
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(pattern[:-1] + r"\Z", re.ASCII)  # as a JSON Schema validator reads it


@settings(max_examples=300, deadline=None)
@given(st.from_regex(_compiled(patterns.WHERE_PATTERN)).filter(lambda s: len(s) <= patterns.MAX_TERM_CHARS))
def test_every_term_the_where_pattern_matches_is_a_filter(term):
    from mmsearch.query.filters import Filters

    Filters.make([term])


@settings(max_examples=200, deadline=None)
@given(st.from_regex(_compiled(patterns.DATE_PATTERN)))
def test_every_date_the_pattern_matches_is_a_date(date):
    from mmsearch.query.filters import Filters

    Filters.make(since=date, until=date)


@pytest.mark.parametrize("term, ok", [
    ("width>=3000", True), ("Width >= 3000", True), ("make~canon", True), ("camera!=Canon EOS", True),
    ("taken>=2023-06-01", True), ("taken=2024-02-29", True), ("taken=2000-02-29 10:30", True), ("mtime<2023", True),
    ("gps", True), ("!gps", True), ("!make", True), ("size<5MB", True), ("size < 1.5 GiB", True),
    ("duration<30", True), ("duration>=2m", True), ("lat>-33.5", True), ("orientation=6", True),
    ("widht>=1", False), ("taken=2023-02-30", False), ("taken=1900-02-29", False), ("make<3", False),
    ("gps=1", False), ("width~3", False), ("size<5 parsecs", False), ("mtime", False), ("width>=", False),
])
def test_the_where_pattern_reads_terms_as_the_engine(term, ok):
    from mmsearch.errors import UsageError
    from mmsearch.query.filters import Filters

    assert bool(_compiled(patterns.WHERE_PATTERN).search(term)) is ok
    if ok:
        Filters.make([term])
    else:
        with pytest.raises(UsageError):
            Filters.make([term])


def test_a_query_no_model_of_the_store_answers_is_a_404(client, engine):
    image = _ids(engine, "green")
    sound = next(h.id for h in engine.search(text="a tone", type="audio", k=1))
    for path, params, word in ((f"/api/similar/{image}", {"type": "audio"}, "type='audio'"),
                               ("/api/search", {"q": "x", "like": [image, sound]}, "no model in this store embeds"),
                               (f"/api/similar/{sound}", {"unlike": [image]}, "no model in this store embeds")):
        r = client.get(path, params=params)
        assert r.status_code == 404 and word in r.json()["error"], r.text


@pytest.mark.parametrize("params, want", [
    ([("q", "a shape"), ("where", "width>=10"), ("where", "size<1MB"), ("since", "2021"), ("k", "4")],
     dict(text="a shape", where=["width>=10", "size<1MB"], since="2021", k=4)),
    ([("q", "a blue shape"), ("q", "a star"), ("collapse_dups", "0.5"), ("path", "*/blue_*"), ("k", "3")],
     dict(text=["a blue shape", "a star"], collapse_dups=0.5, path="*/blue_*", k=3)),
    ([("q", "a shape"), ("collapse_dups", "1"), ("until", "2020"), ("k", "3")],
     dict(text="a shape", collapse_dups=True, until="2020", k=3)),
])
def test_the_cli_endpoint_carries_filters_texts_and_collapsing(store, engine, params, want):
    app = create_app(store)
    with TestClient(app) as c:
        r = c.post("/api/query", params=params, headers={"X-Mmsearch-Token": app.state.token})
        assert r.status_code == 200, r.text
        _same(r.json()["hits"], engine.search(**want))
        bad = c.post("/api/query", params=[("q", "x"), ("collapse_dups", "often")],
                     headers={"X-Mmsearch-Token": app.state.token})
        assert bad.status_code == 400 and "collapse_dups='often'" in bad.json()["error"] and bad.json()["exit_code"] == 2
