"""GPU paths: fp16 on CUDA must give the same vectors as the CPU path. Skipped where no GPU exists."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def test_cuda_fp16_embeddings_match_cpu(tmp_path):
    from PIL import Image

    from mmsearch.encoders.registry import load_encoder

    rng = np.random.default_rng(0)
    ims = [Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)) for _ in range(16)]
    texts = ["a red bicycle", "a photo of a cat", "receipts"]
    cpu = load_encoder("ViT-B-32:random@3", device="cpu")
    gpu = load_encoder("ViT-B-32:random@3", device="cuda")
    for a, b in ((cpu.embed_images(ims), gpu.embed_images(ims)), (cpu.embed_texts(texts), gpu.embed_texts(texts))):
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
    _, a = ann.search(x[:50], 5)
    _, b = g.search(x[:50], 5)
    assert (a[:, 0] == b[:, 0]).all()
