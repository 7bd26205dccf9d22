"""Exact search in torch (mmsearch.ann.placement.TorchExact) against the memory-bandwidth bound.

One single query reads the whole vector matrix once, so its floor is bytes / bandwidth. The
bandwidth is measured here with a large device-to-device copy (torch) on a GPU, or a large numpy
copy on the CPU. Also times FAISS flat (and FAISS GPU flat/IVF when a GPU build is installed).

    python benchmarks/bench_gpu_search.py [--n 1000000] [--dim 512] [--queries 200]

Anchor (shared/ANCHORS.md, H100): 1M x 512 fp16 single query 0.45 ms, bound ~0.31 ms; target >= 0.7
of the bound. Without CUDA it runs the same on the CPU (fp32) at --n 200000 and says no GPU was present.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import save  # noqa: E402


def bandwidth(device: str) -> float:
    """Bytes per second of a large copy (read + write counted)."""
    import torch

    if device.startswith("cuda"):
        x = torch.empty(512 * 2**20, dtype=torch.uint8, device=device)
        y = torch.empty_like(x)
        for _ in range(3):
            y.copy_(x)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(20):
            y.copy_(x)
        torch.cuda.synchronize()
        return 2 * x.numel() * 20 / (time.perf_counter() - t0)
    a = np.ones(256 * 2**20, np.uint8)
    b = np.empty_like(a)
    best = min(_timed(lambda: np.copyto(b, a)) for _ in range(5))
    return 2 * a.nbytes / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def per_query(fn, queries: np.ndarray, sync=lambda: None) -> float:
    for q in queries[:5]:
        fn(q[None])
    sync()
    times = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q[None])
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    import torch

    from mmsearch.ann.faiss_index import AnnIndex, gpu_available, to_gpu
    from mmsearch.ann.placement import TorchExact

    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000 if cuda else 200_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=200)
    a = ap.parse_args()
    device = "cuda" if cuda else "cpu"
    if not cuda:
        print("no CUDA device: measuring the same searcher on the CPU (fp32)")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(a.n, a.dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[rng.choice(a.n, a.queries, replace=False)]
    ids = np.arange(a.n, dtype=np.int64)
    t = TorchExact(ids, x, device=device)
    bytes_ = t.x.numel() * t.x.element_size()
    bw = bandwidth(device)
    bound = bytes_ / bw
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch_s = per_query(lambda v: t.search(v, 10), q, sync)
    batch = min(1024, a.queries * 5)
    qb = np.repeat(q, max(1, batch // len(q)), axis=0)[:batch]
    t0 = time.perf_counter()
    t.search(qb, 10)
    sync()
    batched_qps = len(qb) / (time.perf_counter() - t0)
    flat = AnnIndex.build("flat", a.dim, ids, x)
    faiss_s = per_query(lambda v: flat.search(v, 10), q[:50])
    row = {"n": a.n, "dim": a.dim, "device": torch.cuda.get_device_name(0) if cuda else "cpu",
           "dtype": str(t.dtype).replace("torch.", ""), "matrix_bytes": bytes_, "bandwidth_gb_s": round(bw / 1e9, 1),
           "bound_ms": round(bound * 1e3, 3), "torch_single_ms": round(torch_s * 1e3, 3),
           "ratio_to_bound": round(bound / torch_s, 3), "torch_batched_qps": round(batched_qps),
           "faiss_cpu_flat_single_ms": round(faiss_s * 1e3, 3)}
    if gpu_available():  # pragma: no cover - needs faiss-gpu
        g = to_gpu(flat)
        row["faiss_gpu_flat_single_ms"] = round(per_query(lambda v: g.search(v, 10), q) * 1e3, 3)
    print(f"{a.n} x {a.dim} {row['dtype']} on {row['device']}: bound {row['bound_ms']} ms "
          f"({row['bandwidth_gb_s']} GB/s), torch {row['torch_single_ms']} ms = {row['ratio_to_bound']:.2f} of the bound "
          f"(target >= 0.7); batched {row['torch_batched_qps']:,} q/s; faiss-cpu flat {row['faiss_cpu_flat_single_ms']} ms")
    print(f"wrote {save('gpu-search', row)}")


if __name__ == "__main__":
    main()
