"""Near-duplicates: where the default threshold comes from, and what the range search costs.

1. Threshold (``builtin:shapes`` on a fresh draw of its world): the cosine between a scene and its
   copies (resized up and down, JPEG at two qualities, crops of 5/10/15 %), against the cosines
   between different scenes (same colour and shape, and different ones), and the share of each kind
   of copy a threshold finds.
2. Cost: ``near_groups`` on clustered synthetic vectors (with planted near-copies) through an exact
   index vs an IVF index at a few ``nprobe`` (groups found, seconds).

    python benchmarks/bench_dups.py [--scenes 300] [--copied 60] [--n 20000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402

THRESHOLDS = (0.9, 0.95, 0.97, 0.99)


def copies():
    from PIL import Image

    return {
        "resized 2x": lambda im, p: im.resize((128, 128), Image.LANCZOS).save(p.with_suffix(".png")),
        "resized 0.75x": lambda im, p: im.resize((48, 48), Image.LANCZOS).save(p.with_suffix(".png")),
        "jpeg q70": lambda im, p: im.convert("RGB").save(p.with_suffix(".jpg"), quality=70),
        "jpeg q30": lambda im, p: im.convert("RGB").save(p.with_suffix(".jpg"), quality=30),
        "crop 5%": lambda im, p: im.crop((2, 2, 62, 62)).save(p.with_suffix(".png")),
        "crop 10%": lambda im, p: im.crop((3, 3, 58, 58)).save(p.with_suffix(".png")),
        "crop 15%": lambda im, p: im.crop((5, 5, 55, 55)).save(p.with_suffix(".png")),
    }


def threshold_figures(scenes_n: int, copied: int) -> dict:
    from mmsearch import Engine
    from mmsearch.world import shapes as W

    root = Path(tempfile.mkdtemp(prefix="bench-dups-"))
    scenes = W.generate(777, scenes_n, two_object_rate=0.25)
    (root / "orig").mkdir()
    (root / "copies").mkdir()
    kinds = copies()
    for i, sc in enumerate(scenes):
        sc.image.save(root / "orig" / f"{i:04d}.png")
        for k, (name, make) in enumerate(kinds.items()):
            if i < copied:
                make(sc.image, root / "copies" / f"{i:04d}_{k}")
    with Engine.open(root / "store", model="builtin:shapes", device="cpu", workers=0) as eng:
        eng.index([root / "orig", root / "copies"])
        sp = eng.space()
        ids, x = eng.store.vectors(sp.id, "image")
        meta = eng.store.content_meta(ids.tolist())
    row = {Path(meta[int(i)].uris[0]).stem: j for j, i in enumerate(ids)}
    out: dict = {"copies": {}}
    for k, name in enumerate(kinds):
        cos = np.array([x[row[f"{i:04d}"]] @ x[row[f"{i:04d}_{k}"]] for i in range(copied)])
        out["copies"][name] = {"min": float(cos.min()), "median": float(np.median(cos)),
                               "found": {str(t): float((cos >= t).mean()) for t in THRESHOLDS}}
    o = np.array([row[f"{i:04d}"] for i in range(len(scenes))])
    s = x[o] @ x[o].T
    labels = [tuple(sorted((ob.colour, ob.shape) for ob in sc.objects)) for sc in scenes]
    same = np.array([[a == b for b in labels] for a in labels])
    upper = np.triu(np.ones_like(same), 1)
    out["different scenes, same label"] = {"max": float(s[same & upper].max()), "median": float(np.median(s[same & upper])),
                                           "pairs": int((same & upper).sum()),
                                           "above": {str(t): int((s[same & upper] >= t).sum()) for t in THRESHOLDS}}
    out["different labels"] = {"max": float(s[~same & upper].max()), "p99": float(np.percentile(s[~same & upper], 99))}
    return out


def cost_figures(n: int, dim: int = 512) -> dict:
    import faiss

    from mmsearch.ann.faiss_index import AnnIndex
    from mmsearch.query import dups as D

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((200, dim)).astype(np.float32)
    x = centres[rng.integers(0, 200, n)] + 0.9 * rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[1::50] = x[0::50][: len(x[1::50])] + 0.01 * rng.standard_normal((len(x[1::50]), dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(1, n + 1, dtype=np.int64)

    def blocks():
        return ((ids[s:s + D.BLOCK], x[s:s + D.BLOCK]) for s in range(0, n, D.BLOCK))

    t = time.perf_counter()
    again, search = D._exact(blocks(), dim, D.DEFAULT_THRESHOLD)
    exact, _ = D.near_groups(again(D.BLOCK), search)
    out = {"n": n, "dim": dim, "planted": len(x[1::50]), "exact": {"seconds": time.perf_counter() - t, "groups": len(exact)}}
    truth = {tuple(g) for g in exact}
    ann = AnnIndex.build("ivf", dim, ids, x)
    nlist = faiss.extract_index_ivf(ann.index).nlist
    for nprobe in (1, 4, D.NPROBE, max(8, nlist // 8)):
        params = faiss.SearchParametersIVF(nprobe=nprobe)

        def ivf(q, params=params):
            lims, _, found = ann.index.range_search(np.ascontiguousarray(q), D._radius(D.DEFAULT_THRESHOLD), params=params)
            return lims, found

        t = time.perf_counter()
        got, _ = D.near_groups(blocks(), ivf)
        out[f"ivf nlist {nlist} nprobe {nprobe}"] = {"seconds": time.perf_counter() - t,
                                                     "groups identical to exact": len({tuple(g) for g in got} & truth)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=300)
    ap.add_argument("--copied", type=int, default=60)
    ap.add_argument("--n", type=int, default=20000)
    args = ap.parse_args()
    result = {"threshold": threshold_figures(args.scenes, args.copied), "cost": cost_figures(args.n)}
    import json

    print(json.dumps(result, indent=2))
    print("saved", save("dups", result))


if __name__ == "__main__":
    main()
