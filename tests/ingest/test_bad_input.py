"""Bad input never stops a run: each bad file gets a clear reason, recorded in the store
(`mmsearch errors`), and everything else is indexed. Bad arguments are one clear error, no traceback."""

from __future__ import annotations

import io
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import mmsearch.ingest.decode as decode
import mmsearch.ingest.plan as ingest_plan
from mmsearch import Engine, StoreError, UsageError
from mmsearch.cli import app
from tests.conftest import write_images, write_texts

runner = CliRunner()


def _cli(*args):
    return runner.invoke(app, [os.fsdecode(a) if isinstance(a, (bytes, Path)) else str(a) for a in args])


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width × height`` pixels: a decompression bomb's header, without the bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _reasons(eng: Engine) -> dict[str, str]:
    return {e.path: e.reason for e in eng.errors()}


def test_every_kind_of_bad_file_is_recorded_and_the_run_goes_on(engine_factory, tmp_path):
    eng = engine_factory()
    data = tmp_path / "data"
    good = write_images(data, 3)
    png = io.BytesIO()
    Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(png, "PNG")
    (data / "really-a-png.jpg").write_bytes(png.getvalue())  # wrong extension, valid image: fine
    (data / "zero.png").write_bytes(b"")
    full = good[0].read_bytes()
    (data / "truncated.png").write_bytes(full[: len(full) // 2])
    (data / "bomb.png").write_bytes(_png_header_only(12_000, 9_000))  # 108 M pixels > the 100 M limit
    (data / "giant.png").write_bytes(_png_header_only(20_000, 20_000))  # past Pillow's own hard stop too
    (data / "not-an-image.png").write_bytes(b"%PDF-1.4 a pdf under a png name")
    (data / "photo.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")  # a HEIC cut short after its signature
    (data / "drawing.svg").write_bytes(b"<svg/>")  # a format we cannot decode
    (data / "notes.txt").write_bytes(b"caf\xe9 latin-1")
    (data / "huge.txt").write_bytes(b"word " * ((1 << 20) // 5 + 10))  # over the 1 MiB text limit
    os.symlink(data / "nowhere.png", data / "dangling.png")
    os.symlink("self-loop.png", data / "self-loop.png")  # a link to itself
    os.symlink(data, data / "loop")  # a folder link back to an ancestor
    long_name = "x" * 240 + ".png"  # near the 255-byte name limit
    shutil.copy(good[1], data / long_name)
    bad_dir = os.path.join(os.fsencode(data), b"caf\xe9")  # non-UTF-8 names: a folder and a file
    os.mkdir(bad_dir)
    shutil.copy(good[2], os.path.join(bad_dir, b"inside.png"))
    shutil.copy(good[2], os.path.join(os.fsencode(data), b"na\xefve.png"))
    os.symlink(data / "missing-folder", data / "dangling-folder")

    report = eng.index([data])
    reasons = _reasons(eng)
    expected = {
        "zero.png": "empty file",
        "truncated.png": "cannot decode image",
        "bomb.png": "image too large (12000×9000 = 108,000,000 pixels > limit 100,000,000)",
        "giant.png": "image too large (Image size (400000000 pixels) exceeds limit",
        "not-an-image.png": "not a recognised image",
        "photo.heic": "damaged or truncated HEIC/HEIF file",
        "drawing.svg": "unsupported image format .svg",
        "notes.txt": "not UTF-8",
        "huge.txt": "file too large",
        "dangling.png": "broken symlink",
        "self-loop.png": "Too many levels of symbolic links",
        "loop": "symlink loop",
        "caf\\xe9": "folder name is not valid UTF-8",
        "na\\xefve.png": "name is not valid UTF-8",
    }
    for name, why in expected.items():
        assert why in reasons.get(str(data / name), ""), (name, reasons)
    assert dict(report.errors) == reasons  # what the run printed is what the store recorded
    assert report.failed == len(reasons)
    # everything else is in: 3 images, the PNG named .jpg, the long name (a copy: no model call)
    assert report.indexed == 4 and report.reused == 1
    paths = {p for h in eng.search(image=good[1], k=10) for p in h.paths}
    assert str(data / long_name) in paths and str(data / "really-a-png.jpg") in paths
    r = _cli("errors", "--store", eng.store.root, "--json")
    assert r.exit_code == 0 and "bomb.png" in r.stdout and "caf\\\\xe9" in r.stdout

    # fixed or removed files lose their error on the next run
    (data / "zero.png").unlink()
    (data / "notes.txt").write_text("café, now UTF-8")
    again = eng.index([data])
    reasons2 = _reasons(eng)
    assert str(data / "zero.png") not in reasons2 and str(data / "notes.txt") not in reasons2
    assert again.indexed == 1 and len(reasons2) == len(reasons) - 2


def test_unreadable_file_is_recorded(engine_factory, tmp_path, monkeypatch):
    eng = engine_factory()
    data = tmp_path / "data"
    imgs = write_images(data, 3)
    secret = str(imgs[1])
    real_open = open

    def guarded_open(path, *a, **k):  # what a file without read permission does (tests may run as root)
        if os.fspath(path) == secret:
            raise PermissionError(13, "Permission denied", secret)
        return real_open(path, *a, **k)

    monkeypatch.setattr(decode, "open", guarded_open, raising=False)
    report = eng.index([data])
    assert report.indexed == 2 and _reasons(eng) == {secret: "permission denied"}


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_and_folder_by_permissions(engine_factory, tmp_path):
    eng = engine_factory()
    data = tmp_path / "data"
    imgs = write_images(data, 2)
    write_images(data / "closed", 2, seed=3)
    imgs[0].chmod(0)
    (data / "closed").chmod(0)
    try:
        report = eng.index([data])
    finally:
        imgs[0].chmod(0o644)
        (data / "closed").chmod(0o755)
    reasons = _reasons(eng)
    assert reasons[str(imgs[0])] == "permission denied"
    assert "cannot list folder" in reasons[str(data / "closed")]
    assert report.indexed == 1


def test_files_that_vanish_or_change_during_the_run(engine_factory, tmp_path, monkeypatch):
    eng = engine_factory()
    data = tmp_path / "data"
    imgs = write_images(data, 4)
    notes = write_texts(data / "n", ["first version"])
    real_walk = ingest_plan.walk

    def walk_then_change(*a, **k):  # between the scan and the read: one file goes, one changes
        yield from real_walk(*a, **k)
        imgs[2].unlink()
        notes[0].write_text("second version, longer")

    with monkeypatch.context() as m:
        m.setattr(ingest_plan, "walk", walk_then_change)
        report = eng.index([data])
    assert "removed while indexing" in _reasons(eng)[str(imgs[2])]
    assert report.indexed == 4 and report.failed == 1
    hit = eng.search(text="second version, longer", type="text", k=1)[0]
    assert hit.text == "second version, longer"  # what was read is what is stored
    again = eng.index([data])
    assert (again.indexed, again.unchanged, again.failed) == (0, 4, 0)
    assert eng.errors() == []  # the vanished file's error went with it


def test_roots_that_are_files(engine_factory, tmp_path):
    eng = engine_factory()
    img = write_images(tmp_path / "d", 1)[0]
    doc = tmp_path / "report.pdf"
    doc.write_bytes(b"%PDF-1.4")
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    report = eng.index([img, doc, fifo])
    assert report.indexed == 1
    reasons = _reasons(eng)
    assert reasons == {str(doc): "unsupported file type .pdf", str(fifo): "not a regular file or folder"}
    r = _cli("index", doc, "--store", eng.store.root)
    assert r.exit_code == 1 and "unsupported file type .pdf" in r.output


def test_bad_api_arguments_are_usage_errors(engine_factory, tmp_path, tiny_model):
    eng = engine_factory()
    data = tmp_path / "data"
    a = write_images(data / "a", 2, seed=1)
    write_images(data / "b", 2, seed=2)
    eng.index([data])
    for call, match in [
        (lambda: eng.index(123), "paths must be"),
        (lambda: eng.index([123]), "paths to index must be"),
        (lambda: eng.index([]), "at least one"),
        (lambda: eng.index([data], commit_every=0), "commit_every=0"),
        (lambda: eng.index([data], commit_every="10"), "commit_every"),
        (lambda: eng.search(text=5), "text must be a string"),
        (lambda: eng.search(image=3.5), "image must be a path"),
        (lambda: eng.search(vector="abc"), "vector must be"),
        (lambda: eng.search(text="x", nprobe=0), "nprobe=0"),
        (lambda: eng.search(text="x", under=5), "under must be"),
        (lambda: eng.remove([3]), "remove takes paths"),
        (lambda: eng.add_texts([1, 2]), "not str"),
        (lambda: Engine.open(tmp_path / "s2", index="bogus"), "--index 'bogus'"),
        (lambda: Engine.open(tmp_path / "s2", batch_size=0), "batch-size"),
        (lambda: Engine.open(tmp_path / "s2", workers=-1), "workers"),
    ]:
        with pytest.raises(UsageError, match=match):
            call()
    # one path given as a string is one path (not its characters: "/" would have meant everything)
    assert eng.remove(str(data / "a")) == 2
    assert {h.path for h in eng.search(image=a[0], k=10)} == {str(p) for p in sorted((data / "b").iterdir())}
    with pytest.raises(StoreError, match="no mmsearch store"):
        Engine.open(tmp_path / "nothing", create=False)


def test_bad_cli_arguments_exit_2_before_any_work(tmp_path, tiny_model):
    data = tmp_path / "data"
    write_images(data, 2)
    store = tmp_path / "s"
    for extra in (["--commit-every", "0"], ["--index", "bogus"], ["--workers", "-1"], ["--batch-size", "0"],
                  ["--json", "--jsonl"]):
        r = _cli("index", data, "--store", store, "--model", tiny_model, *extra)
        assert r.exit_code == 2, (extra, r.output)
        assert "Traceback" not in r.output
    assert not (store / "mmsearch.sqlite3").exists() or Engine.open(store, create=False).stats().sources == {}
    r = _cli("index", data, "--store", store, "--model", tiny_model, "--workers", "0")
    assert r.exit_code == 0
    for args in (["query", "x", "--nprobe", "0"], ["query", "x", "--type", "movie"], ["query", "x", "-k", "0"],
                 ["query", "--image", tmp_path / "missing.png"], ["remove"], ["doctor", "--bogus"]):
        r = _cli(*args, "--store", store)
        assert r.exit_code == 2, (args, r.output)
        assert "Traceback" not in r.output
    r = _cli("doctor", "--store", tmp_path / "nowhere")
    assert r.exit_code == 3 and "no mmsearch store" in r.output
    (tmp_path / "file-store").write_text("x")
    r = _cli("index", data, "--store", tmp_path / "file-store", "--model", tiny_model)
    assert r.exit_code == 3 and "not a directory" in r.output
