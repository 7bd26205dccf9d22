"""Filters applied before the vector search: every --where field, path globs, since/until with the mtime
fallback, a filter that keeps 3 of 10,000 items on every index kind and both search paths (an exact scan
of a small candidate set, the ANN index restricted by an IDSelector), bad terms."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from mmsearch import Engine
from mmsearch.errors import UsageError
from tests.kit import cli, metadata_store

DIM = 16


def _ns(*date: int) -> int:
    return int(dt.datetime(*date).timestamp()) * 1_000_000_000


#: name → (modality, metadata); every item is a file /photos/<folder>/<name>
ITEMS = {
    "canon.jpg": ("image", dict(folder="2023", width=6000, height=4000, size=8_000_000, mtime=_ns(2024, 3, 1),
                                taken_at="2023-06-15 10:00:00", camera_make="Canon", camera_model="Canon EOS R5",
                                gps_lat=48.85, gps_lon=2.35, orientation=1)),
    "nikon.jpg": ("image", dict(folder="2023", width=4000, height=3000, size=4_000_000, mtime=_ns(2024, 1, 5),
                                taken_at="2023-05-31 23:59:59", camera_make="NIKON CORPORATION", camera_model="NIKON D750",
                                gps_lat=-33.9, gps_lon=-70.6, orientation=6)),
    "phone.jpg": ("image", dict(folder="2022", width=3000, height=4000, size=2_500_000, mtime=_ns(2024, 2, 1),
                                taken_at="2022-12-24 18:00:00", camera_make="Apple", camera_model="iPhone 12 Ünïcode")),
    "scan.png": ("image", dict(folder="2023", width=800, height=600, size=900_000, mtime=_ns(2023, 7, 1))),
    "old.png": ("image", dict(folder="misc", width=640, height=480, size=300_000, mtime=_ns(2021, 1, 1))),
    "short.wav": ("audio", dict(folder="sounds", size=200_000, mtime=_ns(2023, 8, 1), duration=12.5)),
    "long.wav": ("audio", dict(folder="sounds", size=6_000_000, mtime=_ns(2022, 8, 1), duration=95.0)),
}
ALL = set(ITEMS)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("filters") / "store"
    metadata_store(root, [(f"/photos/{m['folder']}/{name}", mod, m) for name, (mod, m) in ITEMS.items()], dim=DIM)
    return root


def _found(store, **filters) -> set[str]:
    with Engine.open(store, create=False) as eng:
        hits = eng.search(vector=np.ones(DIM, np.float32) / 4, k=100, type="any", **filters)
    assert all(h.path is not None for h in hits)
    return {h.path.rsplit("/", 1)[1] for h in hits}


@pytest.mark.parametrize("term, expected", [
    ("camera=Canon", {"canon.jpg"}),
    ("camera=canon eos r5", {"canon.jpg"}),
    ("make~canon", {"canon.jpg"}),
    ("make~NIKON", {"nikon.jpg"}),
    ("model=iphone 12 ünïcode", {"phone.jpg"}),
    ("model~ÜNÏ", {"phone.jpg"}),  # case folded beyond ASCII
    ("make~%", set()),  # no LIKE wildcards
    ("make~_", set()),
    ("camera~d750", {"nikon.jpg"}),
    ("make!=Canon", ALL - {"canon.jpg"}),  # a negation keeps what has no make
    ("camera!~CANON", ALL - {"canon.jpg"}),
    ("camera", {"canon.jpg", "nikon.jpg", "phone.jpg"}),
    ("!camera", {"scan.png", "old.png", "short.wav", "long.wav"}),
    ("width>=3000", {"canon.jpg", "nikon.jpg", "phone.jpg"}),
    ("width>4000", {"canon.jpg"}),
    ("height<600", {"old.png"}),
    ("height<=600", {"old.png", "scan.png"}),
    ("width=800", {"scan.png"}),
    ("width!=800", ALL - {"scan.png"}),
    ("taken>=2023-06-01", {"canon.jpg"}),
    ("taken>=2023-05-31", {"canon.jpg", "nikon.jpg"}),
    ("taken=2023-05", {"nikon.jpg"}),
    ("taken=2023", {"canon.jpg", "nikon.jpg"}),
    ("taken<=2022", {"phone.jpg"}),
    ("taken>2023-05-31", {"canon.jpg"}),
    ("taken<2023-05-31 23:59:59", {"phone.jpg"}),
    ("taken", {"canon.jpg", "nikon.jpg", "phone.jpg"}),
    ("!taken", {"scan.png", "old.png", "short.wav", "long.wav"}),
    ("gps", {"canon.jpg", "nikon.jpg"}),
    ("!gps", ALL - {"canon.jpg", "nikon.jpg"}),
    ("lat>0", {"canon.jpg"}),
    ("lon<0", {"nikon.jpg"}),
    ("orientation=6", {"nikon.jpg"}),
    ("duration<30", {"short.wav"}),
    ("duration>1m", {"long.wav"}),
    ("duration", {"short.wav", "long.wav"}),
    ("size<5MB", {"nikon.jpg", "phone.jpg", "scan.png", "old.png", "short.wav"}),
    ("size>=4MB", {"canon.jpg", "nikon.jpg", "long.wav"}),
    ("size<1MiB", {"scan.png", "old.png", "short.wav"}),
    ("size>7.5mb", {"canon.jpg"}),
    ("mtime>=2024-01-01", {"canon.jpg", "nikon.jpg", "phone.jpg"}),
    ("mtime<2022", {"old.png"}),
    ("mtime=2023-07-01", {"scan.png"}),
])
def test_each_where_field(small, term, expected):
    assert _found(small, where=[term]) == expected


def test_terms_combine_with_and(small):
    assert _found(small, where=["width>=3000", "gps", "taken<2023-06"]) == {"nikon.jpg"}
    assert _found(small, where="make~canon") == {"canon.jpg"}  # one term as a plain string


@pytest.mark.parametrize("since, until, expected", [
    # EXIF date where there is one (phone.jpg's mtime is 2024, its date taken 2022: it is a 2022 photo) …
    ("2023-06-01", None, {"canon.jpg", "scan.png", "short.wav"}),
    # … else the file's mtime (scan.png 2023-07-01, the sounds, old.png)
    (None, "2022-12-31", {"phone.jpg", "old.png", "long.wav"}),
    ("2023-05-31", "2023-06-30", {"canon.jpg", "nikon.jpg"}),  # both ends whole days, included
    ("2023-07-01", "2023-07-01", {"scan.png"}),
    (dt.date(2023, 7, 1), dt.datetime(2023, 8, 1, 0, 0, 0), {"scan.png", "short.wav"}),
])
def test_since_until_use_date_taken_else_mtime(small, since, until, expected):
    assert _found(small, since=since, until=until) == expected


@pytest.mark.parametrize("path, expected", [
    ("*/2023/*.jpg", {"canon.jpg", "nikon.jpg"}),
    ("/photos/2023/*", {"canon.jpg", "nikon.jpg", "scan.png"}),
    ("*.wav", {"short.wav", "long.wav"}),
    ("/photos/20", {"canon.jpg", "nikon.jpg", "scan.png", "phone.jpg"}),  # no glob characters: a prefix
    ("*/p?one.*", {"phone.jpg"}),
])
def test_path_glob_and_prefix(small, path, expected):
    assert _found(small, path=path) == expected


def test_a_path_glob_shows_only_the_matching_copies(tmp_path):
    store = tmp_path / "store"
    meta = dict(width=10, height=10, size=1, mtime=1)
    metadata_store(store, [("/a/2023/x.jpg", "image", {**meta, "sha": "same"}),
                           ("/b/elsewhere/x.jpg", "image", {**meta, "sha": "same"})], dim=DIM)
    with Engine.open(store, create=False) as eng:
        (hit,) = eng.search(vector=np.ones(DIM) / 4, path="*/2023/*")
        assert hit.paths == ("/a/2023/x.jpg",) and hit.path == "/a/2023/x.jpg"
        (hit,) = eng.search(vector=np.ones(DIM) / 4)
        assert hit.paths == ("/a/2023/x.jpg", "/b/elsewhere/x.jpg")


def test_hits_carry_the_metadata(small):
    with Engine.open(small, create=False) as eng:
        hits = {h.path.rsplit("/", 1)[1]: h for h in eng.search(vector=np.ones(DIM) / 4, k=100, type="any")}
    assert hits["canon.jpg"].taken_at == "2023-06-15T10:00:00"
    assert hits["canon.jpg"].camera == "Canon EOS R5"  # the make once, when the model repeats it
    assert hits["nikon.jpg"].camera == "NIKON CORPORATION NIKON D750"
    assert hits["canon.jpg"].gps == (48.85, 2.35)
    assert hits["canon.jpg"].to_dict()["gps"] == [48.85, 2.35]
    assert (hits["scan.png"].taken_at, hits["scan.png"].camera, hits["scan.png"].gps) == (None, None, None)


@pytest.mark.parametrize("term, says", [
    ("widht>=3000", "unknown field 'widht'"),
    ("width>=lots", "'lots' is not a number"),
    ("size<5XB", "units"),
    ("taken>=2023-13-01", "not a date"),
    ("taken>=yesterday", "not a date"),
    ("make>canon", "is text"),
    ("width~3", "for text fields"),
    ("gps=yes", "takes no value"),
    ("width>=", "no value"),
    ("just words", "expected FIELD OP VALUE"),
    ("!mtime", "unknown field"),
])
def test_bad_terms_name_the_term(small, term, says):
    with Engine.open(small, create=False) as eng, pytest.raises(UsageError) as err:
        eng.search(vector=np.ones(DIM) / 4, where=[term])
    assert term in str(err.value) and says in str(err.value)


def test_bad_since_until_and_path_name_the_argument(small):
    with Engine.open(small, create=False) as eng:
        for kw, name in ((dict(since="June"), "since='June'"), (dict(until=5), "until=5"), (dict(path=""), "path=''")):
            with pytest.raises(UsageError, match=name):
                eng.search(vector=np.ones(DIM) / 4, **kw)


# ---- a selective filter on a large store -----------------------------------------------------------------------
N = 10_000
RARE = (17, 4242, 9876)  # the three items the filter keeps


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    """10,000 images written straight through the store's write API, three of them by a Leica."""
    rng = np.random.default_rng(7)
    vecs = rng.normal(size=(N, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    items = [(f"/big/{i:05d}.jpg", "image",
              dict(width=4000 if i % 4 == 0 else 1000, height=10, size=1000 + i, mtime=_ns(2024, 1, 1),
                   camera_make="Leica" if i in RARE else "Canon", vector=vecs[i]))
             for i in range(N)]
    root = tmp_path_factory.mktemp("large") / "store"
    metadata_store(root, items, dim=DIM)
    return root, vecs


@pytest.fixture(scope="module")
def opened(large):
    """One engine per index kind over the large store (each index is built once for the module)."""
    engines: dict[str, Engine] = {}

    def get(kind: str) -> Engine:
        if kind not in engines:
            engines[kind] = Engine.open(large[0], index=kind, create=False)
        return engines[kind]

    yield get
    for eng in engines.values():
        eng.close()


PATHS = pytest.mark.parametrize("route", ["exact-subset", "ann-selector"])
KINDS = pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "pq", "ondisk"])


@KINDS
@PATHS
def test_a_filter_keeping_3_of_10000_returns_those_3(large, opened, kind, route, monkeypatch):
    import mmsearch.query.search as search

    # every candidate set to the ANN index with an IDSelector, or every one scored exactly from the database
    monkeypatch.setitem(search.SUBSET_MAX, kind, 0 if route == "ann-selector" else N)
    root, vecs = large
    q = vecs[RARE[1]] * 0.2 + vecs[123] * 0.8  # closest to an item the filter drops
    q /= np.linalg.norm(q)
    eng = opened(kind)
    hits = eng.search(vector=q, k=10, where=["make=leica"])
    assert sorted(int(h.path[5:10]) for h in hits) == sorted(RARE)
    best = sorted(RARE, key=lambda i: -float(vecs[i].astype(np.float16).astype(np.float32) @ q))[:2]
    assert [int(h.path[5:10]) for h in eng.search(vector=q, k=2, where=["make=leica"])] == best
    assert all(h.camera == "Leica" for h in hits)
    assert eng.search(vector=q, k=1)[0].path == "/big/00123.jpg"  # unfiltered, the dropped item comes first
    assert eng.stats().spaces[0].index["image"] == kind  # the ANN index of that kind was searched


@KINDS
def test_a_broad_filter_through_the_ann_index_still_fills_k(large, opened, kind, monkeypatch):
    import mmsearch.query.search as search

    monkeypatch.setitem(search.SUBSET_MAX, kind, 0)
    root, vecs = large
    q = vecs[5]  # item 5 has width 1000: the filter drops the nearest item
    hits = opened(kind).search(vector=q, k=20, where=["width>=3000"])
    got = [int(h.path[5:10]) for h in hits]
    assert len(got) == 20 and all(i % 4 == 0 for i in got) and 5 not in got
    if kind == "flat":  # exact either way: the same as scoring the kept items by hand
        kept = np.arange(0, N, 4)
        sims = vecs[kept].astype(np.float16).astype(np.float32) @ q
        assert set(got) == set(kept[np.argsort(-sims)[:20]].tolist())


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "pq"])
def test_the_ann_index_returns_only_allowed_ids(kind):
    from mmsearch.ann.faiss_index import AnnIndex

    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(2000, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = np.arange(100, 2100, dtype=np.int64)
    ann = AnnIndex.build(kind, DIM, ids, vecs)
    allowed = ids[::3]
    _, got = ann.search(vecs[:4], 10, allowed=allowed)
    assert set(got[got >= 0].tolist()) <= set(allowed.tolist()) and (got >= 0).sum() > 0
    _, none = ann.search(vecs[:1], 10, allowed=np.zeros(0, np.int64))
    assert none.shape == (1, 0)


# ---- the CLI -----------------------------------------------------------------------------------------------------
def test_cli_filters(tmp_path, tiny_model):
    from tests.kit import write_exif_jpeg

    data = tmp_path / "data"
    write_exif_jpeg(data / "2023" / "canon.jpg", make="Canon", model="Canon EOS R5", taken="2023:06:15 10:00:00",
                    gps=(48.85, 2.35))
    write_exif_jpeg(data / "2022" / "nikon.jpg", make="NIKON", model="D750", taken="2022:01:02 03:04:05", seed=1)
    write_exif_jpeg(data / "2022" / "plain.jpg", seed=2)
    store = tmp_path / "store"
    assert cli("index", data, "--store", store, "--model", tiny_model, "--workers", "0").exit_code == 0

    def names(*args):
        r = cli("query", "a photo", "--store", store, "--no-server", "--paths", *args)
        assert r.exit_code == 0, r.output
        return {line.rsplit("/", 1)[1] for line in r.output.split()}

    assert names("--where", "make~canon") == {"canon.jpg"}
    assert names("--where", "taken", "--where", "!gps") == {"nikon.jpg"}
    assert names("--since", "2023-01-01") == {"canon.jpg", "plain.jpg"}  # plain.jpg: no EXIF date, its mtime is now
    assert names("--until", "2022-12-31") == {"nikon.jpg"}
    assert names("--path", "*/2022/*") == {"nikon.jpg", "plain.jpg"}
    assert names("--path", str(data / "2023")) == {"canon.jpg"}
    r = cli("query", "a photo", "--store", store, "--no-server", "--json", "--where", "gps")
    (hit,) = json.loads(r.stdout)
    assert hit["camera"] == "Canon EOS R5" and hit["taken_at"] == "2023-06-15T10:00:00" and hit["gps"] == [48.85, 2.35]


@pytest.mark.parametrize("args, named", [
    (("--where", "widht>3"), "widht>3"),
    (("--where", "width>=3000", "--where", "size<5ZB"), "size<5ZB"),
    (("--since", "last week"), "last week"),
    (("--until", "2023-02-30"), "2023-02-30"),
])
def test_cli_bad_filters_exit_2_naming_the_term(small, args, named):
    r = cli("query", "--image", __file__, "--store", small, "--no-server", *args)
    assert r.exit_code == 2, r.output
    assert named in r.output
