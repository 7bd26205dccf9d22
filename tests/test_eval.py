"""`mmsearch eval`: dataset formats, the recall protocol, exact vs ANN, CLI output."""

import json

import pytest

from mmsearch.errors import UsageError
from mmsearch.query.evaluate import recall_at, load_dataset
from tests.kit import cli, write_images


@pytest.fixture
def images(tmp_path):
    return write_images(tmp_path / "imgs", 8)


@pytest.fixture
def datasets(tmp_path, images):
    """The same three captions of two images in every format load_dataset reads."""
    names = [f"imgs/{p.name}" for p in images[:2]]
    (tmp_path / "d.csv").write_text(f"image,caption\n{names[0]},one\n{names[0]},uno\n{names[1]},two\n")
    (tmp_path / "d.jsonl").write_text(
        json.dumps({"image": names[0], "captions": ["one", "uno"]}) + "\n" + json.dumps({"image": names[1], "caption": "two"}) + "\n"
    )
    (tmp_path / "coco.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": names[0]}, {"id": 2, "file_name": names[1]}],
        "annotations": [{"image_id": 1, "caption": "one"}, {"image_id": 1, "caption": "uno"}, {"image_id": 2, "caption": "two"}],
    }))
    (tmp_path / "karpathy.json").write_text(json.dumps({"images": [
        {"filename": images[0].name, "filepath": "imgs", "split": "test", "sentences": [{"raw": "one"}, {"raw": "uno"}]},
        {"filename": images[1].name, "filepath": "imgs", "split": "test", "sentences": [{"raw": "two"}]},
        {"filename": images[2].name, "filepath": "imgs", "split": "train", "sentences": [{"raw": "three"}]},
    ]}))
    return tmp_path


@pytest.mark.parametrize("f, split", [("d.csv", None), ("d.jsonl", None), ("coco.json", None), ("karpathy.json", "test")])
def test_all_formats_give_the_same_pairs(datasets, images, f, split):
    d = load_dataset(datasets / f, split=split)
    assert d.images == [str(images[0]), str(images[1])]
    assert d.captions == ["one", "uno", "two"]
    assert d.caption_image == [0, 0, 1]


@pytest.mark.parametrize("name, content, match", [
    ("none.csv", None, "no such dataset"),
    ("x.csv", "foo,bar\n1,2\n", "needs one of"),
    ("x.json", "{}", "unrecognised JSON"),
])
def test_bad_datasets_name_the_problem(tmp_path, name, content, match):
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(UsageError, match=match):
        load_dataset(tmp_path / name)


def testrecall_at_counts_a_hit_when_the_right_item_is_within_k():
    ranked = [[5, 3, 9], [1, 2, 3]]
    rel = {0: {3}, 1: {7}}
    r = recall_at(ranked, lambda row, qi: [int(c) in rel[qi] for c in row], (1, 2, 3))
    assert r == {1: 0.0, 2: 0.5, 3: 0.5}


def test_eval_end_to_end_exact_equals_flat_andrecall_at_is_monotone(tmp_path, images, tiny_model):
    lines = ["image,caption"] + [f"imgs/{p.name},caption number {i}" for i, p in enumerate(images)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    r = cli("eval", tmp_path / "d.csv", "--model", tiny_model, "--index", "flat", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["images"] == 8 and rep["captions"] == 8
    rows = {(x["direction"], x["method"]): x for x in rep["rows"]}
    assert set(rows) == {("text→image", "exact"), ("text→image", "flat"), ("image→text", "exact"), ("image→text", "flat")}
    for direction in ("text→image", "image→text"):
        assert rows[(direction, "exact")]["recall"] == rows[(direction, "flat")]["recall"]
        rec = rows[(direction, "exact")]["recall"]
        assert rec["R@1"] <= rec["R@5"] <= rec["R@10"] == 1.0  # 8 candidates: top 10 holds them all
    r = cli("eval", tmp_path / "d.csv", "--model", tiny_model)
    assert r.exit_code == 0 and "R@1" in r.stdout and "exact" in r.stdout
