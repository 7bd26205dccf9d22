"""How well ``builtin:tones`` learnt: zero-shot class accuracy, caption retrieval and the named queries
on a fresh draw of the tones world, and the same from sound files on disk.

Used by :mod:`mmsearch.world.train_tones` during and after training.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mmsearch.world import tones as T

# The queries checked by name after training: (query, class whose sounds must come first).
NAMED_QUERIES = [("a rising whistle", "sweep-up"), ("a rising sweep", "sweep-up"),
                 ("a falling whistle", "sweep-down"), ("white noise", "noise-white"),
                 ("fast beeps", "beeps-fast"), ("a plucked string", "pluck"),
                 ("a pure tone at A4", "tone-a4"), ("beeps over noise", "beeps-noise")]


def _pooled(out):
    return out if hasattr(out, "shape") else out.pooler_output


def embed_audio(model, feats: np.ndarray, bs: int = 256):
    import torch
    import torch.nn.functional as F

    out = []
    with torch.inference_mode():
        for i in range(0, len(feats), bs):
            x = torch.from_numpy(feats[i:i + bs].astype(np.float32))
            out.append(_pooled(model.get_audio_features(input_features=x)).float())
    return F.normalize(torch.cat(out), dim=-1)


def embed_text(model, tokenizer, texts: list[str], bs: int = 256):
    import torch
    import torch.nn.functional as F

    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), bs):
            enc = tokenizer(texts[i:i + bs], padding=True, truncation=True, return_tensors="pt")
            out.append(_pooled(model.get_text_features(input_ids=enc["input_ids"],
                                                       attention_mask=enc["attention_mask"])).float())
    return F.normalize(torch.cat(out), dim=-1)


def evaluate(model, tokenizer, feats: np.ndarray, labels: list[str], detail: bool = False) -> dict:
    """Held-out retrieval metrics over a class-balanced gallery of sounds.

    * t2a_p1: for each class prompt, is the top-1 sound of that class? (mean over prompts)
    * t2a_rprec: for each class prompt, the fraction of its top-R sounds of that class,
      R = the number of gallery sounds of that class (R-precision; mean over prompts)
    * a2t_acc: for each sound, is its class prompt the top-1 among all class prompts?
    * a2t_any_caption_acc: for each sound, is the top-1 among *all* caption variants of all
      classes (phrasings x templates) one of its class?
    * a2a_top5: mean fraction of a sound's 5 nearest other sounds of the same class
    """
    import torch

    model.eval()
    names = [n for n, _ in T.class_prompts()]
    prompts = [p for _, p in T.class_prompts()]
    cidx = {n: i for i, n in enumerate(names)}
    y = torch.tensor([cidx[lab] for lab in labels])
    aud = embed_audio(model, feats)
    txt = embed_text(model, tokenizer, prompts)
    sim = txt @ aud.T                                  # [C, N]
    present = [i for i in range(len(names)) if int((y == i).sum()) > 0]
    p1 = [float(y[int(sim[i].argmax())] == i) for i in present]
    rprec = []
    for i in present:
        r = int((y == i).sum())
        top = sim[i].topk(r).indices
        rprec.append(float((y[top] == i).float().mean()))
    pred = sim.T.argmax(dim=1)
    a2t = float((pred == y).float().mean())
    caps, cap_cls = [], []
    for n in names:
        for c in T.class_captions(n):
            caps.append(c)
            cap_cls.append(cidx[n])
    ctxt = embed_text(model, tokenizer, caps)
    cpred = torch.tensor(cap_cls)[(aud @ ctxt.T).argmax(dim=1)]
    a2t_any = float((cpred == y).float().mean())
    aa = aud @ aud.T
    aa.fill_diagonal_(-2.0)
    top5 = aa.topk(5, dim=1).indices
    a2a = float((y[top5] == y[:, None]).float().mean())
    res = {"t2a_p1": round(float(np.mean(p1)), 4), "t2a_rprec": round(float(np.mean(rprec)), 4),
           "a2t_acc": round(a2t, 4), "a2t_any_caption_acc": round(a2t_any, 4), "a2a_top5": round(a2a, 4),
           "n_prompts": len(present), "n_gallery": len(labels)}
    if detail:
        per_class = {}
        for i in present:
            m = y == i
            wrong = pred[m][pred[m] != i]
            conf = {}
            for w in wrong.tolist():
                conf[names[w]] = conf.get(names[w], 0) + 1
            per_class[names[i]] = {"a2t_acc": round(float((pred[m] == i).float().mean()), 4),
                                   "t2a_rprec": round(rprec[present.index(i)], 4),
                                   "confused_with": dict(sorted(conf.items(), key=lambda kv: -kv[1]))}
        res["per_class"] = per_class
        queries = {}
        qtxt = embed_text(model, tokenizer, [q for q, _ in NAMED_QUERIES])
        qsim = qtxt @ aud.T
        for qi, (q, want) in enumerate(NAMED_QUERIES):
            r = int((y == cidx[want]).sum())
            order = qsim[qi].argsort(descending=True)
            top_cls = [names[int(y[j])] for j in order[:10]]
            first_wrong = next((k for k, j in enumerate(order.tolist()) if names[int(y[j])] != want), len(order))
            queries[q] = {"class": want, "top10_all_right": all(c == want for c in top_cls),
                          "rprec": round(float((y[order[:r]] == cidx[want]).float().mean()), 4),
                          "first_wrong_rank": first_wrong + 1, "top10": top_cls}
        res["named_queries"] = queries
    return res


def evaluate_files(model, processor, folder: Path) -> dict:
    """The bundled sample files, decoded from disk: top-1 class prompt per file."""
    import csv

    import soundfile as sf

    rows = list(csv.DictReader(open(folder / "captions.csv", encoding="utf-8")))
    waves = []
    for r in rows:
        data, sr = sf.read(str(folder / r["file"]), dtype="float32")
        assert sr == T.SAMPLE_RATE
        waves.append(data)
    feats = processor.feature_extractor(waves, sampling_rate=T.SAMPLE_RATE, return_tensors="np")["input_features"]
    aud = embed_audio(model, feats)
    names = [n for n, _ in T.class_prompts()]
    txt = embed_text(model, processor.tokenizer, [p for _, p in T.class_prompts()])
    pred = (aud @ txt.T).argmax(dim=1).tolist()
    got = {r["file"]: names[p] for r, p in zip(rows, pred)}
    ok = sum(got[r["file"]] == r["class"] for r in rows)
    return {"files": len(rows), "a2t_top1_right": ok,
            "wrong": {f: c for f, c in got.items() if c != next(r["class"] for r in rows if r["file"] == f)}}
