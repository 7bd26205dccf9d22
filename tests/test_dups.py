"""Near-duplicates: `Engine.dups` / `mmsearch dups`, and `search(collapse_dups=True)` / `query --collapse-dups`.

The world: six scenes of the shapes world, each colour and shape different (``builtin:shapes`` puts
such pairs far apart), and copies of three made the ways people make them: resized, slightly
cropped, re-saved as JPEG, and copied byte for byte (one content, two paths).
"""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from mmsearch import Engine
from mmsearch.errors import UsageError
from mmsearch.world import shapes as W
from tests.kit import cli

SCENES = {"a": ("red", "circle"), "b": ("green", "square"), "c": ("blue", "triangle"),
          "d": ("yellow", "star"), "e": ("purple", "cross"), "f": ("cyan", "hexagon")}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("dups")
    photos, backup = root / "photos", root / "backup"
    (photos / "edits").mkdir(parents=True)
    backup.mkdir()
    img = {}
    for n, (name, (colour, shape)) in enumerate(SCENES.items()):
        scene = W.render_scene([{"shape": shape, "colour": colour, "size": "large", "position": "center"}],
                               seed=n, background="light")
        img[name] = scene.image
        scene.image.save(photos / f"{name}.png")
    a = img["a"]
    a.resize((160, 160), Image.LANCZOS).save(photos / "a_big.png")  # the largest: the one to keep
    a.crop((5, 5, 55, 55)).save(photos / "edits" / "a_crop.png")  # 8 % off each side
    a.convert("RGB").save(photos / "a_q.jpg", quality=95)
    img["b"].resize((48, 48), Image.LANCZOS).save(photos / "b_small.png")
    shutil.copyfile(photos / "b.png", backup / "b.png")  # exact copies: one content, two paths
    shutil.copyfile(photos / "c.png", backup / "c.png")
    eng = Engine.open(root / "store", model="builtin:shapes", device="cpu", workers=0)
    report = eng.index([photos, backup])
    assert report.ok and report.indexed == 10 and report.reused == 2, report
    p = {("backup/" if f.parent == backup else "") + f.stem: str(f) for f in [*photos.rglob("*.*"), *backup.iterdir()]}
    yield eng, root, p
    eng.close()


def files(cluster) -> set[str]:
    return {p for m in cluster.members for p in m.paths}


def expected(p):
    return [{p["a_big"], p["a"], p["a_crop"], p["a_q"]}, {p["b"], p["backup/b"], p["b_small"]}, {p["c"], p["backup/c"]}]


def test_clusters_are_the_copies_and_nothing_else(world):
    eng, _, p = world
    clusters = eng.dups()
    assert sorted(map(sorted, map(files, clusters))) == sorted(map(sorted, expected(p)))
    for c in clusters:
        assert c.members[0].similarity == 1.0 and all(0.95 <= m.similarity <= 1.0 for m in c.members)
        assert c.threshold == 0.95 and c.space == "builtin:shapes" and c.modality == "image"


def test_the_largest_copy_comes_first(world):
    eng, _, p = world
    by_keep = {c.keep: c for c in eng.dups()}
    a = by_keep[p["a_big"]]  # 160×160 before 64×64, 60×60
    assert (a.members[0].width, a.members[0].height) == (160, 160)
    pixels = [(m.width or 0) * (m.height or 0) for m in a.members]
    assert pixels == sorted(pixels, reverse=True)
    b = next(c for c in by_keep.values() if p["b_small"] in files(c))
    assert b.keep in (p["b"], p["backup/b"]) and b.members[-1].paths == (p["b_small"],)
    assert all(m.size and m.size > 0 for c in by_keep.values() for m in c.members)


def test_exact_copies_are_one_content_with_two_paths(world):
    eng, _, p = world
    clusters = eng.dups()
    c = next(c for c in clusters if p["c"] in files(c))
    assert c.exact and len(c.members) == 1 and set(c.members[0].paths) == {p["c"], p["backup/c"]}
    assert c.members[0].exact and c.similarity == 1.0 and c.duplicates == tuple(set(c.members[0].paths) - {c.keep})
    b = next(c for c in clusters if p["b"] in files(c))
    copied = next(m for m in b.members if p["b"] in m.paths)
    assert copied.exact and set(copied.paths) == {p["b"], p["backup/b"]} and not b.exact
    assert clusters[0].exact  # surest first: exact copies before near-duplicates


def test_a_higher_threshold_separates_the_loosest_copy(world):
    eng, _, p = world
    crop = {h.path: h.score for h in eng.search(image=p["a_crop"], k=20)}
    loosest = max(s for path, s in crop.items() if path != p["a_crop"])  # the crop's closest other file
    tight = round(loosest + 0.002, 4)
    assert tight < 1.0, f"the crop scored {loosest} against its original: not a copy a threshold can separate"
    clustered = set().union(*map(files, eng.dups(threshold=tight)))
    assert p["a_crop"] not in clustered and {p["c"], p["backup/c"]} <= clustered  # exact copies stay


def test_a_low_threshold_joins_unrelated_images(world):
    eng, _, p = world
    loose = set().union(*map(files, eng.dups(threshold=0.05)))
    default = set().union(*map(files, eng.dups()))
    assert not {p["d"], p["e"], p["f"]} & default
    assert {p["d"], p["e"], p["f"]} & loose and default < loose


@pytest.mark.parametrize("block", [1, 3, 4096])
def test_block_by_block_finds_the_same_clusters(world, block):
    """Small blocks: the vectors are compared a few at a time (several range searches), same answer."""
    eng, _, _ = world
    assert [c.to_dict() for c in eng.dups(block=block)] == [c.to_dict() for c in eng.dups()]


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_the_same_clusters_whatever_the_store_index(world, kind):
    """Flat and IVF indexes do the range search themselves, HNSW gets an exact index: one answer."""
    eng, root, _ = world
    with Engine.open(root / "store", index=kind, create=False) as other:
        got = other.dups(block=3)
        assert other.stats().spaces[0].index["image"] == kind
    assert [c.to_dict() for c in got] == [c.to_dict() for c in eng.dups()]


@pytest.mark.parametrize("block", [1, 2, 4096])
def test_block_by_block_below_a_folder(world, block):
    eng, root, _ = world
    assert [c.to_dict() for c in eng.dups(under=root / "photos", block=block)] == \
        [c.to_dict() for c in eng.dups(under=[root / "photos", root / "photos" / "edits"])]


def test_under_keeps_to_a_folder(world):
    eng, root, p = world
    clusters = eng.dups(under=root / "photos")
    got = sorted(map(sorted, map(files, clusters)))
    assert got == sorted(map(sorted, [{p["a_big"], p["a"], p["a_crop"], p["a_q"]}, {p["b"], p["b_small"]}]))
    assert eng.dups(under=root / "backup") == []  # two files there, not copies of each other
    assert eng.dups(under=[root / "photos" / "edits"]) == []


@pytest.mark.parametrize("kw, message", [
    ({"threshold": 0}, "threshold=0"), ({"threshold": 1.5}, "threshold=1.5"), ({"threshold": "high"}, "threshold="),
    ({"type": "text"}, "type='text'"), ({"block": 0}, "block=0"), ({"under": 3}, "under"),
    ({"type": "audio", "space": "builtin:shapes"}, "holds no audio"),
])
def test_bad_arguments_name_themselves(world, kw, message):
    eng, _, _ = world
    with pytest.raises(UsageError, match=message):
        eng.dups(**kw)


def test_sounds_in_an_image_store_are_none(world):
    eng, _, _ = world
    assert eng.dups(type="audio") == []


# ---- the command ---------------------------------------------------------------------------------
def test_cli_json_shape(world):
    _, root, p = world
    res = cli("dups", "--store", root / "store", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert len(data) == 3
    for c in data:
        assert set(c) >= {"modality", "space", "threshold", "similarity", "exact", "files", "keep", "duplicates",
                          "members"}
        assert c["files"] == len(c["duplicates"]) + 1 == sum(len(m["paths"]) for m in c["members"])
        assert c["keep"] == c["members"][0]["paths"][0]
        for m in c["members"]:
            assert set(m) >= {"id", "paths", "similarity", "width", "height", "size", "exact"}
            assert m["exact"] == (len(m["paths"]) > 1)
    lines = cli("dups", "--store", root / "store", "--jsonl").output.splitlines()
    assert [json.loads(x) for x in lines] == data


def test_cli_table_and_paths(world, elsewhere):
    _, root, p = world
    res = cli("dups", "--store", root / "store")
    assert res.exit_code == 0, res.output
    assert "keep" in res.output and "same bytes" in res.output and p["a_crop"] in res.output
    assert "3 clusters" in res.output
    res = cli("dups", "--store", root / "store", "--paths")
    listed = res.output.splitlines()
    assert p["a_big"] not in listed and p["a"] in listed and len(listed) == 9 - 3
    assert cli("dups", "--store", root / "store", "--threshold", "0.05", "--type", "image").exit_code == 0


@pytest.mark.parametrize("args", [["--threshold", "0"], ["--threshold", "2"], ["--type", "text"]])
def test_cli_bad_arguments_exit_2(world, args):
    _, root, _ = world
    res = cli("dups", "--store", root / "store", *args)
    assert res.exit_code == 2, res.output


# ---- at query time ---------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 4, 6, 10])
def test_collapse_dups_keeps_k_distinct_hits(world, k):
    """Six distinct images (a, b, c, d, e, f with their copies): k of them, each once, when k exist."""
    eng, _, p = world
    group = {path: i for i, g in enumerate(expected(p)) for path in g}
    plain = eng.search(image=p["a"], k=k)
    hits = eng.search(image=p["a"], k=k, collapse_dups=True)
    assert len(hits) == min(k, 6) and [h.rank for h in hits] == list(range(1, len(hits) + 1))
    seen = [group.get(h.path, h.path) for h in hits]
    assert len(set(seen)) == len(seen)  # no two hits are copies of each other
    assert group[hits[0].path] == 0
    if k >= 2:
        assert set(hits[0].duplicates) | set(hits[0].paths) == expected(p)[0]
        assert len({group.get(h.path, h.path) for h in plain}) < len(plain)  # without it, copies crowd the top


def test_collapse_dups_folds_into_the_higher_ranked_hit(world):
    eng, _, p = world
    hits = eng.search(image=p["b"], k=3, collapse_dups=True)
    assert set(hits[0].paths) == {p["b"], p["backup/b"]} and hits[0].duplicates == (p["b_small"],)
    assert all(h.duplicates == () for h in hits[1:] if h.path not in expected(p)[0])
    assert eng.search(image=p["b"], k=3)[0].duplicates == ()  # off by default


def test_collapse_threshold_can_be_given(world):
    eng, _, p = world
    crop = {h.path: h.score for h in eng.search(image=p["a_crop"], k=20)}
    tight = round(max(s for path, s in crop.items() if path != p["a_crop"]) + 0.002, 4)  # above the crop's closest
    assert p["a_crop"] in [h.path for h in eng.search(image=p["a"], k=10, collapse_dups=tight)]
    assert p["a_crop"] not in [h.path for h in eng.search(image=p["a"], k=10, collapse_dups=True)]
    with pytest.raises(UsageError, match="threshold=1.5"):
        eng.search(image=p["a"], k=6, collapse_dups=1.5)


def test_cli_query_collapse_dups(world):
    _, root, p = world
    res = cli("query", "--image", p["a"], "--store", root / "store", "-k", "2", "--collapse-dups", "--json",
              "--no-server")
    assert res.exit_code == 0, res.output
    hits = json.loads(res.output)
    assert len(hits) == 2 and hits[0]["duplicates"] and hits[1]["duplicates"] is not None
    table = cli("query", "--image", p["a"], "--store", root / "store", "-k", "2", "--collapse-dups", "--no-server")
    assert "near-duplicates folded" in table.output


# ---- sounds ---------------------------------------------------------------------------------------
def test_sounds_re_encoded_are_near_duplicates(tmp_path):
    """The same sound as WAV and FLAC (other bytes, same samples) and a quieter copy: one cluster; a
    sound of another kind stays out. The longest, then the largest file, comes first."""
    import numpy as np
    import soundfile as sf

    from mmsearch.world import tones as T

    siren, organ = T.generate_class("siren", 9, 1)[0], T.generate_class("organ", 9, 1)[0]
    folder = tmp_path / "sounds"
    folder.mkdir()
    sf.write(folder / "siren.wav", siren.samples, siren.sample_rate)
    sf.write(folder / "siren.flac", siren.samples, siren.sample_rate)
    sf.write(folder / "siren_quiet.wav", (0.7 * siren.samples).astype(np.float32), siren.sample_rate)
    sf.write(folder / "organ.wav", organ.samples, organ.sample_rate)
    with Engine.open(tmp_path / "store", model="builtin:tones", workers=0) as eng:
        assert eng.index([folder]).indexed == 4
        clusters = eng.dups(type="audio")
    sirens = sorted(str(folder / f"siren{s}") for s in (".wav", ".flac", "_quiet.wav"))
    assert [sorted(files(c)) for c in clusters] == [sirens]
    first = clusters[0].members[0]
    assert first.duration and first.paths == (str(folder / "siren.wav"),)  # same length: the larger file (WAV)
    res = cli("dups", "--store", tmp_path / "store", "--type", "audio")
    assert res.exit_code == 0 and "siren_quiet.wav" in res.output and "organ" not in res.output


def test_collapse_dups_is_served_as_in_process_while_a_server_runs(world, monkeypatch):
    """`query --collapse-dups` goes to the running server (typer's runner and the light `main` path in a
    subprocess) and prints what in-process prints."""
    import os
    import subprocess
    import sys

    pytest.importorskip("uvicorn")
    from tests.test_served import Served

    _, root, p = world
    store = root / "store"
    served = Served(store, monkeypatch)
    try:
        folded = cli("query", "--image", p["a"], "-k", "2", "--collapse-dups", "--json", "--store", store)
        light = subprocess.run([sys.executable, "-m", "mmsearch", "query", "--image", p["a"], "-k", "2",
                                "--collapse-dups", "--json", "--store", str(store)],
                               capture_output=True, text=True, timeout=300, env=dict(os.environ))
        assert len(served.calls) == 2 and all(c["collapse_dups"] is True for c in served.calls)
        alone = cli("query", "--image", p["a"], "-k", "2", "--collapse-dups", "--json", "--store", store, "--no-server")
        plain = cli("query", "--image", p["a"], "-k", "2", "--json", "--store", store)
        assert len(served.calls) == 3
    finally:
        served.stop()
    assert folded.exit_code == 0 and light.returncode == 0, folded.output + light.stderr
    assert json.loads(folded.stdout) == json.loads(light.stdout) == json.loads(alone.stdout)
    for out in (folded.stdout, light.stdout):
        assert set(json.loads(out)[0]["duplicates"]) | {json.loads(out)[0]["path"]} == expected(p)[0]
    assert json.loads(plain.stdout)[0]["duplicates"] == []


def test_the_table_prints_file_names_as_they_are():
    """Names with markup in them ([red], [/b], :smile:) print as data, not as styles or emoji."""
    from rich.console import Console

    from mmsearch import present
    from mmsearch.types import DupCluster, DupMember

    names = ("/p/[red]a[/red].png", "/p/[/b] :smile:.png", "/p/x]")
    cluster = DupCluster("image", "builtin:shapes", 0.95, 0.97, (
        DupMember(1, names[:2], 1.0, 64, 64, size=2048), DupMember(2, names[2:], 0.97, 32, 32, size=512)))
    out = Console(record=True, width=200)
    present.dups(out, [cluster], present.Format.table, threshold=0.95)
    text = out.export_text()
    assert all(name in text for name in names)
    assert "same bytes" in text and "0.970" in text and "2.0 kB" in text
