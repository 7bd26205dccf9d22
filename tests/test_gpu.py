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


def test_faiss_gpu_matches_cpu_when_installed():
    from mmsearch.ann.faiss_index import AnnIndex, gpu_available, to_gpu

    if not gpu_available():
        pytest.skip("faiss built without GPU support")
    x = np.random.default_rng(0).normal(size=(5000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ann = AnnIndex.build("flat", 64, np.arange(5000), x)
    g = to_gpu(ann)
    assert g is not ann and g.index is not ann.index  # moved to the GPU, not handed back unchanged
    _, a = ann.search(x[:50], 5)
    _, b = g.search(x[:50], 5)
    assert (a[:, 0] == np.arange(50)).all()  # every vector finds itself first…
    assert (a[:, 0] == b[:, 0]).all()  # …on the GPU too
