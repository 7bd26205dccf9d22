"""Sound ingest on this machine: files/s and audio-seconds/s from files to a searchable store, against the
model alone (the same windows already in memory through the same encoder), and the quality of ``builtin:tones``.

Two models:

* ``builtin:tones`` — the shipped small CLAP (16 kHz, 2 s windows), on the CPU runtime (ONNX Runtime).
* ``laion-clap-random`` — LAION-CLAP's architecture (``ClapConfig()``: HTSAT-base audio tower and RoBERTa-base
  text tower, the shape of ``laion/clap-htsat-unfused``, 48 kHz, 10 s windows) with seeded random weights:
  the cost of a forward pass does not depend on the weights (the hub is unreachable here).

The sounds: procedural clips of the tones world (0.5–2 s) and longer mixes (30 s), written at 44.1 kHz
stereo as FLAC/WAV/OGG, so decode, mix-down and resampling are paid as with a user's files.

    python benchmarks/bench_audio.py [--clips 200] [--long 8] [--skip-laion]

Quality (``builtin:tones``, through the public Engine): a fresh draw of the tones world (seed unused in
training), indexed; text→audio R@1 per class prompt (is the top sound of the prompt's class), audio→audio
top-5 same class, audio→text right class prompt at rank 1 (class prompts added as texts); the same
draw as WAV and as Ogg Vorbis (libsndfile's default quality).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import save  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def write_clips(folder: Path, clips: int, long: int, seed: int = 424242) -> tuple[float, list[tuple[Path, str]]]:
    """Tones-world clips (and long mixes) as 44.1 kHz stereo files; (total seconds, [(path, class)])."""
    import soundfile as sf
    import soxr

    from mmsearch.world import tones

    folder.mkdir(parents=True, exist_ok=True)
    seconds, out = 0.0, []
    sounds = tones.generate(seed, clips + long * 15)
    for i, s in enumerate(sounds[:clips]):
        x = soxr.resample(s.samples, s.sample_rate, 44100)
        path = folder / f"clip{i:04d}.{('flac', 'wav', 'ogg')[i % 3]}"
        sf.write(path, np.stack([x, 0.8 * x], axis=1), 44100)
        seconds += len(x) / 44100
        out.append((path, s.cls))
    rest = sounds[clips:]
    for j in range(long):
        x = np.concatenate([s.samples for s in rest[j * 15 : (j + 1) * 15]])
        x = soxr.resample(np.tile(x, max(1, int(np.ceil(30 * 16000 / len(x)))))[: 30 * 16000], 16000, 44100)
        path = folder / f"long{j:02d}.flac"
        sf.write(path, np.stack([x, x], axis=1), 44100)
        seconds += len(x) / 44100
        out.append((path, "long"))
    return seconds, out


def laion_random(folder: Path) -> str:
    """LAION-CLAP's architecture with seeded random weights, saved as a local-dir model."""
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor

    from tests.kit import tiny_tokenizer as _tokenizer

    if (folder / "config.json").exists():
        return "local-dir:" + str(folder)
    torch.manual_seed(0)
    model = ClapModel(ClapConfig()).eval()  # defaults: HTSAT-base + RoBERTa-base, projection 512
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    ClapProcessor(feature_extractor=ClapFeatureExtractor(truncation="rand_trunc"),
                  tokenizer=_tokenizer(folder)).save_pretrained(folder)
    return "local-dir:" + str(folder)


def ingest(spec: str, data: Path, seconds: float, files: int, workers: int | None) -> dict:
    from mmsearch import Engine

    with tempfile.TemporaryDirectory() as tmp:
        with Engine.open(Path(tmp) / "store", model=spec, workers=workers) as eng:
            eng.encoder(spec)  # the export (once per machine) is not part of the ingest rate
            t0 = time.perf_counter()
            report = eng.index([data])
            wall = time.perf_counter() - t0
            assert report.ok, report.errors[:3]
    return {"files": files, "audio_seconds": round(seconds, 1), "wall_s": round(wall, 2),
            "files_per_s": round(files / wall, 2), "audio_seconds_per_s": round(seconds / wall, 1),
            "workers": workers}


def model_only(spec: str, data: Path) -> dict:
    """The encoder alone on every window of the same files, decoded beforehand (what ingest cannot beat)."""
    from mmsearch.encoders.registry import load_encoder
    from mmsearch.ingest.audio import decode_audio, windows

    enc = load_encoder(spec)
    recipe = enc.audio_recipe()
    feats, seconds = [], 0.0
    t0 = time.perf_counter()
    for path in sorted(data.iterdir()):
        sound = decode_audio(str(path), recipe["sampling_rate"], 600)
        seconds += len(sound.samples) / recipe["sampling_rate"]
        feats.append(windows(sound.samples, recipe)[0])
    decode_s = time.perf_counter() - t0
    x = np.concatenate(feats)
    enc.embed_audio_batch(x[:2])  # warm
    t0 = time.perf_counter()
    step = enc.batch_size
    for i in range(0, len(x), step):
        enc.embed_audio_batch(x[i : i + step])
    wall = time.perf_counter() - t0
    return {"windows": int(len(x)), "wall_s": round(wall, 2), "windows_per_s": round(len(x) / wall, 2),
            "audio_seconds_per_s": round(seconds / wall, 1), "decode_and_features_s": round(decode_s, 2),
            "precision": enc.describe()["towers"]["audio"]["precision"] if hasattr(enc, "describe") else "torch"}


def quality(seed: int = 990001, per_class: int = 12, ext: str = "wav") -> dict:
    """builtin:tones on a fresh draw through the public API (the sounds written as ``ext`` files)."""
    import soundfile as sf

    from mmsearch import Engine
    from mmsearch.world import tones

    with tempfile.TemporaryDirectory() as tmp:
        data, labels = Path(tmp) / "sounds", {}
        data.mkdir()
        for c in tones.CLASSES:
            for i, s in enumerate(tones.generate_class(c.name, seed, per_class)):
                path = data / f"{c.name}_{i:02d}.{ext}"
                sf.write(path, s.samples, s.sample_rate)
                labels[str(path)] = c.name
        prompts = dict(tones.class_prompts())
        with Engine.open(Path(tmp) / "store", model="builtin:tones") as eng:
            eng.index([data])
            eng.add_texts({f"class:{k}": v for k, v in prompts.items()})
            t2a = np.mean([labels[eng.search(text=p, type="audio", k=1)[0].path] == c for c, p in prompts.items()])
            a2a, a2t = [], []
            for path, c in labels.items():
                near = [h for h in eng.search(audio=path, type="audio", k=6) if h.path != path][:5]
                a2a.append(np.mean([labels[h.path] == c for h in near]))
                a2t.append(eng.search(audio=path, type="text", k=1)[0].text == prompts[c])
            whistle = [labels[h.path] for h in eng.search(text="a rising whistle", type="audio", k=per_class)]
    return {"classes": len(prompts), "sounds": len(labels), "seed": seed, "format": ext,
            "text_to_audio_r1": round(float(t2a), 4), "audio_to_audio_top5_same_class": round(float(np.mean(a2a)), 4),
            "audio_to_text_r1": round(float(np.mean(a2t)), 4),
            "rising_whistle_top_k_sweep_up": round(float(np.mean([c == "sweep-up" for c in whistle])), 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--long", type=int, default=8)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--skip-laion", action="store_true")
    ap.add_argument("--models", default=str(Path(__file__).resolve().parent / "_data" / "audio-models"))
    args = ap.parse_args(argv)
    results: dict = {"quality_builtin_tones": quality(), "quality_builtin_tones_ogg": quality(ext="ogg")}
    print("quality", results["quality_builtin_tones"], results["quality_builtin_tones_ogg"])
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "sounds"
        seconds, files = write_clips(data, args.clips, args.long)
        specs = {"builtin:tones": "builtin:tones"}
        if not args.skip_laion:
            specs["laion-clap-random"] = laion_random(Path(args.models) / "laion-clap-random")
        for name, spec in specs.items():
            row = {"ingest": ingest(spec, data, seconds, len(files), args.workers), "model_only": model_only(spec, data)}
            row["ingest_vs_model"] = round(row["ingest"]["audio_seconds_per_s"] / row["model_only"]["audio_seconds_per_s"], 3)
            results[name] = row
            print(name, row)
    path = save("audio", {"command": " ".join(["python", "benchmarks/bench_audio.py", *(argv or sys.argv[1:])]),
                          "clips": args.clips, "long_30s": args.long, **results})
    print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
