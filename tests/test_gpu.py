"""GPU paths: fp16 on CUDA must give the same vectors as the CPU path. Skipped where no GPU exists."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


@pytest.fixture(scope="module")
def cpu_and_gpu():
    """The same seeded ViT-B-32 on torch fp32 on the CPU (the reference) and on CUDA (fp16 there)."""
    from mmsearch.encoders.registry import load_encoder

    cpu = load_encoder("ViT-B-32:random@3", device="cpu", runtime="torch")
    gpu = load_encoder("ViT-B-32:random@3", device="cuda")
    assert (cpu.device, gpu.device) == ("cpu", "cuda")  # really two paths: no silent fall-back to the CPU
    return cpu, gpu


def _images():
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)) for _ in range(16)]


@pytest.mark.parametrize("modality", ["image", "text"])
def test_cuda_fp16_embeddings_match_cpu(cpu_and_gpu, modality):
    cpu, gpu = cpu_and_gpu
    if modality == "image":
        ims = _images()
        a, b = cpu.embed_images(ims), gpu.embed_images(ims)
    else:
        texts = ["a red bicycle", "a photo of a cat", "receipts"]
        a, b = cpu.embed_texts(texts), gpu.embed_texts(texts)
    assert a.shape == b.shape and len(a) > 0
    cos = (a * b).sum(axis=1)
    assert cos.min() >= 0.999, cos.min()


def _unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_torch_exact_search_on_cuda_matches_cpu_exact():
    from mmsearch.ann.faiss_index import AnnIndex
    from mmsearch.ann.placement import TorchExact, choose

    x, q = _unit(20_000, 128, 0), _unit(50, 128, 1)
    ids = np.arange(20_000, dtype=np.int64) * 2 + 1
    ann = AnnIndex.build("flat", 128, ids, x)
    gpu = TorchExact.of(ann, device="cuda")
    _, want = ann.search(q, 10)
    scores, got = gpu.search(q, 10)
    assert (got[:, 0] == want[:, 0]).all() and np.mean(got == want) > 0.98  # fp16: near-ties may swap
    allowed = ids[::11]
    _, filt = gpu.search(q, 10, allowed)
    assert np.isin(filt, allowed).all()
    assert choose("flat", 10**6, "auto") in ("torch", "faiss-gpu")  # a large flat index goes to the GPU


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_faiss_gpu_matches_cpu_and_honours_filters_when_installed(kind):
    from mmsearch.ann.faiss_index import AnnIndex, SearchParams, gpu_available, to_gpu
    from mmsearch.ann.placement import PostFiltered

    if not gpu_available():
        pytest.skip("faiss built without GPU support")
    x = _unit(5000, 64, 0)
    ids = np.arange(5000, dtype=np.int64)
    ann = AnnIndex.build(kind, 64, ids, x)
    g = to_gpu(ann)
    assert g is not ann and g.index is not ann.index  # moved to the GPU, not handed back unchanged
    assert (g.kind, g.dim, g.trained_n) == (ann.kind, ann.dim, ann.trained_n)
    p = SearchParams(nprobe=10_000)
    _, a = ann.search(x[:50], 5, p)
    _, b = g.search(x[:50], 5, p)
    assert (a[:, 0] == np.arange(50)).all() and (a[:, 0] == b[:, 0]).all()
    allowed = ids[1::2]  # odd ids only: every query's own (even or odd) id is excluded half the time
    _, f = PostFiltered(g, ann).search(x[:50], 5, p, allowed)
    assert np.isin(f[f >= 0], allowed).all()  # an ignored selector would let even ids through


def test_nvjpeg_path_matches_cpu_path(tmp_path):
    """JPEGs decoded by nvJPEG and preprocessed on the GPU (chosen on its own: gpu_decode auto) give the
    vectors of the CPU worker path with torch fp32 on the CPU; PNGs go the CPU way in the same run."""
    from mmsearch import Engine
    from tests.kit import write_exif_jpeg, write_images, write_photo

    folder = tmp_path / "imgs"
    sizes = [(640, 480), (480, 640), (1024, 683), (300, 200), (224, 224), (50, 70)]
    for i, (w, h) in enumerate(sizes):
        write_photo(folder / f"photo{i}.jpg", w, h, seed=i)
    write_exif_jpeg(folder / "rotated.jpg", orientation=6, size=(320, 200))
    write_images(folder, 2, size=(200, 150))
    vectors = {}
    for name, kw in (("gpu", {"device": "cuda"}), ("cpu", {"device": "cpu", "runtime": "torch", "gpu_decode": "off"})):
        with Engine.open(tmp_path / name, model="ViT-B-32:random@3", workers=0, **kw) as eng:
            report = eng.index([folder])
            assert (report.indexed, report.failed) == (len(sizes) + 3, 0)
            assert report.gpu_decoded == (len(sizes) + 1 if name == "gpu" else 0)  # really the nvJPEG path
            space = eng.store.spaces()[0]
            ids, vecs = eng.store.vectors(space.id, "image")
            meta = eng.store.content_meta(list(ids))
            vectors[name] = {meta[c].uris[0]: v / np.linalg.norm(v) for c, v in zip(ids, vecs)}
    assert set(vectors["gpu"]) == set(vectors["cpu"])
    cos = {p: float(vectors["gpu"][p] @ vectors["cpu"][p]) for p in vectors["cpu"]}
    assert min(cos.values()) >= 0.999, cos

