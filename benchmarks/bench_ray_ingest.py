"""Ray ingest (`index --ray`: decode tasks + embed actors) on 1 and 2 local CPUs against the local path.

The same folder of 640×480 JPEGs (bench_ingest.make_jpegs) is indexed into a fresh store, each mode in its
own interpreter. The default model is the tests' tiny random CLIP (32² input), so the model costs little and
the figures show the decode stage and the pipeline's overheads; ``--model ViT-B-32:random`` measures a real
model's end to end instead (on Ray it runs on the embed actors, locally in the indexing process). Ray's
start (``ray.init``) is timed apart; a Ray mode indexes twice, into two fresh stores: *cold* (the index run
starts the decode workers and the embed actors, which load the model) and *warm* (the same runtime and
actors again). The scaling efficiency is files/s with 2 CPUs / (2 × with 1 CPU), on warm runs. The load
average is recorded before and after: on a shared machine it says how much the figures can be trusted.

    python benchmarks/bench_ray_ingest.py [--n 400] [--model tiny] [--runs 2] [--ray-actors N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import save  # noqa: E402

MODES = {"local, 1 worker": (None, 1), "local, 2 workers": (None, 2), "ray, 1 CPU": ("local", 1),
         "ray, 2 CPUs": ("local", 2)}


def one(data: str, store: str, model: str, ray: str | None, cpus: int, actors: int | None) -> dict:
    """Runs in a child: index ``data`` into a fresh ``store`` (twice, into two, on Ray); what it took."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mmsearch import Engine

    startup = 0.0
    if ray is not None:
        import ray as ray_

        t0 = time.perf_counter()
        ray_.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        startup = time.perf_counter() - t0
    out: dict = {"ray_start_s": startup}
    for name in ("cold", "warm") if ray is not None else ("cold",):
        with Engine.open(f"{store}-{name}", model=model, workers=cpus) as eng:
            eng.encoder(model)  # the model loads before the clock starts
            t0 = time.perf_counter()
            r = eng.index([data], ray=ray, ray_actors=actors)
            seconds = time.perf_counter() - t0
        assert r.failed == 0, r.errors[:3]
        out.update({f"{name}_s": seconds, f"{name}_files_per_s": r.indexed / seconds, "indexed": r.indexed})
    out["files_per_s"] = out.get("warm_files_per_s", out["cold_files_per_s"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--ray-actors", type=int, default=None, help="embed actors [default: the CLI's plan]")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        data, store, model, ray, cpus = args.child
        print("RESULT", json.dumps(one(data, store, model, None if ray == "-" else ray, int(cpus), args.ray_actors)))
        return
    load_before = os.getloadavg()
    sys.path.insert(0, str(HERE.parent))
    from bench_ingest import make_jpegs

    tmp = Path(tempfile.mkdtemp(prefix="mmsearch-bench-ray-"))
    make_jpegs(tmp / "jpegs", args.n)
    model = args.model
    if model == "tiny":
        from tests.kit import make_tiny_model

        model = "local-dir:" + str(make_tiny_model(tmp / "tiny"))
    results: dict[str, list[dict]] = {}
    for run in range(args.runs):
        for name, (ray, cpus) in MODES.items():
            store = tmp / f"store-{run}-{name.replace(' ', '').replace(',', '-')}"
            cmd = [sys.executable, __file__, "--child", str(tmp / "jpegs"), str(store), model, ray or "-", str(cpus)]
            cmd += ["--ray-actors", str(args.ray_actors)] if args.ray_actors else []
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ,
                                 "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])})
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
            assert line, out.stdout + out.stderr
            res = json.loads(line[-1][7:])
            assert res["indexed"] == args.n, res
            results.setdefault(name, []).append(res)
            extra = f", cold {res['cold_files_per_s']:.1f} files/s, ray.init {res['ray_start_s']:.1f} s" if ray else ""
            print(f"run {run}  {name:18s} {res['files_per_s']:7.1f} files/s{extra}", flush=True)
    best = {name: max(r["files_per_s"] for r in rs) for name, rs in results.items()}
    summary = {"best_files_per_s": best, "ray_scaling_2_vs_1": best["ray, 2 CPUs"] / best["ray, 1 CPU"],
               "ray_efficiency_2": best["ray, 2 CPUs"] / (2 * best["ray, 1 CPU"]),
               "ray_2_vs_local_2": best["ray, 2 CPUs"] / best["local, 2 workers"],
               "load_avg_before": load_before, "load_avg_after": os.getloadavg(), "ray_actors": args.ray_actors}
    print(json.dumps(summary, indent=2))
    path = save("ray_ingest", {"n": args.n, "model": args.model, "runs": results, **summary})
    print("saved", path)


if __name__ == "__main__":
    main()
