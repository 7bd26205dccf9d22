"""The runtime seam: open_clip models on ONNX Runtime (the CPU default) agree with torch, the export is
made once and cached, the tokenizer is open_clip's token for token, and the quick paths need no torch."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mmsearch.encoders import cache
from mmsearch.encoders.registry import load_encoder
from mmsearch.errors import ModelError, UsageError
from tests.kit import cli_modules, write_images

PROBE_TEXTS = ["a red circle", "A BLUE square!!", "it's the dog's toy, isn't it?", "红色的自行车", "naïve café — déjà vu",
               "emoji 🚲🐶\tand\nnewlines", "&amp;lt;b&amp;gt;", "3.14 and 12345", "x" * 300, " ".join(["word"] * 90),
               "<start_of_text> inside", "हिन्दी पाठ", "ﬁ ligature", "a\u0301 combining", "don't_stop-now"]


def _images(n: int = 8) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 96)
    out = []
    for i in range(n):
        a = np.outer(np.ones(72), ramp)[..., None] * rng.random(3) + rng.integers(0, 60, 3)
        out.append(Image.fromarray(np.clip(a + rng.normal(0, 8, a.shape), 0, 255).astype(np.uint8)))
    return out


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(params=["tiny", "builtin:shapes"])
def spec(request, tiny_model) -> str:
    return tiny_model if request.param == "tiny" else request.param


@pytest.mark.parametrize("precision", ["auto", "fp32"])
def test_cpu_runtime_matches_torch_fp32(spec, precision):
    ref = load_encoder(spec, runtime="torch", device="cpu")
    fast = load_encoder(spec, device="cpu", precision=precision)
    assert fast.describe()["runtime"] == "onnxruntime" and fast.space.key == ref.space.key
    pixels = np.stack([ref.preprocess(im) for im in _images()])
    floor = 0.999 if precision == "auto" else 0.99999
    assert _cos(fast.embed_image_batch(pixels), ref.embed_image_batch(pixels)).min() >= floor
    assert _cos(fast.embed_texts(PROBE_TEXTS), ref.embed_texts(PROBE_TEXTS)).min() >= floor


def test_each_tower_runs_at_a_precision_whose_measured_fidelity_holds(spec):
    auto = load_encoder(spec, device="cpu").describe()["towers"]
    assert set(auto) == {"image", "text"}
    assert all(t["fidelity"] >= 0.999 for t in auto.values()), auto
    forced = load_encoder(spec, device="cpu", precision="int8").describe()["towers"]
    assert {t["precision"] for t in forced.values()} == {"int8"}
    assert all(0.9 < t["fidelity"] <= 1.0 for t in forced.values())  # shown, whatever it is


@pytest.mark.parametrize("clean,context", [("lower", 77), ("whitespace", 32), ("canonicalize", 16)])
def test_light_tokenizer_matches_open_clip_token_for_token(tmp_path, clean, context):
    from open_clip.tokenizer import SimpleTokenizer

    from mmsearch.encoders.tokenize import LightTokenizer, build, clean_mode

    reference = SimpleTokenizer(context_length=context, clean=clean)
    assert clean_mode(reference) == clean
    build(reference, tmp_path / "tokenizer.json")
    light = LightTokenizer(tmp_path / "tokenizer.json", clean)
    np.testing.assert_array_equal(light(PROBE_TEXTS), reference(PROBE_TEXTS).numpy())


def test_export_is_made_once_and_reused(tmp_path):
    from tests.kit import make_tiny_model

    spec = "local-dir:" + str(make_tiny_model(tmp_path / "m", seed=21))
    first = load_encoder(spec, device="cpu")
    meta_file = first.entry.meta_path
    stamp = meta_file.stat().st_mtime_ns
    again = load_encoder(spec, device="cpu")
    assert again.entry == first.entry and meta_file.stat().st_mtime_ns == stamp
    listed = [(meta, size) for e, meta, size in cache.entries() if e == first.entry]
    assert len(listed) == 1 and listed[0][0]["key"] == first.space.key and listed[0][1] > 0


def test_a_damaged_export_is_a_clear_error_and_a_partial_one_is_redone(tmp_path):
    from tests.kit import make_tiny_model

    spec = "local-dir:" + str(make_tiny_model(tmp_path / "m", seed=22))
    enc = load_encoder(spec, device="cpu")
    meta = json.loads(enc.entry.meta_path.read_text())
    (enc.entry.folder / meta["towers"]["text"]["files"]["fp32"]).write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="cache --clear"):
        load_encoder(spec, device="cpu", precision="fp32").embed_texts(["x"])
    (enc.entry.folder / meta["towers"]["image"]["files"]["int8"]).unlink()  # partial: re-exported on next load
    again = load_encoder(spec, device="cpu", precision="fp32")
    assert again.embed_texts(["x"]).shape == (1, 32)


def test_clearing_the_cache_removes_exports(tiny_model):
    load_encoder(tiny_model, device="cpu")
    removed, size = cache.clear()
    assert removed >= 1 and size > 0 and list(cache.entries()) == []
    assert load_encoder(tiny_model, device="cpu").embed_texts(["x"]).shape == (1, 32)  # exported again


@pytest.mark.parametrize("kw,match", [({"runtime": "tensorrt"}, "--runtime"), ({"precision": "int4"}, "--precision"),
                                      ({"runtime": "onnx", "device": "cuda"}, "CPU only"),
                                      ({"device": "tpu"}, "--device")])
def test_bad_runtime_options_are_usage_errors(tiny_model, kw, match):
    with pytest.raises(UsageError, match=match):
        load_encoder(tiny_model, **kw)


def test_no_change_resync_and_a_text_query_import_no_torch(tmp_path, tiny_model):
    write_images(tmp_path / "photos", n=6)
    store = str(tmp_path / "store")
    assert cli_modules("index", str(tmp_path / "photos"), "--store", store, "--model", tiny_model)[0] == 0
    assert cli_modules("index", str(tmp_path / "photos"), "--store", store) == (0, [])
    assert cli_modules("query", "a red circle", "--store", store) == (0, [])


def test_cache_command_lists_exports_with_fidelity_and_clears_them(tiny_model):
    from tests.kit import cli

    enc = load_encoder(tiny_model, device="cpu")
    listed = json.loads(cli("cache", "--json").stdout)
    mine = [e for e in listed["exports"] if e["key"] == enc.space.key]
    assert len(mine) == 1 and mine[0]["size_bytes"] > 0
    assert {t["auto"] for t in mine[0]["towers"].values()} <= {"fp32", "int8"}
    assert all(set(t["fidelity"]) == {"fp32", "int8"} for t in mine[0]["towers"].values())
    table = cli("cache")
    assert table.exit_code == 0 and "cos" in table.stdout
    cleared = cli("cache", "--clear", "--json")
    assert json.loads(cleared.stdout)["cleared"] is True and cache.describe() == []


@pytest.mark.parametrize("flag", [["--runtime", "torch"], ["--precision", "fp32"], []])
def test_index_and_query_take_runtime_options(tmp_path, tiny_model, flag):
    from tests.kit import cli

    write_images(tmp_path / "photos", n=4)
    store = str(tmp_path / "store")
    assert cli("index", tmp_path / "photos", "--store", store, "--model", tiny_model, *flag).exit_code == 0
    res = cli("query", "a red circle", "--store", store, "--json", *flag)
    assert res.exit_code == 0 and len(json.loads(res.stdout)) == 4
    bad = cli("query", "a red circle", "--store", store, "--runtime", "tpu")
    assert bad.exit_code == 2 and "--runtime" in bad.output


@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_a_vector_does_not_depend_on_the_batch_it_was_embedded_in(tiny_model, precision):
    ref = load_encoder(tiny_model, runtime="torch")
    enc = load_encoder(tiny_model, device="cpu", precision=precision)
    pixels = np.stack([ref.preprocess(im) for im in _images(6)])
    together = enc.embed_image_batch(pixels)
    alone = np.concatenate([enc.embed_image_batch(pixels[i : i + 1]) for i in range(len(pixels))])
    np.testing.assert_allclose(together, alone, atol=1e-6)
    texts = enc.embed_texts(PROBE_TEXTS)
    np.testing.assert_allclose(texts[:1], enc.embed_texts(PROBE_TEXTS[:1]), atol=1e-6)


def test_a_prefetched_encoder_is_taken_over_and_a_failed_prefetch_still_reports_its_error(tiny_model, tmp_path):
    from mmsearch.encoders.registry import prefetch

    from mmsearch.encoders.registry import prefetching

    prefetch(tiny_model, "text", device="cpu")
    assert prefetching() == [tiny_model]
    first = load_encoder(tiny_model, device="cpu")  # waits for the thread, takes its encoder
    assert first.describe()["runtime"] == "onnxruntime" and prefetching() == []
    assert load_encoder(tiny_model, device="cpu") is not first  # taken once; later loads are fresh
    missing = f"local-dir:{tmp_path / 'nowhere'}"
    prefetch(missing, "text")
    with pytest.raises(ModelError, match="model folder not found"):
        load_encoder(missing)
    assert prefetching() == []


def test_a_cold_text_query_prefetches_its_model_from_the_manifest(tmp_path, tiny_model):
    from mmsearch.encoders import registry
    from mmsearch.query.prefetch import text_model
    from tests.kit import cli

    write_images(tmp_path / "photos", n=3)
    assert cli("index", tmp_path / "photos", "--store", tmp_path / "store", "--model", tiny_model).exit_code == 0
    text_model(tmp_path / "store")
    assert registry.prefetching() == [tiny_model]
    res = cli("query", "a red circle", "--store", tmp_path / "store", "--no-server", "--json")
    assert res.exit_code == 0 and len(json.loads(res.stdout)) == 3 and registry.prefetching() == []
    text_model(tmp_path / "no-store")  # no manifest: nothing started, nothing raised
    assert registry.prefetching() == []


def test_an_export_follows_the_model_folder_contents_not_only_its_fingerprint(tmp_path):
    """Same weights fingerprint, another config (e.g. preprocessing): another export, not the stale one."""
    from tests.kit import make_tiny_model

    folder = make_tiny_model(tmp_path / "m", seed=23)
    first = load_encoder(f"local-dir:{folder}", device="cpu")
    config = json.loads((folder / "open_clip_config.json").read_text())
    config["preprocess_cfg"] = {**config.get("preprocess_cfg", {}), "interpolation": "bilinear"}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    again = load_encoder(f"local-dir:{folder}", device="cpu")
    assert again.entry != first.entry and again.image_recipe()["cfg"]["interpolation"] == "bilinear"
