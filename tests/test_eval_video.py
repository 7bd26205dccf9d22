"""`mmsearch eval` on captioned videos: text→video Recall@K and median rank, peak and mean pooling.

The world: eight short videos of the videos world (:mod:`mmsearch.world.videos`), each a one-second
intro shared by all (a cyan hexagon) then its own main scene (a distinct shape and colour) with a
distinct tones-world cue on its soundtrack. Indexed with builtin:shapes (frames), alone or with
builtin:tones (soundtrack windows), each caption (the main shot's) should find its own video; the
same captions shuffled onto the wrong videos should not. One store per set of models, indexed by the
first eval that uses it (later evals only sync it). Run with -s to see the figures.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("av")

from mmsearch.errors import UsageError  # noqa: E402
from mmsearch.query.evaluate import evaluate_dataset, load_dataset  # noqa: E402
from mmsearch.query.evaluate_video import literal, median_rank, recall_of  # noqa: E402
from mmsearch.query.parse import parse  # noqa: E402
from mmsearch.world import videos as V  # noqa: E402
from tests.kit import cli  # noqa: E402

MAINS = [("circle", "red", "sweep-up"), ("square", "blue", "siren"), ("triangle", "yellow", "noise-white"),
         ("star", "green", "beeps-fast"), ("cross", "orange", "chord-major"), ("hexagon", "purple", "drum"),
         ("circle", "pink", "clicks"), ("square", "green", "organ")]
INTRO = V.Shot("hexagon", "cyan", 1.0, seed=99)
SEEN = ("builtin:shapes",)
BOTH = ("builtin:shapes", "builtin:tones")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(folder, [(video name, caption)]): the eight videos under folder/clips/."""
    root = tmp_path_factory.mktemp("videos")
    (root / "clips").mkdir()
    pairs = []
    for i, (shape, colour, cls) in enumerate(MAINS):
        main = V.Shot(shape, colour, 2.0, seed=i)
        V.write_video(root / "clips" / f"v{i}.mp4", [INTRO, main], cues=[V.Cue(cls, 1.0, 3.0, seed=i)],
                      fps=4, size=(64, 64))
        pairs.append((f"clips/v{i}.mp4", main.caption))
    return root, pairs


@pytest.fixture
def fast(monkeypatch):
    """Torch in this process (no ONNX export, no decode workers): what the CLI runs here."""
    monkeypatch.setenv("MMSEARCH_RUNTIME", "torch")
    monkeypatch.setenv("MMSEARCH_WORKERS", "0")


def write_csv(path, rows, head="video,caption"):
    path.write_text("\n".join([head, *(",".join(f'"{c}"' for c in r) for r in rows)]) + "\n")
    return path


def run_eval(csv, models, *args):
    store = csv.parent / ("store-" + "-".join(m.split(":")[1] for m in models))
    r = cli("eval", csv, *(a for m in models for a in ("--model", m)), "--store", store, *args)
    assert r.exit_code == 0, r.output
    return r


# R@1 at least, per pooling, with the frames alone and with a sound model too (mean pooling scores the
# frames' mean where an image model reads the videos: an off-topic caption's score against a sound model's
# mean soundtrack vectors once outranked the right videos' frames, R@1 0.375).
@pytest.mark.parametrize("models, floor", [(SEEN, {"peak": 0.75, "mean": 0.75}), (BOTH, {"peak": 0.75, "mean": 0.75})])
def test_each_caption_finds_its_video_with_either_pooling(world, fast, models, floor):
    root, pairs = world
    rep = json.loads(run_eval(write_csv(root / "right.csv", pairs), models, "--json").stdout)
    assert (rep["kind"], rep["modality"], rep["videos"], rep["captions"]) == ("retrieval", "video", 8, 8)
    assert rep["reference"]["R@1"] == 31.2 and "not measured here" in rep["reference"]["note"]
    rows = {r["pooling"]: r for r in rep["rows"]}
    assert set(rows) == {"peak", "mean"}
    for pooling, row in rows.items():
        rec = row["recall"]
        print(f"\n{'+'.join(models)} right captions, {pooling}: R@1 {rec['R@1']:.3f} R@5 {rec['R@5']:.3f} median rank {row['median_rank']}",
              end="")
        assert rec["R@1"] >= floor[pooling], (pooling, rec)  # chance: 1/8
        assert rec["R@1"] <= rec["R@5"] <= rec["R@10"] == 1.0 and row["median_rank"] <= (1 if floor[pooling] > 0.5 else 4)


def test_shuffled_captions_score_low(world, fast):
    root, pairs = world
    names, caps = [n for n, _ in pairs], [c for _, c in pairs]
    wrong = caps[3:] + caps[:3]  # every caption on another video
    rep = json.loads(run_eval(write_csv(root / "wrong.csv", list(zip(names, wrong))), BOTH, "--json").stdout)
    for row in rep["rows"]:
        print(f"\nshuffled captions, {row['pooling']}: R@1 {row['recall']['R@1']:.3f} median rank {row['median_rank']}",
              end="")
        assert row["recall"]["R@1"] <= 0.25 and row["median_rank"] > 1


def test_the_table_shows_both_poolings_and_the_reference(world, fast):
    root, pairs = world
    out = run_eval(write_csv(root / "table.csv", pairs[:3]), SEEN).stdout
    assert "3 videos, 3 captions" in out and "peak" in out and "mean" in out and "median rank" in out
    assert "31.2" in out and "Portillo-Quintero" in out and "not measured here" in out


def test_msrvtt_layout_reads_video_ids_from_the_videos_root(world, tmp_path):
    root, pairs = world
    rows = [(f"ret{i}", f"msr{i}", f"v{i}", cap) for i, (_, cap) in enumerate(pairs[:3])]
    csv = write_csv(tmp_path / "MSRVTT_JSFUSION_test.csv", rows, head="key,vid_key,video_id,sentence")
    d = load_dataset(csv, images_root=root / "clips")
    assert d.modality == "video" and d.captions == [c for _, c in pairs[:3]]
    assert d.files == [str(root / "clips" / f"v{i}.mp4") for i in range(3)]


@pytest.mark.parametrize("head, rows, match", [
    ("video,caption", [], "no \\(file, caption\\) pairs"),
    ("", [], "no \\(file, caption\\) pairs"),
    ("clip,caption", [("clips/v0.mp4", "a red circle")], "row 2: needs one of the columns/keys image, audio, video"),
    ("video,caption", [("clips/v0.mp4", "")], "row 2: needs one of the columns/keys caption"),
    ("key,vid_key,video_id,sentence", [("ret0", "msr0", "", "a red circle")], "row 2: needs a video_id"),
    ("video,caption", [("clips/v0.mp4", "a red circle"), ("clips/v0.mp4", "a red disc"), ("clips/gone.mp4", "a cat")],
     "row 4: video .*gone.mp4: no such file"),
])
def test_bad_csvs_name_the_file_and_row(world, fast, head, rows, match):
    root, _ = world
    csv = root / "bad.csv"
    csv.write_text("\n".join([head, *(",".join(r) for r in rows)]) + ("\n" if head else ""))
    with pytest.raises(UsageError, match=match) as e:
        evaluate_dataset(None, csv)  # type: ignore[arg-type]  # refused before any engine is used
    assert "bad.csv" in str(e.value) + str(getattr(e.value, "path", ""))


@pytest.mark.parametrize("caption", ["a man - in a hat", "2: dogs run", 'a "quoted" word', "plain words", "t-shirt + jeans"])
def test_a_caption_is_searched_as_exactly_its_text(caption):
    (term,) = parse(literal(caption))
    assert term.text in (caption, caption.replace('"', "'")) and term.weight == 1.0  # quotes kept when they hide nothing


def test_recall_and_median_rank_count_unfound_as_beyond():
    ranks = [1, 3, None, 2, None]
    assert recall_of(ranks, (1, 5)) == {1: 0.2, 5: 0.6}
    assert median_rank(ranks) == 3.0 and median_rank([1, None, None]) is None
