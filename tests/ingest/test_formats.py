"""Photo formats people have: HEIC, AVIF, JPEG XL, camera raw, and every other format Pillow opens.

Every fixture is made here: HEIC by pillow-heif, AVIF by Pillow, JPEG XL by its plugin, JPEG 2000 and
PPM by Pillow, and camera raws as minimal DNGs (a TIFF with the DNG tags and an RGGB mosaic, with or
without an embedded JPEG preview) that LibRaw opens and demosaics.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmsearch.ingest.decode import BadInput, decode_image, decode_picture
from mmsearch.ingest.discover import classify, walk
from tests.kit import cli

BLUE, RED, GREEN = (20, 20, 230), (230, 20, 20), (20, 200, 20)
RECIPE = {"kind": "open_clip", "cfg": {"size": 32}}


def scene(size=(64, 48), left=BLUE, right=RED) -> Image.Image:
    """Left half ``left``, right half ``right``: after EXIF orientation 6 (90° clockwise) left is on top."""
    w, h = size
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 2], arr[:, w // 2:] = left, right
    return Image.fromarray(arr)


def encode(im: Image.Image, fmt: str, orientation: int | None = None) -> bytes:
    if fmt == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()
    elif fmt == "JXL":
        import pillow_jxl  # noqa: F401
    kw = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kw["exif"] = exif.tobytes()
    if fmt in ("HEIF", "AVIF", "JXL", "WEBP"):
        kw["quality"] = 95
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


# ---- a minimal DNG ----------------------------------------------------------------------------------
_BYTE, _ASCII, _SHORT, _LONG, _SRATIONAL = 1, 2, 3, 4, 10
_XYZ_TO_SRGB = [3.2406, -1.5372, -0.4986, -0.9689, 1.8758, 0.0415, 0.0557, -0.2040, 1.0570]


def _value(typ, vals):
    if typ == _ASCII:
        return vals.encode() + b"\0", len(vals) + 1
    if typ == _SRATIONAL:
        return b"".join(struct.pack("<ii", round(v * 10000), 10000) for v in vals), len(vals)
    fmt = {_BYTE: "B", _SHORT: "H", _LONG: "I"}[typ]
    return struct.pack("<" + fmt * len(vals), *vals), len(vals)


def _ifd(entries, at):
    """A little-endian TIFF IFD placed at offset ``at``, its out-of-line values right after it."""
    extra_at = at + 2 + 12 * len(entries) + 4
    body, extra = b"", b""
    for tag, typ, vals in sorted(entries):
        raw, count = _value(typ, vals)
        if len(raw) <= 4:
            body += struct.pack("<HHI", tag, typ, count) + raw.ljust(4, b"\0")
        else:
            body += struct.pack("<HHII", tag, typ, count, extra_at + len(extra))
            extra += raw + b"\0" * (len(raw) % 2)
    return struct.pack("<H", len(entries)) + body + b"\0\0\0\0" + extra


def make_dng(im: Image.Image, orientation: int = 1, preview: bytes | None = None) -> bytes:
    """A DNG whose RGGB mosaic samples ``im`` (12-bit, linear sRGB primaries; LibRaw wants 22 pixels a
    side at least); with ``preview`` (JPEG bytes) in IFD0 and the raw in a SubIFD, as cameras write them.
    The IFDs come first, the pixels after them (a truncated copy keeps its tags)."""
    rgb = np.asarray(im.convert("RGB"), np.float64)
    h, w, _ = rgb.shape
    yy, xx = np.mgrid[0:h, 0:w]
    channel = np.where(yy % 2 == 0, np.where(xx % 2 == 0, 0, 1), np.where(xx % 2 == 0, 1, 2))
    pixels = (np.take_along_axis(rgb, channel[..., None], 2)[..., 0] / 255 * 4095).astype("<u2").tobytes()
    camera = [(271, _ASCII, "Mmsearch"), (272, _ASCII, "Test Camera"), (274, _SHORT, [orientation]),
              (50706, _BYTE, [1, 4, 0, 0]), (50707, _BYTE, [1, 1, 0, 0]), (50708, _ASCII, "Mmsearch Test Camera"),
              (50721, _SRATIONAL, _XYZ_TO_SRGB), (50728, _SRATIONAL, [1, 1, 1]), (50778, _SHORT, [21])]

    def raw(at: int) -> list:
        return [(254, _LONG, [0]), (256, _LONG, [w]), (257, _LONG, [h]), (258, _SHORT, [16]), (259, _SHORT, [1]),
                (262, _SHORT, [32803]), (273, _LONG, [at]), (277, _SHORT, [1]), (278, _LONG, [h]),
                (279, _LONG, [len(pixels)]), (284, _SHORT, [1]), (33421, _SHORT, [2, 2]),
                (33422, _BYTE, [0, 1, 1, 2]), (50714, _SHORT, [0]), (50717, _SHORT, [4095])]

    if preview is None:
        size = len(_ifd(raw(0) + camera, 8))
        ifds, blobs = _ifd(raw(8 + size) + camera, 8), pixels
    else:
        pw, ph = Image.open(io.BytesIO(preview)).size

        def head(sub: int, at: int) -> list:
            return [(254, _LONG, [1]), (256, _LONG, [pw]), (257, _LONG, [ph]), (258, _SHORT, [8, 8, 8]),
                    (259, _SHORT, [7]), (262, _SHORT, [6]), (273, _LONG, [at]), (277, _SHORT, [3]),
                    (278, _LONG, [ph]), (279, _LONG, [len(preview)]), (284, _SHORT, [1]), (330, _LONG, [sub])] + camera

        size0, size1 = len(_ifd(head(0, 0), 8)), len(_ifd(raw(0), 0))
        data_at = 8 + size0 + size1
        ifds = _ifd(head(8 + size0, data_at + len(pixels)), 8) + _ifd(raw(data_at), 8 + size0)
        blobs = pixels + preview
    return b"II*\0" + struct.pack("<I", 8) + ifds + blobs


def jpeg(im: Image.Image, orientation: int | None = None) -> bytes:
    return encode(im, "JPEG", orientation)


def _near(pixel, colour, tol=60) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, colour))


# ---- each format decodes ----------------------------------------------------------------------------
FORMATS = {  # name: bytes of a 64×48 scene, blue left, red right
    "heic": lambda: encode(scene(), "HEIF"),
    "avif": lambda: encode(scene(), "AVIF"),
    "jxl": lambda: encode(scene(), "JXL"),
    "jp2": lambda: encode(scene(), "JPEG2000"),
    "ppm": lambda: encode(scene(), "PPM"),
    "qoi": lambda: encode(scene(), "QOI"),
    "dng": lambda: make_dng(scene()),  # demosaiced
    "dng-preview": lambda: make_dng(scene((32, 24), GREEN, GREEN),  # the raw is all green, the preview not
                                    preview=jpeg(scene((800, 600)))),
}


@pytest.mark.parametrize("name", FORMATS)
def test_each_format_decodes(name):
    im = decode_image(FORMATS[name]())
    w, h = im.size
    assert im.mode == "RGB" and w / h == pytest.approx(64 / 48, rel=0.01)
    assert _near(im.getpixel((w // 4, h // 2)), BLUE) and _near(im.getpixel((3 * w // 4, h // 2)), RED), name


ORIENTED = {  # bytes of the scene stored as is, with orientation 6 (shown rotated 90° clockwise)
    "jpeg": lambda: jpeg(scene(), 6),
    "heic": lambda: encode(scene(), "HEIF", 6),  # libheif rotates; the EXIF orientation must not rotate again
    "avif": lambda: encode(scene(), "AVIF", 6),
    "jxl": lambda: encode(scene(), "JXL", 6),
    "webp": lambda: encode(scene(), "WEBP", 6),
    "dng": lambda: make_dng(scene(), 6),
    "dng-preview": lambda: make_dng(scene((32, 24), GREEN, GREEN), 6, preview=jpeg(scene((800, 600)))),
    "dng-preview-own-exif": lambda: make_dng(scene((32, 24), GREEN, GREEN), 6,  # the raw's orientation wins
                                             preview=jpeg(scene((800, 600)), orientation=3)),
}


@pytest.mark.parametrize("name", ORIENTED)
def test_orientation_is_applied_once(name):
    im = decode_image(ORIENTED[name]())
    w, h = im.size
    assert h > w, (name, im.size)  # portrait: rotated once (twice would be landscape again)
    assert _near(im.getpixel((w // 2, h // 4)), BLUE) and _near(im.getpixel((w // 2, 3 * h // 4)), RED), name


def test_a_raw_preview_gets_the_reduced_jpeg_decode_in_the_raw_orientation():
    data = make_dng(scene((32, 24), GREEN, GREEN), 6, preview=jpeg(scene((1200, 800))))
    pic = decode_picture(data, RECIPE)
    assert (pic.width, pic.height) == (800, 1200)  # the preview's size, as shown
    assert pic.image.size[0] < 800 and pic.box is not None  # decoded at 1/8: 100×150
    top = pic.image.getpixel((pic.image.size[0] // 2, 5))
    assert _near(top, BLUE)


def test_a_raw_preview_too_small_for_the_model_is_passed_over_for_the_demosaic():
    im = decode_image(make_dng(scene(), preview=jpeg(scene((320, 240), GREEN, GREEN))))
    assert im.size == (64, 48) and _near(im.getpixel((10, 24)), BLUE)


def test_a_large_raw_is_refused_before_it_is_demosaiced():
    with pytest.raises(BadInput, match=r"image too large \(64×48 = 3,072 pixels > limit 1,000\)"):
        decode_image(make_dng(scene()), max_pixels=1000)


def test_a_large_jpeg_xl_is_refused_before_the_plugin_decodes_it():
    data = encode(Image.new("RGB", (1000, 750)), "JXL")
    with pytest.raises(BadInput, match=r"image too large \(1000×750 = 750,000 pixels > limit 100,000\)"):
        decode_image(data, max_pixels=100_000)


@pytest.mark.parametrize("name, data, why", [
    ("heic", lambda: encode(scene(), "HEIF")[:300], "damaged or truncated HEIC/HEIF file"),
    ("avif", lambda: encode(scene(), "AVIF")[:200], "damaged or truncated AVIF file"),
    ("jxl", lambda: encode(scene(), "JXL")[:40], "damaged or truncated JPEG XL file"),
    ("dng", lambda: make_dng(scene())[:4000], "cannot decode camera raw"),  # its pixels cut short
    ("cr2", lambda: b"II*\x00\x10\x00\x00\x00CR\x02\x00" + bytes(200), "not a camera raw LibRaw can read"),
])
def test_a_damaged_file_is_bad_input_that_says_what_it_is(name, data, why):
    with pytest.raises(BadInput, match=why):
        decode_image(data())


def test_a_plain_tiff_is_not_taken_for_a_raw():
    im = decode_image(encode(scene(), "TIFF"))
    assert im.size == (64, 48) and _near(im.getpixel((10, 24)), BLUE)


# ---- which files are images -------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [
    ".heic", ".HEIF", ".hif", ".avif", ".jxl", ".jp2", ".j2k", ".ppm", ".pgm", ".pbm", ".qoi", ".psd", ".jfif",
    ".mpo", ".tga", ".apng", ".cr2", ".cr3", ".nef", ".arw", ".dng", ".raf", ".orf", ".rw2", ".pef", ".srw",
    ".jpg", ".png", ".webp", ".tif",
])
def test_photo_extensions_are_images(ext):
    assert classify("/photos/a" + ext) == "image"


@pytest.mark.parametrize("ext", [".eps", ".ps", ".pdf", ".h5", ".wmf", ".emf", ".grib", ".svg"])
def test_what_is_no_photo_is_not_indexed_as_one(ext):
    assert classify("/photos/a" + ext) is None


def test_every_format_pillow_opens_is_an_image_unless_it_is_no_photo():
    from mmsearch.ingest.formats import COMMON_IMAGE_EXTENSIONS, NOT_IMAGE_EXTENSIONS, NOT_PHOTOS

    Image.init()
    opened = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN and fmt not in NOT_PHOTOS}
    assert {ext for ext in opened if classify("/photos/a" + ext) != "image"} == set()
    # the quick lists (answered without importing Pillow) agree with what Pillow registers
    assert NOT_IMAGE_EXTENSIONS & opened == set()
    assert COMMON_IMAGE_EXTENSIONS - {".heic", ".heif", ".hif", ".heics", ".heifs", ".jxl"} <= opened | RAW


RAW = {".cr2", ".cr3", ".nef", ".arw", ".dng", ".raf", ".orf", ".rw2", ".pef", ".srw", ".3fr", ".crw", ".dcr",
       ".erf", ".fff", ".iiq", ".k25", ".kdc", ".mef", ".mos", ".mrw", ".nrw", ".ori", ".raw", ".rwl", ".sr2",
       ".srf", ".x3f"}


def test_a_no_change_resync_of_a_photo_folder_imports_no_pillow(engine_factory, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jpg").write_bytes(jpeg(blocks(1)))
    (data / "b.heic").write_bytes(encode(blocks(2), "HEIF"))
    (data / "b.xmp").write_text("<x:xmpmeta/>")  # a sidecar
    (data / "c.dng").write_bytes(make_dng(blocks(3)))
    eng = engine_factory()
    assert eng.index([data]).indexed == 3
    store = eng.store.root
    eng.close()
    code = ("import sys; from mmsearch import Engine\n"
            f"with Engine.open({str(store)!r}, workers=0) as e: r = e.index([{str(data)!r}])\n"
            "print(r.unchanged, sorted(m for m in sys.modules if m.split('.')[0] in ('PIL', 'rawpy', 'pillow_heif')))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert run.stdout.split("\n")[0] == "3 []", run.stderr


def test_files_without_an_extension_are_recognised_by_content(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name, payload in {"IMG_0001": encode(scene(), "HEIF"), "IMG_0002": encode(scene(), "AVIF"),
                          "IMG_0003": encode(scene(), "JXL"), "IMG_0004": jpeg(scene()),
                          "download.tmp1": encode(scene(), "PNG"), "notes": b"just some words\n" * 10}.items():
        (data / name).write_bytes(payload)
    errors: dict[str, str] = {}
    found = {Path(c.path).name: c.modality for c in walk([str(data)], lambda p, why: errors.update({p: why}))}
    assert found == {"IMG_0001": "image", "IMG_0002": "image", "IMG_0003": "image", "IMG_0004": "image",
                     "download.tmp1": "image"}
    assert errors == {}


# ---- end to end -------------------------------------------------------------------------------------
def blocks(seed: int, size=(64, 48)) -> Image.Image:
    """A picture of its own: 8×6 random colour blocks (they survive lossy codecs and a demosaic)."""
    cells = np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(cells).resize(size, Image.Resampling.NEAREST)


def _one_of_each(folder: Path) -> dict[str, bytes]:
    files = {
        "phone.heic": encode(blocks(1), "HEIF"), "web.avif": encode(blocks(2), "AVIF"),
        "web.jxl": encode(blocks(3), "JXL"), "scan.jp2": encode(blocks(4), "JPEG2000"),
        "render.ppm": encode(blocks(5), "PPM"), "camera.dng": make_dng(blocks(6)),
        "camera-preview.dng": make_dng(blocks(7, (32, 24)), preview=jpeg(blocks(8, (800, 600)))),
        "IMG_0042": encode(blocks(9), "HEIF"), "plain.png": encode(blocks(10), "PNG"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, payload in files.items():
        (folder / name).write_bytes(payload)
    return files


def test_index_finds_every_format_and_a_corrupt_heic_is_one_error(engine_factory, tmp_path):
    data = tmp_path / "data"
    files = _one_of_each(data)
    (data / "broken.heic").write_bytes(files["phone.heic"][:300])
    eng = engine_factory(workers=1)  # the plugins register in the decode worker, lazily
    report = eng.index([data])
    assert dict(report.errors) == {str(data / "broken.heic"): "damaged or truncated HEIC/HEIF file (cannot be opened)"}
    assert report.failed == 1 and report.indexed + report.reused == len(files)
    for name in files:  # each is found by its own picture: the query decodes it as indexing did
        assert eng.search(image=data / name, k=1)[0].path == str(data / name), name


def test_a_heic_query_image_is_decoded_like_an_indexed_one(tmp_path, tiny_model):
    data = tmp_path / "data"
    _one_of_each(data)
    store = tmp_path / "s"
    r = cli("index", data, "--store", store, "--model", tiny_model, "--workers", "0", "--json")
    assert r.exit_code == 0, r.output
    r = cli("query", "--image", data / "phone.heic", "--store", store, "-k", "1", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)[0]["path"] == str(data / "phone.heic")


_WITHOUT = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None  # `import name` now fails as if it were not installed
from mmsearch.cli import main
sys.argv = ["mmsearch", *sys.argv[2:]]
main()
"""


def test_a_missing_plugin_is_a_per_file_error_that_names_the_install(tmp_path, tiny_model):
    data = tmp_path / "data"
    _one_of_each(data)
    store = tmp_path / "s"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")])}
    blocked = "pillow_jxl,pillow_heif,rawpy,PIL._avif"
    run = subprocess.run([sys.executable, "-c", _WITHOUT, blocked, "index", str(data), "--store", str(store),
                          "--model", tiny_model, "--workers", "0", "--json"],
                         capture_output=True, text=True, env=env, timeout=300)
    report = json.loads(run.stdout)
    assert {e["path"]: e["reason"] for e in report["errors"]} == {
        str(data / "web.jxl"): "JPEG XL needs the photos extra: pip install 'mmsearch[photos]'",
        str(data / "phone.heic"): "HEIC/HEIF needs pillow-heif (a dependency of mmsearch): pip install pillow-heif",
        str(data / "IMG_0042"): "HEIC/HEIF needs pillow-heif (a dependency of mmsearch): pip install pillow-heif",
        str(data / "web.avif"): "AVIF needs Pillow 11.3 or later built with libavif: pip install -U pillow",
        str(data / "camera.dng"): "camera raw needs rawpy (a dependency of mmsearch): pip install rawpy",
        str(data / "camera-preview.dng"): "camera raw needs rawpy (a dependency of mmsearch): pip install rawpy",
    }, run.stderr
    assert report["indexed"] == 3  # the run went on: the PNG, the JPEG 2000, the PPM
