"""Queries in the user's language: multilingual CLIP (an XLM-RoBERTa text tower) and SigLIP 2-style models
(a timm vision tower, a Gemma-style tokenizer), offline from a local copy or the hub cache, on torch and on
the CPU runtime; and the notice a query gets when the store's model cannot read its script.

The models are seeded random and tiny, their tokenizers trained here with ``tokenizers`` (tests/kit.py),
laid out as a user's downloaded copy is, and loaded through the same specs a user writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmsearch.encoders.registry import load_encoder
from mmsearch.errors import ModelError
from mmsearch.query.language import language_notice
from tests.kit import (ENGLISH_CORPUS, cli_modules, fake_hub_cache, make_tiny_multilingual_clip, make_tiny_siglip,
                       write_images)

TEXTS = ["红色的自行车", "a red bicycle", "красный велосипед", "赤い自転車", "빨간 자전거", "A BLUE square!!",
         "it's the dog's toy", "&amp; html", "x" * 300, " ".join(["word"] * 90), "emoji 🚲🐶\tand\nnewlines", ""]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("i18n-models")
    return {"xlm-roberta": make_tiny_multilingual_clip(base / "xlmr", seed=5),
            "siglip2": make_tiny_siglip(base / "siglip2", seed=6),
            "siglip-en": make_tiny_siglip(base / "siglip-en", seed=7, corpus=ENGLISH_CORPUS)}


def _images(n: int = 6):
    from PIL import Image

    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 256, (48, 64, 3), np.uint8)) for _ in range(n)]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("name", ["xlm-roberta", "siglip2"])
def test_a_local_copy_loads_offline_and_the_cpu_runtime_agrees_with_torch(models, name):
    spec = f"local-dir:{models[name]}"
    ref = load_encoder(spec, runtime="torch", device="cpu")
    fast = load_encoder(spec, device="cpu", precision="fp32")
    assert fast.describe()["runtime"] == "onnxruntime" and fast.space.key == ref.space.key
    t = fast.embed_texts(TEXTS)
    assert t.shape == (len(TEXTS), ref.space.dim) and t.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(t[0], t[1])  # the Chinese query is not the English one
    assert _cos(t, ref.embed_texts(TEXTS)).min() >= 0.9999
    pixels = np.stack([ref.preprocess(im) for im in _images()])
    assert _cos(fast.embed_image_batch(pixels), ref.embed_image_batch(pixels)).min() >= 0.9999


@pytest.mark.parametrize("name", ["xlm-roberta", "siglip2"])
def test_the_export_keeps_the_tokenizer_for_tokenizers_alone_with_open_clips_ids(models, name):
    import open_clip

    from mmsearch.encoders.tokenize import ClipHubTokenizer

    spec = f"local-dir:{models[name]}"
    meta = json.loads(load_encoder(spec, device="cpu").entry.meta_path.read_text())
    tok = meta["tokenizer"]
    assert tok["kind"] == "hf"
    light = ClipHubTokenizer(load_encoder(spec, device="cpu").entry.folder / tok["file"], tok["clean"],
                             tok["context_length"], tok["pad_id"], padding_side=tok["padding_side"])
    np.testing.assert_array_equal(light(TEXTS), open_clip.get_tokenizer(spec)(TEXTS).numpy())


def test_a_query_in_chinese_on_the_cpu_runtime_imports_neither_torch_nor_transformers(tmp_path, models):
    spec = f"local-dir:{models['xlm-roberta']}"
    write_images(tmp_path / "photos", n=4)
    store = str(tmp_path / "store")
    assert cli_modules("index", str(tmp_path / "photos"), "--store", store, "--model", spec)[0] == 0
    assert cli_modules("query", "红色的自行车", "--store", store) == (0, [])


@pytest.mark.parametrize("name, multilingual, reads_han", [
    ("tiny-clip", False, False), ("xlm-roberta", True, True), ("siglip2", True, True), ("siglip-en", False, False)])
@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_a_space_records_which_scripts_its_tokenizer_reads(models, tiny_model, name, multilingual, reads_han, runtime):
    spec = tiny_model if name == "tiny-clip" else f"local-dir:{models[name]}"
    record = load_encoder(spec, device="cpu", runtime=runtime).space.extra["text"]
    assert record["multilingual"] is multilingual and "Latin" in record["scripts"]
    assert ("Han" in record["scripts"]) is reads_han
    assert record["tokenizer"] == ("openai-clip-bpe" if name == "tiny-clip" else
                                   "hf:timm/ViT-B-16-SigLIP2" if "siglip" in name else "hf:xlm-roberta-base")


ENGLISH_ONLY = {"text": {"tokenizer": "openai-clip-bpe", "multilingual": False, "scripts": ["Latin"]}}
LATIN_CYRILLIC = {"text": {"tokenizer": "hf:x", "multilingual": False, "scripts": ["Latin", "Cyrillic"]}}
MANY = {"text": {"tokenizer": "hf:xlm-roberta-base", "multilingual": True,
                 "scripts": ["Latin", "Han", "Kana", "Hangul", "Cyrillic", "Greek", "Arabic"]}}


@pytest.mark.parametrize("text, info, expected", [
    ("红色的自行车", ENGLISH_ONLY, ["Han script", "English-only", "xlm-roberta-base-ViT-B-32"]),
    ("красный велосипед", ENGLISH_ONLY, ["Cyrillic script", "English-only"]),
    ("赤い自転車", ENGLISH_ONLY, ["Han, Kana script"]),
    ("a red bicycle", ENGLISH_ONLY, None),
    ("naïve café, déjà vu", ENGLISH_ONLY, None),  # Latin letters, accents or not
    ("a red 自行车 on a long sunny street", ENGLISH_ONLY, None),  # mostly Latin: one word is not a language
    ("12345 🚲 !!", ENGLISH_ONLY, None),  # no letters at all
    ("红色的自行车", MANY, None),
    ("دراجة حمراء", MANY, None),
    ("सड़क पर लाल साइकिल", MANY, ["Devanagari script", "reads only Latin, Han"]),
    ("বাংলা লেখা", MANY, None),  # a script the record never probed: a multilingual model gets the benefit of the doubt
    ("বাংলা লেখা", ENGLISH_ONLY, ["Bengali script", "English-only"]),
    ("красный велосипед", LATIN_CYRILLIC, None),
    ("红色的自行车", LATIN_CYRILLIC, ["reads only Latin, Cyrillic script"]),
    ("红色的自行车", {}, None),  # a space that recorded nothing (older store, a plugin's encoder): no notice
    ("红色的自行车", None, None),
    ("红色的自行车", {"text": {"scripts": "Latin"}}, None),  # not a record we understand: no guess
])
def test_language_notice(text, info, expected):
    notice = language_notice(text, info)
    if expected is None:
        assert notice is None
    else:
        assert notice is not None and all(part in notice for part in expected), notice


@pytest.mark.parametrize("name, query, noticed", [
    ("tiny-clip", "红色的自行车", True), ("siglip-en", "红色的自行车", True), ("xlm-roberta", "红色的自行车", False),
    ("siglip2", "红色的自行车", False), ("tiny-clip", "a red bicycle", False)])
def test_the_notice_follows_the_model_a_store_was_built_with(tmp_path, models, tiny_model, name, query, noticed):
    from mmsearch import Engine

    spec = tiny_model if name == "tiny-clip" else f"local-dir:{models[name]}"
    write_images(tmp_path / "photos", n=5)
    with Engine.open(tmp_path / "store", model=spec, workers=0) as eng:
        assert eng.index([tmp_path / "photos"]).ok
        hits = eng.search(text=query, k=5)
        assert len(hits) == 5  # the notice never replaces the answer
    info = load_encoder(spec, device="cpu").space.extra
    assert (language_notice(query, info) is not None) is noticed


@pytest.mark.parametrize("name", ["siglip2", "xlm-roberta"])
def test_sigmoid_and_softmax_models_get_the_same_calibrated_score(tmp_path, models, name):
    """Scores are cosines and the calibrated score their standing over unrelated queries, for SigLIP's
    sigmoid-trained towers as for CLIP's: nothing reads a logit scale or bias."""
    from mmsearch import Engine

    write_images(tmp_path / "photos", n=8)
    with Engine.open(tmp_path / "store", model=f"local-dir:{models[name]}", workers=0) as eng:
        assert eng.index([tmp_path / "photos"]).ok
        hits = eng.search(text="红色的自行车", k=8)
    assert len(hits) == 8 and all(-1.0 <= h.score <= 1.0 and h.calibrated is not None for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert [h.calibrated for h in hits] == sorted((h.calibrated for h in hits), reverse=True)


# ---- what a local copy must hold ---------------------------------------------------------------------------
@pytest.mark.parametrize("name, remove, match", [
    ("xlm-roberta", ["tokenizer.json", "tokenizer_config.json"], "lacks the tokenizer"),
    ("siglip2", ["tokenizer.json", "tokenizer_config.json"], "lacks the tokenizer"),
    ("xlm-roberta", ["config.json"], "lacks the text model's config.json .xlm-roberta-base's"),
])
def test_a_local_copy_missing_a_side_file_says_which(tmp_path, models, name, remove, match):
    folder = Path(shutil.copytree(models[name], tmp_path / "copy"))
    for f in remove:
        (folder / f).unlink()
    with pytest.raises(ModelError, match=match):
        load_encoder(f"local-dir:{folder}", device="cpu", runtime="torch")


def test_an_export_made_before_spaces_recorded_their_scripts_reads_as_english_only(tmp_path):
    from tests.kit import make_tiny_model

    spec = "local-dir:" + str(make_tiny_model(tmp_path / "m", seed=31))
    meta_path = load_encoder(spec, device="cpu").entry.meta_path
    meta = json.loads(meta_path.read_text())
    del meta["space"]["extra"]["text"]  # as an export from before this field was written
    meta_path.write_text(json.dumps(meta))
    assert load_encoder(spec, device="cpu").space.extra["text"]["tokenizer"] == "openai-clip-bpe"
    assert language_notice("红色的自行车", load_encoder(spec, device="cpu").space.extra) is not None


def test_changing_a_local_copys_tokenizer_makes_a_new_export(tmp_path, models):
    from tests.kit import hf_tokenizer

    folder = Path(shutil.copytree(models["siglip2"], tmp_path / "copy"))
    first = load_encoder(f"local-dir:{folder}", device="cpu")
    hf_tokenizer(folder, ENGLISH_CORPUS, style="gemma")  # same vocabulary size, other pieces
    again = load_encoder(f"local-dir:{folder}", device="cpu")
    assert again.entry != first.entry and again.space.extra["text"]["multilingual"] is False


# ---- hub specs, offline, from the Hugging Face cache ------------------------------------------------------
def _mmsearch(env_cache: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``mmsearch ARGS`` in a fresh interpreter that sees ``env_cache`` as its Hugging Face cache, offline."""
    env = {**os.environ, "HF_HUB_CACHE": str(env_cache), "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "mmsearch", *args], capture_output=True, text=True, env=env,
                          timeout=600, cwd=tmp_path)


SIGLIP_FILES = ("open_clip_config.json", "open_clip_model.safetensors", "tokenizer.json", "tokenizer_config.json")


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_a_hub_spec_loads_its_model_and_tokenizer_from_the_hub_cache_offline(tmp_path, models, runtime):
    repo = "timm/ViT-B-16-SigLIP2"
    fake_hub_cache(tmp_path / "hub", repo, {f: models["siglip2"] / f for f in SIGLIP_FILES}, absent=("config.json",))
    write_images(tmp_path / "photos", n=3)
    store = str(tmp_path / "store")
    made = _mmsearch(tmp_path / "hub", tmp_path, "index", "photos", "--store", store, "--model", f"hf-hub:{repo}",
                     "--runtime", runtime)
    assert made.returncode == 0, made.stderr
    found = _mmsearch(tmp_path / "hub", tmp_path, "query", "红色的自行车", "--store", store, "--json",
                      "--runtime", runtime, "--no-server")
    assert found.returncode == 0, found.stderr
    assert len(json.loads(found.stdout)) == 3


def test_a_local_copy_without_its_text_config_takes_it_from_the_hub_cache(tmp_path, models):
    """A snapshot of the laion repo holds no XLM-RoBERTa config.json; the hub cache's copy of it serves."""
    folder = Path(shutil.copytree(models["xlm-roberta"], tmp_path / "copy"))
    config = (folder / "config.json").read_bytes()
    (folder / "config.json").unlink()
    fake_hub_cache(tmp_path / "hub", "xlm-roberta-base", {"config.json": config})
    write_images(tmp_path / "photos", n=2)
    res = _mmsearch(tmp_path / "hub", tmp_path, "index", "photos", "--store", str(tmp_path / "store"),
                    "--model", f"local-dir:{folder}", "--runtime", "torch")
    assert res.returncode == 0, res.stderr


SIGLIP2 = "hf-hub:timm/ViT-B-16-SigLIP2"
XLMR = "xlm-roberta-base-ViT-B-32:laion5b_s13b_b90k"
NO_CONFIG = ("config.json",)  # the cache's record that a repo has no config.json (an online load leaves it)


@pytest.mark.parametrize("spec, cached, named, not_named", [
    (SIGLIP2, {"timm/ViT-B-16-SigLIP2": ("siglip2", SIGLIP_FILES[:2], NO_CONFIG)},
     ["tokenizer (timm/ViT-B-16-SigLIP2: tokenizer.json"], ["weights"]),
    (SIGLIP2, {"timm/ViT-B-16-SigLIP2": ("siglip2", ("open_clip_config.json", "tokenizer.json"), NO_CONFIG)},
     ["weights (timm/ViT-B-16-SigLIP2: open_clip_model.safetensors or open_clip_pytorch_model.bin)"], ["tokenizer"]),
    (SIGLIP2, {"timm/ViT-B-16-SigLIP2": ("siglip2", SIGLIP_FILES, ())},  # files fetched one by one: no record
     ["the tokenizer's model config (timm/ViT-B-16-SigLIP2: config.json, or the record"], ["weights", "tokenizer ("]),
    (SIGLIP2, {}, ["model config (timm/ViT-B-16-SigLIP2: open_clip_config.json)", "weights"], []),
    (XLMR, {}, ["weights (laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k",
                "text model config (xlm-roberta-base: config.json)", "tokenizer (xlm-roberta-base"], []),
    (XLMR, {"xlm-roberta-base": ("xlm-roberta", ("config.json", "tokenizer.json"), ())},
     ["weights (laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k"], ["text model config", "tokenizer ("]),
])
def test_a_hub_spec_offline_names_what_the_cache_lacks(tmp_path, models, spec, cached, named, not_named):
    for repo, (source, files, absent) in cached.items():
        fake_hub_cache(tmp_path / "hub", repo, {f: models[source] / f for f in files}, absent=absent)
    (tmp_path / "hub").mkdir(exist_ok=True)
    write_images(tmp_path / "photos", n=1)
    res = _mmsearch(tmp_path / "hub", tmp_path, "index", "photos", "--store", str(tmp_path / "store"),
                    "--model", spec, "--runtime", "torch")
    assert res.returncode == 4, res.stdout + res.stderr
    message = " ".join(res.stderr.split())
    assert "cannot be reached" in message and "local-dir:PATH" in message and str(tmp_path / "hub") in message
    assert all(part in message for part in named), message
    assert not any(part in message for part in not_named), message
    assert "Traceback" not in res.stderr


def test_a_query_in_a_script_the_model_cannot_read_is_answered_with_a_notice(tmp_path):
    """The notice is wired into every search: an English-only store says so, a multilingual one does not."""
    from mmsearch import Engine
    from tests.kit import make_tiny_multilingual_clip, write_images

    folder = write_images(tmp_path / "imgs", 3)[0].parent
    with Engine.open(tmp_path / "en", model="builtin:shapes", workers=0) as eng:
        eng.index([folder])
        assert len(eng.search(text="红色的自行车", k=2)) == 2  # still answered
        assert [n for n in eng.notices if "English-only" in n and "Han" in n]
        eng.search(text="a red circle", k=2)
        assert not [n for n in eng.notices if "English-only" in n]
        eng.search(text="a red circle + 红色的自行车 + 圆形", k=2)  # combined: the text terms count
        assert [n for n in eng.notices if "English-only" in n]
    multi = make_tiny_multilingual_clip(tmp_path / "multi")
    with Engine.open(tmp_path / "ml", model=f"local-dir:{multi}", workers=0) as eng:
        eng.index([folder])
        eng.search(text="红色的自行车", k=2)
        assert not [n for n in eng.notices if "script" in n]
