"""Procedural "tones world": a reproducible synthetic sound/caption domain.

The audio counterpart of :mod:`mmsearch.world.shapes`.  Every sound is a short mono
clip (16 kHz, float32, 0.5-2 s, most 1.2-2 s) of one of a fixed set of classes (pure
tones at named pitches, chords, rhythms, sweeps, coloured noise, plucked and sustained
timbres, a few combinations), drawn with random variation inside the class (pitch
jitter, loudness, onset, duration, a faint noise floor) and a templated caption.  It
trains and tests the small built-in ``builtin:tones`` CLAP model
(:mod:`mmsearch.world.train_tones`).  Only numpy is needed to generate sounds;
:func:`write_samples` also needs ``soundfile``.

API::

    from mmsearch.world import tones as T
    T.SAMPLE_RATE                 # 16000
    T.CLASSES                     # [ToneClass(name='tone-low', prompt='a low pure tone', ...), ...]
    T.class_prompts()             # [('tone-low', 'a low pure tone'), ...] in CLASSES order
    T.class_captions('sweep-up')  # every caption variant of a class (phrasings x templates)
    T.caption_corpus()            # every caption of every class (what the tokenizer is trained on)
    sounds = T.generate(seed=0, n=8)            # classes drawn at random
    sounds = T.generate_class('sweep-up', 0, 4) # one class only
    s = sounds[0]
    s.samples        # np.float32, mono, in [-1, 1], at s.sample_rate (= SAMPLE_RATE)
    s.cls            # class name, e.g. 'sweep-up'
    s.caption        # one templated caption, e.g. 'the sound of a rising whistle'
    s.duration       # seconds
    T.write_samples('samples/sounds')           # .wav/.flac/.ogg files + captions.csv

Generation is deterministic: sound ``i`` of ``generate(seed, n)`` depends only on
``(seed, i)`` (so ``generate(seed, 10)[:5] == generate(seed, 5)``) and sound ``i`` of
``generate_class(name, seed, n)`` only on ``(name, seed, i)``; other seeds give fresh
draws.  Command line::

    python -m mmsearch.world.tones                          # list the classes
    python -m mmsearch.world.tones --samples samples/sounds # write the bundled demo sounds
"""
from __future__ import annotations

import argparse
import csv
import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmsearch.world.synth import A4, SAMPLE_RATE, synth  # noqa: F401  (A4, SAMPLE_RATE: part of this API)

__all__ = [
    "SAMPLE_RATE",
    "MIN_DURATION",
    "MAX_DURATION",
    "ToneClass",
    "Sound",
    "CLASSES",
    "CLASS_NAMES",
    "TEMPLATES",
    "SAMPLE_CLASSES",
    "class_prompts",
    "class_captions",
    "caption_corpus",
    "get_class",
    "generate",
    "generate_one",
    "generate_class",
    "write_samples",
]

MIN_DURATION = 0.5
MAX_DURATION = 2.0
# Most sounds are longer than 1 s: CLAP's feature extractor ("repeatpad") tiles a clip
# shorter than half its 2 s window, which would turn e.g. one tone into pulses.
SHORT_RATE = 0.2      # fraction of sounds drawn in [MIN_DURATION, 1.2) s


@dataclass(frozen=True)
class ToneClass:
    """One sound class: a slug ``name``, the canonical ``prompt`` and caption phrasings."""

    name: str
    prompt: str
    phrasings: tuple[str, ...]
    group: str = ""          # coarse family: tone, chord, rhythm, sweep, noise, timbre, mix

    @property
    def descriptions(self) -> tuple[str, ...]:
        """All phrasings, the canonical prompt first."""
        return (self.prompt,) + tuple(p for p in self.phrasings if p != self.prompt)


@dataclass
class Sound:
    samples: np.ndarray      # float32, mono, in [-1, 1]
    cls: str
    caption: str
    sample_rate: int = SAMPLE_RATE
    seed: int = 0
    index: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    @property
    def prompt(self) -> str:
        """The canonical caption of the sound's class."""
        return get_class(self.cls).prompt


# --------------------------------------------------------------------------- classes

CLASSES: list[ToneClass] = [
    ToneClass("tone-low", "a low pure tone", (
        "a low pure tone", "a low sine tone", "a deep pure tone", "a low steady tone",
        "a low sine wave", "a deep humming sine wave"), "tone"),
    ToneClass("tone-a4", "a pure tone at A4", (
        "a pure tone at A4", "a sine tone at 440 hertz", "an A4 sine wave",
        "a pure tone at concert pitch", "a tuning tone at A4", "a 440 Hz tone"), "tone"),
    ToneClass("tone-a5", "a pure tone at A5", (
        "a pure tone at A5", "a sine tone at 880 hertz", "an A5 sine wave",
        "a sine tone at A5", "an 880 Hz tone"), "tone"),
    ToneClass("tone-high", "a high pure tone", (
        "a high pure tone", "a high sine tone", "a high pitched steady tone",
        "a shrill pure tone", "a high sine wave", "a piercing high tone"), "tone"),
    ToneClass("chord-major", "a major chord", (
        "a major chord", "a bright major triad", "a happy sounding chord",
        "three notes forming a major chord", "a major triad"), "chord"),
    ToneClass("chord-minor", "a minor chord", (
        "a minor chord", "a dark minor triad", "a sad sounding chord",
        "three notes forming a minor chord", "a minor triad"), "chord"),
    ToneClass("beeps-fast", "fast beeps", (
        "fast beeps", "rapid beeping", "quick short beeps", "a fast series of beeps",
        "beep beep beep quickly", "rapid electronic beeps"), "rhythm"),
    ToneClass("pulses-slow", "slow pulses", (
        "slow pulses", "slow beeps", "a slow pulsing tone", "long beeps with pauses",
        "a tone pulsing slowly", "slow regular pulses"), "rhythm"),
    ToneClass("sweep-up", "a rising whistle", (
        "a rising whistle", "a rising sweep", "a rising tone", "an upward sweep",
        "a whistle going up", "a pitch sweeping upward", "a rising chirp",
        "a tone sliding up in pitch"), "sweep"),
    ToneClass("sweep-down", "a falling whistle", (
        "a falling whistle", "a falling sweep", "a falling tone", "a downward sweep",
        "a whistle going down", "a pitch sweeping downward", "a falling chirp",
        "a tone sliding down in pitch"), "sweep"),
    ToneClass("siren", "a wailing siren", (
        "a wailing siren", "a siren", "a siren going up and down", "an alarm siren",
        "a pitch wobbling up and down", "a warbling siren"), "sweep"),
    ToneClass("noise-white", "white noise", (
        "white noise", "hissing white noise", "static", "a steady hiss",
        "broadband white noise", "radio static"), "noise"),
    ToneClass("noise-pink", "pink noise", (
        "pink noise", "soft pink noise", "a rushing sound like a waterfall",
        "steady pink noise", "a soft even rush"), "noise"),
    ToneClass("noise-brown", "brown noise", (
        "brown noise", "a deep rumbling noise", "a low rumble", "red noise",
        "a muffled roar", "a rumble like distant thunder"), "noise"),
    ToneClass("pluck", "a plucked string", (
        "a plucked string", "a plucked guitar note", "a harp note", "a pizzicato note",
        "a string being plucked", "a short plucked note that fades"), "timbre"),
    ToneClass("organ", "a sustained organ tone", (
        "a sustained organ tone", "an organ note", "a held organ note",
        "a steady organ sound", "a sustained tone with harmonics", "a church organ note"), "timbre"),
    ToneClass("buzz", "a buzzing sawtooth tone", (
        "a buzzing sawtooth tone", "a harsh buzz", "a sawtooth wave", "an electric buzz",
        "a raspy buzzing tone", "a bright buzzing synth"), "timbre"),
    ToneClass("clicks", "a ticking clock", (
        "a ticking clock", "clicks", "regular clicking", "a clock ticking",
        "a metronome ticking", "sharp clicks"), "rhythm"),
    ToneClass("drum", "a drum beat", (
        "a drum beat", "a kick drum", "low thumps", "a bass drum pattern",
        "thumping drums", "a steady drum beat"), "rhythm"),
    ToneClass("beeps-noise", "beeps over noise", (
        "beeps over noise", "beeping with background noise", "fast beeps in static",
        "beeps through hiss", "noisy beeping", "a beeping alarm over noise"), "mix"),
    ToneClass("tone-noise", "a steady tone over noise", (
        "a steady tone over noise", "a tone buried in hiss", "a whine over static",
        "a steady tone with background noise", "a noisy steady tone"), "mix"),
]
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
_BY_NAME: dict[str, ToneClass] = {c.name: c for c in CLASSES}

TEMPLATES: tuple[str, ...] = (
    "{}",
    "the sound of {}",
    "a recording of {}",
    "an audio clip of {}",
    "this is {}",
    "you can hear {}",
)

# Classes of the bundled demo folder (``samples/sounds``), one sound per entry.
SAMPLE_CLASSES: tuple[str, ...] = (
    "sweep-up", "sweep-down", "sweep-up", "noise-white", "beeps-fast", "tone-a4",
    "chord-major", "pluck", "organ", "noise-brown", "siren", "drum", "beeps-noise",
    "chord-minor",
)


def get_class(name: str) -> ToneClass:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown tone class {name!r}; known: {', '.join(CLASS_NAMES)}") from None


def class_prompts() -> list[tuple[str, str]]:
    """``(class name, canonical prompt)`` for every class, in :data:`CLASSES` order."""
    return [(c.name, c.prompt) for c in CLASSES]


def class_captions(name: str) -> list[str]:
    """Every caption variant of a class: each phrasing in each template (prompt first)."""
    c = get_class(name)
    return [t.format(d) for d in c.descriptions for t in TEMPLATES]


def caption_corpus() -> list[str]:
    """All captions of all classes (e.g. to train a tokenizer on)."""
    return [cap for c in CLASSES for cap in class_captions(c.name)]


# --------------------------------------------------------------------------- synthesis

def _render(name: str, rng: random.Random, nprng: np.random.Generator, seed: int,
            index: int, duration: float | None = None) -> Sound:
    cls = get_class(name)
    if duration is None:
        if rng.random() < SHORT_RATE:
            duration = rng.uniform(MIN_DURATION, 1.2)
        else:
            duration = rng.uniform(1.2, MAX_DURATION)
    n = int(round(duration * SAMPLE_RATE))
    onset = rng.uniform(0.0, 0.15) if rng.random() < 0.5 else 0.0
    body_n = max(int(0.3 * SAMPLE_RATE), n - int(onset * SAMPLE_RATE))
    onset_n = n - body_n
    x, meta = synth(name, body_n, rng, nprng)
    peak = np.max(np.abs(x)) + 1e-12
    gain = 10 ** (rng.uniform(-18.0, -1.0) / 20.0)   # peak level -18 .. -1 dBFS
    body = x / peak * gain
    out = np.zeros(n)
    out[onset_n:] = body
    # faint noise floor (-70 .. -45 dBFS) so no two clips are digitally silent alike
    out += nprng.standard_normal(n) * 10 ** (rng.uniform(-70.0, -45.0) / 20.0)
    out = np.clip(out, -1.0, 1.0).astype(np.float32)
    caption = rng.choice(TEMPLATES).format(rng.choice(cls.descriptions))
    meta.update(gain_db=20 * np.log10(gain), onset=onset_n / SAMPLE_RATE, duration=n / SAMPLE_RATE)
    meta = {k: round(float(v), 3) if isinstance(v, (float, np.floating)) else v for k, v in meta.items()}
    return Sound(samples=out, cls=name, caption=caption, sample_rate=SAMPLE_RATE,
                 seed=seed, index=index, meta=meta)


def _seed_key(*parts) -> int:
    return zlib.crc32(":".join(str(p) for p in parts).encode()) & 0xFFFFFFFF


def generate_one(seed: int, index: int, name: str | None = None) -> Sound:
    """Sound ``index`` of ``generate(seed, n)`` (or of ``generate_class(name, seed, n)``)."""
    if name is None:
        rng = random.Random(f"tones:{seed}:{index}")
        name = rng.choice(CLASS_NAMES)
        nprng = np.random.default_rng([seed & 0xFFFFFFFF, index, 11])
    else:
        get_class(name)
        rng = random.Random(f"tones:{name}:{seed}:{index}")
        nprng = np.random.default_rng([seed & 0xFFFFFFFF, index, _seed_key(name), 12])
    return _render(name, rng, nprng, seed, index)


def generate(seed: int, n: int) -> list[Sound]:
    """``n`` sounds of random classes, deterministically from ``seed``."""
    if n < 0:
        raise ValueError("n must be >= 0")
    return [generate_one(seed, i) for i in range(n)]


def generate_class(name: str, seed: int, n: int) -> list[Sound]:
    """``n`` sounds of class ``name``, deterministically from ``(name, seed)``."""
    get_class(name)
    if n < 0:
        raise ValueError("n must be >= 0")
    return [generate_one(seed, i, name) for i in range(n)]


# --------------------------------------------------------------------------- sample files

FORMATS: tuple[tuple[str, str, str], ...] = (   # (extension, soundfile format, subtype)
    ("wav", "WAV", "PCM_16"),
    ("flac", "FLAC", "PCM_16"),
    ("ogg", "OGG", "VORBIS"),
)


def write_samples(out_dir: str | Path, seed: int = 7, per_class: int = 1,
                  classes=None) -> list[dict]:
    """Write demo sound files and ``captions.csv`` (columns ``file,caption,class``).

    ``classes`` lists class names (repeats allowed; default :data:`SAMPLE_CLASSES`);
    each entry gets ``per_class`` sounds.  Files are named ``CLASS_NN.EXT`` and the
    formats rotate through .wav (PCM 16), .flac and .ogg (Vorbis) so that several
    decoders are exercised.  Returns the rows written to ``captions.csv``.
    """
    import soundfile as sf

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(SAMPLE_CLASSES if classes is None else classes)
    for nm in names:
        get_class(nm)
    seen: dict[str, int] = {}
    rows: list[dict] = []
    k = 0
    for nm in names:
        for _ in range(per_class):
            j = seen.get(nm, 0)
            seen[nm] = j + 1
            snd = generate_class(nm, seed, j + 1)[j]
            ext, fmt, subtype = FORMATS[k % len(FORMATS)]
            k += 1
            fname = f"{nm}_{j:02d}.{ext}"
            sf.write(str(out / fname), snd.samples, snd.sample_rate, format=fmt, subtype=subtype)
            rows.append({"file": fname, "caption": snd.caption, "class": nm})
    with open(out / "captions.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["file", "caption", "class"], lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", metavar="DIR", help="write demo sounds + captions.csv to DIR")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--per-class", type=int, default=1)
    ap.add_argument("--classes", help="comma-separated class names (default: the demo set)")
    args = ap.parse_args(argv)
    if not args.samples:
        for c in CLASSES:
            print(f"{c.name:12s} {c.prompt}")
        return 0
    classes = args.classes.split(",") if args.classes else None
    rows = write_samples(args.samples, seed=args.seed, per_class=args.per_class, classes=classes)
    print(f"wrote {len(rows)} sounds and captions.csv to {args.samples}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
