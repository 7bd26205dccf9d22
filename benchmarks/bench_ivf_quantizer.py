"""IVF's coarse quantizer at 1M vectors: flat (what `ivf` builds) against an HNSW graph over the centroids
(``IVF{nlist}_HNSW32``, the "IVF-HNSW" of the issue), and how crowded the true neighbours are.

Baseline: exact search (``IndexFlatIP``) on the same vectors and machine, single queries on one thread;
every row prints its rate as a multiple of exact search's. Recall@10 is given by ids alone and with
ties within 0.001 of the 10th true score counted (mmsearch.ann.tuning.TIE). Data as
bench_index_tuned.py: `builtin:shapes` image vectors of draw 0 (cached in benchmarks/_data/, rounded
to fp16 as the store keeps them); queries: held-out scenes, their captions, the 48 colour-shape prompts.

    python benchmarks/bench_ivf_quantizer.py [--n 1000000] [--factories IVF4000,Flat IVF4000_HNSW32,Flat]
        [--nprobe 8 12 16 24] [--quantizer-ef 64 128]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _shapes_vectors as shapes  # noqa: E402
from _common import save  # noqa: E402

K, TIE = 10, 1e-3


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recalls(D: np.ndarray, I: np.ndarray, truth: tuple[np.ndarray, np.ndarray]) -> tuple[float, float]:
    """(R@10 by ids alone, R@10 with ties counted)."""
    TD, TI = truth
    ids = np.mean([len(set(a) & set(b)) / K for a, b in zip(I, TI)])
    ties = np.mean(np.minimum((D >= TD[:, K - 1 : K] - TIE).sum(1), K) / K)
    return round(float(ids), 4), round(float(ties), 4)


def per_query(search, queries: np.ndarray) -> float:
    """Seconds per single query on one thread (after a warm-up)."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        for q in queries[:20]:
            search(q[None])
        t0 = time.perf_counter()
        for q in queries:
            search(q[None])
        return (time.perf_counter() - t0) / len(queries)
    finally:
        faiss.omp_set_num_threads(threads)


def main() -> None:
    import faiss

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--factories", nargs="+", default=["IVF4000,Flat", "IVF4000_HNSW32,Flat"])
    ap.add_argument("--nprobe", type=int, nargs="+", default=[8, 12, 16, 24])
    ap.add_argument("--quantizer-ef", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--queries", type=int, default=300)
    args = ap.parse_args()
    model = shapes.image_vectors(args.n).astype(np.float32)
    base = model.astype(np.float16).astype(np.float32)  # as the store keeps them
    qs = shapes.query_sets(1000)
    sets = {"text": unit(qs["text"])[: args.queries], "prompt": unit(qs["prompt"]),
            "image": unit(qs["image"])[: args.queries]}
    flat = faiss.IndexFlatIP(base.shape[1])
    flat.add(base)
    truth = {k: flat.search(v, 2 * K) for k, v in sets.items()}
    crowd = {k: {"gap_10th_11th": float(np.median(D[:, K - 1] - D[:, K])),
                 "gap_10th_20th": float(np.median(D[:, K - 1] - D[:, 2 * K - 1])),
                 "gap_1st_10th": float(np.median(D[:, 0] - D[:, K - 1]))} for k, (D, _) in truth.items()}
    for k, (D, I) in truth.items():  # how far fp16 storage moves a true neighbour's score from the model's
        moved = np.abs(np.einsum("qkd,qd->qk", model[I[:, :K]] - base[I[:, :K]], sets[k]))
        crowd[k]["fp16_moves_median"] = float(np.median(moved))
        crowd[k]["fp16_moves_max"] = float(moved.max())
    truth = {k: (D[:, :K], I[:, :K]) for k, (D, I) in truth.items()}
    for k, c in crowd.items():
        print(f"{k}: median score gap 10th-11th {c['gap_10th_11th']:.1e}, 10th-20th {c['gap_10th_20th']:.1e}, "
              f"1st-10th {c['gap_1st_10th']:.1e}; fp16 storage moves a score by {c['fp16_moves_median']:.1e} "
              f"(median), {c['fp16_moves_max']:.1e} (max)", flush=True)
    exact = per_query(lambda q: flat.search(q, K), sets["text"][:100])
    print(f"exact: {exact * 1e3:.2f} ms per query", flush=True)
    rows = []
    rng = np.random.default_rng(0)
    for fac in args.factories:
        nlist = int(fac.split(",")[0].split("_")[0][3:])
        t0 = time.perf_counter()
        ix = faiss.index_factory(base.shape[1], fac, faiss.METRIC_INNER_PRODUCT)
        ix.train(base[rng.choice(len(base), min(len(base), 64 * nlist), replace=False)])
        ix.add(base)
        build = time.perf_counter() - t0
        print(f"{fac}: build {build:.1f} s", flush=True)
        for nprobe in args.nprobe:
            for qef in args.quantizer_ef if "HNSW" in fac else [None]:
                # the quantizer's parameters go in the constructor and stay referenced here: SWIG does not
                # keep a Python object alive through an attribute set on another
                qp = faiss.SearchParametersHNSW(efSearch=max(qef, nprobe)) if qef is not None else None
                sp = (faiss.SearchParametersIVF(nprobe=nprobe, quantizer_params=qp) if qp is not None
                      else faiss.SearchParametersIVF(nprobe=nprobe))
                rec = {k: recalls(*ix.search(v, K, params=sp), truth[k]) for k, v in sets.items()}
                t = per_query(lambda q: ix.search(q, K, params=sp), np.concatenate([sets["text"]] * 2))
                row = {"factory": fac, "build_s": round(build, 1), "nprobe": nprobe, "quantizer_ef": qef,
                       "ms": round(t * 1e3, 4), "x_exact": round(exact / t, 1), "recall": rec}
                rows.append(row)
                print(f"  nprobe {nprobe:3d} quantizer ef {qef or '-':>4}: {t * 1e3:.3f} ms {exact / t:6.1f}x  "
                      + "  ".join(f"{k} {a:.3f}/{b:.3f}" for k, (a, b) in rec.items()), flush=True)
    print(f"wrote {save('ivf-quantizer', {'n': args.n, 'exact_ms': round(exact * 1e3, 3), 'crowding': crowd, 'rows': rows})}")


if __name__ == "__main__":
    main()
