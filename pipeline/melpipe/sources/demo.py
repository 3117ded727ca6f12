"""Deterministic demo audio: a few hundred short, varied clips in mixed file formats.

Tones, chirps, noise bursts and plucked strings, written at mixed sample rates, channel
counts, bit depths and containers, so that a first ``make preprocess`` exercises the
resampling, the mono mix and the decoders. Optionally a few broken files show how failures
are recorded. Everything derives from one seed, so the same call gives the same audio. (Not
always the same bytes: libsndfile stamps float WAV files with the time of writing and gives
each OGG stream a random serial number.)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.signal
import soundfile as sf

from melpipe.files import open_to_write

SAMPLE_RATES = (16000, 22050, 32000, 44100, 48000)
# (extension, libsndfile subtype): containers and bit depths a dataset mixes.
ENCODINGS = (
    ("wav", "PCM_16"),
    ("wav", "PCM_24"),
    ("wav", "FLOAT"),
    ("flac", "PCM_16"),
    ("flac", "PCM_24"),
    ("ogg", "VORBIS"),
    ("mp3", "MPEG_LAYER_III"),
)
BROKEN_FILES = {
    "broken/not-audio.wav": b"this is a text file with an audio extension\n",
    "broken/empty.flac": b"",
}


def _envelope(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    attack = max(1, int(sr * rng.uniform(0.002, 0.05)))
    decay = rng.uniform(2.0, 8.0) / (n / sr)
    t = np.arange(n) / sr
    env = np.exp(-decay * t)
    env[:attack] *= np.linspace(0.0, 1.0, attack)
    return env


def tone(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A harmonic tone with a random pitch, timbre and decay."""
    f0 = rng.uniform(80, 1000)
    t = np.arange(n) / sr
    harmonics = [k for k in range(1, 12) if k * f0 < sr / 2]
    weights = rng.uniform(0, 1, len(harmonics)) / np.arange(1, len(harmonics) + 1)
    y = sum(w * np.sin(2 * np.pi * k * f0 * t) for k, w in zip(harmonics, weights, strict=True))
    return np.asarray(y) * _envelope(n, sr, rng)


def chirp(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A logarithmic sweep up or down."""
    t = np.arange(n) / sr
    f_low, f_high = sorted(rng.uniform(50, 0.45 * sr, 2))
    if rng.random() < 0.5:
        f_low, f_high = f_high, f_low
    return scipy.signal.chirp(t, f_low, t[-1], f_high, method="logarithmic")


def noise_burst(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Band-passed noise with a percussive envelope."""
    low = rng.uniform(100, 0.3 * sr)
    high = rng.uniform(1.2 * low, 0.45 * sr)
    sos = scipy.signal.butter(4, [low, high], "bandpass", fs=sr, output="sos")
    return scipy.signal.sosfilt(sos, rng.standard_normal(n)) * _envelope(n, sr, rng)


def pluck(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A Karplus-Strong plucked string."""
    period = int(sr / rng.uniform(80, 800))
    excitation = np.zeros(n)
    excitation[:period] = rng.uniform(-1, 1, period)
    damping = rng.uniform(0.990, 0.999) / 2
    feedback = np.zeros(period + 2)
    feedback[0], feedback[period], feedback[period + 1] = 1.0, -damping, -damping
    return scipy.signal.lfilter([1.0], feedback, excitation)


KINDS: dict[str, Callable[[int, int, np.random.Generator], np.ndarray]] = {
    "tones": tone,
    "chirps": chirp,
    "noise": noise_burst,
    "plucks": pluck,
}


def generate_demo(
    folder: str | os.PathLike[str], *, count: int = 300, seed: int = 0, broken: bool = True
) -> list[Path]:
    """Write ``count`` clips (and, with ``broken``, two broken files) under ``folder``.

    Returns the paths written, audio first.
    """
    rng = np.random.default_rng(seed)
    root = Path(folder)
    written = []
    names = list(KINDS)
    for i in range(count):
        kind = names[i % len(names)]
        sr = int(rng.choice(SAMPLE_RATES))
        ext, subtype = ENCODINGS[int(rng.integers(len(ENCODINGS)))]
        channels = int(rng.integers(1, 3))
        n = int(sr * rng.uniform(0.3, 2.0))
        mono = KINDS[kind](n, sr, rng)
        mono = mono / max(np.abs(mono).max(), 1e-9) * rng.uniform(0.05, 0.9)
        # A second channel that differs a little, so the mono mix matters.
        data = np.stack([mono, np.roll(mono, int(rng.integers(0, 64))) * 0.8][:channels], axis=1)
        path = root / kind / f"{kind[:-1] if kind.endswith('s') else kind}_{i:04d}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open_to_write(path) as file:
            sf.write(file, data.astype(np.float32), sr, subtype=subtype, format=ext.upper())
        written.append(path)
    if broken:
        for rel, content in BROKEN_FILES.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with open_to_write(path) as file:
                file.write(content)
            written.append(path)
    return written
