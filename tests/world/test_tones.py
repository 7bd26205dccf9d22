"""Tests for the procedural tones world (generator + sample writer). Fast, no model."""
from __future__ import annotations

import csv
import re

import numpy as np
import pytest

from mmsearch.world import tones as T


def test_constants_and_classes():
    assert T.SAMPLE_RATE == 16000
    assert 15 <= len(T.CLASSES) <= 25
    names = [c.name for c in T.CLASSES]
    assert len(set(names)) == len(names)
    assert tuple(names) == T.CLASS_NAMES
    prompts = [c.prompt for c in T.CLASSES]
    assert len(set(prompts)) == len(prompts)
    for c in T.CLASSES:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", c.name), c.name
        assert c.prompt and c.prompt == c.descriptions[0]
        assert len(c.descriptions) >= 4
    assert T.class_prompts() == [(c.name, c.prompt) for c in T.CLASSES]
    by = dict(T.class_prompts())
    # the families the brief asks for
    for name in ("tone-a4", "tone-low", "tone-high", "chord-major", "chord-minor", "beeps-fast",
                 "pulses-slow", "sweep-up", "sweep-down", "noise-white", "noise-pink",
                 "noise-brown", "pluck", "organ", "beeps-noise"):
        assert name in by
    assert by["sweep-up"] == "a rising whistle"
    assert by["sweep-down"] == "a falling whistle"
    assert by["tone-a4"] == "a pure tone at A4"
    assert by["beeps-noise"] == "beeps over noise"
    with pytest.raises(ValueError):
        T.get_class("no-such-class")


def test_captions_phrasings():
    up = T.class_captions("sweep-up")
    for phrase in ("a rising whistle", "a rising sweep"):
        assert phrase in up
    assert "a falling whistle" in T.class_captions("sweep-down")
    assert all("{" not in c for c in T.caption_corpus())
    # captions of different classes never coincide (a caption names exactly one class)
    owner: dict[str, str] = {}
    for c in T.CLASSES:
        for cap in T.class_captions(c.name):
            assert owner.setdefault(cap, c.name) == c.name, cap
    assert len(T.caption_corpus()) == len(owner)


def _same(a, b):
    return (len(a) == len(b) and all(x.cls == y.cls and x.caption == y.caption
                                     and np.array_equal(x.samples, y.samples) for x, y in zip(a, b)))


def test_deterministic_per_seed_and_prefix_stable():
    a = T.generate(3, 8)
    assert _same(a, T.generate(3, 8))
    assert _same(a[:3], T.generate(3, 3))
    assert not _same(a, T.generate(4, 8))
    c = T.generate_class("pluck", 5, 3)
    assert _same(c, T.generate_class("pluck", 5, 3))
    assert _same(c[:2], T.generate_class("pluck", 5, 2))
    assert not np.array_equal(c[0].samples[:8000], T.generate_class("pluck", 6, 1)[0].samples[:8000])
    assert T.generate(0, 0) == [] and T.generate_class("drum", 0, 0) == []
    with pytest.raises(ValueError):
        T.generate(0, -1)


def test_random_draw_covers_classes():
    sounds = T.generate(0, 160)
    assert len({s.cls for s in sounds}) >= len(T.CLASSES) - 3


@pytest.mark.parametrize("name", T.CLASS_NAMES)
def test_every_class_generates_valid_audio(name):
    sounds = T.generate_class(name, 1, 3)
    assert len(sounds) == 3
    for i, s in enumerate(sounds):
        x = s.samples
        assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.ndim == 1
        assert s.sample_rate == T.SAMPLE_RATE and s.cls == name and s.index == i
        assert np.isfinite(x).all()
        assert np.abs(x).max() <= 1.0
        assert np.abs(x).max() > 0.05            # audible, not silence
        assert T.MIN_DURATION - 1e-6 <= s.duration <= T.MAX_DURATION + 1e-6
        assert s.caption in T.class_captions(name)
        assert s.prompt == T.get_class(name).prompt
    # variation within a class
    assert len({len(s.samples) for s in sounds}) > 1 or not np.array_equal(sounds[0].samples, sounds[1].samples)


def test_durations_and_loudness_vary():
    sounds = T.generate(9, 60)
    d = np.array([s.duration for s in sounds])
    assert d.min() >= T.MIN_DURATION and d.max() <= T.MAX_DURATION
    assert d.max() - d.min() > 0.6
    assert (d > 1.0).mean() > 0.6                 # most clips exceed half CLAP's 2 s window
    peaks = np.array([np.abs(s.samples).max() for s in sounds])
    assert peaks.max() / peaks.min() > 2.0


def _dominant_freq(x, sr):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1.0 / sr)[int(spec.argmax())]


def test_class_acoustics():
    sr = T.SAMPLE_RATE
    # A4 is ~440 Hz
    for s in T.generate_class("tone-a4", 2, 3):
        assert abs(_dominant_freq(s.samples, sr) - 440.0) < 12
    # low < A4 < A5 < high
    low = _dominant_freq(T.generate_class("tone-low", 2, 1)[0].samples, sr)
    high = _dominant_freq(T.generate_class("tone-high", 2, 1)[0].samples, sr)
    assert low < 300 and high > 1500
    # a rising sweep ends higher than it starts; a falling one the reverse
    for name, sign in (("sweep-up", 1), ("sweep-down", -1)):
        for s in T.generate_class(name, 3, 3):
            x = s.samples
            q = len(x) // 4
            f0 = _dominant_freq(x[q // 2: q + q // 2], sr)
            f1 = _dominant_freq(x[-q - q // 2: -q // 2], sr)
            assert sign * (f1 - f0) > 200, (name, f0, f1)
    # noise colours: share of energy above 2 kHz falls white > pink > brown
    def hi_share(name):
        x = T.generate_class(name, 4, 1)[0].samples.astype(np.float64)
        p = np.abs(np.fft.rfft(x)) ** 2
        f = np.fft.rfftfreq(len(x), 1.0 / sr)
        return p[f > 2000].sum() / p.sum()
    assert hi_share("noise-white") > hi_share("noise-pink") > hi_share("noise-brown")
    # a pluck decays, an organ note is sustained
    def tail_ratio(name):
        x = T.generate_class(name, 5, 1)[0].samples
        n = len(x)
        return np.sqrt(np.mean(x[int(0.7 * n):int(0.9 * n)] ** 2)) / np.sqrt(np.mean(x[int(0.1 * n):int(0.3 * n)] ** 2))
    assert tail_ratio("pluck") < 0.5 < 0.7 < tail_ratio("organ")


def test_captions_distinguish_classes():
    keywords = {
        "sweep-up": ("ris", "up"), "sweep-down": ("fall", "down"), "noise-white": ("white", "static", "hiss"),
        "noise-pink": ("pink", "rush"), "noise-brown": ("brown", "rumbl", "red", "roar"),
        "chord-major": ("major", "happy"), "chord-minor": ("minor", "sad"), "pluck": ("pluck", "harp", "pizzicato"),
        "organ": ("organ", "sustained"), "beeps-fast": ("beep",), "beeps-noise": ("beep",),
        "tone-a4": ("A4", "440", "concert"), "tone-a5": ("A5", "880"), "pulses-slow": ("slow", "pauses"),
    }
    for name, words in keywords.items():
        for cap in T.class_captions(name):
            assert any(w in cap for w in words), (name, cap)
    for s in T.generate(11, 40):
        assert s.caption in T.class_captions(s.cls)


def test_write_samples(tmp_path):
    sf = pytest.importorskip("soundfile")
    classes = ["sweep-up", "sweep-up", "noise-white", "tone-a4", "pluck", "chord-major"]
    rows = T.write_samples(tmp_path, seed=7, classes=classes)
    assert len(rows) == len(classes)
    with open(tmp_path / "captions.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["file", "caption", "class"]
        got = list(reader)
    assert got == rows
    exts = {r["file"].rsplit(".", 1)[1] for r in got}
    assert exts == {"wav", "flac", "ogg"}
    assert len({r["file"] for r in got}) == len(got)
    for r in got:
        data, sr = sf.read(str(tmp_path / r["file"]), dtype="float32")
        assert sr == T.SAMPLE_RATE and data.ndim == 1
        assert T.MIN_DURATION - 0.01 <= len(data) / sr <= T.MAX_DURATION + 0.01
        assert np.isfinite(data).all() and np.abs(data).max() > 0.01
        assert r["caption"] in T.class_captions(r["class"])
    # deterministic: the same call writes the same lossless audio
    T.write_samples(tmp_path / "again", seed=7, classes=classes)
    a, _ = sf.read(str(tmp_path / got[0]["file"]))
    b, _ = sf.read(str(tmp_path / "again" / got[0]["file"]))
    assert np.array_equal(a, b)
    with pytest.raises(ValueError):
        T.write_samples(tmp_path / "bad", classes=["nope"])


def test_cli_writes_default_set(tmp_path, capsys):
    pytest.importorskip("soundfile")
    assert T.main(["--samples", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "captions.csv", encoding="utf-8")))
    assert [r["class"] for r in rows] == list(T.SAMPLE_CLASSES)
    assert sum(r["class"] == "sweep-up" for r in rows) >= 2
    assert T.main([]) == 0
    assert "sweep-up" in capsys.readouterr().out


def test_shipped_model_folder_matches_world():
    """The committed ``mmsearch/models/tones`` loads offline and knows the bundled samples."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    sf = pytest.importorskip("soundfile")
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    folder = root / "mmsearch" / "models" / "tones"
    if not (folder / "model.safetensors").exists():
        pytest.skip("model folder not present")
    total = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    assert total <= 10_000_000
    model = transformers.ClapModel.from_pretrained(str(folder)).float().eval()
    proc = transformers.ClapProcessor.from_pretrained(str(folder))
    enc = proc(text=["a rising whistle", "white noise"], padding=True, return_tensors="pt")
    assert int(enc["input_ids"][0, 0]) == 0 and int((enc["input_ids"] == proc.tokenizer.unk_token_id).sum()) == 0
    rows = list(csv.DictReader(open(root / "samples" / "sounds" / "captions.csv", encoding="utf-8")))
    waves = [sf.read(str(root / "samples" / "sounds" / r["file"]), dtype="float32")[0] for r in rows]
    with torch.inference_mode():
        feats = proc.feature_extractor(waves, sampling_rate=T.SAMPLE_RATE, return_tensors="pt")
        a = model.get_audio_features(input_features=feats["input_features"])
        a = a if hasattr(a, "shape") else a.pooler_output
        t = model.get_text_features(**proc(text=[p for _, p in T.class_prompts()], padding=True,
                                           return_tensors="pt"))
        t = t if hasattr(t, "shape") else t.pooler_output
    a = torch.nn.functional.normalize(a, dim=-1)
    t = torch.nn.functional.normalize(t, dim=-1)
    names = [n for n, _ in T.class_prompts()]
    pred = [names[i] for i in (a @ t.T).argmax(dim=1).tolist()]
    assert sum(p == r["class"] for p, r in zip(pred, rows)) >= len(rows) - 1
    up = names.index("sweep-up")
    top2 = (t[up] @ a.T).topk(2).indices.tolist()
    assert all(rows[i]["class"] == "sweep-up" for i in top2)
