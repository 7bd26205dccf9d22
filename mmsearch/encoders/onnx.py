"""Exported models on ONNX Runtime: the CPU runtime. Imports neither torch, open_clip nor transformers.

:class:`OnnxClipEncoder` runs an open_clip model (images, texts); :class:`OnnxClapEncoder` a CLAP
model (sounds as log-mel windows from the decode workers, texts through ``tokenizers``).

Built from a runtime-cache entry (:mod:`mmsearch.encoders.cache`, written by
:mod:`mmsearch.encoders.export`). Each tower's session is made on first use, so a text query loads
only the text tower and a sync with nothing to embed loads neither.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Sequence

import numpy as np

from mmsearch.encoders.base import SpaceInfo
from mmsearch.encoders.cache import Entry
from mmsearch.encoders.runtime import pick_precision
from mmsearch.encoders.scripts import ENGLISH_BPE
from mmsearch.encoders.spec import ModelRef
from mmsearch.errors import ModelError, UsageError


def run_step(precision: str, batch_size: int) -> int:
    """Items per ONNX Runtime call. int8 towers quantise activations with one scale per call, so a
    batched call would make an item's vector depend on the other items in it: they run one item at a
    time (a file's vector is the same whatever it is indexed with); fp32 runs whole batches."""
    return 1 if precision == "int8" else batch_size


def cpu_threads() -> int:
    """Threads per ONNX Runtime session: ``$MMSEARCH_THREADS``, else every core this process may use."""
    env = os.environ.get("MMSEARCH_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise UsageError(f"MMSEARCH_THREADS={env!r}: must be a whole number") from None
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class _OnnxTowers:
    """What both exported kinds share: a lazy session per tower, batching, the text contract."""

    def __init__(self, ref: ModelRef, entry: Entry, meta: dict[str, Any], *, precision: str = "auto",
                 batch_size: int = 64) -> None:
        self.entry, self.batch_size, self.device = entry, batch_size, "cpu"
        self._model_name = ref.model_name  # this folder, not the one the export was made from
        self._meta = meta
        self._precision = {t: pick_precision(v, precision) for t, v in meta["towers"].items()}
        self._sessions: dict[str, Any] = {}
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        space = meta["space"]
        if "text" not in space.get("extra", {}) and meta.get("kind") == "open_clip" \
                and meta["tokenizer"]["kind"] == "tokenizers":  # exported before spaces recorded their scripts
            space = {**space, "extra": {**space.get("extra", {}), "text": dict(ENGLISH_BPE)}}
        self.space = SpaceInfo(spec=ref.spec, family=ref.family, weights=ref.weights, dim=int(space["dim"]),
                               modalities=tuple(space["modalities"]),
                               extra={**space.get("extra", {}), "runtime": "onnxruntime", "device": "cpu",
                                      "precision": dict(self._precision)})

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise UsageError("embed_texts takes a list of strings, not one string")
        return self._run("text", self._tokens(list(texts)))

    def warm(self, tower: str) -> None:
        """Load ``tower``'s session (and for texts the tokenizer) now rather than on first use."""
        with self._lock:
            self._session(tower)
            if tower == "text":
                self._tokens(["warm"])

    def describe(self) -> dict[str, Any]:
        """What runs: runtime, precision per tower and its measured fidelity to torch fp32."""
        return {"runtime": "onnxruntime", "device": "cpu", "threads": cpu_threads(),
                "towers": {t: {"precision": p, "fidelity": self._meta["towers"][t]["fidelity"].get(p)}
                           for t, p in self._precision.items()}}

    # ---- internals ----------------------------------------------------------------------------------
    def _run(self, tower: str, batch: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        """One tower on a batch: an array (the tower's one input) or arrays by input name."""
        n = len(next(iter(batch.values()))) if isinstance(batch, dict) else len(batch)
        if n == 0:
            return np.zeros((0, self.space.dim), np.float32)
        step = run_step(self._precision[tower], self.batch_size)
        with self._lock:
            session = self._session(tower)
            feeds = batch if isinstance(batch, dict) else {session.get_inputs()[0].name: batch}
            out = [session.run(None, {k: v[i : i + step] for k, v in feeds.items()})[0] for i in range(0, n, step)]
        x = np.concatenate(out).astype(np.float32, copy=False)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    def _session(self, tower: str):
        if tower not in self._sessions:
            import onnxruntime as ort

            spec = self._meta["towers"].get(tower)
            if spec is None:
                raise ModelError(f"model {self.space.spec!r} has no {tower} tower")
            options = ort.SessionOptions()
            options.intra_op_num_threads = cpu_threads()
            options.inter_op_num_threads = 1
            # Idle threads sleep instead of spinning: the cores are shared with decode workers.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            path = self.entry.folder / spec["files"][self._precision[tower]]
            try:
                self._sessions[tower] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            except Exception as exc:  # a damaged cache entry: say where, and how to recover
                raise ModelError(f"cannot load the exported {tower} tower ({type(exc).__name__}: {exc})",
                                 path=str(path), hint="clear the runtime cache (mmsearch cache --clear) to re-export") from exc
        return self._sessions[tower]

    def _tokens(self, texts: list[str]) -> Any:
        raise NotImplementedError


class OnnxClipEncoder(_OnnxTowers):
    """Images and texts of one open_clip model, through ONNX Runtime on the CPU."""

    def image_recipe(self) -> dict[str, Any]:
        return dict(self._meta["recipe"])

    def embed_image_batch(self, pixels: np.ndarray) -> np.ndarray:
        return self._run("image", np.ascontiguousarray(pixels, dtype=np.float32))

    def _tokens(self, texts: list[str]) -> np.ndarray:
        if self._tokenizer is None:
            tok = self._meta["tokenizer"]
            if tok["kind"] == "tokenizers":
                from mmsearch.encoders.tokenize import LightTokenizer

                self._tokenizer = LightTokenizer(self.entry.folder / tok["file"], tok["clean"])
            elif tok["kind"] == "hf":  # open_clip's HFTokenizer (multilingual CLIP, SigLIP), mirrored
                from mmsearch.encoders.tokenize import ClipHubTokenizer

                self._tokenizer = ClipHubTokenizer(
                    self.entry.folder / tok["file"], tok["clean"], tok["context_length"], tok["pad_id"],
                    strip_sep_id=tok.get("strip_sep_id"), padding_side=tok.get("padding_side", "right"),
                    truncation_side=tok.get("truncation_side", "right"))
            else:  # a tokenizer we cannot mirror without open_clip: use open_clip's
                import open_clip

                fn = open_clip.get_tokenizer(self._model_name)
                self._tokenizer = lambda texts: fn(texts).numpy()
        return self._tokenizer(texts)


class OnnxClapEncoder(_OnnxTowers):
    """Sounds and texts of one CLAP model, through ONNX Runtime on the CPU."""

    def audio_recipe(self) -> dict[str, Any]:
        recipe = dict(self._meta["recipe"])
        if isinstance(recipe.get("mel"), str):  # the mel matrix sits beside meta.json
            recipe["mel"] = np.load(self.entry.folder / recipe["mel"])
        return recipe

    def image_recipe(self) -> dict[str, Any]:
        raise ModelError(f"model {self.space.spec!r} embeds sounds and texts, not images")

    def embed_image_batch(self, pixels: np.ndarray) -> np.ndarray:
        raise ModelError(f"model {self.space.spec!r} embeds sounds and texts, not images")

    def embed_audio_batch(self, features: np.ndarray) -> np.ndarray:
        """Embed (N, C, frames, mels) log-mel windows made by the recipe → (N, dim) unit vectors."""
        return self._run("audio", np.ascontiguousarray(features, dtype=np.float32))

    def _tokens(self, texts: list[str]) -> dict[str, np.ndarray]:
        if self._tokenizer is None:
            tok = self._meta["tokenizer"]
            if tok["kind"] == "tokenizers":
                from mmsearch.encoders.tokenize import HubTokenizer

                self._tokenizer = HubTokenizer(self.entry.folder / tok["file"], tok["max_length"], tok["pad_id"])
            else:  # transformers' own tokenizer (loads transformers, not torch)
                self._tokenizer = _transformers_tokenizer(self._model_name.split(":", 1)[1], tok["max_length"])
        return self._tokenizer(texts)


def _transformers_tokenizer(source: str, limit: int) -> Any:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(source)

    def tokens(texts: list[str]) -> dict[str, np.ndarray]:
        enc = hf(texts, padding=True, truncation=True, max_length=limit, return_tensors="np")
        return {"ids": enc["input_ids"].astype(np.int64), "mask": enc["attention_mask"].astype(np.int64)}

    return tokens
