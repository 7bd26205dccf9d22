"""Preprocessing without torch (mmsearch.ingest.pixels) against open_clip's own transform, and the
reduced JPEG decode (Image.draft) against open_clip on the full-size decode.

The parity tolerance is 1e-5 on normalised values (|x| ≲ 4 here, where a float32 step is ~5e-7):
both paths resize with the same Pillow call and normalise with the same float32 operations, so in
practice the arrays are identical; the tolerance only allows a BLAS/vector-unit difference in the
last bits on another machine.
"""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from mmsearch.ingest import decode
from mmsearch.ingest.decode import BadInput, _oriented_box, decode_image, decode_picture, load, prepare_picture
from mmsearch.ingest.pixels import plan, prepare, resize_size, to_batch


def recipe(size=224, resize_mode="shortest", interpolation="bicubic", fill_color=0, mean=(0.48, 0.45, 0.40),
           std=(0.26, 0.26, 0.27)):
    return {"kind": "open_clip", "cfg": {"size": size, "mode": "RGB", "mean": list(mean), "std": list(std),
                                         "interpolation": interpolation, "resize_mode": resize_mode,
                                         "fill_color": fill_color}}


def open_clip_pixels(image, r) -> np.ndarray:
    """open_clip's reference: image_transform_v2(PreprocessCfg(**cfg), is_train=False)(image)."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    cfg = dict(r["cfg"])
    if isinstance(cfg["size"], list):
        cfg["size"] = tuple(cfg["size"])
    return image_transform_v2(PreprocessCfg(**cfg), is_train=False)(image).numpy()


def ours(image, r) -> np.ndarray:
    return to_batch([prepare(image, r)], r)[0]


def photo(w: int, h: int, seed: int = 0) -> Image.Image:
    """Photo-like content: smooth gradients, hard-edged shapes, a little blur and sensor-like noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 100 * np.sin(x / w * 3.1 + seed), 128 + 90 * np.cos(y / h * 2.3),
                     128 + 80 * np.sin((x + y) / (w + h) * 5)], -1)
    im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(40):
        x0, y0, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(w // 80 + 1, w // 6 + 2))
        box = [x0, y0, x0 + r, y0 + int(r * rng.uniform(0.3, 1.5))]
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    im = im.filter(ImageFilter.GaussianBlur(2))
    noisy = np.asarray(im).astype(np.int16) + rng.normal(0, 6, (h, w, 3)).astype(np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def jpeg(im: Image.Image, orientation: int | None = None, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    kw = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kw["exif"] = exif.tobytes()
    im.save(buf, "JPEG", quality=quality, **kw)
    return buf.getvalue()


# ---- parity with open_clip ---------------------------------------------------------------------------------
SHAPES = [(300, 200), (200, 300), (17, 91), (333, 331), (12, 18), (64, 64), (45, 45), (1001, 37), (251, 640)]
SIZES = [224, 33, [40, 24], [24, 37]]


@pytest.mark.parametrize("resize_mode, interpolation", list(itertools.product(("shortest", "longest", "squash"),
                                                                              ("bicubic", "bilinear"))))
def test_pixels_match_open_clip(resize_mode, interpolation):
    rng = np.random.default_rng(1)
    worst = 0.0
    for (w, h), size in itertools.product(SHAPES, SIZES):
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        r = recipe(size, resize_mode, interpolation, fill_color=7)
        ref, got = open_clip_pixels(im, r), ours(im, r)
        assert got.dtype == np.float32 and got.shape == ref.shape, (w, h, size)
        worst = max(worst, float(np.abs(got - ref).max()))
    assert worst < 1e-5


def test_real_encoder_recipe_and_scalar_mean(tiny_model):
    from mmsearch.encoders.registry import load_encoder

    im = photo(97, 61)
    r = load_encoder(tiny_model, device="cpu").image_recipe()
    assert np.abs(ours(im, r) - open_clip_pixels(im, r)).max() < 1e-5
    scalar = recipe(32)
    scalar["cfg"]["mean"], scalar["cfg"]["std"] = 0.5, 0.25  # open_clip repeats a scalar for each channel
    assert np.abs(ours(im, scalar) - open_clip_pixels(im, scalar)).max() < 1e-5


def test_prepare_gives_uint8_at_the_input_size_and_batches_channels_first():
    r = recipe([40, 24], "longest", fill_color=9)
    crop = prepare(photo(50, 300), r)
    assert crop.dtype == np.uint8 and crop.shape == (40, 24, 3)
    assert (crop[:, :2] == 9).all()  # padded with fill_color at the sides of a tall image
    batch = to_batch([crop, crop], r)
    assert batch.shape == (2, 3, 40, 24) and batch.dtype == np.float32 and batch.flags.c_contiguous
    assert to_batch([], r).shape == (0, 3, 40, 24)
    with pytest.raises(ValueError, match="do not fit"):
        to_batch([crop], recipe(32))


def test_bad_recipes_are_refused():
    for bad in ({"kind": "timm"}, recipe(resize_mode="fit"), recipe(interpolation="lanczos")):
        with pytest.raises(ValueError):
            plan(bad)


def test_an_image_open_clip_cannot_resize_is_bad_input(tmp_path):
    p = tmp_path / "line.png"
    Image.new("RGB", (3000, 2), "red").save(p)  # "longest" would make it 0 pixels tall
    out = load(str(p), "image", recipe(32, "longest"))
    assert out.error and "cannot preprocess image" in out.error and out.pixels is None


# ---- the reduced JPEG decode ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_photo() -> Image.Image:
    return photo(4000, 3000)


@pytest.fixture(scope="module")
def big_jpeg(big_photo) -> bytes:
    return jpeg(big_photo)


@pytest.mark.parametrize("resize_mode", ["shortest", "longest", "squash"])
def test_a_big_jpeg_decodes_reduced_but_never_below_the_resize(big_jpeg, resize_mode):
    for size in (224, 32, [336, 200]):
        r = recipe(size, resize_mode)
        pic = decode_picture(big_jpeg, r)
        assert (pic.width, pic.height) == (4000, 3000)  # what is stored: the full image's size
        need = resize_size(4000, 3000, r)
        assert pic.image.size == (500, 375) and pic.box == (0, 0, 500, 375)  # 1/8: 3000 // 224 ≥ 8
        assert pic.image.size[0] >= need[0] and pic.image.size[1] >= need[1]
    r = recipe(1024, resize_mode)  # 3000 // 1024 == 2: half scale
    pic = decode_picture(big_jpeg, r)
    need = resize_size(4000, 3000, r)
    assert pic.image.size == (2000, 1500) and pic.image.size[0] >= need[0] and pic.image.size[1] >= need[1]


def test_small_images_and_other_formats_decode_in_full(big_photo):
    r = recipe(224)
    small = decode_picture(jpeg(big_photo.resize((400, 300))), r)
    assert small.box is None and small.image.size == (400, 300)
    buf = io.BytesIO()
    big_photo.resize((1000, 750)).save(buf, "PNG")
    png = decode_picture(buf.getvalue(), r)
    assert png.box is None and png.image.size == (1000, 750)
    assert decode_picture(jpeg(big_photo)).image.size == (4000, 3000)  # no recipe: the full decode


def test_odd_sizes_keep_the_exact_geometry(big_photo):
    im = big_photo.crop((0, 0, 2001, 1499))  # 1/4 scale: 501 × 375 pixels cover 500.25 × 374.75
    pic = decode_picture(jpeg(im), recipe(224))
    assert pic.image.size == (501, 375) and pic.box == (0, 0, 2001 / 4, 1499 / 4)
    assert (pic.width, pic.height) == (2001, 1499)


def test_oriented_box_follows_each_exif_transpose():
    from PIL import ImageOps

    raw = np.zeros((5, 7), np.uint8)
    raw[:4, :6] = 255  # the box (0, 0, 6, 4) of a 7 × 5 image
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        im = Image.fromarray(raw)
        im.info["exif"] = exif.tobytes()
        shown = np.asarray(ImageOps.exif_transpose(im))
        ys, xs = np.nonzero(shown)
        assert _oriented_box((0, 0, 6, 4), (7, 5), orientation) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8, 5])
def test_exif_rotated_jpegs_decode_reduced_with_the_displayed_size(big_photo, orientation):
    data = jpeg(big_photo.crop((0, 0, 2003, 1001)), orientation)
    r = recipe([64, 48])
    pic = decode_picture(data, r)
    full = decode_image(data)  # the full decode, orientation applied
    assert pic.box is not None and (pic.width, pic.height) == full.size
    assert (pic.width, pic.height) == ((1001, 2003) if orientation in (5, 6, 8) else (2003, 1001))
    need = resize_size(pic.width, pic.height, r)
    assert pic.image.size[0] >= need[0] and pic.image.size[1] >= need[1]
    a, b = to_batch([prepare_picture(pic, r)], r), to_batch([prepare(full, r)], r)
    cos = float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))
    assert cos > 0.9995, cos


def test_bomb_limit_still_applies_before_decoding(big_jpeg):
    with pytest.raises(BadInput, match="too large"):
        decode_picture(big_jpeg, recipe(224), max_pixels=10_000_000)


def test_fidelity_of_a_12_megapixel_photo(big_photo, big_jpeg, tiny_model, tmp_path):
    """The reduced decode, embedded, is within cosine 0.999 of open_clip on the full-size decode (the
    tiny test model at its 32 px input, and the same tiny architecture at 224 px)."""
    from mmsearch.encoders.registry import load_encoder
    from tests.kit import TINY_CFG, make_tiny_model

    cfg224 = {**TINY_CFG, "vision_cfg": {**TINY_CFG["vision_cfg"], "image_size": 224, "patch_size": 32}}
    specs = [tiny_model, "local-dir:" + str(make_tiny_model(tmp_path / "tiny224", seed=3, cfg=cfg224))]
    path = tmp_path / "photo.jpg"
    path.write_bytes(big_jpeg)
    for spec in specs:
        enc = load_encoder(spec, device="cpu")
        r = enc.image_recipe()
        loaded = load(str(path), "image", r)
        assert loaded.error is None and (loaded.width, loaded.height) == (4000, 3000)
        target = plan(r)
        assert loaded.pixels.dtype == np.uint8 and loaded.pixels.shape == (target.height, target.width, 3)
        reference = open_clip_pixels(Image.open(path).convert("RGB"), r)  # full decode, open_clip's transform
        got, ref = enc.embed_image_batch(to_batch([loaded.pixels], r)), enc.embed_image_batch(reference[None])
        cos = float(got[0] @ ref[0])
        assert cos >= 0.999, f"{spec}: cosine {cos:.5f}"


def test_query_image_is_prepared_as_indexing_prepares_files(big_jpeg, tmp_path):
    from mmsearch.query.encode import query_image

    path = tmp_path / "photo.jpg"
    path.write_bytes(big_jpeg)
    r = recipe(224)
    indexed = load(str(path), "image", r).pixels
    assert np.array_equal(query_image(path, r), indexed)
    assert np.array_equal(query_image(big_jpeg, r), indexed)
    assert query_image(Image.open(path), r).shape == indexed.shape  # a decoded image: prepared as it is


def test_decode_image_stays_the_full_view_for_callers(big_jpeg, monkeypatch):
    calls = []
    real = decode.decode_image
    monkeypatch.setattr(decode, "decode_image", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    decode_picture(big_jpeg, recipe(32))
    assert calls == [1]  # decode_picture goes through decode_image (tests count decodes there)
    assert real(big_jpeg).size == (4000, 3000)
