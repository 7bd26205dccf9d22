import json
import shutil

import numpy as np
import pytest
from PIL import Image

from mmsearch.encoders.registry import load_encoder, register, registered, unregister
from mmsearch.errors import ModelError, UsageError
from tests.kit import make_tiny_model


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_local_dir_loads_through_open_clip_and_embeds_unit_vectors(tiny_model, runtime):
    enc = load_encoder(tiny_model, device="cpu", runtime=runtime)
    assert enc.space.dim == 32
    assert enc.space.modalities == ("image", "text")
    t = enc.embed_texts(["a red circle", "a blue square", "a red circle"])
    assert t.shape == (3, 32) and t.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    assert np.allclose(t[0], t[2]) and not np.allclose(t[0], t[1])
    ims = [Image.new("RGB", (50, 20), c) for c in ("red", "blue")]
    pixels = np.stack([load_encoder(tiny_model, runtime="torch").preprocess(im) for im in ims])
    v = enc.embed_image_batch(pixels)
    assert v.shape == (2, 32) and not np.allclose(v[0], v[1])
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_local_dir_weights_are_really_loaded(tmp_path):
    a = load_encoder("local-dir:" + str(make_tiny_model(tmp_path / "a", seed=1)), device="cpu")
    b = load_encoder("local-dir:" + str(make_tiny_model(tmp_path / "b", seed=2)), device="cpu")
    a2 = load_encoder("local-dir:" + str(tmp_path / "a"), device="cpu")
    assert not np.allclose(a.embed_texts(["x"]), b.embed_texts(["x"]))
    np.testing.assert_allclose(a.embed_texts(["x"]), a2.embed_texts(["x"]), atol=1e-6)
    assert a.space.key != b.space.key and a.space.key == a2.space.key


def test_space_key_survives_moving_the_model_folder(tmp_path):
    src = make_tiny_model(tmp_path / "a", seed=3)
    key1 = load_encoder(f"local-dir:{src}", device="cpu").space.key
    moved = shutil.move(str(src), str(tmp_path / "elsewhere"))
    key2 = load_encoder(f"local-dir:{moved}", device="cpu").space.key
    assert key1 == key2


def test_missing_weights_is_a_clear_error_not_random_weights(tmp_path):
    folder = make_tiny_model(tmp_path / "m")
    (folder / "open_clip_model.safetensors").unlink()
    with pytest.raises(ModelError, match="no weights file"):
        load_encoder(f"local-dir:{folder}", device="cpu")


@pytest.mark.parametrize(
    "spec, exc, match",
    [
        ("local-dir:/definitely/not/here", ModelError, "not found"),
        ("ViT-B-32", UsageError, "ARCH:PRETRAINED"),
        ("ViT-B-3:laion2b_s34b_b79k", ModelError, "did you mean"),
        ("ViT-B-32:no_such_tag", ModelError, "unknown pretrained tag"),
        ("builtin:nope", ModelError, "no built-in model"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec, exc, match):
    with pytest.raises(exc, match=match):
        load_encoder(spec, device="cpu")


def test_hub_model_offline_says_how_to_use_a_local_copy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="hub cannot be reached.*local-dir:PATH"):  # classified by exception type
        load_encoder("RN50:openai", device="cpu")


def test_invalid_config_json(tmp_path):
    folder = make_tiny_model(tmp_path / "m")
    (folder / "open_clip_config.json").write_text(json.dumps({"nope": 1}))
    with pytest.raises(ModelError, match="invalid open_clip_config.json"):
        load_encoder(f"local-dir:{folder}", device="cpu")


def _machine_device(torch) -> str:
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


@pytest.mark.parametrize("auto", [None, "", "auto"])
def test_auto_device_is_what_this_machine_has(auto):
    import torch

    from mmsearch.encoders.clip import resolve_device

    assert resolve_device(auto) == _machine_device(torch)


@pytest.mark.parametrize(
    "cuda, mps, expected",
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    import torch

    from mmsearch.encoders.clip import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert resolve_device(None) == expected


@pytest.mark.parametrize("device", ["cpu", "mps", "cuda", "cuda:1"])
def test_an_explicit_device_is_kept(monkeypatch, device):
    import torch

    from mmsearch.encoders.clip import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(device) == device


@pytest.mark.parametrize(
    "device, match",
    [("tpu", "--device tpu: expected auto, cpu, cuda"), ("cuda", "CUDA is not available"),
     ("cuda:0", "CUDA is not available")],
)
def test_bad_device(monkeypatch, device, match):
    import torch

    from mmsearch.encoders.clip import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError, match=match):
        resolve_device(device)


# ---- the registry seam: plugins and tests add and remove spec prefixes ---------------------------------------
class _Fake:
    def __init__(self, spec):
        self.spec = spec


def test_registered_prefix_loads_only_inside_the_block():
    made = []

    def factory(spec, rest, **kw):
        made.append((spec, rest, kw))
        return _Fake(spec)

    with registered("fake-test", factory) as f:
        assert f is factory
        enc = load_encoder(" fake-test:some/where ", device="cpu", batch_size=3)
        assert isinstance(enc, _Fake) and enc.spec == "fake-test:some/where"
        assert made == [("fake-test:some/where", "some/where", {"device": "cpu", "batch_size": 3})]
    with pytest.raises(ModelError, match="unknown open_clip architecture 'fake-test'"):  # gone: the fallback has it
        load_encoder("fake-test:some/where", device="cpu")
    with pytest.raises(KeyError, match="fake-test"):
        unregister("fake-test")


def test_registered_restores_what_held_the_prefix_before(tiny_model):
    with pytest.raises(RuntimeError, match="boom"):
        with registered("local-dir", lambda spec, rest, **kw: _Fake(spec)):
            assert isinstance(load_encoder(tiny_model), _Fake)  # shadows the built-in…
            raise RuntimeError("boom")
    assert load_encoder(tiny_model, device="cpu").space.dim == 32  # …and the built-in is back, even after an error


def test_register_and_unregister():
    @register("fake-deco")
    def factory(spec, rest, **kw):
        return _Fake(rest)

    try:
        assert load_encoder("fake-deco:x").spec == "x"
    finally:
        assert unregister("fake-deco") is factory
    with pytest.raises(KeyError):
        unregister("fake-deco")


@pytest.mark.parametrize("prefix", [None, "", "a:b"])
def test_registered_refuses_a_prefix_no_spec_can_name(prefix):
    with pytest.raises(ValueError, match="prefix"):
        with registered(prefix, lambda *a, **k: None):
            pass
