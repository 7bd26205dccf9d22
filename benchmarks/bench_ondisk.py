"""The on-disk IVF-PQ (``mmsearch.ann.ondisk``) at N x 512: build rate, peak memory, bytes per vector,
query latency and Recall@10 after exact re-rank.

Vectors (not uniform random, which makes every ANN index look bad and no data set look like it):
``C = N // 500`` clusters whose sizes follow a Zipf law (exponent 1.1, so a few are huge, most are small);
centres drawn with a power-law spectrum (axis ``i`` scaled by ``(i+1)**-0.5``, then rotated) so the set
has a low effective dimension, as CLIP embeddings do; each cluster's spread is anisotropic, its own
power-law spectrum (``(i+1)**-alpha``, alpha in 0.5..1.2) in one of 16 random orthonormal bases, scaled
so a draw's deviation is 0.5..1 times its centre's norm (cosine to the centre ~0.7..0.9,
like images to their class mean in CLIP space); every vector unit-normalised. Generated in chunks of 100k into a
memory-mapped float16 ``.npy`` (the precision the store keeps); held-out queries come from the same
mixture (other draws). Cached by N and seed under ``--work``.

The build reads the file in blocks with plain reads (no memory map, so the resident memory reported is
the build's own), trains on the factory's sample (:func:`mmsearch.ann.faiss_index.train_size`), writes
one shard per ``--shard`` vectors with :func:`~mmsearch.ann.ondisk.build_shard` (what a Ray worker
would run) and merges them. Queries run one at a time after warm-up on the memory-mapped index; the
top ``--pool`` candidates are re-ranked exactly with the fp16 vectors read from the ``.npy`` memmap: a
stand-in for the store's ``vectors_for`` (the product's re-rank path), not the store itself. Truth is
brute force over the same memmap.

    nice -n 10 python benchmarks/bench_ondisk.py --n 1000000
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import save  # noqa: E402

from mmsearch.ann import ondisk  # noqa: E402
from mmsearch.ann.faiss_index import SearchParams  # noqa: E402

DIM = 512
CHUNK = 100_000


def _bases(rng, count=16):
    return [np.linalg.qr(rng.standard_normal((DIM, DIM)))[0].astype(np.float32) for _ in range(count)]


def _mixture(n, seed):
    rng = np.random.default_rng(seed)
    c = max(n // 500, 16)
    rot = np.linalg.qr(rng.standard_normal((DIM, DIM)))[0].astype(np.float32)
    centres = (rng.standard_normal((c, DIM)) * (np.arange(1, DIM + 1) ** -0.5)).astype(np.float32) @ rot
    sizes = 1.0 / np.arange(1, c + 1) ** 1.1
    alpha = rng.uniform(0.5, 1.2, c)
    noise = np.sqrt((np.arange(1, DIM + 1)[None] ** (-2 * alpha[:, None])).sum(1))  # a draw's expected norm
    scale = rng.uniform(0.5, 1.0, c) * np.linalg.norm(centres, axis=1) / noise  # spread 0.5..1 of the centre
    return centres, sizes / sizes.sum(), alpha, scale, rng.integers(0, 16, c)


def _draw(m, rng, mix, bases):
    centres, p, alpha, scale, basis = mix
    which = rng.choice(len(centres), m, p=p)
    out = np.empty((m, DIM), np.float32)
    ranks = np.arange(1, DIM + 1, dtype=np.float32)
    for b in range(len(bases)):  # one matmul per basis, every cluster of that basis at once
        rows = np.nonzero(basis[which] == b)[0]
        if len(rows):
            w = which[rows]
            z = rng.standard_normal((len(rows), DIM)).astype(np.float32) * ranks ** -alpha[w, None].astype(np.float32)
            out[rows] = centres[w] + (scale[w, None] * z) @ bases[b]
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def generate(path: Path, n: int, nq: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The base set in ``path`` (fp16 .npy, made once) and ``nq`` held-out queries (float32)."""
    mix = _mixture(n, seed)
    bases = _bases(np.random.default_rng(seed + 1))
    if not path.exists():
        tmp = path.with_suffix(".tmp.npy")
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, DIM))
        rng = np.random.default_rng(seed + 2)
        for s in range(0, n, CHUNK):
            mm[s:s + CHUNK] = _draw(min(CHUNK, n - s), rng, mix, bases)
        mm.flush()
        del mm
        os.replace(tmp, path)
    return np.load(path, mmap_mode="r"), _draw(nq, np.random.default_rng(seed + 3), mix, bases)


def _blocks(path: Path, n: int, offset: int, block: int = CHUNK):
    """(ids, float32 vectors) read with plain file reads: nothing of the file stays mapped."""
    with open(path, "rb") as f:
        for s in range(0, n, block):
            m = min(block, n - s)
            f.seek(offset + s * DIM * 2)
            yield np.arange(s, s + m, dtype=np.int64), np.fromfile(f, np.float16, m * DIM).reshape(m, DIM)


def _sample(path: Path, n: int, offset: int):
    def sample(m: int) -> np.ndarray:  # a pass of plain reads, keeping the drawn rows (no pages stay mapped)
        keep = np.zeros(n, bool)
        keep[np.random.default_rng(7).choice(n, min(m, n), replace=False)] = True
        return np.concatenate([v[keep[i]].astype(np.float32) for i, v in _blocks(path, n, offset)])
    return sample


def _truth(base, q, k=10):
    best = np.full((len(q), k), -np.inf, np.float32)
    ids = np.zeros((len(q), k), np.int64)
    for s in range(0, len(base), CHUNK):
        sc = q @ np.asarray(base[s:s + CHUNK], np.float32).T
        allsc = np.concatenate([best, sc], 1)
        allid = np.concatenate([ids, np.arange(s, s + sc.shape[1])[None].repeat(len(q), 0)], 1)
        top = np.argsort(-allsc, 1)[:, :k]
        best, ids = np.take_along_axis(allsc, top, 1), np.take_along_axis(allid, top, 1)
    return ids


def _rss_now() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))


def query(ann, base, q, truth, nprobe, pool):
    times, hits = [], 0
    sp = SearchParams(nprobe=nprobe)
    for r in range(min(20, len(q))):  # warm-up: the pages of the lists these probes touch
        ann.search(q[r:r + 1], pool, sp)
    for r in range(len(q)):
        t0 = time.perf_counter()
        _, cand = ann.search(q[r:r + 1], pool, sp)
        cand = np.sort(cand[0][cand[0] >= 0])
        scores = np.asarray(base[cand], np.float32) @ q[r]
        top = cand[np.argsort(-scores, kind="stable")[:10]]
        times.append(time.perf_counter() - t0)
        hits += len(set(top.tolist()) & set(truth[r].tolist()))
    t = np.array(times) * 1000
    return {"nprobe": nprobe, "pool": pool, "p50_ms": float(np.percentile(t, 50)),
            "p95_ms": float(np.percentile(t, 95)), "recall_at_10": hits / (10 * len(q))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--shard", type=int, default=250_000)
    ap.add_argument("--pool", type=int, nargs="+", default=[200])
    ap.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_ondisk"))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    vec_path = a.work / f"vectors-{a.n}-{a.seed}.npy"
    t0 = time.perf_counter()
    if not vec_path.exists():  # in a child: the pages it writes would count in this process's peak RSS
        import multiprocessing as mp

        child = mp.get_context("fork").Process(target=generate, args=(vec_path, a.n, 1, a.seed))
        child.start()
        child.join()
    base, q = generate(vec_path, a.n, a.queries, a.seed)
    gen_s = time.perf_counter() - t0
    offset = int(vec_path.stat().st_size - a.n * DIM * 2)
    del base
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"vectors ready ({gen_s:.0f} s); building", flush=True)
    out = ondisk.build_ondisk(DIM, a.n, _sample(vec_path, a.n, offset), _blocks(vec_path, a.n, offset),
                              a.work / f"index-{a.n}", shard_size=a.shard)
    build_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    build_s = out["train_s"] + out["shards_s"] + out["merge_s"]
    print({k: v for k, v in out.items() if k.endswith("_s")}, f"peak RSS {build_rss / 2**30:.2f} GiB", flush=True)
    ann = ondisk.read_ondisk(out["index"], DIM)
    base = np.load(vec_path, mmap_mode="r")
    truth = _truth(base, q)
    runs = []
    for nprobe in a.nprobe:
        for pool in a.pool:
            runs.append(query(ann, base, q, truth, nprobe, pool))
            print(runs[-1], flush=True)
    idx_bytes, ivf_bytes = out["index"].stat().st_size, out["ivfdata"].stat().st_size
    payload = {
        "n": a.n, "dim": DIM, "queries": len(q), "shard": a.shard, "shards": out["shards"],
        "factory": f"IVF{ann.breadth()},PQ{ann.index.pq.M}x{ann.index.pq.nbits}",
        "generate_s": gen_s, "train_s": out["train_s"], "shards_s": out["shards_s"], "merge_s": out["merge_s"],
        "build_vectors_per_s": a.n / build_s, "add_vectors_per_s": a.n / (out["shards_s"] + out["merge_s"]),
        "peak_rss_before_build_bytes": rss0, "peak_rss_build_bytes": build_rss,
        "rss_after_queries_bytes": _rss_now(),
        "index_file_bytes": idx_bytes, "ivfdata_bytes": ivf_bytes, "ivfdata_bytes_per_vector": ivf_bytes / a.n,
        "fp16_vector_bytes_per_vector": DIM * 2, "runs": runs,
        "load": os.getloadavg(),
    }
    print(save("ondisk", payload))


if __name__ == "__main__":
    main()
