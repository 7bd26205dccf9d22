"""Train the built-in ``builtin:tones`` CLAP model on the procedural tones world.

Dev script (CPU friendly: ~9 min of training, ~11 min in all, on 2 uncontended cores)::

    HF_HUB_OFFLINE=1 python -m mmsearch.world.train_tones --out mmsearch/models/tones --seed 0 --steps 2000 --eval-every 500

The model is a plain ``transformers.ClapModel`` with a shrunk config (HTSAT audio
tower of 3 Swin stages, a 2-layer RoBERTa-style text tower), trained from scratch,
contrastively, on sounds of :mod:`mmsearch.world.tones` and their templated captions.
There is no hub, so the tokenizer is built here: a RoBERTa-style byte-level BPE trained
on the world's caption corpus, special tokens ``<s> <pad> </s> <unk> <mask>`` (ids
0..4), ``<s> ... </s>`` added by ``RobertaProcessing``.  The feature extractor is a
``ClapFeatureExtractor`` for 16 kHz, 64 mel bins, 2 s windows.

The output folder is exactly what ``ClapModel.save_pretrained`` (weights in fp16) and
``ClapProcessor.save_pretrained`` write, so ``ClapModel.from_pretrained(out)`` and
``ClapProcessor.from_pretrained(out)`` load it offline, plus ``TRAINING.md`` and
``training.json``.  Training features are computed by the *saved* processor (reloaded
from the folder before training); after training the model is reloaded from the folder
and evaluated on a fresh draw.

Loss: symmetric InfoNCE with class-aware soft targets (all captions of a class are
positives of all its sounds, as captions name the class and nothing else), CLAP's own
learnable logit scales (``logit_scale_a`` for audio->text, ``logit_scale_t`` for
text->audio; initial 30), AdamW with linear warm-up and cosine decay.  Batches are
class-balanced (``batch // n_classes`` sounds of every class, the rest at random): in a
trial that learned several times faster per step than uniform sampling.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np

from mmsearch.world import tones as T
from mmsearch.world.tones_text import (FEATURE_EXTRACTOR_KW, MODEL_MAX_LENGTH, build_processor, build_tokenizer,
                                        caption_variants, check_tokenizer, tokenizer_corpus)
from mmsearch.world.tones_eval import evaluate, evaluate_files
from mmsearch.world.train import soft_contrastive_loss

# Patches of 8x8 (a 16x16 grid, then 8x8 and 4x4; window 4) cost a fifth of the CPU time of
# 4x4 patches (32x32 grid, window 8) per step and learned as fast per step in a trial.
AUDIO_CFG = dict(spec_size=128, num_mel_bins=64, patch_embeds_hidden_size=32, hidden_size=128,
                 depths=[1, 1, 2], num_attention_heads=[1, 2, 4], window_size=4, enable_fusion=False,
                 patch_size=8, patch_stride=[8, 8], mlp_ratio=2.0, hidden_dropout_prob=0.0)
TEXT_CFG = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                max_position_embeddings=MODEL_MAX_LENGTH + 2, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
PROJECTION_DIM = 64
LOGIT_SCALE_INIT = 30.0



# --------------------------------------------------------------------------- data

def class_balanced(seed: int, per_class: int) -> list:
    return [s for name in T.CLASS_NAMES for s in T.generate_class(name, seed, per_class)]


def featurize(processor, sounds, bs: int = 64) -> np.ndarray:
    """(N, 1, frames, 64) float16 log-mel features through the processor's feature extractor."""
    out = []
    for i in range(0, len(sounds), bs):
        f = processor.feature_extractor([s.samples for s in sounds[i:i + bs]], sampling_rate=T.SAMPLE_RATE,
                                        return_tensors="np")
        out.append(f["input_features"].astype(np.float16))
    return np.concatenate(out)


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=63, help="sounds per step (3 per class for 21 classes)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--pool-per-class", type=int, default=320, help="pre-generated training sounds per class")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-per-class", type=int, default=40)
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--samples", default="samples/sounds", help="also evaluate on these files if present")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import ClapAudioConfig, ClapConfig, ClapModel, ClapProcessor, ClapTextConfig

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    rng = random.Random(args.seed)
    t_start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # Tokenizer + feature extractor, saved first; everything below goes through the saved copy.
    corpus = tokenizer_corpus()
    build_processor(build_tokenizer(corpus)).save_pretrained(str(out))
    processor = ClapProcessor.from_pretrained(str(out))
    tokenizer = processor.tokenizer
    tok_check = check_tokenizer(out, processor, corpus)
    print("tokenizer:", tok_check, flush=True)

    cfg = ClapConfig(text_config=ClapTextConfig(vocab_size=len(tokenizer), **TEXT_CFG).to_dict(),
                     audio_config=ClapAudioConfig(**AUDIO_CFG).to_dict(), projection_dim=PROJECTION_DIM,
                     logit_scale_init_value=LOGIT_SCALE_INIT)
    model = ClapModel(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model params: {n_params/1e6:.3f}M", flush=True)

    t0 = time.time()
    pool = class_balanced(args.seed, args.pool_per_class)
    pool_labels = [s.cls for s in pool]
    t_gen = time.time() - t0
    pool_x = torch.from_numpy(featurize(processor, pool))
    del pool
    eval_seed = 1_000_003 + args.seed
    ev = class_balanced(eval_seed, args.eval_per_class)
    ev_labels = [s.cls for s in ev]
    ev_x = featurize(processor, ev)
    del ev
    t_data = time.time() - t0
    print(f"pool {len(pool_x)} sounds {tuple(pool_x.shape[1:])} + eval {len(ev_labels)}: generated in "
          f"{t_gen:.0f}s, data total {t_data:.0f}s", flush=True)

    cidx = {n: i for i, n in enumerate(T.CLASS_NAMES)}
    pool_y = torch.tensor([cidx[c] for c in pool_labels])
    by_class = [torch.nonzero(pool_y == i).ravel() for i in range(len(T.CLASS_NAMES))]
    per_step = args.batch // len(by_class)
    rest = args.batch - per_step * len(by_class)
    captions_of = {n: [v for c in T.class_captions(n) for v in caption_variants(c)] for n in T.CLASS_NAMES}
    # the plain caption most of the time; its surface variants now and then
    plain_of = {n: T.class_captions(n) for n in T.CLASS_NAMES}

    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "logit_scale" in n or "embeddings" in n or "norm" in n.lower()
         else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98), eps=1e-6)

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        prog = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * prog)))

    g = torch.Generator().manual_seed(args.seed)
    model.train()
    t_train = time.time()
    last_t, last_step = t_train, 0
    history = []
    loss = torch.tensor(0.0)
    for step in range(args.steps):
        for pg in opt.param_groups:
            pg["lr"] = lr_at(step)
        idx = torch.cat([b[torch.randint(0, len(b), (per_step,), generator=g)] for b in by_class]
                        + [torch.randint(0, len(pool_x), (rest,), generator=g)])
        x = pool_x[idx].float()
        yb = pool_y[idx]
        caps = [rng.choice(captions_of[T.CLASS_NAMES[int(c)]]) if rng.random() < 0.25
                else rng.choice(plain_of[T.CLASS_NAMES[int(c)]]) for c in yb]
        enc = tokenizer(caps, padding=True, return_tensors="pt")
        a = F.normalize(model.audio_projection(model.audio_model(input_features=x).pooler_output), dim=-1)
        t = F.normalize(model.text_projection(model.text_model(input_ids=enc["input_ids"],
                                                               attention_mask=enc["attention_mask"]).pooler_output),
                        dim=-1)
        same = (yb[:, None] == yb[None, :]).float()
        logits_a = model.logit_scale_a.exp() * a @ t.T      # audio -> text
        logits_t = model.logit_scale_t.exp() * t @ a.T      # text -> audio
        loss = soft_contrastive_loss(logits_a, logits_t, same)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale_a.clamp_(0, math.log(100))
            model.logit_scale_t.clamp_(0, math.log(100))
        if step % 20 == 0 or step == args.steps - 1:
            now = time.time()
            sps = (step - last_step) / max(1e-9, now - last_t) if step else 0.0
            last_t, last_step = now, step
            print(f"step {step:5d}/{args.steps} loss {loss.item():.4f} scale {model.logit_scale_a.exp().item():6.2f} "
                  f"lr {lr_at(step):.2e} {sps:.2f} steps/s elapsed {now - t_train:.0f}s", flush=True)
        if args.eval_every and step and step % args.eval_every == 0:
            m = evaluate(model, tokenizer, ev_x, ev_labels)
            history.append({"step": step, **m})
            print("  eval:", m, flush=True)
            model.train()
    train_s = time.time() - t_train
    model.eval()
    metrics_mem = evaluate(model, tokenizer, ev_x, ev_labels)
    print("held-out (in-memory fp32):", metrics_mem, flush=True)

    # Export: fp16 weights, exactly what save_pretrained writes; then reload and evaluate.
    # (The processor was saved before training: its files are already in the folder.)
    model.half().save_pretrained(str(out))
    m2 = ClapModel.from_pretrained(str(out)).float().eval()
    p2 = ClapProcessor.from_pretrained(str(out))
    tok_check = check_tokenizer(out, p2, corpus)
    ev2 = class_balanced(eval_seed, args.eval_per_class)          # same draw, recomputed by the reloaded processor
    ev2_x = featurize(p2, ev2)
    metrics = evaluate(m2, p2.tokenizer, ev2_x, [s.cls for s in ev2], detail=True)
    fresh_seed = eval_seed + 1                                     # a second fresh draw, random classes
    fresh = T.generate(fresh_seed, 630)
    metrics_fresh = evaluate(m2, p2.tokenizer, featurize(p2, fresh), [s.cls for s in fresh])
    files = None
    sdir = Path(args.samples)
    if (sdir / "captions.csv").exists():
        files = evaluate_files(m2, p2, sdir)
    print("held-out (reloaded):", {k: v for k, v in metrics.items() if k not in ("per_class", "named_queries")},
          flush=True)
    for q, v in metrics["named_queries"].items():
        print(f"  {q!r}: top-10 all {v['class']}: {v['top10_all_right']}, R-prec {v['rprec']}", flush=True)
    for c, v in metrics["per_class"].items():
        if v["a2t_acc"] < 1.0:
            print(f"  {c}: a2t {v['a2t_acc']} confused with {v['confused_with']}", flush=True)
    print("fresh random draw (reloaded):", metrics_fresh, flush=True)
    print("sample files:", files, flush=True)

    files_bytes = {f.name: f.stat().st_size for f in sorted(out.iterdir()) if f.is_file()
                   and f.name not in ("TRAINING.md", "training.json")}
    weights_bytes = files_bytes.get("model.safetensors", 0)
    cmd = "python -m mmsearch.world.train_tones " + " ".join(sys.argv[1:] if argv is None else argv)
    record = {
        "command": cmd, "seed": args.seed, "steps": args.steps, "batch": args.batch, "lr": args.lr,
        "weight_decay": args.wd, "warmup": args.warmup, "pool_per_class": args.pool_per_class,
        "pool": len(pool_labels), "classes": [{"name": n, "prompt": p} for n, p in T.class_prompts()],
        "eval_seed": eval_seed, "eval_per_class": args.eval_per_class, "fresh_seed": fresh_seed,
        "feature_extractor": FEATURE_EXTRACTOR_KW, "audio_config": AUDIO_CFG, "text_config": TEXT_CFG,
        "projection_dim": PROJECTION_DIM, "logit_scale_init": LOGIT_SCALE_INIT, "tokenizer": tok_check, "params": n_params,
        "weights_bytes": weights_bytes, "weights_dtype": "float16", "files_bytes": files_bytes,
        "folder_bytes": sum(files_bytes.values()),
        "data_wall_s": round(t_data, 1), "train_wall_s": round(train_s, 1),
        "total_wall_s": round(time.time() - t_start, 1),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}, "
                   f"threads {args.threads}, CPU only",
        "transformers": transformers.__version__, "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "final_loss": round(float(loss.item()), 4),
        "final_logit_scale": round(float(m2.logit_scale_a.detach().exp()), 2),
        "heldout_metrics_fp32_in_memory": metrics_mem,
        "heldout_metrics_reloaded": metrics,
        "fresh_random_draw_reloaded": metrics_fresh,
        "sample_files_reloaded": files,
        "history": history,
    }
    with open(out / "training.json", "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    (out / "TRAINING.md").write_text(training_md(record), encoding="utf-8")
    print(f"exported to {out} ({record['folder_bytes']/1e6:.2f} MB); train {train_s:.0f}s, "
          f"total {record['total_wall_s']:.0f}s", flush=True)
    return 0


def training_md(r: dict) -> str:
    m = r["heldout_metrics_reloaded"]
    fr = r["fresh_random_draw_reloaded"]
    classes = "\n".join(f"| `{c['name']}` | {c['prompt']} | {m['per_class'][c['name']]['a2t_acc']} | "
                        f"{m['per_class'][c['name']]['t2a_rprec']} |" for c in r["classes"])
    queries = "\n".join(f"| \"{q}\" | `{v['class']}` | {'yes' if v['top10_all_right'] else 'no'} | {v['rprec']} | "
                        f"{v['first_wrong_rank']} |" for q, v in m["named_queries"].items())
    files = r["sample_files_reloaded"]
    files_line = (f"All {files['files']} bundled files of `samples/sounds/` (decoded from .wav/.flac/.ogg) get "
                  f"their own class prompt top-1: {files['a2t_top1_right']}/{files['files']}"
                  + (f" (wrong: {files['wrong']})" if files["wrong"] else "") + ".\n") if files else ""
    sizes = ", ".join(f"{k} {v/1e3:.1f} kB" for k, v in r["files_bytes"].items())
    return f"""# builtin:tones — training record

A small `transformers.ClapModel` trained from scratch, contrastively, on the procedural
tones world (`mmsearch/world/tones.py`): {len(r['classes'])} sound classes (pure tones at named
pitches, chords, rhythms, sweeps, a siren, coloured noise, plucked/sustained/buzzing timbres,
clicks, drums, two mixtures), 16 kHz mono clips of 0.5-2 s with pitch, loudness, onset,
duration and noise-floor variation, 6 templates x 5-8 phrasings of captions per class.
It only knows this world: synthetic tones and noises, not real-world sounds.

Audio tower: HTSAT (Swin) shrunk to 3 stages, depths [1,1,2], widths 32/64/128, heads
[1,2,4], 8x8 patches (grids 16x16, 8x8, 4x4), window 4, MLP ratio 2, no dropout, on 64-bin
log-mel spectrograms of 2 s windows (spec size 128). Text tower: 2-layer RoBERTa-style encoder,
width 64, no dropout. Projection 64-d.
Tokenizer: byte-level BPE ({r['tokenizer']['vocab_size']} tokens) trained on the caption corpus (with
Capitalised / full-stop / lower-case variants), RoBERTa special tokens `<s> <pad> </s> <unk> <mask>`
= ids 0-4; `tokenizer.json` gives the same ids through plain `tokenizers` (checked on all
{r['tokenizer']['plain_tokenizers_match']} corpus captions), `"a rising whistle"` decodes back to itself.
Loss: symmetric InfoNCE with class-aware soft targets (every caption of a class is a positive
of every sound of that class), CLAP's own learnable logit scales (initial {r['logit_scale_init']}),
class-balanced batches; a quarter of the captions get a surface variant (Capitalised, full stop,
lower case).

How the config was chosen (short trials on a pool of 150 sounds per class, 20 per class held
out, CPU, shared cores): 4x4 patches (32x32 grid, window 8) cost ~5x the CPU time per step of
8x8 patches and learned no faster per step (150 steps of 32: audio→text 0.13 vs 0.15). Uniform
batches of 64 reached audio→text 0.20 after 150 steps; class-balanced batches of 63 reached
0.56 after 200 and 0.72 after 400 (lr 3e-3: 0.63; initial logit scale 30: 0.80; no dropout:
0.81; widths 48/96/192: 0.77). Scale 30 + no dropout, 1000 steps: audio→text 0.976,
audio→audio top-5 0.967, text→audio R-precision 0.979. The run below uses a larger pool and
more steps.

- Command: `HF_HUB_OFFLINE=1 {r['command']}`
- Seed: {r['seed']} (training pool = `generate_class(name, {r['seed']}, {r['pool_per_class']})` for every class,
  {r['pool']} sounds); held-out seed {r['eval_seed']} ({r['eval_per_class']} per class), second fresh draw
  `generate({r['fresh_seed']}, 630)`
- Steps: {r['steps']}, batch {r['batch']}, AdamW lr {r['lr']} ({r['warmup']} warm-up steps, cosine), wd {r['weight_decay']}
- Parameters: {r['params']/1e6:.2f}M; weights fp16 safetensors, {r['weights_bytes']/1e6:.2f} MB;
  folder {r['folder_bytes']/1e6:.2f} MB ({sizes})
- Training wall time: {r['train_wall_s']/60:.1f} min (data: generating + featurising the pool
  {r['data_wall_s']/60:.1f} min; total incl. export and evaluation {r['total_wall_s']/60:.1f} min)
- Machine: {r['machine']}; transformers {r['transformers']}
- Date: {r['date']}
- Final loss {r['final_loss']}, logit scale {r['final_logit_scale']}

Held-out metrics of the exported model, reloaded with `ClapModel.from_pretrained` /
`ClapProcessor.from_pretrained` from this folder, features by its own processor
({m['n_gallery']} fresh sounds, {r['eval_per_class']} per class; {m['n_prompts']} class prompts):

| metric | value |
|---|---|
| text→audio P@1 (each class prompt's top sound is of its class) | {m['t2a_p1']} |
| text→audio R-precision (class prompt, top-{r['eval_per_class']} of its class) | {m['t2a_rprec']} |
| audio→text accuracy (own class prompt top-1 among all {m['n_prompts']}) | {m['a2t_acc']} |
| audio→text accuracy among all captions of all classes (any phrasing/template) | {m['a2t_any_caption_acc']} |
| audio→audio top-5 same class | {m['a2a_top5']} |

Second fresh draw (`generate({r['fresh_seed']}, 630)`, random classes, {fr['n_gallery']} sounds):
t2a P@1 {fr['t2a_p1']}, t2a R-precision {fr['t2a_rprec']}, a2t {fr['a2t_acc']},
a2t any caption {fr['a2t_any_caption_acc']}, a2a top-5 {fr['a2a_top5']}.
{files_line}
Named queries on the held-out gallery (R = {r['eval_per_class']} sounds of the class):

| query | class | top-10 all of it | R-precision | first other class at rank |
|---|---|---|---|---|
{queries}

Per class (held-out): audio→text accuracy and text→audio R-precision of its prompt:

| class | prompt | a2t | t2a R-prec |
|---|---|---|---|
{classes}

Feature extractor (in `processor_config.json`): `ClapFeatureExtractor({", ".join(f"{k}={v!r}" for k, v in r['feature_extractor'].items())})`.
Audio config: `{json.dumps(r['audio_config'])}`.
Text config: `{json.dumps(r['text_config'])}`, projection_dim {r['projection_dim']}.
"""


if __name__ == "__main__":
    raise SystemExit(main())
