"""GPU ingest: JPEG files → a searchable store through the nvJPEG tensor path, against the CPU workers,
the model alone, and clip-retrieval's inference on the same files.

The setup of /work/shared/anchors/cr_bench.py (shared/ANCHORS.md): N 640×480 JPEGs (~70 KB), ViT-B-32 at
random init (a forward pass costs the same whatever the weights), fp16 on CUDA. Measures:

  (i)   model only: fp16 batch 512 through ``encode_image`` (the ceiling of any pipeline);
  (ii)  ``Engine.index`` end to end with ``gpu_decode=on``: walk, read, hash, nvJPEG decode, GPU
        resize/crop/normalise, embed, SQLite, FAISS and calibration (the store answers queries after);
  (iii) the same with ``gpu_decode=off`` (the CPU decode workers, ``--workers``, default all cores);
  (iv)  clip-retrieval 2.45's inference (files reader, PIL workers, batch 512) when it is installed,
        run as cr_bench.py runs it (random weights, wandb stubbed, its package ``__init__`` skipped).

Prints img/s, the ratios to the nvJPEG anchor (7,498 img/s, the target being 0.8 of it) and to
clip-retrieval (measured, else its anchor, 670 img/s), and the MFU of the encode part: FLOPs of the
image tower counted with ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add is 2 FLOPs),
divided by the time spent in the encoder and by the device's dense fp16 peak.

Without CUDA it runs the CPU comparison instead (the tensor path on CPU tensors vs the workers,
both on torch fp32, small N) and says that no GPU was present: those figures are not the target's.

    python benchmarks/bench_gpu_ingest.py [--n 10000] [--batch-size 256] [--workers 16] [--data DIR]
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import shutil
import sys
import tempfile
import time
import types
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402

NVJPEG_ANCHOR = 7498.0  # img/s, nvJPEG + GPU preprocessing + fp16 encode, H100 (shared/ANCHORS.md)
CLIP_RETRIEVAL_ANCHOR = 670.0
#: dense fp16 tensor-core peak, TFLOP/s, by a name torch.cuda.get_device_name contains (first match)
PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("GH200", 989.0), ("A100", 312.0),
               ("L40S", 362.0), ("L4", 121.0), ("A10", 125.0), ("V100", 125.0))
CR_BENCH = Path("/work/shared/anchors/cr_bench.py")


def _make(job: tuple[str, int, int]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_ingest import make_jpegs

    folder, start, count = job
    tmp = Path(folder) / f".part{start}"
    make_jpegs(tmp, count, seed=start)
    for f in tmp.iterdir():
        f.rename(Path(folder) / f"img_{start + int(f.stem.split('_')[1]):06d}.jpg")
    tmp.rmdir()


def make_jpegs(folder: Path, n: int) -> None:
    """N 640×480 JPEGs (bench_ingest's blurred discs with grain, ~70 KB), made on every core."""
    folder.mkdir(parents=True, exist_ok=True)
    step = max(1, min(500, -(-n // (os.cpu_count() or 1))))
    with ProcessPoolExecutor(os.cpu_count()) as ex:
        list(ex.map(_make, [(str(folder), s, min(step, n - s)) for s in range(0, n, step)]))


def peak_flops(name: str | None) -> float | None:
    for key, tflops in PEAK_TFLOPS:
        if name and key in name:
            return tflops * 1e12
    return None


def image_flops(model, size: int, device: str) -> float:
    """FLOPs of ``encode_image`` for one image, counted on a batch of 2 with autograd on: without it
    ``nn.MultiheadAttention`` takes its fused inference kernel, which the counter does not see (a third
    of ViT-B-32's FLOPs). A multiply-add counts 2, as peak FLOP/s do (the "4.4 GFLOPs" often quoted for
    ViT-B/32 are multiply-adds)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(2, 3, size, size, device=device, dtype=next(model.parameters()).dtype)
    with torch.enable_grad(), FlopCounterMode(display=False) as counter:
        model.encode_image(x)
    return counter.get_total_flops() / 2


def model_only(arch: str, device: str, batch: int, seconds: float = 5.0) -> tuple[float, float]:
    """(img/s of encode_image on a fixed batch, FLOPs per image)."""
    import open_clip
    import torch

    model = open_clip.create_model(arch, pretrained=None, device=device).eval()
    if device.startswith("cuda"):
        model = model.half()
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    flops = image_flops(model, size, device)
    x = torch.randn(batch, 3, size, size, device=device, dtype=next(model.parameters()).dtype)
    with torch.inference_mode():
        model.encode_image(x)
        _sync(device)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model.encode_image(x)
            n += batch
        _sync(device)
    rate = n / (time.perf_counter() - t0)
    del model
    return rate, flops


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def mmsearch_ingest(data: Path, store: Path, model: str, device: str, batch: int, workers: int | None,
                    gpu_decode: str, runtime: str | None) -> dict:
    """``Engine.index`` of the folder into a new store (model loaded first: not timed), and the time
    the encoder's calls took within it."""
    from mmsearch import Engine

    with Engine.open(store, model=model, device=device, batch_size=batch, workers=workers, gpu_decode=gpu_decode,
                     runtime=runtime) as eng:
        enc = eng.encoder(model)
        inner, spent = enc.embed_image_batch, [0.0]

        def timed(pixels):
            t = time.perf_counter()
            try:
                return inner(pixels)  # returns numpy: the device is synchronised by then
            finally:
                spent[0] += time.perf_counter() - t

        enc.embed_image_batch = timed
        t0 = time.perf_counter()
        report = eng.index([data])
        wall = time.perf_counter() - t0
        hits = eng.search(text="a red disc", k=3)
        assert report.failed == 0 and len(hits) == 3, (report.errors[:3], hits)
        enc.embed_image_batch = inner
    return {"img_s": report.indexed / wall, "wall_s": wall, "encode_s": spent[0], "indexed": report.indexed,
            "gpu_decoded": report.gpu_decoded}


def clip_retrieval(data: Path, out: Path, n: int, workers: int) -> float | None:
    """clip-retrieval's inference on the files, as cr_bench.py runs it (None: not installed)."""
    if importlib.util.find_spec("clip_retrieval") is None:
        print("clip-retrieval is not installed: skipped (pip install clip-retrieval all-clip ...; see ANCHORS.md)")
        return None
    import open_clip

    orig = open_clip.create_model_and_transforms

    def random_weights(*a, **k):
        k["pretrained"] = None
        return orig(*a, **k)

    open_clip.create_model_and_transforms = random_weights
    sys.modules.setdefault("wandb", types.ModuleType("wandb"))
    spec = importlib.util.find_spec("clip_retrieval")
    pkg = types.ModuleType("clip_retrieval")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["clip_retrieval"] = pkg
    try:
        from clip_retrieval.clip_inference.main import main as cr_main

        t0 = time.perf_counter()
        cr_main(input_dataset=str(data), output_folder=str(out), input_format="files", clip_model="open_clip:ViT-B-32",
                batch_size=512, num_prepro_workers=workers, enable_text=False, enable_metadata=False,
                enable_wandb=False, use_jit=False, write_batch_size=n)
        wall = time.perf_counter() - t0
    finally:
        open_clip.create_model_and_transforms = orig
    done = sum(np.load(f).shape[0] for f in glob.glob(str(out / "img_emb" / "*.npy")))
    return done / wall


def main() -> None:
    import torch

    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000 if cuda else 200)
    ap.add_argument("--model", default="ViT-B-32:random")
    ap.add_argument("--batch-size", type=int, default=256 if cuda else 32)
    ap.add_argument("--workers", type=int, default=os.cpu_count() if cuda else None, help="CPU path decode workers")
    ap.add_argument("--data", type=Path, default=None, help="a folder of JPEGs to use (made when empty)")
    ap.add_argument("--skip-cr", action="store_true", help="do not run clip-retrieval")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device, runtime = ("cuda", None) if cuda else ("cpu", "torch")
    arch = args.model.split(":")[0]
    gpu = torch.cuda.get_device_name(0) if cuda else None
    print(f"device: {gpu or 'no GPU present: CPU figures (tensor path on CPU tensors vs workers), not the GPU target'}")

    tmp = Path(tempfile.mkdtemp(prefix="mmsearch-gpu-bench-"))
    try:
        data = args.data or tmp / "jpegs"
        t0 = time.perf_counter()
        if not (data.is_dir() and any(data.glob("*.jpg"))):
            make_jpegs(data, args.n)
        files = sorted(data.glob("*.jpg"))
        n = len(files)
        avg_kb = sum(f.stat().st_size for f in files) / n / 1024
        print(f"{n} JPEGs 640x480, avg {avg_kb:.0f} KB ({time.perf_counter() - t0:.1f}s to prepare)")

        ceiling, flops = model_only(arch, device, 512 if cuda else 32, 5.0 if cuda else 3.0)
        peak = peak_flops(gpu)
        print(f"(i) model only, {arch} {'fp16' if cuda else 'fp32'} batch {512 if cuda else 32}: {ceiling:,.0f} img/s; "
              f"{flops / 1e9:.2f} GFLOPs/image (counted)")
        runs = {}
        for name, mode in (("tensor_path", "on"), ("cpu_workers", "off")):
            runs[name] = r = mmsearch_ingest(data, tmp / f"store-{name}", args.model, device, args.batch_size,
                                             args.workers, mode, runtime)
            print(f"({'ii' if mode == 'on' else 'iii'}) mmsearch Engine.index, gpu_decode={mode}: {r['img_s']:,.0f} img/s "
                  f"({r['wall_s']:.1f}s; encoder {r['encode_s']:.1f}s of it; {r['gpu_decoded']} on the tensor path)")
        cr = None if (args.skip_cr or not cuda) else clip_retrieval(data, tmp / "cr_out", n, args.workers or 16)
        if cr is not None:
            print(f"(iv) clip-retrieval inference: {cr:,.0f} img/s")
        fast = runs["tensor_path"]
        ratios = {"vs_nvjpeg_anchor": fast["img_s"] / NVJPEG_ANCHOR,
                  "vs_clip_retrieval": fast["img_s"] / (cr or CLIP_RETRIEVAL_ANCHOR),
                  "vs_model_only": fast["img_s"] / ceiling,
                  "vs_cpu_workers": fast["img_s"] / runs["cpu_workers"]["img_s"]}
        print(f"tensor path / nvJPEG anchor {NVJPEG_ANCHOR:,.0f} img/s: {ratios['vs_nvjpeg_anchor']:.2f} (target 0.80)"
              + ("" if cuda else "  [no GPU: not comparable]"))
        print(f"tensor path / clip-retrieval ({'measured' if cr else 'anchor 670'}): {ratios['vs_clip_retrieval']:.2f}x; "
              f"/ model only: {ratios['vs_model_only']:.2f}; / CPU workers: {ratios['vs_cpu_workers']:.2f}x")
        mfu = {}
        if peak is None:
            print(f"MFU: unknown peak for {gpu or 'the CPU'}")
        else:
            mfu = {"model_only": ceiling * flops / peak,
                   "encode_part": fast["indexed"] * flops / max(fast["encode_s"], 1e-9) / peak,
                   "end_to_end": fast["img_s"] * flops / peak}
            print(f"MFU (peak {peak / 1e12:.0f} TFLOP/s fp16 dense): model only {mfu['model_only']:.1%}, "
                  f"encode part of ingest {mfu['encode_part']:.1%}, end to end {mfu['end_to_end']:.1%}")
        path = save("gpu_ingest", {
            "model": args.model, "n_images": n, "image": "640x480 JPEG", "avg_kb": round(avg_kb, 1),
            "device": gpu or "cpu", "gpu_present": cuda, "batch_size": args.batch_size, "workers": args.workers,
            "model_only_img_s": round(ceiling, 1), "gflops_per_image": round(flops / 1e9, 3),
            "tensor_path": {k: round(v, 3) if isinstance(v, float) else v for k, v in fast.items()},
            "cpu_workers": {k: round(v, 3) if isinstance(v, float) else v for k, v in runs["cpu_workers"].items()},
            "clip_retrieval_img_s": None if cr is None else round(cr, 1), "ratios": {k: round(v, 3) for k, v in ratios.items()},
            "peak_tflops": None if peak is None else peak / 1e12, "mfu": {k: round(v, 4) for k, v in mfu.items()},
        })
        print(f"wrote {path}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
