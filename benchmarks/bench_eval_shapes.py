"""Retrieval quality of `builtin:shapes` through `mmsearch eval` on a fresh draw of its world.

Writes a captioned dataset (JSONL: image + all its captions, single- and two-object scenes) from a
seed never used in training, then runs Engine.evaluate with exact search and each index kind.

    python benchmarks/bench_eval_shapes.py [--n 1000] [--seed 31337] [--kinds flat,hnsw]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=31337)
    ap.add_argument("--two-object-rate", type=float, default=0.25)
    ap.add_argument("--kinds", default="flat,hnsw")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mmsearch import Engine
    from mmsearch.world.shapes import generate

    tmp = Path(tempfile.mkdtemp(prefix="mmsearch-eval-"))
    try:
        (tmp / "images").mkdir()
        with open(tmp / "data.jsonl", "w") as f:
            for i, sc in enumerate(generate(args.seed, args.n, two_object_rate=args.two_object_rate)):
                sc.image.save(tmp / "images" / f"{i:05d}.png")
                f.write(json.dumps({"image": f"images/{i:05d}.png", "captions": sc.captions[:5]}) + "\n")
        results = {}
        for kind in args.kinds.split(","):
            with Engine.open(tmp / f"store-{kind}", model="builtin:shapes", index=kind, workers=0) as eng:
                rep = eng.evaluate(tmp / "data.jsonl")
            for row in rep.rows:
                results[f"{row.direction} {row.method}"] = {f"R@{k}": round(v, 4) for k, v in row.recall.items()} | {
                    "qps": round(row.qps)}
                print(f"{row.direction:11s} {row.method:6s} " + "  ".join(f"R@{k} {100 * v:5.1f}" for k, v in row.recall.items())
                      + f"  {row.qps:,.0f} q/s")
        print(f"images {rep.images}, captions {rep.captions}")
        path = save("eval-shapes", {"model": "builtin:shapes", "seed": args.seed, "images": rep.images,
                                    "captions": rep.captions, "two_object_rate": args.two_object_rate, "results": results})
        print(f"wrote {path}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
