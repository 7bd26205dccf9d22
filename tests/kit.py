"""The shared test kit: builders, a counting encoder installed through the real registry, a CLI
runner and store helpers. Plain functions and classes (the pytest fixtures built on them live in
tests/conftest.py). Nothing here downloads: models are built locally and loaded through `local-dir:`.

Contents:
    TINY_CFG, make_tiny_model(folder, seed, cfg)  a seeded random open_clip CLIP in local-dir format
    write_images(folder, n, seed, size)           distinct random-pattern PNGs
    write_texts(folder, texts)                    one UTF-8 .txt file per text
    CountingEncoder(inner)                        wraps a real encoder, counts calls/items reaching the model
    counting_encoders(prefix)                     context manager: registers PREFIX:<inner spec> specs that
                                                  load <inner spec> wrapped in a CountingEncoder; yields a
                                                  Counting recorder of the instances made
    cli(*args)                                    `mmsearch ARGS...` through typer's CliRunner
    make_tiny_clap(folder, seed, rate, seconds, fusion)
                                                  a seeded random small transformers ClapModel + ClapProcessor
                                                  saved as save_pretrained writes them (a local-dir CLAP)
    tiny_tokenizer()                              the byte-level BPE the tiny CLAP uses (built with tokenizers)
    pid_recording(prefix, path)                   context manager: registers PREFIX:<inner spec> specs whose
                                                  encoders append the pid of every process they embed in to
                                                  ``path`` (a Ray actor's included: the factory travels there)
    ShiftedEncoder, LikeEncoder, wrapping(prefix, cls)
                                                  encoders wrapping a real one (registered through the registry):
                                                  every cosine pushed towards 0.9; a text "like:PATH" near a sound
    cli_modules(*args)                            `mmsearch ARGS...` in a fresh interpreter: exit code, heavy
                                                  modules (torch, open_clip, transformers) it imported
    unit(dim), all_hits(eng, type, space)         a raw unit query vector; every item of a type
    Corpus, Indexed, build_indexed(root, model, corpus)
                                                  a store with images and texts indexed (the `indexed` fixture)
    tone(seconds, rate, freq, amplitude)           a float32 sine
    write_sound(path, samples, rate, fmt, subtype, codec)
                                                  a sound file: libsndfile formats (wav flac ogg opus mp3 aiff…)
                                                  by extension, m4a/aac/wma/mka/mp4/ac3 through PyAV
    write_tone(path, seconds, rate, channels, freq, fmt, subtype, amplitude)
                                                  a sine in every channel of a sound file
    write_video(path, scenes, fps, size, codec, pix_fmt, gop, rotate_cw, times, sound)
                                                  a video of solid-colour (or given) scenes through PyAV: any
                                                  container/codec, keyframe spacing, variable frame times,
                                                  phone rotation (MP4/MOV), an AAC soundtrack
    videos_store(root), shown_colour(image)       the bundled sample videos indexed (builtin:shapes + builtin:tones)
                                                  with their truth.json; the shapes colour at a picture's middle
    PAGE_DOM, page_script(html)                   a small fake DOM for node and the page's script (page tests)
    recipe_from_extractor(fe), small_extractor(**kw)
                                                  the audio recipe of a transformers ClapFeatureExtractor; the
                                                  small 16 kHz / 2 s one the audio tests use
"""

from __future__ import annotations

import json
import os
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

if TYPE_CHECKING:  # heavy imports stay lazy: conftest imports this module at collection
    from click.testing import Result

    from mmsearch import Engine

TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


# ---- builders ---------------------------------------------------------------------------------------------
def make_tiny_model(folder: Path, seed: int = 0, cfg: dict | None = None) -> Path:
    """A seeded random open_clip CLIP saved in the local-dir format real checkpoints use."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    cfg = cfg or TINY_CFG
    torch.manual_seed(seed)
    model = open_clip.CLIP(**cfg)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": cfg, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}})
    )
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


def write_images(folder: Path, n: int, seed: int = 0, size: tuple[int, int] = (40, 30)) -> list[Path]:
    """Distinct random-pattern images (random tiny models separate them well), named img_SEED_III.png."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        p = folder / f"img_{seed}_{i:03d}.png"
        Image.fromarray(arr).save(p)
        out.append(p)
    return out


def write_photo(path: Path, w: int, h: int, seed: int = 0, quality: int = 90) -> Path:
    """A smooth photo-like JPEG (gradients and a few discs, with some grain): what JPEGs usually hold,
    unlike noise, whose every pixel a resampler's rounding changes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    x, y = xx / max(w, h), yy / max(w, h)
    arr = np.stack([np.sin(x * 6 + seed), np.cos(y * 5), np.sin((x + y) * 4)], -1) * 90 + 128
    for _ in range(4):
        cx, cy, r = rng.random() * w, rng.random() * h, 10 + rng.random() * h / 4
        arr[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.integers(0, 256, 3)
    arr += rng.normal(0, 6, arr.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=quality)
    return path


def write_texts(folder: Path, texts: list[str]) -> list[Path]:
    """One UTF-8 file per text, named note_III.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, t in enumerate(texts):
        p = folder / f"note_{i:03d}.txt"
        p.write_text(t, encoding="utf-8")
        out.append(p)
    return out


# ---- a counting encoder, installed through the registry ---------------------------------------------------
class CountingEncoder:
    """Wraps a real encoder and counts the calls and items that reach the model on the source side.

    It keeps the inner encoder's ``space``, so a store sees the same space (same spec, key, dim) as
    with the inner encoder alone. Query-side ``embed_images`` is passed through uncounted.
    """

    def __init__(self, inner: Any) -> None:
        self.inner, self.space, self.calls, self.items = inner, inner.space, 0, 0
        self.image_batches: list[int] = []  # rows of each image call, in order

    def image_recipe(self) -> dict[str, Any]:
        return self.inner.image_recipe()

    def embed_image_batch(self, pixels):
        self.calls += 1
        self.items += len(pixels)
        self.image_batches.append(len(pixels))
        return self.inner.embed_image_batch(pixels)

    def embed_texts(self, texts):
        self.calls += 1
        self.items += len(texts)
        return self.inner.embed_texts(texts)

    def embed_images(self, images):
        return self.inner.embed_images(images)


@dataclass
class Counting:
    """What :func:`counting_encoders` made: every CountingEncoder loaded while it was registered."""

    prefix: str
    made: list[CountingEncoder] = field(default_factory=list)

    def spec(self, inner: str) -> str:
        """The spec that loads ``inner`` wrapped in a CountingEncoder, e.g. ``counting:local-dir:/m``."""
        return f"{self.prefix}:{inner}"

    @property
    def last(self) -> CountingEncoder:
        """The encoder loaded last (an engine loads one per spec)."""
        assert self.made, f"no {self.prefix}: encoder was loaded"
        return self.made[-1]

    @property
    def items(self) -> int:
        """Items that reached the model through every encoder made so far."""
        return sum(e.items for e in self.made)


@contextmanager
def counting_encoders(prefix: str = "counting") -> Iterator[Counting]:
    """Register ``PREFIX:<inner spec>``: loads ``<inner spec>`` with ``load_encoder`` and wraps it.

    The prefix is unregistered (or what held it before restored) on leaving the block.
    """
    from mmsearch.encoders.registry import load_encoder, registered

    rec = Counting(prefix)

    def factory(spec: str, rest: str, **kw: Any) -> CountingEncoder:
        enc = CountingEncoder(load_encoder(rest, **kw))
        rec.made.append(enc)
        return enc

    with registered(prefix, factory):
        yield rec


class PidEncoder:
    """Wraps a real encoder; each source-side embed call appends this process's pid to a file."""

    def __init__(self, inner: Any, path: str) -> None:
        self.inner, self.space, self.path = inner, inner.space, path
        self.batch_size = getattr(inner, "batch_size", 64)

    def _seen(self) -> None:
        with open(self.path, "a") as f:
            f.write(f"{os.getpid()}\n")

    def __getattr__(self, name):  # recipes, query-side calls: the inner encoder's
        return getattr(self.inner, name)

    def embed_image_batch(self, pixels):
        self._seen()
        return self.inner.embed_image_batch(pixels)

    def embed_texts(self, texts):
        self._seen()
        return self.inner.embed_texts(texts)

    def embed_audio_batch(self, features):
        self._seen()
        return self.inner.embed_audio_batch(features)


def recorded_pids(path: Path) -> set[int]:
    """The pids a :class:`PidEncoder` embedded in (none when the file is not there)."""
    return {int(x) for x in path.read_text().split()} if path.exists() else set()


@contextmanager
def pid_recording(prefix: str, path: Path) -> Iterator[None]:
    """Register ``PREFIX:<inner spec>``: ``<inner spec>`` wrapped in a :class:`PidEncoder` writing to ``path``.
    The factory is a closure, so it travels to other processes by value (as Ray pickles it)."""
    from mmsearch.encoders.registry import load_encoder, registered

    where = str(path)

    def factory(spec: str, rest: str, **kw: Any) -> PidEncoder:
        return PidEncoder(load_encoder(rest, **kw), where)

    with registered(prefix, factory):
        yield


# ---- the CLI --------------------------------------------------------------------------------------------
_runner = None


def cli(*args: Any) -> "Result":
    """Run ``mmsearch ARGS...`` in-process; paths (str, bytes or Path) are passed as the OS gives them."""
    global _runner
    from typer.testing import CliRunner

    from mmsearch.cli import app

    if _runner is None:
        _runner = CliRunner()
    return _runner.invoke(app, [os.fsdecode(a) if isinstance(a, (bytes, os.PathLike)) else str(a) for a in args])


# ---- store helpers --------------------------------------------------------------------------------------
def unit(dim: int = 32) -> np.ndarray:
    """A unit vector with equal components: a raw query every stored vector has some score against."""
    return np.ones(dim, np.float32) / np.sqrt(dim)


def all_hits(eng: "Engine", type: str = "any", space: str | None = None):
    """Every item of one type, by a raw-vector query (no model needed).

    The dimension comes from ``eng.stats()``: the named space (spec, key or id), else the one
    dimension all the store's spaces share.
    """
    spaces = eng.stats().spaces
    if space is not None:
        dims = {s.dim for s in spaces if space in (s.spec, s.key, str(s.id))}
    else:
        dims = {s.dim for s in spaces}
    assert len(dims) == 1, f"cannot tell the dimension of space {space!r} among {[(s.spec, s.dim) for s in spaces]}"
    return eng.search(vector=unit(dims.pop()), type=type, k=100_000, space=space)


@dataclass(frozen=True)
class Corpus:
    """What :func:`build_indexed` writes: ``images`` images (seed ``seed``) and one file per text."""

    images: int = 6
    seed: int = 0
    texts: tuple[str, ...] = ("hello there", "general kenobi", "a red bicycle")


@dataclass(frozen=True)
class Indexed:
    """A store built by :func:`build_indexed`: images under data/img, texts under data/notes."""

    store: Path
    data: Path
    images: list[Path]
    texts: list[Path]
    corpus: Corpus

    @property
    def image_dir(self) -> Path:
        return self.data / "img"

    @property
    def text_dir(self) -> Path:
        return self.data / "notes"

    @property
    def roots(self) -> list[Path]:
        """What was indexed; index these again to re-sync the same roots."""
        return [self.image_dir, self.text_dir]


def build_indexed(root: Path, model: str, corpus: Corpus = Corpus()) -> Indexed:
    """Write ``corpus`` under ``root/data`` and index it into ``root/store`` (workers=0); the engine is closed."""
    from mmsearch import Engine

    data = root / "data"
    images = write_images(data / "img", corpus.images, seed=corpus.seed)
    texts = write_texts(data / "notes", list(corpus.texts))
    ix = Indexed(root / "store", data, images, texts, corpus)
    with Engine.open(ix.store, model=model, workers=0) as eng:
        rep = eng.index(ix.roots)
    assert rep.ok and rep.indexed == len(images) + len(texts), rep
    return ix


def index_file(store: Path, space_id: int = 1, modality: str = "image") -> Path:
    """The generation file the pointer of one index names (its current file)."""
    from mmsearch.ann.space_index import read_record

    return Path(store) / "ann" / read_record(store, space_id, modality)["file"]


def index_pointer(store: Path, space_id: int = 1, modality: str = "image") -> Path:
    return Path(store) / "ann" / f"space{space_id}-{modality}.json"


def stop_process(proc: "subprocess.Popen", sig: int | None = None, timeout: float = 30) -> None:
    """Ask a child process to stop (``sig``, default SIGTERM), then kill it if it has not within ``timeout``."""
    import signal

    proc.send_signal(signal.SIGTERM if sig is None else sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---- sounds ---------------------------------------------------------------------------------------------
#: What :func:`write_sound` writes through PyAV (libsndfile cannot): extension → (muxer, codec).
PYAV_FORMATS = {".m4a": ("ipod", "aac"), ".aac": ("adts", "aac"), ".wma": ("asf", "wmav2"), ".mka": ("matroska", "aac"),
                ".mp4": ("mp4", "aac"), ".ac3": ("ac3", "ac3")}
_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 8: "7.1"}


def tone(seconds: float = 1.0, rate: int = 16000, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    """A float32 sine of ``freq`` Hz, ``seconds`` long at ``rate`` (mono, shape (n,))."""
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_sound(path: Path, samples: np.ndarray, rate: int, fmt: str | None = None, subtype: str | None = None,
                codec: str | None = None) -> Path:
    """Write ``samples`` ((n,) or (n, channels), floats in [-1, 1]) to ``path``.

    libsndfile (soundfile) writes what it can (format from the extension, or ``fmt``/``subtype`` as
    soundfile names them: ``fmt="OGG", subtype="OPUS"``; ``.opus`` means Ogg Opus); ``.m4a``, ``.aac``,
    ``.wma``, ``.mka``, ``.mp4`` and ``.ac3`` (or any path with ``codec``, an FFmpeg encoder name) go
    through PyAV.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.asarray(samples, dtype=np.float32)
    x = x[:, None] if x.ndim == 1 else x
    ext = path.suffix.lower()
    if codec is None and ext not in PYAV_FORMATS:
        import soundfile as sf

        if ext == ".opus" and fmt is None:
            fmt, subtype = "OGG", subtype or "OPUS"
        sf.write(str(path), x, rate, format=fmt, subtype=subtype)
        return path
    import av

    muxer, default_codec = PYAV_FORMATS.get(ext, (fmt, None))
    with av.open(str(path), "w", format=muxer or fmt) as out:
        stream = out.add_stream(codec or default_codec, rate=rate, layout=_LAYOUTS[x.shape[1]])
        ctx = stream.codec_context
        if not ctx.bit_rate and not ctx.name.startswith("pcm_"):
            ctx.bit_rate = 128_000  # wmav2 has no default
        ctx.open()
        step = ctx.frame_size or 1024
        planar = np.ascontiguousarray(x.T)
        fmt_name = ctx.format.name
        for start in range(0, len(x), step):
            part = planar[:, start:start + step]
            if fmt_name == "flt":  # packed float
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(part.T).reshape(1, -1), format="flt",
                                                   layout=_LAYOUTS[x.shape[1]])
            elif fmt_name == "s16":
                frame = av.AudioFrame.from_ndarray((np.clip(part.T, -1, 1) * 32767).astype(np.int16).reshape(1, -1),
                                                   format="s16", layout=_LAYOUTS[x.shape[1]])
            else:
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(part), format="fltp", layout=_LAYOUTS[x.shape[1]])
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def write_tone(path: Path, seconds: float = 1.0, rate: int = 16000, channels: int = 1, freq: float = 440.0,
               fmt: str | None = None, subtype: str | None = None, amplitude: float = 0.5) -> Path:
    """A ``freq`` Hz sine in every channel of a ``channels``-channel file (:func:`write_sound` formats)."""
    x = tone(seconds, rate, freq, amplitude)
    return write_sound(path, np.repeat(x[:, None], channels, axis=1), rate, fmt, subtype)


def recipe_from_extractor(fe: Any) -> dict[str, Any]:
    """The audio recipe (:func:`mmsearch.ingest.audio.windows`) for a transformers ``ClapFeatureExtractor``:
    its mel matrix for its truncation mode (``mel_filters`` for fusion, else ``mel_filters_slaney``)."""
    fusion = fe.truncation == "fusion"
    return {"kind": "clap", "sampling_rate": int(fe.sampling_rate), "window": int(fe.nb_max_samples),
            "hop": int(fe.nb_max_samples), "n_fft": int(fe.fft_window_size), "hop_length": int(fe.hop_length),
            "padding": fe.padding, "channels": 4 if fusion else 1,
            "mel": np.asarray(fe.mel_filters if fusion else fe.mel_filters_slaney, dtype=np.float64),
            "mel_floor": 1e-10}


def small_extractor(**kw: Any) -> Any:
    """The small CLAP feature extractor the audio tests use (16 kHz, 2 s windows, 64 mels); ``kw`` overrides."""
    from transformers import ClapFeatureExtractor

    cfg = dict(feature_size=64, sampling_rate=16000, hop_length=160, max_length_s=2, fft_window_size=512,
               truncation="rand_trunc", padding="repeatpad", frequency_min=50, frequency_max=8000)
    return ClapFeatureExtractor(**{**cfg, **kw})


# ---- what a command imports ---------------------------------------------------------------------------
HEAVY = ("torch", "open_clip", "torchvision", "transformers")


def cli_modules(*argv: str) -> tuple[int, list[str]]:
    """Run ``mmsearch ARGV`` in a fresh interpreter: its exit code and which :data:`HEAVY` modules it imported."""
    import sys

    code = ("import sys\nfrom mmsearch.cli import main\nsys.argv = ['mmsearch', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    rc = e.code or 0\nelse:\n    rc = 0\n"
            f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules), rc)")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("HEAVY")]
    assert line, out.stdout + out.stderr
    heavy, rc = line[-1].removeprefix("HEAVY ").rsplit(" ", 1)
    return int(rc), eval(heavy)


# ---- CLAP models ---------------------------------------------------------------------------------------
TINY_CLAP_WORDS = ("a rising whistle falling tone beep pulse noise white pink brown chord major minor "
                   "plucked string organ high low sound of dog barking rain the at and with")


def tiny_tokenizer(folder: Path | None = None):
    """A RoBERTa-style byte-level BPE over a few sound words, built with ``tokenizers`` (no hub)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TINY_CLAP_WORDS] * 4, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return RobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                pad_token="<pad>", mask_token="<mask>", model_max_length=30)


def make_tiny_clap(folder: Path, seed: int = 0, *, rate: int = 16000, seconds: int = 1,
                   fusion: bool = False) -> Path:
    """A seeded random small ClapModel + ClapProcessor saved in ``folder`` (the local-dir layout)."""
    import torch
    from transformers import (ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor,
                              ClapTextConfig)

    tokenizer = tiny_tokenizer(folder)
    fe = ClapFeatureExtractor(feature_size=64, sampling_rate=rate, hop_length=rate // 100, max_length_s=seconds,
                              fft_window_size=512, truncation="fusion" if fusion else "rand_trunc",
                              padding="repeatpad", frequency_min=50, frequency_max=rate // 2)
    audio = ClapAudioConfig(spec_size=128, num_mel_bins=64, patch_embeds_hidden_size=16, hidden_size=64,
                            depths=[1, 1, 1], num_attention_heads=[1, 2, 4], window_size=8, enable_fusion=fusion,
                            patch_size=4, patch_stride=[4, 4])
    text = ClapTextConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=34, pad_token_id=1, bos_token_id=0,
                          eos_token_id=2)
    torch.manual_seed(seed)
    model = ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=32)).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    ClapProcessor(feature_extractor=fe, tokenizer=tokenizer).save_pretrained(folder)
    return folder


class ShiftedEncoder:
    """A real encoder whose vectors all share one extra component: every raw cosine in its space is
    pushed towards ``c²/(1+c²)`` (a model whose "unrelated" is 0.9), ordering within the space kept.
    Registered as ``shifted:<inner spec>`` through the real registry (see :func:`shifted_encoders`)."""

    def __init__(self, inner, c: float = 3.0) -> None:
        import dataclasses

        self.inner, self.c = inner, c
        self.batch_size = getattr(inner, "batch_size", 64)
        self.space = dataclasses.replace(inner.space, spec="shifted:" + inner.space.spec,
                                         family="shifted-" + inner.space.family, dim=inner.space.dim + 1)

    def _shift(self, x):
        import numpy as np

        x = np.concatenate([x, np.full((len(x), 1), self.c, np.float32)], axis=1)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def __getattr__(self, name):  # recipes and anything else: the inner encoder's
        return getattr(self.inner, name)

    def embed_texts(self, texts):
        return self._shift(self.inner.embed_texts(texts))

    def embed_image_batch(self, pixels):
        return self._shift(self.inner.embed_image_batch(pixels))

    def embed_audio_batch(self, features):
        return self._shift(self.inner.embed_audio_batch(features))


class LikeEncoder:
    """A real CLAP encoder whose text tower answers ``like:<path>`` with a vector at cosine ``0.75`` to
    that sound's (a caption that fits one sound, without training a model). Spec ``like:<inner spec>``."""

    def __init__(self, inner, cos: float = 0.75) -> None:
        import dataclasses

        self.inner, self.cos = inner, cos
        self.batch_size = getattr(inner, "batch_size", 64)
        self.space = dataclasses.replace(inner.space, spec="like:" + inner.space.spec, family="like-" + inner.space.family)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed_texts(self, texts):
        import numpy as np

        from mmsearch.query.encode import query_sound

        out = self.inner.embed_texts(list(texts))
        for i, t in enumerate(texts):
            if t.startswith("like:"):
                v = self.inner.embed_audio_batch(query_sound(t[5:], self.inner.audio_recipe())).mean(axis=0)
                v /= np.linalg.norm(v)
                w = np.random.default_rng(len(t)).standard_normal(len(v)).astype(np.float32)
                w -= (w @ v) * v
                w /= np.linalg.norm(w)
                out[i] = self.cos * v + np.sqrt(1 - self.cos**2) * w
        return out


def wrapping(prefix: str, cls):
    """A registry factory: ``PREFIX:<inner spec>`` loads the inner encoder wrapped in ``cls``."""
    from mmsearch.encoders.registry import load_encoder

    def factory(spec, rest, **kw):
        return cls(load_encoder(rest, **kw))

    return factory


# ---- multilingual and SigLIP-style open_clip models (Hugging Face tokenizers, built here) -------------------
#: A caption in several scripts, twice over (a tokenizer trained on it reads every script in it).
MULTILINGUAL_CORPUS = (
    "a red bicycle on the street", "a photo of a cat", "a blue square and a green circle",
    "红色的自行车在街上", "一只猫的照片", "蓝色的正方形和绿色的圆", "красный велосипед на улице", "фото кошки",
    "あかいじてんしゃ、ねこのしゃしん、カメラ", "거리의 빨간 자전거, 고양이 사진", "κόκκινο ποδήλατο στο δρόμο",
    "دراجة حمراء في الشارع، صورة قطة", "सड़क पर लाल साइकिल, बिल्ली की तस्वीर", "der rote Fahrrad auf der Straße",
    "κόκκινο ποδήλατο στο δρόμο, φωτογραφία γάτας", "אופניים אדומים ברחוב, תמונה של חתול", "จักรยานสีแดงบนถนน รูปแมว",
    "红色的自行车在街上，一只猫的照片", "拍照",
)
ENGLISH_CORPUS = MULTILINGUAL_CORPUS[:3] + ("the dog's toy", "an old man with a hat", "numbers and letters")


def hf_tokenizer(folder: Path, corpus: tuple[str, ...] = MULTILINGUAL_CORPUS, *, style: str = "xlm-roberta") -> Any:
    """A small sentencepiece-style tokenizer trained here with ``tokenizers`` on ``corpus`` and saved in
    ``folder`` as ``save_pretrained`` writes it (``tokenizer.json`` + ``tokenizer_config.json``).

    ``style="xlm-roberta"``: a Unigram with ``<s> … </s>`` and ``<pad>`` = 1 (XLM-RoBERTa's layout);
    ``style="gemma"``: a BPE with byte fallback, ``<pad>`` = 0 and ``<eos>`` appended (SigLIP 2's Gemma
    layout: a letter outside its vocabulary becomes ``<0xNN>`` byte pieces)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    if style == "xlm-roberta":
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        tok = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(vocab_size=600, special_tokens=specials, unk_token="<unk>",
                                          show_progress=False)
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        tok.train_from_iterator(list(corpus) * 4, trainer)
        tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>",
                                                           special_tokens=[("<s>", 0), ("</s>", 2)])
        names = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                     cls_token="<s>", sep_token="</s>")
    elif style == "gemma":
        specials = ["<pad>", "<eos>", "<bos>", "<unk>"] + [f"<0x{b:02X}>" for b in range(256)]
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
        trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=specials, show_progress=False)
        tok.normalizer = normalizers.Replace(" ", "▁")
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
        tok.train_from_iterator(list(corpus) * 4, trainer)
        tok.post_processor = processors.TemplateProcessing(single="$A <eos>", special_tokens=[("<eos>", 1)])
        names = dict(bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>")
    else:
        raise ValueError(f"unknown tokenizer style {style!r}")
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, **names)
    hf.save_pretrained(folder)
    return hf


def _tiny_vision_cfg() -> dict:
    return {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8}


def make_tiny_multilingual_clip(folder: Path, seed: int = 0, corpus: tuple[str, ...] = MULTILINGUAL_CORPUS) -> Path:
    """A seeded random multilingual CLIP laid out as a downloaded copy of
    ``xlm-roberta-base-ViT-B-32:laion5b_s13b_b90k`` is: ``open_clip_config.json`` naming the text model
    ``xlm-roberta-base`` (as the real one does), the weights, and inside the folder the text model's
    ``config.json`` (a tiny transformers XLM-RoBERTa) and its tokenizer (:func:`hf_tokenizer`)."""
    import open_clip
    import torch
    from safetensors.torch import save_file
    from transformers import XLMRobertaConfig

    tokenizer = hf_tokenizer(folder, corpus, style="xlm-roberta")
    XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=80, pad_token_id=1, bos_token_id=0,
                     eos_token_id=2).save_pretrained(folder)
    text = {"hf_model_name": "xlm-roberta-base", "hf_tokenizer_name": "xlm-roberta-base",
            "hf_pooler_type": "mean_pooler"}
    cfg = {"embed_dim": 32, "vision_cfg": _tiny_vision_cfg(), "text_cfg": text}
    torch.manual_seed(seed)
    model = open_clip.CustomTextCLIP(embed_dim=32, vision_cfg=cfg["vision_cfg"],
                                     text_cfg={**text, "hf_model_name": str(folder), "hf_model_pretrained": False})
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


def siglip_cfg(vocab_size: int, tokenizer_name: str = "timm/ViT-B-16-SigLIP2") -> dict:
    """A tiny open_clip SigLIP 2 config: a timm ViT (timm's ``test_vit3``, attention-pool head) and
    open_clip's own text transformer (no causal mask, last-token pool) over a Hugging Face tokenizer."""
    return {
        "embed_dim": 96, "init_logit_bias": -10, "custom_text": True,
        "vision_cfg": {"image_size": 160, "timm_model_name": "test_vit3", "timm_model_pretrained": False,
                       "timm_pool": "map", "timm_proj": "none"},
        "text_cfg": {"context_length": 16, "vocab_size": vocab_size, "hf_tokenizer_name": tokenizer_name,
                     "tokenizer_kwargs": {"clean": "canonicalize"}, "width": 32, "heads": 2, "layers": 1,
                     "no_causal_mask": True, "proj_bias": True, "pool_type": "last", "norm_kwargs": {"eps": 1e-6}},
    }


def make_tiny_siglip(folder: Path, seed: int = 0, corpus: tuple[str, ...] = MULTILINGUAL_CORPUS,
                     tokenizer_name: str = "timm/ViT-B-16-SigLIP2") -> Path:
    """A seeded random SigLIP 2-style model in the layout of a hub snapshot of ``timm/ViT-B-16-SigLIP2``:
    ``open_clip_config.json``, ``open_clip_model.safetensors`` and the (Gemma-style) tokenizer's files."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    tokenizer = hf_tokenizer(folder, corpus, style="gemma")
    cfg = siglip_cfg(len(tokenizer), tokenizer_name)
    torch.manual_seed(seed)
    model = open_clip.CustomTextCLIP(**{k: v for k, v in cfg.items() if k != "custom_text"})
    (folder / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": cfg, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                                             "interpolation": "bicubic", "resize_mode": "squash"}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


def fake_hub_cache(cache: Path, repo: str, files: dict[str, Path | bytes], commit: str = "0" * 40,
                   absent: tuple[str, ...] = ()) -> Path:
    """Lay ``files`` (name → source file or bytes) out as huggingface_hub caches a download of hub repo
    ``repo``: ``models--ORG--NAME/blobs/…``, ``snapshots/COMMIT/NAME`` links to them, ``refs/main``; and
    ``.no_exist/COMMIT/NAME`` for each of ``absent``, the record an online run leaves of a file it looked
    for and the repo does not have (transformers' tokenizer loader looks for ``config.json``)."""
    import hashlib

    base = cache / ("models--" + repo.replace("/", "--"))
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs" / "main").write_text(commit)
    for name in (n for n in absent if n not in files):
        (base / ".no_exist" / commit).mkdir(parents=True, exist_ok=True)
        (base / ".no_exist" / commit / name).touch()
    snap = base / "snapshots" / commit
    for name, src in files.items():
        data = src if isinstance(src, bytes) else Path(src).read_bytes()
        blob = base / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return base


# ---- photo metadata and filters (tests/query/test_filters.py, tests/ingest/test_exif.py) --------------------
def metadata_store(root: Path, items: list[tuple[str, str, dict[str, Any]]], dim: int = 16) -> Path:
    """A store written straight through the store's write API (no model, no files): one space
    ``test:filters`` (images and sounds, ``dim``-d) and per item ``(uri, modality, fields)``. Fields:
    ``width height size mtime`` (ns) ``duration``, the EXIF columns (``taken_at camera_make camera_model
    gps_lat gps_lon orientation taken_offset``), ``sha`` (default: from the uri), ``vector`` (default: seeded random)."""
    from mmsearch.encoders.base import SpaceInfo
    from mmsearch.store.store import Store, Upsert
    from mmsearch.store.write import META_COLUMNS

    store = Store(root, create=True)
    try:
        space = store.ensure_space(SpaceInfo(spec="test:filters", family="test", weights="w", dim=dim,
                                             modalities=("image", "audio")))
        rng = np.random.default_rng(0)
        ups = []
        for uri, modality, f in items:
            vec = f.get("vector")
            if vec is None:
                vec = rng.normal(size=dim).astype(np.float32)
                vec /= np.linalg.norm(vec)
            ups.append(Upsert(uri, "file", int(f.get("size", 1)), int(f.get("mtime", 0)), f.get("sha", "sha:" + uri),
                              modality, f.get("width"), f.get("height"), vector=vec, duration=f.get("duration"),
                              exif={c: f.get(c) for c in META_COLUMNS} if modality == "image" else None))
        store.apply(ups, space.id)
    finally:
        store.close()
    return root


def write_exif_jpeg(path: Path, *, make: str | None = None, model: str | None = None, taken: str | None = None,
                    offset: str | None = None, gps: tuple[float, float] | None = None, orientation: int | None = None,
                    seed: int = 0, size: tuple[int, int] = (48, 32), raw_exif: bytes | None = None) -> Path:
    """A random-pattern JPEG with EXIF written by Pillow: ``taken`` as EXIF writes it ("2023:06:15 10:00:00"),
    ``gps`` (lat, lon) in signed degrees; ``raw_exif``: these bytes as the EXIF block instead (a damaged one)."""
    from PIL import Image

    ex = Image.Exif()
    if make is not None:
        ex[0x010F] = make
    if model is not None:
        ex[0x0110] = model
    if orientation is not None:
        ex[0x0112] = orientation
    if taken is not None:
        ex.get_ifd(0x8769)[0x9003] = taken
    if offset is not None:
        ex.get_ifd(0x8769)[0x9011] = offset
    if gps is not None:
        g = ex.get_ifd(0x8825)
        for (ref_tag, tag), value, refs in (((1, 2), gps[0], "NS"), ((3, 4), gps[1], "EW")):
            d = abs(value)
            deg, minutes = int(d), int((d - int(d)) * 60)
            seconds = round(((d - deg) * 60 - minutes) * 60, 4)
            g[ref_tag], g[tag] = refs[value < 0], (float(deg), float(minutes), seconds)
    arr = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, "JPEG", exif=raw_exif if raw_exif is not None else ex.tobytes())
    return path


# ---- a served store (server tests: contract, browser, load) ---------------------------------------------
SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def samples_store(root: Path, images: int = 12, sounds: int = 3) -> tuple[Path, list[Path], list[Path]]:
    """(store, images, sounds): copies of the first bundled samples (samples/shapes, samples/sounds) indexed
    into ``root/store`` with the built-in models (builtin:shapes and, when ``sounds``, builtin:tones)."""
    import shutil

    from mmsearch import Engine

    data = root / "data"
    (data / "img").mkdir(parents=True)
    (data / "snd").mkdir(parents=True)
    imgs = [Path(shutil.copy(p, data / "img")) for p in sorted((SAMPLES / "shapes" / "images").iterdir())[:images]]
    snds = [Path(shutil.copy(p, data / "snd")) for p in sorted((SAMPLES / "sounds").glob("*.wav"))[:sounds]]
    models = ["builtin:shapes"] + (["builtin:tones"] if sounds else [])
    with Engine.open(root / "store", model=models, device="cpu", workers=0) as eng:
        report = eng.index([data])
    assert report.ok, report
    return root / "store", imgs, snds


def videos_store(root: Path) -> tuple[Path, dict[str, Path], dict[str, dict[str, Any]]]:
    """(store, videos by name, truth by name): copies of the bundled sample videos (samples/videos:
    holiday.mp4, garden.webm, phone.mov) indexed into ``root/store`` with builtin:shapes and builtin:tones;
    the truth is samples/videos/truth.json's entry (shots and sounds with their times)."""
    import shutil

    from mmsearch import Engine

    data = root / "videos"
    data.mkdir(parents=True)
    truth = {t["file"]: t for t in json.loads((SAMPLES / "videos" / "truth.json").read_text())}
    videos = {name: Path(shutil.copy(SAMPLES / "videos" / name, data)) for name in truth}
    with Engine.open(root / "store", model=["builtin:shapes", "builtin:tones"], device="cpu", workers=0) as eng:
        report = eng.index([data])
    assert report.ok, report
    return root / "store", videos, truth


def shown_colour(image: Any) -> str:
    """The shapes-world colour nearest the middle of a picture (where a sample video's centred shape is)."""
    from mmsearch.world.shapes import COLOUR_RGB

    arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    h, w = arr.shape[:2]
    mid = arr[h // 2 - max(1, h // 16): h // 2 + max(1, h // 16), w // 2 - max(1, w // 16): w // 2 + max(1, w // 16)]
    rgb = mid.reshape(-1, 3).mean(0)
    return min(COLOUR_RGB, key=lambda c: float(np.sum((np.array(COLOUR_RGB[c]) - rgb) ** 2)))


# A small DOM for node (the page's script run without a browser): elements record what is made; any HTML
# sink throws. Prepend to the page's <script> (see page_script); ``made`` lists every element created.
PAGE_DOM = r"""
const made = [];
class Text { constructor(t) { this.nodeName = "#text"; this.textContent = String(t); } }
class El {
  constructor(tag) { this.tagName = tag.toUpperCase(); this.children = []; this.own = ""; this.className = "";
    this.value = ""; this.readyState = 0; this.listeners = {}; made.push(this);
    const el = this;
    this.classList = { add(c) { el.className = (el.className + " " + c).trim(); }, remove() {},
      toggle(c, on) { const cs = el.className.split(" ").filter((x) => x && x !== c); if (on) cs.push(c);
                      el.className = cs.join(" "); } }; }
  appendChild(c) { this.children.push(c); return c; }
  set textContent(v) { this.children = []; this.own = String(v); }
  get textContent() { return this.own + this.children.map((c) => c.textContent).join(""); }
  set innerHTML(v) { throw new Error("innerHTML used"); }
  set outerHTML(v) { throw new Error("outerHTML used"); }
  insertAdjacentHTML() { throw new Error("insertAdjacentHTML used"); }
  addEventListener(type, f) { (this.listeners[type] = this.listeners[type] || []).push(f); }
  play() { this.played = true; return Promise.resolve(); }
}
const ids = {};
global.document = {
  getElementById: (id) => ids[id] || (ids[id] = new El("div")),
  createElement: (tag) => new El(tag),
  createTextNode: (t) => new Text(t),
  write() { throw new Error("document.write used"); },
  body: new El("body"),
};
global.location = { search: "" };
global.fetch = () => new Promise(() => {});
"""


def page_script(html: str) -> str:
    """The search page's script (between <script> and </script>), to run in node after PAGE_DOM."""
    return html.split("<script>", 1)[1].split("</script>", 1)[0]


@contextmanager
def serving(store: Path, *args: str, log: Path, host: str = "127.0.0.1", timeout: float = 90) -> Iterator[str]:
    """A real `mmsearch serve --store STORE --host HOST ARGS` on a free port; yields its loopback base URL
    (``http://127.0.0.1:PORT``) once it answers; stops it (SIGTERM) afterwards."""
    import sys
    import time
    import urllib.error
    import urllib.request

    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = open(log, "w+")
    proc = subprocess.Popen([sys.executable, "-m", "mmsearch", "serve", "--store", str(store), "--host", host,
                             "--port", str(port), *args], stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                out.seek(0)
                raise AssertionError(f"the server did not come up: {out.read()}")
            try:
                urllib.request.urlopen(f"{base}/api/stats", timeout=5).close()
                break
            except urllib.error.HTTPError:  # it answers (401 with a token): it is up
                break
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        yield base
    finally:
        stop_process(proc)
        out.close()


def write_video(path: Path, scenes: list[tuple[float, Any]], *, fps: int = 10, size: tuple[int, int] = (96, 64),
                codec: str = "libx264", pix_fmt: str = "yuv420p", gop: int | None = None,
                rotate_cw: int = 0, times: list[float] | None = None, sound: tuple[np.ndarray, int] | None = None) -> Path:
    """A video of ``scenes``: (seconds, an RGB triple or an (H, W, 3) uint8 array) each, at ``fps`` (PyAV,
    through :func:`mmsearch.world.videos.encode`; shapes-world videos with ground truth: ``write_video`` there).

    ``gop``: frames between keyframes; ``times``: explicit frame times (variable frame rate; one scene
    frame per time, the scene by where the time falls); ``rotate_cw``: display rotation written into an
    MP4/MOV track header (90 = a phone held upright; the frames are stored as given); ``sound``: (mono
    float32 samples, rate) as AAC.
    """
    from mmsearch.world.videos import encode

    w, h = size
    frames = [(seconds, value if isinstance(value, np.ndarray)
               else np.broadcast_to(np.asarray(value, np.uint8), (h, w, 3)).copy()) for seconds, value in scenes]
    return encode(path, frames, fps=fps, codec=codec, pix_fmt=pix_fmt, gop=gop, times=times, sound=sound,
                  audio_codec="aac", rotate_cw=rotate_cw)


#: Revision 0001's ``errors`` table (one record per path), as :func:`make_revision_0001` puts it back.
_ERRORS_0001 = ("CREATE TABLE errors_0001 (id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, uri TEXT NOT NULL, "
                "reason TEXT NOT NULL, gen INTEGER NOT NULL, at FLOAT NOT NULL, UNIQUE (uri));"
                "INSERT INTO errors_0001 (id, uri, reason, gen, at) SELECT MIN(id), uri, reason, gen, at FROM errors "
                "GROUP BY uri;"
                "DROP TABLE errors; ALTER TABLE errors_0001 RENAME TO errors;")


def make_revision_0001(db: Path) -> None:
    """Turn a store's SQLite file into one the release of revision 0001 (schema 3) made: one error per path."""
    _script(db, _ERRORS_0001 + "UPDATE alembic_version SET version_num='0001';"
                               "UPDATE meta SET value='3' WHERE key='schema_version';")


def _script(db: Path, sql: str) -> None:
    import sqlite3

    con = sqlite3.connect(db)
    try:
        con.executescript(sql)
        con.commit()
    finally:
        con.close()


def make_pre_alembic(db: Path, version: int) -> None:
    """Turn a store's SQLite file into one an older mmsearch made at schema ``version`` (1 to 3): no Alembic
    record, and without what later versions added (3: photo metadata; 2: sounds' columns and segments)."""
    from mmsearch.store.migrate import V3_COLUMNS

    steps = [_ERRORS_0001, "DROP TABLE alembic_version;"]
    if version < 3:
        steps += [f"ALTER TABLE contents DROP COLUMN {c};" for c, _ in V3_COLUMNS]
    if version < 2:
        steps += ["DROP TABLE segments;"] + [f"ALTER TABLE contents DROP COLUMN {c};"
                                             for c in ("duration", "sample_rate", "channels", "info")]
    steps.append(f"UPDATE meta SET value='{version}' WHERE key='schema_version';")
    _script(db, "".join(steps))


class Postgres:
    """A throwaway PostgreSQL cluster (``initdb`` + ``pg_ctl`` of Debian's ``postgresql``) in a new folder
    under the system's temp folder (short: it holds the Unix socket; reachable by the ``postgres`` user when
    this runs as root), listening only on that socket; :meth:`database` gives a fresh database's URL."""

    def __init__(self) -> None:
        import getpass
        import glob
        import shutil
        import tempfile

        bins = [os.path.dirname(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1:]]
        found = shutil.which("initdb") or (os.path.join(bins[0], "initdb") if bins else None)
        if found is None:
            raise RuntimeError("PostgreSQL server programs (initdb, pg_ctl) not found: apt-get install postgresql")
        self.bin = os.path.dirname(found)
        folder = Path(tempfile.mkdtemp(prefix="mmsearch-pg-"))
        self.folder, self.data, self.port = folder, folder / "data", 54000 + os.getpid() % 1000
        # the server refuses to run as root: then it runs as Debian's `postgres` user
        self.run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.user = "mm" if self.run_as else getpass.getuser()
        if self.run_as:
            shutil.chown(folder, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.user, "-E", "UTF8", "--locale=C.UTF-8")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(folder / "log"), "-w", "-t", "60", "-o",
                  f"-k {folder} -p {self.port} -c listen_addresses='' -c fsync=off", "start")
        self._n = 0

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([*self.run_as, os.path.join(self.bin, tool), *args], capture_output=True, text=True,
                              timeout=120, cwd=self.folder)
        if done.returncode:
            log = (self.folder / "log").read_text() if (self.folder / "log").exists() else ""
            raise RuntimeError(f"{tool} failed: {(done.stderr or done.stdout).strip()[-500:]} {log[-500:]}")

    def url(self, name: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@/{name}?host={self.folder}&port={self.port}"

    def database(self) -> str:
        """A new empty database's URL."""
        import sqlalchemy

        self._n += 1
        name = f"t{self._n}"
        engine = sqlalchemy.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        engine.dispose()
        return self.url(name)

    def stop(self) -> None:
        import shutil

        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


# ---- vectors for index tests ------------------------------------------------------------------
def clustered(n, dim=32, seed=0):
    """Embedding-like data: points around a few hundred centres (uniform noise makes ANN meaningless)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(n // 20, 4), dim))
    x = centres[rng.integers(0, len(centres), n)] + 0.3 * rng.normal(size=(n, dim))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_top(q, x, ids, k):
    return [set(ids[r]) for r in np.argsort(-(q @ x.T), axis=1)[:, :k]]


def recall(got, truth):
    """Share of each true top-k set found in the rows of ``got`` (-1 padding ignored), averaged."""
    return float(np.mean([len(set(g[g >= 0]) & t) / len(t) for g, t in zip(got, truth)]))


def add_vectors(store, space, x, start: int = 0) -> list[str]:
    """Store the rows of ``x`` as image contents ``/v/<start + i>.png`` in one write; returns their paths."""
    from mmsearch.store.store import Upsert

    uris = [f"/v/{i}.png" for i in range(start, start + len(x))]
    store.apply([Upsert(u, "file", 1, 1, f"{i:064x}", "image", vector=v)
                 for i, u, v in zip(range(start, start + len(x)), uris, x)], space.id)
    return uris
