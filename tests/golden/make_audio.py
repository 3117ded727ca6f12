"""Writes the small recordings the golden stores were made from (run once; the files are
kept, so that an encoder's new version cannot change the input)."""

import sys
from pathlib import Path

import numpy as np
import soundfile as sf

# (path, rate, channels, seconds, subtype): short and long, mono and stereo, three formats.
FILES = [
    ("first/tone_16k.wav", 16000, 1, 0.7, "PCM_16"),
    ("first/chord_22k_stereo.flac", 22050, 2, 2.6, "PCM_16"),
    ("first/noise_8k.wav", 8000, 1, 3.1, "PCM_16"),
    ("first/copy_of_tone.wav", 16000, 1, 0.7, "PCM_16"),
    ("second/vorbis_11k.ogg", 11025, 1, 1.9, "VORBIS"),
    ("second/sweep_24k.wav", 24000, 1, 1.3, "FLOAT"),
]


def signal(rng: np.random.Generator, rate: int, channels: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    columns = [
        0.5
        * np.sin(2 * np.pi * rng.uniform(150, rate / 5) * t * (1 + 0.3 * t) + c)
        * np.exp(-rng.uniform(0.5, 2) * t)
        + 0.02 * rng.standard_normal(t.size)
        for c in range(channels)
    ]
    return np.stack(columns, axis=1).astype(np.float32)


def main(root: Path) -> None:
    rng = np.random.default_rng(35)
    for name, rate, channels, seconds, subtype in FILES:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.startswith("first/copy_of"):
            path.write_bytes((root / "first/tone_16k.wav").read_bytes())
            continue
        sf.write(path, signal(rng, rate, channels, seconds), rate, subtype=subtype)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
