"""The sounds of the tones world (:mod:`mmsearch.world.tones`): one synthesiser per family of classes.

Each takes the class name, a length in samples, the time axis and the two random generators, and
returns the raw waveform (any scale; the caller fades, mixes and normalises) with the parameters it
drew. numpy only.
"""

from __future__ import annotations

import random

import numpy as np

SAMPLE_RATE = 16000
A4 = 440.0


def _t(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / SAMPLE_RATE


def _fade(x: np.ndarray, attack: float = 0.008, release: float = 0.015) -> np.ndarray:
    n = len(x)
    a = min(n // 2, max(1, int(attack * SAMPLE_RATE)))
    r = min(n // 2, max(1, int(release * SAMPLE_RATE)))
    env = np.ones(n)
    env[:a] = np.linspace(0.0, 1.0, a)
    env[n - r:] = np.minimum(env[n - r:], np.linspace(1.0, 0.0, r))
    return x * env


def _sine(freq, n: int, phase: float = 0.0) -> np.ndarray:
    """Sine of constant or per-sample ``freq`` (Hz), ``n`` samples."""
    if np.ndim(freq) == 0:
        return np.sin(2 * np.pi * float(freq) * _t(n) + phase)
    ph = 2 * np.pi * np.cumsum(np.asarray(freq, dtype=np.float64)) / SAMPLE_RATE
    return np.sin(ph + phase)


def _harmonic(f0: float, n: int, amps, rng: random.Random, decays=None) -> np.ndarray:
    """Sum of partials ``k*f0`` (k = 1..len(amps)) below Nyquist, random phases."""
    t = _t(n)
    out = np.zeros(n)
    for k, a in enumerate(amps, start=1):
        f = k * f0
        if f >= 0.45 * SAMPLE_RATE or a == 0:
            continue
        p = np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) * a
        if decays is not None:
            p *= np.exp(-t * decays[k - 1])
        out += p
    return out


def _coloured_noise(nprng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spec = np.fft.rfft(nprng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    f[0] = f[1]
    spec *= f ** (-exponent / 2.0)
    spec[0] = 0.0
    x = np.fft.irfft(spec, n)
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-12)


def _tone_bursts(n: int, rng: random.Random, freq: float, period: float, length: float,
                 start: float = 0.0, jitter: float = 0.0) -> np.ndarray:
    """Sine bursts of ``length`` s every ``period`` s (pulse train of beeps)."""
    out = np.zeros(n)
    pos = start
    blen = max(8, int(length * SAMPLE_RATE))
    burst = _fade(_sine(freq, blen), 0.004, 0.008)
    while True:
        i = int(pos * SAMPLE_RATE)
        if i >= n:
            break
        seg = burst[: n - i]
        out[i:i + len(seg)] += seg
        pos += period * (1.0 + rng.uniform(-jitter, jitter))
    return out


def _semitones(f: float, st: float) -> float:
    return f * 2.0 ** (st / 12.0)


def _cents(rng: random.Random, c: float) -> float:
    return 2.0 ** (rng.uniform(-c, c) / 1200.0)


def synth(name: str, n: int, rng: random.Random, nprng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Raw waveform (any scale) of ``n`` samples for class ``name`` and its parameters."""
    try:
        make = _SYNTHS[name]
    except KeyError:
        raise ValueError(f"unknown tone class {name!r}") from None
    return make(name, n, _t(n), rng, nprng)


def _pure(name: str, n: int, t: np.ndarray, rng: random.Random, nprng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """tone-low, tone-a4, tone-a5, tone-high, tone-noise."""
    meta: dict = {}
    if name == "tone-low":
        f = 2.0 ** rng.uniform(np.log2(90), np.log2(190))
    elif name == "tone-a4":
        f = A4 * _cents(rng, 20)
    elif name == "tone-a5":
        f = 2 * A4 * _cents(rng, 20)
    elif name == "tone-high":
        f = 2.0 ** rng.uniform(np.log2(2200), np.log2(4200))
    else:
        f = 2.0 ** rng.uniform(np.log2(300), np.log2(2000))
    x = _fade(_sine(f, n, rng.uniform(0, 2 * np.pi)), rng.uniform(0.005, 0.05), rng.uniform(0.01, 0.08))
    meta["freq"] = round(f, 2)
    if name == "tone-noise":
        x = x + rng.uniform(0.35, 0.8) * _coloured_noise(nprng, n, rng.choice([0.0, 0.0, 1.0]))
    return x, meta


def _chord(name: str, n: int, t: np.ndarray, rng: random.Random, nprng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """chord-major, chord-minor."""
    meta: dict = {}
    root = 2.0 ** rng.uniform(np.log2(500), np.log2(1000))
    third = 4 if name == "chord-major" else 3
    amps = [1.0, rng.uniform(0.3, 0.6), rng.uniform(0.1, 0.3)]
    x = np.zeros(n)
    for st in (0, third, 7):
        x += _harmonic(_semitones(root, st) * _cents(rng, 6), n, amps, rng)
    if rng.random() < 0.5:  # sometimes a struck chord that decays, else held
        x *= np.exp(-t * rng.uniform(0.5, 1.5))
    meta["root"] = round(root, 2)
    return _fade(x, rng.uniform(0.005, 0.04), rng.uniform(0.02, 0.1)), meta


def _beeps(name: str, n: int, t: np.ndarray, rng: random.Random, nprng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """beeps-fast, beeps-noise."""
    meta: dict = {}
    f = 2.0 ** rng.uniform(np.log2(600), np.log2(2400))
    period = rng.uniform(0.09, 0.16)
    x = _tone_bursts(n, rng, f, period, period * rng.uniform(0.35, 0.6), rng.uniform(0, 0.05))
    meta.update(freq=round(f, 2), period=round(period, 3))
    if name == "beeps-noise":
        x = x + rng.uniform(0.3, 0.7) * _coloured_noise(nprng, n, rng.choice([0.0, 0.0, 1.0]))
    return x, meta


def _pulses(name: str, n: int, t: np.ndarray, rng: random.Random, nprng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """pulses-slow."""
    meta: dict = {}
    f = 2.0 ** rng.uniform(np.log2(300), np.log2(1500))
    period = rng.uniform(0.45, 0.7)
    x = _tone_bursts(n, rng, f, period, period * rng.uniform(0.35, 0.55), rng.uniform(0, 0.08))
    meta.update(freq=round(f, 2), period=round(period, 3))
    return x, meta


def _sweep(name: str, n: int, t: np.ndarray, rng: random.Random, nprng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """sweep-up, sweep-down."""
    meta: dict = {}
    lo = 2.0 ** rng.uniform(np.log2(250), np.log2(700))
    hi = lo * 2.0 ** rng.uniform(1.5, 3.2)
    hi = min(hi, 6500.0)
    start, end = (lo, hi) if name == "sweep-up" else (hi, lo)
    u = np.linspace(0.0, 1.0, n)
    if rng.random() < 0.5:
        freq = start * (end / start) ** u        # exponential (log-linear) sweep
    else:
        freq = start + (end - start) * u         # linear sweep
    x = _sine(freq, n)
    if rng.random() < 0.4:                       # a whistle: a little breathy noise
        x = x + 0.06 * _coloured_noise(nprng, n, 0.0)
    meta.update(start=round(start, 1), end=round(end, 1))
    return _fade(x, 0.01, 0.03), meta


def _siren(name: str, n: int, t: np.ndarray, rng: random.Random, nprng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """siren."""
    meta: dict = {}
    centre = 2.0 ** rng.uniform(np.log2(600), np.log2(1400))
    depth = rng.uniform(0.25, 0.45)              # +- octaves
    rate = rng.uniform(1.2, 2.5)                 # cycles per second
    freq = centre * 2.0 ** (depth * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)))
    x = _sine(freq, n) + rng.uniform(0.0, 0.3) * _sine(2 * freq, n)
    meta.update(centre=round(centre, 1), rate=round(rate, 2))
    return _fade(x, 0.01, 0.03), meta


def _noise(name: str, n: int, t: np.ndarray, rng: random.Random, nprng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """noise-white, noise-pink, noise-brown."""
    meta: dict = {}
    exponent = {"noise-white": 0.0, "noise-pink": 1.0, "noise-brown": 2.0}[name]
    exponent += rng.uniform(-0.15, 0.15)
    x = _coloured_noise(nprng, n, exponent)
    if rng.random() < 0.3:                       # slow swell
        x *= 1.0 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t)
    return _fade(x, rng.uniform(0.005, 0.1), rng.uniform(0.01, 0.1)), meta


def _pluck(name: str, n: int, t: np.ndarray, rng: random.Random, nprng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """pluck."""
    meta: dict = {}
    f0 = 2.0 ** rng.uniform(np.log2(110), np.log2(660))
    K = 12
    amps = [rng.uniform(0.6, 1.0) / k ** rng.uniform(0.7, 1.2) for k in range(1, K + 1)]
    tau = rng.uniform(2.5, 6.0)                  # decay rate (1/s) of the fundamental
    decays = [tau * k ** 0.6 for k in range(1, K + 1)]
    x = _harmonic(f0, n, amps, rng, decays)
    att = min(n, int(0.006 * SAMPLE_RATE))       # the pick: a tiny noise burst
    x[:att] += 0.5 * nprng.standard_normal(att) * np.linspace(1, 0, att)
    meta["freq"] = round(f0, 2)
    return _fade(x, 0.001, 0.02), meta


def _organ(name: str, n: int, t: np.ndarray, rng: random.Random, nprng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """organ."""
    meta: dict = {}
    f0 = 2.0 ** rng.uniform(np.log2(110), np.log2(660))
    amps = [1.0, rng.uniform(0.4, 0.9), rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.5),
            0.0, rng.uniform(0.0, 0.3), 0.0, rng.uniform(0.0, 0.3)]
    x = _harmonic(f0, n, amps, rng)
    x *= 1.0 + rng.uniform(0.0, 0.15) * np.sin(2 * np.pi * rng.uniform(4, 7) * t)   # tremolo
    meta["freq"] = round(f0, 2)
    return _fade(x, rng.uniform(0.03, 0.09), rng.uniform(0.05, 0.15)), meta


def _buzz(name: str, n: int, t: np.ndarray, rng: random.Random, nprng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """buzz."""
    meta: dict = {}
    f0 = 2.0 ** rng.uniform(np.log2(80), np.log2(400))
    kmax = int(0.45 * SAMPLE_RATE / f0)
    amps = [1.0 / k for k in range(1, kmax + 1)]   # band-limited sawtooth
    x = _harmonic(f0, n, amps, rng)
    meta["freq"] = round(f0, 2)
    return _fade(x, rng.uniform(0.005, 0.03), rng.uniform(0.01, 0.05)), meta


def _clicks(name: str, n: int, t: np.ndarray, rng: random.Random, nprng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """clicks."""
    meta: dict = {}
    period = rng.uniform(0.3, 0.6)
    x = np.zeros(n)
    clen = int(0.004 * SAMPLE_RATE)
    pos = rng.uniform(0, 0.1)
    tick = 0
    while int(pos * SAMPLE_RATE) < n:
        i = int(pos * SAMPLE_RATE)
        c = nprng.standard_normal(clen) * np.exp(-np.arange(clen) / (clen / 4))
        c = np.diff(c, prepend=0.0)              # bright, high-passed click
        amp = 1.0 if tick % 2 == 0 else rng.uniform(0.6, 1.0)   # tick ... tock
        seg = c[: n - i] * amp
        x[i:i + len(seg)] += seg
        pos += period
        tick += 1
    meta["period"] = round(period, 3)
    return x, meta


def _drum(name: str, n: int, t: np.ndarray, rng: random.Random, nprng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """drum."""
    meta: dict = {}
    period = rng.uniform(0.25, 0.5)
    f_hi, f_lo = rng.uniform(120, 200), rng.uniform(45, 70)
    hlen = int(rng.uniform(0.12, 0.22) * SAMPLE_RATE)
    th = np.arange(hlen) / SAMPLE_RATE
    freq = f_lo + (f_hi - f_lo) * np.exp(-th * 30)
    hit = _sine(freq, hlen) * np.exp(-th * rng.uniform(15, 30))
    hit[: int(0.003 * SAMPLE_RATE)] += 0.3 * nprng.standard_normal(int(0.003 * SAMPLE_RATE))
    x = np.zeros(n)
    pos = rng.uniform(0, 0.05)
    while int(pos * SAMPLE_RATE) < n:
        i = int(pos * SAMPLE_RATE)
        seg = hit[: n - i]
        x[i:i + len(seg)] += seg
        pos += period * (2 if rng.random() < 0.15 else 1)   # an occasional rest
    meta["period"] = round(period, 3)
    return x, meta


_SYNTHS = {
    "tone-low": _pure,
    "tone-a4": _pure,
    "tone-a5": _pure,
    "tone-high": _pure,
    "tone-noise": _pure,
    "chord-major": _chord,
    "chord-minor": _chord,
    "beeps-fast": _beeps,
    "beeps-noise": _beeps,
    "pulses-slow": _pulses,
    "sweep-up": _sweep,
    "sweep-down": _sweep,
    "siren": _siren,
    "noise-white": _noise,
    "noise-pink": _noise,
    "noise-brown": _noise,
    "pluck": _pluck,
    "organ": _organ,
    "buzz": _buzz,
    "clicks": _clicks,
    "drum": _drum,
}


