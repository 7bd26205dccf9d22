"""Photo metadata read at ingest: EXIF from JPEGs the test writes with Pillow, damaged EXIF that never fails a
file, and what a hit shows."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mmsearch.ingest.decode import load
from mmsearch.ingest.exif import Exif, read_exif
from tests.kit import unit, write_exif_jpeg


def _opened(path):
    return Image.open(path)


def test_a_full_exif_block_is_read(tmp_path):
    p = write_exif_jpeg(tmp_path / "a.jpg", make="Canon", model="Canon EOS R5", taken="2023:06:15 10:11:12",
                        offset="+02:00", gps=(48.858222, -2.2945), orientation=6)
    assert read_exif(_opened(p)) == Exif(taken_at="2023-06-15 10:11:12", taken_offset="+02:00", make="Canon",
                                         model="Canon EOS R5", gps_lat=pytest.approx(48.858222, abs=1e-6),
                                         gps_lon=pytest.approx(-2.2945, abs=1e-6), orientation=6)


@pytest.mark.parametrize("kw, field, expected", [
    (dict(taken="0000:00:00 00:00:00"), "taken_at", None),  # a camera whose clock was never set
    (dict(taken="2023:02:30 10:00:00"), "taken_at", None),  # no such day
    (dict(taken="garbage"), "taken_at", None),
    (dict(taken="2023:06:15 10:11:12", offset="2 hours"), "taken_offset", None),
    (dict(taken="2023:06:15 10:11:12", offset="-05:30"), "taken_offset", "-05:30"),
    (dict(gps=(0.0, 0.0)), "gps_lat", None),  # what a receiver without a fix writes
    (dict(gps=(-33.5, 151.25)), "gps_lat", -33.5),
    (dict(orientation=42), "orientation", None),
    (dict(make="  Sony\x00\x00 "), "make", "Sony"),
    (dict(make="x" * 500), "make", "x" * 128),
])
def test_odd_values_leave_their_field_empty_or_cleaned(tmp_path, kw, field, expected):
    got = getattr(read_exif(_opened(write_exif_jpeg(tmp_path / "a.jpg", **kw))), field)
    assert got == (pytest.approx(expected) if isinstance(expected, float) else expected)


def test_no_exif_and_damaged_exif_give_empty_fields(tmp_path):
    assert read_exif(_opened(write_exif_jpeg(tmp_path / "none.jpg"))) == Exif()
    bad = write_exif_jpeg(tmp_path / "bad.jpg", raw_exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff" + b"\x00" * 7)
    assert read_exif(_opened(bad)) == Exif()


@pytest.mark.parametrize("raw", [
    b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff" + b"\x00" * 7,  # a directory claiming 65535 entries
    b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00\x69\x87\x04\x00\x01\x00\x00\x00\xff\xff\x00\x00",  # Exif IFD out of range
    b"not exif at all",
])
def test_a_file_with_damaged_exif_still_indexes(tmp_path, raw):
    p = write_exif_jpeg(tmp_path / "bad.jpg", raw_exif=raw)
    got = load(str(p), "image", None)
    assert got.error is None and got.width == 48 and got.exif is not None


def test_png_exif_is_read_too(tmp_path):
    ex = Image.Exif()
    ex[0x010F] = "Fujifilm"
    ex.get_ifd(0x8769)[0x9003] = "2020:01:02 03:04:05"
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, "PNG", exif=ex.tobytes())
    (tmp_path / "a.png").write_bytes(buf.getvalue())
    got = load(str(tmp_path / "a.png"), "image", None)
    assert got.exif.make == "Fujifilm" and got.exif.taken_at == "2020-01-02 03:04:05"


def test_indexed_photos_show_their_metadata(tmp_path, engine_factory):
    data = tmp_path / "data"
    write_exif_jpeg(data / "a.jpg", make="Canon", model="Canon EOS R5", taken="2023:06:15 10:11:12", offset="+02:00",
                    gps=(48.5, 2.25), orientation=3)
    write_exif_jpeg(data / "b.jpg", make="Apple", model="iPhone 12", seed=1)
    write_exif_jpeg(data / "c.jpg", raw_exif=b"not exif at all", seed=2)
    eng = engine_factory()
    assert eng.index([data]).ok
    hits = {h.path.rsplit("/", 1)[1]: h for h in eng.search(vector=unit(32), k=10)}
    assert (hits["a.jpg"].taken_at, hits["a.jpg"].camera, hits["a.jpg"].gps) == \
        ("2023-06-15T10:11:12+02:00", "Canon EOS R5", (48.5, 2.25))
    assert (hits["b.jpg"].taken_at, hits["b.jpg"].camera, hits["b.jpg"].gps) == (None, "Apple iPhone 12", None)
    assert (hits["c.jpg"].taken_at, hits["c.jpg"].camera, hits["c.jpg"].gps) == (None, None, None)
    assert [h.path.rsplit("/", 1)[1] for h in eng.search(vector=unit(32), where=["orientation=3"])] == ["a.jpg"]


def test_a_copy_indexed_again_keeps_the_metadata(tmp_path, engine_factory):
    data = tmp_path / "data"
    write_exif_jpeg(data / "a.jpg", make="Canon", taken="2023:06:15 10:11:12")
    eng = engine_factory()
    assert eng.index([data]).ok
    (data / "copy.jpg").write_bytes((data / "a.jpg").read_bytes())
    r = eng.index([data])
    assert r.reused == 1
    (hit,) = eng.search(vector=unit(32), where=["make=canon"])
    assert set(hit.paths) == {str(data / "a.jpg"), str(data / "copy.jpg")} and hit.taken_at == "2023-06-15T10:11:12"
