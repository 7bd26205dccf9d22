"""`mmsearch eval` on sounds: captioned sets (Clotho, AudioCaps, JSONL) → Recall@K text↔audio, and
labelled sets (ESC-50 meta.csv, UrbanSound8K, a folder per class) → zero-shot accuracy.

The tiny CLAP has random weights, so recall and accuracy are near chance: these tests check the
mechanics (formats, folds, prompts, what is left out, the report), not quality.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmsearch.errors import UsageError
from mmsearch.query.evaluate import Dataset, evaluate_dataset, load_dataset
from mmsearch.query.evaluate_audio import LabelledSet
from tests.kit import cli, write_tone

CLASSES = ("dog", "chirping_birds", "door_wood_knock")


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory) -> str:
    from tests.kit import make_tiny_clap

    return "local-dir:" + str(make_tiny_clap(tmp_path_factory.mktemp("clap") / "clap"))


@pytest.fixture
def fast(monkeypatch):
    """Torch in this process (no ONNX export, no decode workers): what the CLI runs here."""
    monkeypatch.setenv("MMSEARCH_RUNTIME", "torch")
    monkeypatch.setenv("MMSEARCH_WORKERS", "0")


@pytest.fixture
def engine(tmp_path, tiny_clap, fast):
    from mmsearch import Engine

    opened = []

    def make(*models: str):
        eng = Engine.open(tmp_path / f"store{len(opened)}", model=list(models or (tiny_clap,)))
        opened.append(eng)
        return eng

    yield make
    for e in opened:
        e.close()


def sounds(folder, names, start=0):
    """Distinct 1 s tones (distinct content: no two share a vector)."""
    return [write_tone(folder / n, seconds=1.0, freq=220.0 + 97.0 * (start + i)) for i, n in enumerate(names)]


def clotho(tmp_path, n=4, caps=3):
    """Clotho's layout: clotho_captions_evaluation.csv beside evaluation/ (file_name, caption_1..N)."""
    names = [f"clip {i}.wav" for i in range(n)]  # Clotho's names have spaces
    sounds(tmp_path / "evaluation", names)
    head = "file_name," + ",".join(f"caption_{j + 1}" for j in range(caps))
    rows = [f'{nm},' + ",".join(f'"a tone, number {i} take {j}"' for j in range(caps)) for i, nm in enumerate(names)]
    p = tmp_path / "clotho_captions_evaluation.csv"
    p.write_text("\n".join([head, *rows]) + "\n")
    return p


def esc50(tmp_path, per_fold=1, folds=(1, 2)):
    """ESC-50's layout: ESC-50-master/meta/esc50.csv and ESC-50-master/audio/*.wav."""
    root = tmp_path / "ESC-50-master"
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    n = 0
    for f in folds:
        for target, cat in enumerate(CLASSES):
            for j in range(per_fold):
                name = f"{f}-{100 + n}-A-{target}.wav"
                sounds(root / "audio", [name], start=n)
                lines.append(f"{name},{f},{target},{cat},False,{100 + n},A")
                n += 1
    lines.append(f"1-999-A-0.wav,1,0,{CLASSES[0]},False,999,A")  # listed, not there
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")
    return root


def rows_of(rep: dict) -> dict:
    return {(r["direction"], r["method"]): r for r in rep["rows"]}


# ---- loading (no model) ------------------------------------------------------------------------------
def test_clotho_layout_is_found_and_numbered_captions_read(tmp_path):
    d = load_dataset(clotho(tmp_path))
    assert isinstance(d, Dataset) and d.modality == "audio"
    assert [p.split("/")[-1] for p in d.images] == [f"clip {i}.wav" for i in range(4)]
    assert all("/evaluation/" in p for p in d.images)
    assert d.captions[:3] == ["a tone, number 0 take 0", "a tone, number 0 take 1", "a tone, number 0 take 2"]
    assert d.caption_image == [i for i in range(4) for _ in range(3)]


def test_audiocaps_sounds_are_found_by_youtube_or_audiocap_id(tmp_path):
    sounds(tmp_path / "audio" / "test", ["Yaaa_30.000_40.000.wav", "bbb.flac", "103.ogg"])
    (tmp_path / "test.csv").write_text(
        "audiocap_id,youtube_id,start_time,caption\n"
        "101,aaa,30,a dog barks\n102,aaa,30,barking nearby\n"
        "200,bbb,0,rain on a roof\n103,ccc,10,an organ plays\n104,gone,0,a lost video\n")
    d = load_dataset(tmp_path / "test.csv")
    names = [p.split("/")[-1] for p in d.images]
    assert d.modality == "audio" and names == ["Yaaa_30.000_40.000.wav", "bbb.flac", "103.ogg"]
    assert d.captions == ["a dog barks", "barking nearby", "rain on a roof", "an organ plays"]
    assert d.caption_image == [0, 0, 1, 2]
    assert len(d.missing) == 1 and "gone" in d.missing[0][1]


def test_esc50_meta_reads_classes_in_target_order_and_folds_filter(tmp_path):
    root = esc50(tmp_path)
    d = load_dataset(root / "meta" / "esc50.csv")
    assert isinstance(d, LabelledSet) and d.modality == "audio"
    assert d.classes == list(CLASSES) and len(d.files) == 6 and d.labels == [0, 1, 2, 0, 1, 2]
    assert [p.split("/")[-1] for p, _ in d.missing] == ["1-999-A-0.wav"]
    one = load_dataset(root / "meta" / "esc50.csv", fold=2)
    assert one.classes == list(CLASSES) and len(one.files) == 3 and all("/2-" in f for f in one.files)
    assert one.missing == []  # the missing file is in fold 1
    assert load_dataset(root).classes == list(CLASSES)  # the ESC-50 folder itself
    with pytest.raises(UsageError, match="no files in fold 9"):
        load_dataset(root / "meta" / "esc50.csv", fold=9)


def test_urbansound_layout_with_fold_folders(tmp_path):
    sounds(tmp_path / "audio" / "fold1", ["1-a.wav"])
    sounds(tmp_path / "audio" / "fold2", ["2-b.wav"], start=1)
    (tmp_path / "metadata").mkdir()
    (tmp_path / "metadata" / "UrbanSound8K.csv").write_text(
        "slice_file_name,fsID,start,end,salience,fold,classID,class\n"
        "1-a.wav,1,0,1,1,1,3,dog_bark\n2-b.wav,2,0,1,1,2,1,car_horn\n")
    d = load_dataset(tmp_path / "metadata" / "UrbanSound8K.csv")
    assert d.classes == ["car_horn", "dog_bark"] and d.labels == [1, 0] and not d.missing


def test_labelled_folder_and_what_it_refuses(tmp_path):
    for c, name in enumerate(CLASSES):
        sounds(tmp_path / "set" / name, [f"{name}-{j}.wav" for j in range(2)], start=2 * c)
    sounds(tmp_path / "set" / "dog" / "more", ["deep.flac"], start=10)  # any depth below the label
    (tmp_path / "set" / "dog" / "notes.txt").write_text("not a sound")
    d = load_dataset(tmp_path / "set")
    assert d.classes == sorted(CLASSES) and len(d.files) == 7 and d.modality == "audio"
    assert d.labels.count(d.classes.index("dog")) == 3
    with pytest.raises(UsageError, match="no folds"):
        load_dataset(tmp_path / "set", fold=1)
    with pytest.raises(UsageError, match="labelled files"):
        load_dataset(tmp_path / "set" / "dog" / "more")
    (tmp_path / "mixed.csv").write_text("file,caption\nset/dog/dog-0.wav,a\nimg.png,b\n")
    (tmp_path / "img.png").write_bytes(b"\x89PNG")
    with pytest.raises(UsageError, match="mixes 1 sounds and 1 images"):
        load_dataset(tmp_path / "mixed.csv")
    (tmp_path / "gone.csv").write_text("audio,caption\nnope.wav,a\n")
    with pytest.raises(UsageError, match="none of the dataset's 1 files exist.*--audio-root"):
        load_dataset(tmp_path / "gone.csv")


# ---- through the engine ------------------------------------------------------------------------------
def test_clotho_recall_both_ways_with_an_image_model_beside(tmp_path, engine, tiny_clap, tiny_model):
    eng = engine(tiny_model, tiny_clap)  # the sounds' space is the CLAP one, whatever the order
    rep = evaluate_dataset(eng, clotho(tmp_path)).to_dict()
    assert rep["kind"] == "retrieval" and rep["modality"] == "audio" and rep["model"] == tiny_clap
    assert rep["sounds"] == 4 and rep["captions"] == 12 and rep["failed_sounds"] == []
    rows = rows_of(rep)
    assert {d for d, _ in rows} == {"text→audio", "audio→text"} and len(rows) == 4
    for (direction, method), r in rows.items():
        rec = r["recall"]
        assert 0.0 <= rec["R@1"] <= rec["R@5"] <= rec["R@10"] <= 1.0
        assert r["queries"] == (12 if direction == "text→audio" else 4)
    for direction in ("text→audio", "audio→text"):  # 4 sounds; 9 captions of the other sounds
        assert rows[(direction, "exact")]["recall"]["R@10"] == 1.0
    # R@1 text→audio is what a user gets asking each caption by hand: its own sound first
    own = {f'a tone, number {i} take {j}': f"clip {i}.wav" for i in range(4) for j in range(3)}
    by_hand = sum(eng.search(text=c, type="audio", k=1, space=tiny_clap)[0].path.endswith(f) for c, f in own.items())
    assert rows[("text→audio", "exact")]["recall"]["R@1"] == pytest.approx(by_hand / len(own))


def test_jsonl_leaves_out_missing_and_broken_sounds_with_their_captions(tmp_path, engine):
    sounds(tmp_path / "snd", ["a.wav", "b.flac", "c.ogg"])
    (tmp_path / "snd" / "broken.wav").write_text("this is not audio")
    lines = [{"audio": "snd/a.wav", "captions": ["a low hum", "humming"]}, {"file": "snd/b.flac", "caption": "a beep"},
             {"path": "snd/c.ogg", "caption_1": "a whistle", "caption_2": "whistling"},
             {"audio": "snd/missing.wav", "caption": "never heard"}, {"audio": "snd/broken.wav", "caption": "static"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    rep = evaluate_dataset(engine(), tmp_path / "d.jsonl")
    assert rep.images == 3 and rep.captions == 5
    left = {p.split("/")[-1]: why for p, why in rep.failed_images}
    assert set(left) == {"missing.wav", "broken.wav"} and left["missing.wav"] == "no such file" and left["broken.wav"]
    for row in rep.rows:
        assert all(0.0 <= v <= 1.0 for v in row.recall.values())
        if row.method == "exact":
            assert row.recall[10] == 1.0  # 3 sounds, 5 captions: every candidate is in the top 10


def test_esc50_zero_shot_accuracy_prompts_and_folds(tmp_path, engine, tiny_clap, monkeypatch):
    root = esc50(tmp_path)
    eng = engine()
    enc = eng.encoder(tiny_clap)
    seen: list[list[str]] = []
    embed = enc.embed_texts
    monkeypatch.setattr(enc, "embed_texts", lambda texts: seen.append(list(texts)) or embed(texts))
    rep = evaluate_dataset(eng, root / "meta" / "esc50.csv", prompt="This is a sound of {}.")
    assert seen[-1] == ["This is a sound of dog.", "This is a sound of chirping birds.", "This is a sound of door wood knock."]
    d = rep.to_dict()
    assert d["kind"] == "classification" and d["classes"] == 3 and d["sounds"] == 6 and d["fold"] is None
    assert 0.0 <= d["accuracy"] <= 1.0 and d["top5"] == 1.0  # 3 classes: all within the top 5
    assert sum(c["count"] for c in d["per_class"].values()) == 6
    assert [f["path"].split("/")[-1] for f in d["failed_sounds"]] == ["1-999-A-0.wav"]

    # the same predictions as the public search gives, prompts added as texts
    eng.add_texts({f"class:{c}": f"This is a sound of {c.replace('_', ' ')}." for c in CLASSES})
    data = load_dataset(root / "meta" / "esc50.csv")
    right = [eng.search(audio=f, type="text", k=1)[0].text == f"This is a sound of {CLASSES[lab].replace('_', ' ')}."
             for f, lab in zip(data.files, data.labels)]
    assert rep.accuracy == pytest.approx(np.mean(right))

    one = evaluate_dataset(eng, root / "meta" / "esc50.csv", fold=1)
    assert one.fold == 1 and one.items == 3 and one.classes == 3 and one.prompt == "the sound of {}"
    with pytest.raises(UsageError, match="needs a \\{\\}"):
        evaluate_dataset(eng, root / "meta" / "esc50.csv", prompt="no slot")


def test_cli_eval_json_and_table_on_a_labelled_folder(tmp_path, tiny_clap, fast):
    for c, name in enumerate(CLASSES):
        sounds(tmp_path / "set" / name, [f"{j}.wav" for j in range(2)], start=2 * c)
    r = cli("eval", tmp_path / "set", "--model", tiny_clap, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["kind"] == "classification" and rep["classes"] == 3 and rep["sounds"] == 6
    assert 0.0 <= rep["accuracy"] <= 1.0 and rep["prompt"] == "the sound of {}"
    r = cli("eval", tmp_path / "set", "--model", tiny_clap, "--prompt", "this is a sound of {}", "--store", tmp_path / "s")
    assert r.exit_code == 0, r.output
    assert "accuracy" in r.stdout and "top-5" in r.stdout and "3 classes" in r.stdout and "6 sounds" in r.stdout
    r = cli("eval", tmp_path / "set", "--model", tiny_clap, "--fold", "1")
    assert r.exit_code == 2 and "no folds" in r.output
