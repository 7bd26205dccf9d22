"""Real embeddings of a trained model at scale: `builtin:shapes` (open_clip, 64-d) over its procedural world.

The image tower over generated scenes gives the vectors an index holds; the text tower over captions gives
text→image queries, which lie outside the image distribution (CLIP's modality gap) — the case that loses
recall on IVF/HNSW built from image vectors. Scenes are deterministic (`generate_one(seed, i)`), so the
vectors are cached in benchmarks/_data/ (git-ignored) in chunks of CHUNK scenes and any prefix is reused:
a 1M run also serves 10k and 100k, and an interrupted run resumes at its last finished chunk.

Rendering (Pillow, 4× supersampled) costs more than embedding (~700 vs ~2,400 scenes/s on one core), so
scenes are drawn in worker processes while the parent embeds.

    python benchmarks/_shapes_vectors.py --n 1000000 [--workers 2]     # fill the cache (long: run in nohup)
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np

DATA = Path(__file__).resolve().parent / "_data"
CHUNK = 50_000
SLICE = 1_000  # scenes a worker renders per task
MODEL = "builtin:shapes"
BASE_SEED = 0  # the scenes in the store
QUERY_SEED = 1  # held-out scenes: image→image queries and, through their captions, text→image queries


def encoder():
    from mmsearch.encoders.registry import load_encoder

    return load_encoder(MODEL, batch_size=256)


def _render(task: tuple[int, int, int, dict]) -> np.ndarray:
    """Scenes ``start..stop`` of draw ``seed`` → the model's uint8 input pixels (in a worker process)."""
    from mmsearch.ingest.pixels import prepare
    from mmsearch.world.shapes import generate_one

    seed, start, stop, recipe = task
    return np.stack([prepare(generate_one(seed, i).image, recipe) for i in range(start, stop)])


def _pixel_slices(seed: int, start: int, stop: int, recipe: dict, workers: int) -> Iterator[np.ndarray]:
    tasks = [(seed, s, min(s + SLICE, stop), recipe) for s in range(start, stop, SLICE)]
    if workers <= 0:
        yield from map(_render, tasks)
        return
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(_render, tasks)


def embed_scenes(enc, seed: int, start: int, stop: int, workers: int) -> np.ndarray:
    """Image vectors of scenes ``start..stop`` of draw ``seed`` (no cache)."""
    from mmsearch.ingest.pixels import to_batch

    recipe = enc.image_recipe()
    out = []
    for px in _pixel_slices(seed, start, stop, recipe, workers):
        out.append(enc.embed_image_batch(to_batch(list(px), recipe)).astype(np.float32))
    return np.concatenate(out) if out else np.zeros((0, enc.space.dim), np.float32)


def _chunk_path(seed: int, c: int) -> Path:
    return DATA / f"shapes-img-s{seed}-c{CHUNK}-{c:04d}.npy"


def image_vectors(n: int, *, seed: int = BASE_SEED, workers: int = 2, enc=None, log=print) -> np.ndarray:
    """The first ``n`` scenes of draw ``seed`` as image vectors, from the chunk cache (filling what is missing)."""
    DATA.mkdir(exist_ok=True)
    parts = []
    for c in range((n + CHUNK - 1) // CHUNK):
        path = _chunk_path(seed, c)
        if not path.exists():
            enc = enc or encoder()
            t0 = time.perf_counter()
            x = embed_scenes(enc, seed, c * CHUNK, (c + 1) * CHUNK, workers)
            np.save(path.with_suffix(".tmp.npy"), x)
            os.replace(path.with_suffix(".tmp.npy"), path)  # a killed run leaves no half chunk behind
            log(f"chunk {c}: {CHUNK} scenes rendered + embedded in {time.perf_counter() - t0:.0f}s "
                f"({CHUNK / (time.perf_counter() - t0):,.0f}/s)")
        parts.append(np.load(path, mmap_mode="r"))
    return np.ascontiguousarray(np.concatenate(parts)[:n], dtype=np.float32)


def query_sets(n: int, *, workers: int = 2) -> dict[str, np.ndarray]:
    """Query vectors by kind, none of them in the store.

    ``image``: held-out scenes (draw QUERY_SEED); ``text``: one caption variant of each of those scenes,
    picked at random (seeded), through the text tower; ``prompt``: the 48 plain prompts "a red circle" …
    (every colour × shape), the generic text query.
    """
    from mmsearch.world.shapes import all_single_prompts, generate_one

    cache = DATA / f"shapes-queries-s{QUERY_SEED}-{n}.npz"
    if cache.exists():
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    enc = encoder()
    rng = random.Random(QUERY_SEED)
    captions = [rng.choice(generate_one(QUERY_SEED, i).captions) for i in range(n)]
    out = {
        "image": embed_scenes(enc, QUERY_SEED, 0, n, workers),
        "text": np.asarray(enc.embed_texts(captions), np.float32),
        "prompt": np.asarray(enc.embed_texts([p for _, _, p in all_single_prompts()]), np.float32),
    }
    DATA.mkdir(exist_ok=True)
    np.savez(cache, **out)
    return out


def model_info() -> dict:
    sp = encoder().space
    return {"spec": sp.spec, "weights": sp.weights, "dim": sp.dim}


def main() -> None:
    ap = argparse.ArgumentParser(description="fill the builtin:shapes vector cache in benchmarks/_data/")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    query_sets(args.queries, workers=args.workers)
    x = image_vectors(args.n, workers=args.workers, log=lambda s: print(s, flush=True))
    print(f"{len(x)} x {x.shape[1]} image vectors ready in {time.perf_counter() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
