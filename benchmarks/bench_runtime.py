"""CPU runtimes for one open_clip image tower: speed and fidelity, to pick the CPU default by numbers.

For each model (default: a seeded random ``ViT-B-32-256``, a real architecture, and the trained
``builtin:shapes``) the image tower runs a preprocessed batch (the export's probe images, repeated
to ``--batch``) through:

* torch fp32 (open_clip, the reference) and torch bf16 autocast,
* ONNX Runtime fp32 and int8 (mmsearch's cached export: the very files the product runs),
* OpenVINO fp32 and bf16 (compiling the same fp32 ONNX file), when ``openvino`` is installed.

Reported: ms per image (median of ``--runs`` after a warm-up, ``--threads`` threads everywhere) and
the minimum cosine to torch fp32 over the probe images. The text tower is timed for one query (the
cold-query latency that matters), torch vs ONNX Runtime.

    python benchmarks/bench_runtime.py [--models ViT-B-32-256:random@0,builtin:shapes] [--batch 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save, timed  # noqa: E402


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).min())


def _torch_runners(enc, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)

    def fp32(x):
        with torch.inference_mode():
            return enc.model.encode_image(torch.from_numpy(x)).numpy()

    def bf16(x):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return enc.model.encode_image(torch.from_numpy(x)).float().numpy()

    return {"torch fp32": fp32, "torch bf16 autocast": bf16}


def _onnx_runners(folder: Path, files: dict, threads: int) -> dict:
    import onnxruntime as ort

    out = {}
    for precision, name in files.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(folder / name), options, providers=["CPUExecutionProvider"])
        out[f"onnxruntime {precision}"] = lambda x, s=session: s.run(None, {"pixels": x})[0]
    return out


def _openvino_runners(fp32_file: Path, threads: int) -> dict:
    try:
        import openvino as ov
    except ImportError:
        return {}
    core = ov.Core()
    out = {}
    for hint in ("f32", "bf16"):
        compiled = core.compile_model(str(fp32_file), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                              "INFERENCE_PRECISION_HINT": hint})
        out[f"openvino {hint}"] = lambda x, c=compiled: c(x)[0]
    return out


def bench_model(spec: str, batch: int, threads: int, runs: int) -> dict:
    from mmsearch.encoders.clip import OpenClipEncoder
    from mmsearch.encoders.export import probe_images
    from mmsearch.encoders.registry import load_encoder

    fast = load_encoder(spec, device="cpu")  # exports (once) into the runtime cache
    meta = fast.entry.meta()
    ref = load_encoder(spec, device="cpu", runtime="torch")
    assert isinstance(ref, OpenClipEncoder)
    probes = probe_images(ref).numpy()
    x = np.concatenate([probes] * (batch // len(probes) + 1))[:batch]
    runners = {**_torch_runners(ref, threads), **_onnx_runners(fast.entry.folder, meta["towers"]["image"]["files"], threads),
               **_openvino_runners(fast.entry.folder / meta["towers"]["image"]["files"]["fp32"], threads)}
    reference = runners["torch fp32"](probes)
    rows = {}
    for name, run in runners.items():
        t = timed(lambda: run(x), warmup=1, runs=runs)
        rows[name] = {"ms_per_image": round(t["median_s"] / batch * 1000, 2), "min_cosine": round(_cos(reference, run(probes)), 6)}
        print(f"  {spec:28s} {name:22s} {rows[name]['ms_per_image']:8.2f} ms/img   min cos {rows[name]['min_cosine']:.6f}",
              flush=True)
    text = {"torch fp32": timed(lambda: ref.embed_texts(["a red bicycle"]), runs=runs)["median_s"] * 1000,
            "onnxruntime (auto)": timed(lambda: fast.embed_texts(["a red bicycle"]), runs=runs)["median_s"] * 1000}
    print(f"  {spec:28s} one text query: " + ", ".join(f"{k} {v:.1f} ms" for k, v in text.items()))
    return {"image_tower": rows, "text_query_ms": {k: round(v, 2) for k, v in text.items()},
            "auto_choice": fast.describe()["towers"], "export_seconds": meta.get("seconds")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="ViT-B-32-256:random@0,builtin:shapes")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["MMSEARCH_THREADS"] = str(args.threads)
    results = {spec: bench_model(spec, args.batch, args.threads, args.runs) for spec in args.models.split(",")}
    path = save("runtime", {"batch": args.batch, "threads": args.threads, "runs": args.runs, "models": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
