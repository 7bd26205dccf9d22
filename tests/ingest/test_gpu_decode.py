"""The JPEG tensor path (mmsearch.ingest.gpu_decode), run on CPU tensors: what runs on the GPU with
device="cuda" is the same code (tests/test_gpu.py repeats the parity check there).

Fidelity is measured as test_fidelity.py does, against open_clip's own transform on the image as a
viewer sees it; the CPU worker path decodes JPEGs at a reduced DCT scale where the size allows, the
tensor path at full size, so the two are compared by embeddings, not pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from mmsearch import Engine
from mmsearch.ingest.backoff import Halving
from tests.kit import write_exif_jpeg, write_images, write_photo

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")


def _vectors(eng: Engine) -> dict[str, np.ndarray]:
    space = eng.store.spaces()[0]
    ids, vecs = eng.store.vectors(space.id, "image")
    meta = eng.store.content_meta(list(ids))
    return {u: v / np.linalg.norm(v) for cid, v in zip(ids, vecs) for u in meta[cid].uris}


def _reference(eng: Engine, spec: str, paths) -> dict[str, np.ndarray]:
    """open_clip's own transform on the image as a viewer sees it (test_fidelity's), through the same model."""
    from tests.test_fidelity import reference_view

    enc = eng.encoder(spec)
    views = [reference_view(p) for p in paths]
    return dict(zip(map(str, paths), enc.embed_images(views)))


@pytest.fixture
def mixed(tmp_path):
    """A folder of JPEGs (large enough for the CPU path's reduced decode, and small), PNGs, a CMYK
    JPEG, a grey one, a rotated one and a truncated one."""
    d = tmp_path / "mixed"
    write_images(d, 3)
    for i, (w, h) in enumerate([(640, 480), (300, 200), (45, 60), (33, 33)]):
        write_photo(d / f"photo{i}.jpg", w, h, i)
    Image.open(d / "photo1.jpg").convert("CMYK").save(d / "cmyk.jpg")
    Image.open(d / "photo1.jpg").convert("L").save(d / "grey.jpeg")
    write_exif_jpeg(d / "rotated.jpg", orientation=6, size=(64, 40))
    (d / "truncated.jpg").write_bytes((d / "photo0.jpg").read_bytes()[:500])
    return d


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_turns_tensors_as_pillow_turns_images(orientation):
    from mmsearch.ingest.tensor_pixels import orient

    arr = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.info["exif"] = exif.tobytes()
    want = np.asarray(ImageOps.exif_transpose(im))
    got = orient(torch.from_numpy(arr).permute(2, 0, 1), orientation).permute(1, 2, 0).numpy()
    assert got.shape == want.shape and (got == want).all()


def test_mixed_folder_indexes_completely_with_the_tensor_path(engine_factory, tiny_model, mixed, tmp_path, counting):
    """JPEGs on the tensor path, PNGs and the CMYK JPEG the CPU way, in one run; the same contents as
    with the CPU path, vectors as close to open_clip's as the CPU path's; a re-run embeds nothing."""
    spec = counting.spec(tiny_model)
    on = engine_factory(tmp_path / "on", model=spec, device="cpu", runtime="torch", gpu_decode="on")
    off = engine_factory(tmp_path / "off", device="cpu", runtime="torch", gpu_decode="off")
    r_on, r_off = on.index([mixed]), off.index([mixed])
    assert (r_on.indexed, r_on.failed) == (r_off.indexed, r_off.failed) == (10, 1)
    assert r_on.gpu_decoded == 6 and r_off.gpu_decoded == 0  # 4 photos, grey, rotated; not cmyk nor truncated
    assert [p for p, _ in r_on.errors] == [p for p, _ in r_off.errors] == [str(mixed / "truncated.jpg")]
    assert r_on.errors == r_off.errors  # the CPU path's own reason: the tensor path fell back and it failed too
    got, cpu = _vectors(on), _vectors(off)
    assert set(got) == set(cpu)
    ref = _reference(off, tiny_model, sorted(got))
    for path, v in got.items():
        assert float(v @ ref[path]) >= 0.999, path
        assert float(v @ ref[path]) >= float(cpu[path] @ ref[path]) - 1e-4, path  # never further than the CPU path
        assert float(v @ cpu[path]) >= 0.99, path
    shown = {m.uris[0]: (m.width, m.height) for m in on.store.content_meta(list(on.store.vectors(1, "image")[0])).values()}
    assert shown[str(mixed / "rotated.jpg")] == (40, 64)  # size as displayed, as the CPU path stores it
    items = counting.last.items
    again = on.index([mixed])
    assert (again.indexed, again.unchanged, again.gpu_decoded) == (0, 10, 0) and counting.last.items == items


def test_a_file_the_decoder_rejects_goes_the_cpu_way(tmp_path, tiny_model):
    from mmsearch.encoders.registry import load_encoder
    from mmsearch.ingest.decode import load
    from mmsearch.ingest.discover import Candidate
    from mmsearch.ingest.gpu_decode import TensorDecode, torch_decode

    paths = []
    for i in range(4):
        write_photo(tmp_path / f"p{i}.jpg", 90, 70, i)
        paths.append(str(tmp_path / f"p{i}.jpg"))
    paths.append(str(write_exif_jpeg(tmp_path / "exif.jpg", make="Canon", model="EOS", taken="2023:06:15 10:00:00",
                                     gps=(48.1, -11.5), orientation=8, size=(70, 90))))
    rejected = (tmp_path / "p2.jpg").read_bytes()

    def picky(datas, device):
        if any(bytes(d.numpy()) == rejected for d in datas):
            raise RuntimeError("nvjpeg: unsupported")
        return torch_decode(datas, device)

    recipe = load_encoder(tiny_model, device="cpu", runtime="torch").image_recipe()
    dec = TensorDecode(recipe, "cpu", decode=picky)
    cands = [Candidate(p, "image", 0, 0) for p in paths]
    out = {x.path: x for x in dec.map(cands)}
    assert set(out) == set(paths) and all(x.error is None for x in out.values())
    assert dec.paths == set(paths) - {paths[2]}
    cpu = load(paths[2], "image", recipe)
    assert isinstance(out[paths[2]].pixels, np.ndarray) and (out[paths[2]].pixels == cpu.pixels).all()
    for p in paths:  # what the workers record, from the header alone
        ref = load(p, "image", recipe)
        assert (out[p].sha256, out[p].width, out[p].height, out[p].exif) == (ref.sha256, 90, 70, ref.exif)
    assert out[paths[-1]].exif.make == "Canon" and out[paths[-1]].exif.orientation == 8


def _jpeg(mode: str = "RGB", **kw) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)).convert(mode).save(
        buf, kw.pop("format", "JPEG"), **kw)
    return buf.getvalue()


@pytest.mark.parametrize("data, size", [
    (_jpeg(), (30, 20)), (_jpeg(progressive=True), (30, 20)), (_jpeg("L"), (30, 20)),
    (_jpeg("CMYK"), None),  # Pillow converts CMYK its own way: the CPU path's
    (_jpeg(format="PNG"), None), (b"\xff\xd8\xff", None), (b"", None),
    (_jpeg(xmp=b'<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'), None),  # Pillow reads XMP too
])
def test_jpeg_header_takes_what_decode_jpeg_renders_as_pillow_does(data, size):
    from mmsearch.ingest.gpu_decode import jpeg_header

    got = jpeg_header(data)
    assert (got[:2] if got else None) == size


def test_nvjpeg_batches_back_off_when_memory_runs_out(tmp_path, tiny_model):
    """A batch the device cannot hold is halved until it fits (a fake decoder runs out of CUDA memory
    above 3 images); every file still comes through the tensor path."""
    from mmsearch.encoders.registry import load_encoder
    from mmsearch.ingest.discover import Candidate
    from mmsearch.ingest.gpu_decode import TensorDecode, torch_decode

    paths = [str(write_photo(tmp_path / f"p{i}.jpg", 120, 90, seed=i)) for i in range(10)]

    def small(datas, device):
        if len(datas) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        return torch_decode(datas, device)

    recipe = load_encoder(tiny_model, device="cpu", runtime="torch").image_recipe()
    dec = TensorDecode(recipe, "cpu", batch=8, decode=small)
    out = list(dec.map(Candidate(p, "image", 0, 0) for p in paths))
    assert sorted(x.path for x in out) == sorted(paths) and dec.paths == set(paths)
    assert all(isinstance(x.pixels, torch.Tensor) for x in out)
    assert dec.halving.size == 2


def test_an_image_too_big_for_the_device_alone_goes_the_cpu_way(tmp_path, tiny_model):
    from mmsearch.encoders.registry import load_encoder
    from mmsearch.ingest.discover import Candidate
    from mmsearch.ingest.gpu_decode import TensorDecode, torch_decode

    paths = [str(write_photo(tmp_path / f"p{i}.jpg", 120 + 40 * (i == 3), 90, seed=i)) for i in range(5)]
    big = (tmp_path / "p3.jpg").read_bytes()

    def no_room_for_p3(datas, device):
        if any(bytes(d.numpy()) == big for d in datas):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        return torch_decode(datas, device)

    recipe = load_encoder(tiny_model, device="cpu", runtime="torch").image_recipe()
    dec = TensorDecode(recipe, "cpu", batch=4, decode=no_room_for_p3)
    out = {x.path: x for x in dec.map(Candidate(p, "image", 0, 0) for p in paths)}
    assert set(out) == set(paths) and all(x.error is None for x in out.values())
    assert dec.paths == set(paths) - {paths[3]} and isinstance(out[paths[3]].pixels, np.ndarray)


@pytest.mark.parametrize("mode, device, torch_run, want", [
    ("auto", "cuda", True, "cuda"), ("auto", "cuda:1", True, "cuda:1"), ("auto", "cpu", True, None),
    ("on", "cpu", True, "cpu"), ("on", "cpu", False, None), ("off", "cuda", True, None), ("auto", "cpu", False, None),
])
def test_the_tensor_path_is_chosen_by_setting_and_encoder(mode, device, torch_run, want):
    from mmsearch.encoders.base import SpaceInfo
    from mmsearch.ingest.gpu_decode import device_for

    class Model:
        space = SpaceInfo(spec="x", family="clip", weights="w", dim=4, modalities=("image", "text"),
                          extra={"runtime": "torch" if torch_run else "onnxruntime", "device": device})

        def image_recipe(self):
            return {}

    got, notice = device_for(mode, Model())
    assert got == want
    assert (notice is not None) == (mode == "on" and not torch_run)  # asked for and not possible: said so


class _TooBig(Exception):
    pass


@pytest.mark.parametrize("start, fits, n, sizes", [
    (8, 8, 20, [8, 8, 4]),  # fits: chunks of the batch size
    (8, 3, 20, [2, 2, 2, 2, 2, 2, 2, 2, 2, 2]),  # 8 → 4 → 2 fits; later chunks start at 2
    (5, 1, 3, [1, 1, 1]),
])
def test_halving_backs_off_and_keeps_the_size_that_worked(start, fits, n, sizes):
    tried: list[int] = []

    def fn(chunk):
        tried.append(len(chunk))
        if len(chunk) > fits:
            raise _TooBig
        return [x * 10 for x in chunk]

    h: Halving = Halving(start, (_TooBig,))
    out = h.run(list(range(n)), fn)
    assert [len(c) for c, _ in out] == sizes
    assert [x for c, _ in out for x in c] == list(range(n))  # every item once, in order
    assert all(r == [x * 10 for x in c] for c, r in out)
    assert h.size == max(sizes) and max(tried[-len(sizes):]) <= max(sizes)


def test_halving_hands_back_an_item_too_big_alone_and_goes_on():
    recovered = []
    h: Halving = Halving(4, (_TooBig,), recover=lambda: recovered.append(1))

    def fn(chunk):
        if 2 in chunk or len(chunk) > 2:
            raise _TooBig("item 2")
        return chunk

    out = h.run([0, 1, 2, 3, 4], fn)
    assert [(c, r if isinstance(r, list) else type(r)) for c, r in out] == [([0, 1], [0, 1]), ([2], _TooBig),
                                                                          ([3], [3]), ([4], [4])]
    assert recovered and h.size == 1


def test_halving_lets_other_errors_through():
    h: Halving = Halving(4, (_TooBig,))
    with pytest.raises(KeyError):
        h.run([1, 2], lambda chunk: {}[0])


@pytest.mark.slow
def test_tensor_path_fidelity_vit_b32(tmp_path):
    """The fidelity test of tests/test_fidelity.py for the tensor path, with photo-sized JPEGs added
    (decoded at a reduced scale on the CPU path): ViT-B-32, seeded random weights, torch fp32."""
    from tests.test_fidelity import make_images

    paths = make_images(tmp_path / "imgs")
    for i, (w, h) in enumerate([(640, 480), (1024, 683)]):
        write_photo(tmp_path / "imgs" / f"photo{i}.jpg", w, h, i)
    spec = "ViT-B-32:random@11"
    with Engine.open(tmp_path / "s", model=spec, device="cpu", runtime="torch", workers=0, gpu_decode="on") as eng:
        report = eng.index([tmp_path / "imgs"])
        assert report.failed == 0 and report.gpu_decoded == 4  # plain, rotated and the photos; cmyk the CPU way
        got = _vectors(eng)
        ref = _reference(eng, spec, sorted(got))
    assert len(got) == len(paths) + 2
    cos = {p: float(got[p] @ ref[p]) for p in got}
    assert min(cos.values()) >= 0.999, cos
