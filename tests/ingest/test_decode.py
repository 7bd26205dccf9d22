import io

import numpy as np
import pytest
from PIL import Image

from mmsearch.ingest.decode import BadInput, decode_image, decode_text, load


def _bytes(im, fmt="PNG", **kw):
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def test_alpha_is_composited_on_white():
    im = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    out = decode_image(_bytes(im))
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "I;16", "LA", "1"])
def test_modes_become_rgb(mode):
    base = Image.new("RGB", (6, 5), (10, 200, 30))
    if mode == "I;16":
        im = Image.fromarray(np.full((5, 6), 40000, dtype=np.uint16))
        fmt = "PNG"
    else:
        im = base.convert(mode)
        fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "1" else "PNG")
    out = decode_image(_bytes(im, fmt))
    assert out.mode == "RGB" and out.size == (6, 5)


def test_exif_orientation_is_applied():
    im = Image.new("RGB", (40, 10), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° when shown
    out = decode_image(_bytes(im, "JPEG", exif=exif.tobytes()))
    assert out.size == (10, 40)


def test_gif_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    out = decode_image(buf.getvalue())
    r, g, b = out.getpixel((2, 2))
    assert r > 200 and b < 50


@pytest.mark.parametrize(
    "data, match",
    [
        (b"", "empty file"),
        (b"not an image at all", "not a recognised image"),
        (None, "cannot decode"),  # truncated PNG
    ],
)
def test_bad_images(data, match):
    if data is None:
        full = _bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
        data = full[: len(full) // 2]
    with pytest.raises(BadInput, match=match):
        decode_image(data)


def test_decompression_bomb_is_refused_before_decoding():
    data = _bytes(Image.new("L", (3000, 3000)))
    with pytest.raises(BadInput, match="too large"):
        decode_image(data, max_pixels=1_000_000)


def test_text_rules():
    assert decode_text("\ufeffhello\n".encode()) == "hello"
    with pytest.raises(BadInput, match="not UTF-8"):
        decode_text("caf\xe9".encode("latin-1"))
    with pytest.raises(BadInput, match="empty"):
        decode_text(b"  \n")
    with pytest.raises(BadInput, match="too large"):
        decode_text(b"x" * 100, limit=10)


def test_load_reports_missing_and_permission_problems(tmp_path):
    missing = load(str(tmp_path / "gone.png"), "image", None)
    assert missing.error and "no such file" in missing.error
    p = tmp_path / "secret.txt"
    p.write_text("hi")
    p.chmod(0)
    try:
        res = load(str(p), "text", None)
        import os

        if os.geteuid() != 0:  # root can read anything
            assert res.error == "permission denied"
    finally:
        p.chmod(0o644)
