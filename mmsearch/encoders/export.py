"""open_clip (torch) → ONNX, once per model: both towers at fp32 and int8, fidelity measured, cached.

The export loads the model with torch on the CPU (the reference), writes each tower with
``torch.onnx.export``, quantises it with ONNX Runtime's dynamic int8 quantisation (full-range
weights, else 7-bit per-channel weights: :data:`QUANTISE`; activations quantised per call), and
measures every file against torch fp32 on probe inputs: coloured shapes on gradients plus noise for
images, captions with punctuation, non-ASCII and over-long text for texts. The minimum cosine per tower and precision
goes into the entry's ``meta.json`` with each file's time per item on this machine;
:func:`mmsearch.encoders.runtime.pick_precision` reads both (int8 is not always the faster: tiny
convolutional models run slower quantised).

Only this module (and the torch encoder) import torch; it runs when no usable export exists.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mmsearch.encoders.cache import EXPORT_VERSION, Entry
from mmsearch.encoders.runtime import MIN_FIDELITY
from mmsearch.encoders.spec import ModelRef
from mmsearch.errors import ModelError

PROBE_TEXTS = (
    "a red bicycle", "A small BLUE star, next to a circle!", "it's the dog's toy, isn't it?", "红色的自行车",
    "Ça va? naïve café — déjà vu", "emoji 🚲🐶 and\ttabs", "&amp; html entities &lt;b&gt;", "numbers 12345 3.14",
    "x" * 300, " ".join(["word"] * 100), "a photo of a cat", "der rote Fahrrad auf der Straße",
)
#: Above this size a tower's ONNX file keeps its weights in a side file (protobuf's 2 GB limit).
_EXTERNAL_DATA_BYTES = 1_500_000_000


def ensure_export(ref: ModelRef, entry: Entry) -> dict[str, Any]:
    """The entry's metadata, exporting first when there is no usable export (one process at a time)."""
    meta = entry.meta()
    if meta is not None:
        return meta
    from filelock import FileLock

    entry.folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(entry.lock_path())):
        meta = entry.meta()  # another process may have finished it while we waited
        if meta is None:
            staged = entry.staging()
            try:
                meta = export(ref, staged)
                entry.publish(staged)
            finally:
                shutil.rmtree(staged, ignore_errors=True)  # gone after publish; a failed export leaves nothing
    return meta


def export(ref: ModelRef, out: Path) -> dict[str, Any]:
    """Export ``ref`` into the folder ``out`` and return the metadata written there (CLAP models:
    :func:`mmsearch.encoders.clap_export.export`)."""
    if ref.kind == "clap":
        from mmsearch.encoders.clap_export import export as export_clap

        return export_clap(ref, out)
    import torch

    from mmsearch.encoders.clip import OpenClipEncoder

    t0 = time.perf_counter()
    enc = OpenClipEncoder(ref, device="cpu")
    images = probe_images(enc)
    tokens = enc.tokenizer(list(PROBE_TEXTS))
    towers = {}
    with torch.inference_mode():
        reference = {"image": enc.model.encode_image(images).numpy(), "text": enc.model.encode_text(tokens).numpy()}
    for tower, probe, input_name in (("image", images, "pixels"), ("text", tokens, "tokens")):
        fn = enc.model.encode_image if tower == "image" else enc.model.encode_text
        towers[tower] = export_tower(enc.model, fn, tower, {input_name: probe}, out, reference[tower])
    meta = {
        "export_version": EXPORT_VERSION, "key": ref.key, "exported_from": ref.spec, "kind": "open_clip",
        "space": {"dim": enc.space.dim, "modalities": list(enc.space.modalities),
                  "extra": {k: enc.space.extra[k] for k in ("model_name", "preprocess", "text")}},
        "recipe": enc.image_recipe(), "tokenizer": _tokenizer(enc.tokenizer, out), "towers": towers,
        "versions": versions(), "seconds": round(time.perf_counter() - t0, 1),
    }
    write_meta(out, meta)
    return meta


def write_meta(out: Path, meta: dict[str, Any]) -> None:
    (out / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")


#: Dynamic int8 settings, tried in order until one keeps :data:`MIN_FIDELITY`. Full-range int8 weights
#: first (fastest); then 7-bit weights with a scale per channel, for CPUs without VNNI (AVX2, most
#: AVX-512), whose u8×s8 kernels saturate full-range weights (ViT-B-32 here: 0.983 → 0.9997).
QUANTISE = ({"per_channel": False, "reduce_range": False}, {"per_channel": True, "reduce_range": True})

Feeds = dict[str, np.ndarray]


def export_tower(owner: Any, fn: Any, tower: str, probe: dict[str, Any], out: Path, reference: np.ndarray, *,
                 variable: tuple[str, ...] = ()) -> dict[str, Any]:
    """Write ``<tower>.fp32.onnx`` and ``<tower>.int8.onnx`` for ``fn(*inputs)`` (torch tensors named by
    ``probe``, batch first; ``variable``: inputs whose second axis varies, e.g. token count); return their
    files and measured fidelity to ``reference`` (the torch output on ``probe``). ``owner``: the torch
    module ``fn`` belongs to (its weights become the graph's)."""
    import torch

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.owner = owner

        def forward(self, *x):
            return fn(*x)

    fp32, int8 = out / f"{tower}.fp32.onnx", out / f"{tower}.int8.onnx"
    names = list(probe)
    feeds = {n: t.numpy() for n, t in probe.items()}
    axes = {n: ({0: "n", 1: f"{n}_len"} if n in variable else {0: "n"}) for n in names}
    with _quiet(f"cannot export the {tower} tower to ONNX"):
        torch.onnx.export(Tower().eval(), tuple(t[:2] for t in probe.values()), str(fp32), input_names=names,
                          output_names=["embedding"], dynamic_axes={**axes, "embedding": {0: "n"}},
                          opset_version=17, dynamo=False)
    out32, ms32 = _run_file(fp32, feeds, "fp32")
    fidelity, speed = {"fp32": min_cosine(reference, out32)}, {"fp32": ms32}
    big = fp32.stat().st_size > _EXTERNAL_DATA_BYTES  # torch writes a tower over 2 GB with side files
    files = {"fp32": fp32.name}
    best = _best_int8(fp32, int8, big, feeds, reference)
    if best is not None:
        files["int8"] = int8.name
        fidelity["int8"], speed["int8"] = best[0], best[1]
    if not big:  # graph fusions done once here, not at every session start (halves an int8 tower's load time)
        for precision, name in files.items():  # fidelity and speed of the file that will actually run
            _optimise(out / name)
            again, speed[precision] = _run_file(out / name, feeds, precision)
            fidelity[precision] = min(fidelity[precision], min_cosine(reference, again))
    return {"files": files, "fidelity": fidelity, "ms_per_item": speed, "input": names[0], "inputs": names,
            "int8_options": best[2] if best else None}


def _best_int8(fp32: Path, int8: Path, big: bool, feeds: Feeds, reference: np.ndarray) -> tuple[float, float, dict[str, bool]] | None:
    """Quantise with each :data:`QUANTISE` setting until one keeps :data:`MIN_FIDELITY`; leave the best in
    ``int8``. Returns (fidelity, ms per item, setting), or None when no setting quantises this graph."""
    best: tuple[float, float, dict[str, bool]] | None = None
    for options in QUANTISE:
        try:
            _quantise(fp32, int8, big, options)
        except ModelError:  # e.g. per-channel Conv weights the quantiser cannot find: try the next setting
            continue
        try:
            out, ms = _run_file(int8, feeds, "int8")
        except Exception:  # ONNX Runtime cannot run this quantised graph (an op it lacks): next setting
            continue
        score = min_cosine(reference, out)
        if best is None or score > best[0]:
            best = (score, ms, options)
        if score >= MIN_FIDELITY:
            return best
    if best is not None and best[2] is not options:  # the last try was not the best: write the best again
        _quantise(fp32, int8, big, best[2])
    elif best is None:
        int8.unlink(missing_ok=True)
    return best


def _optimise(path: Path) -> None:
    """Replace an ONNX file by ONNX Runtime's optimised graph of it (``ORT_ENABLE_EXTENDED``: fusions that
    hold on any CPU; the hardware-specific layout passes still run when a session starts)."""
    import onnxruntime as ort

    staged = path.with_suffix(".opt")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(staged)
    with _quiet(f"cannot optimise {path.name}"):
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    os.replace(staged, path)


def _quantise(fp32: Path, int8: Path, big: bool, options: dict[str, bool]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet(f"cannot quantise {fp32.name}"):
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, use_external_data_format=big, **options)


@contextmanager
def _quiet(failure: str) -> Iterator[None]:
    """Silence the exporter's and quantiser's advice (warnings, root-logger lines); failures → ModelError."""
    root = logging.getLogger()
    level, root.level = root.level, logging.ERROR
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except Exception as exc:
        raise ModelError(f"{failure} ({type(exc).__name__}: {str(exc)[:300]})",
                         hint="use --runtime torch to run the model without an export") from exc
    finally:
        root.level = level


def _run_file(path: Path, feeds: Feeds, precision: str) -> tuple[np.ndarray, float]:
    """The file's output on ``batch``, run as the runtime runs it (:func:`mmsearch.encoders.onnx.run_step`),
    and its time per item (ms, best of two after a warm-up run)."""
    import onnxruntime as ort

    from mmsearch.encoders.onnx import run_step

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    n = len(next(iter(feeds.values())))
    step = run_step(precision, n)

    def run() -> np.ndarray:
        return np.concatenate([session.run(None, {k: v[i : i + step] for k, v in feeds.items()})[0]
                               for i in range(0, n, step)])

    out = run()
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return out, round(min(times) * 1000 / n, 3)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return round(float((a * b).sum(1).min()), 6)


def probe_images(enc: Any):
    """Preprocessed probe batch (through open_clip's own transform): coloured shapes on gradients, noise."""
    import torch
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, 320, dtype=np.float32)
    images = []
    for i in range(14):
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        im = Image.fromarray((np.outer(np.ones(240), ramp)[..., None] * (b - a) + a).astype(np.uint8))
        draw = ImageDraw.Draw(im)
        for _ in range(1 + i % 3):
            x, y, r = int(rng.integers(40, 280)), int(rng.integers(40, 200)), int(rng.integers(15, 60))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x - r, y - r, x + r, y + r),
                                                                   fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        images.append(im)
    images.append(Image.fromarray(rng.integers(0, 256, (240, 320, 3), np.uint8)))
    return torch.from_numpy(np.stack([enc.preprocess(im) for im in images]))


def _tokenizer(tokenizer: Any, out: Path) -> dict[str, Any]:
    """Mirror the tokenizer with ``tokenizers`` when it is open_clip's CLIP BPE or a Hugging Face one
    (:func:`_hub_tokenizer`) and the ids match exactly; else the runtime uses open_clip's."""
    from mmsearch.encoders.tokenize import LightTokenizer, build, clean_mode

    mode = clean_mode(tokenizer)
    if mode is not None and hasattr(tokenizer, "tokenizer"):  # open_clip's HFTokenizer
        return _hub_tokenizer(tokenizer, mode, out)
    if mode is not None:
        build(tokenizer, out / "tokenizer.json")
        light = LightTokenizer(out / "tokenizer.json", mode)(list(PROBE_TEXTS))
        if np.array_equal(light, tokenizer(list(PROBE_TEXTS)).numpy()):
            return {"kind": "tokenizers", "file": "tokenizer.json", "clean": mode}
        (out / "tokenizer.json").unlink()
    return {"kind": "open_clip"}


def _hub_tokenizer(tokenizer: Any, mode: str, out: Path) -> dict[str, Any]:
    """open_clip's ``HFTokenizer`` as ``tokenizer.json`` for :class:`mmsearch.encoders.tokenize.ClipHubTokenizer`,
    kept when its ids equal open_clip's on the probe texts."""
    from mmsearch.encoders.tokenize import ClipHubTokenizer

    hf = tokenizer.tokenizer
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:  # a slow (Python) tokenizer: nothing to mirror
        return {"kind": "open_clip"}
    backend.save(str(out / "tokenizer.json"))
    spec = {"kind": "hf", "file": "tokenizer.json", "clean": mode, "context_length": int(tokenizer.context_length),
            "pad_id": int(hf.pad_token_id if hf.pad_token_id is not None else 0),
            "strip_sep_id": hf.sep_token_id if tokenizer.strip_sep_token else None,
            "padding_side": hf.padding_side, "truncation_side": hf.truncation_side}
    options = {k: spec[k] for k in ("strip_sep_id", "padding_side", "truncation_side")}
    light = ClipHubTokenizer(out / "tokenizer.json", mode, spec["context_length"], spec["pad_id"], **options)
    if np.array_equal(light(list(PROBE_TEXTS)), tokenizer(list(PROBE_TEXTS)).numpy()):
        return spec
    (out / "tokenizer.json").unlink()
    return {"kind": "open_clip"}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "open_clip_torch", "transformers", "onnxruntime", "onnx"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found
