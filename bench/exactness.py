"""melpipe's images and statistics against librosa's, on any folder of audio.

Runs ``melpipe preprocess --scheduler sync`` on INPUT, computes each file's log-mel with
``librosa.load`` and ``librosa.feature.melspectrogram`` (float64 inside), scales it with
the store's own ``mean`` statistics as the post does, and reports how many pixels differ
and by how much, and how far the statistics lie from those computed from librosa's
log-mels. Usage: ``python -m bench.exactness INPUT [--limit N]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import zarr


def librosa_image(path: Path, lo: float, hi: float) -> tuple[np.ndarray, float, float]:
    """The post's image of a file's first second, from librosa, and its log-mel extrema."""
    y, _ = librosa.load(path, sr=22050, mono=True)
    y = librosa.util.fix_length(y, size=22050)
    mel = librosa.feature.melspectrogram(y=y, sr=22050, n_fft=512, hop_length=256, n_mels=128)
    logmel = np.log(mel + 1e-9)
    scaled = np.clip(np.rint((logmel.astype(np.float64) - lo) / (hi - lo) * 255), 0, 255)
    return 255 - np.flipud(scaled).astype(np.uint8), float(logmel.min()), float(logmel.max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input", type=Path)
    parser.add_argument("--limit", type=int, help="Compare the first N clips only.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "exact.zarr"
        command = [sys.executable, "-m", "melpipe", "preprocess", str(args.input), str(out),
                   "--scheduler", "sync"]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True)
        group: Any = zarr.open_group(out, mode="r")
        stats = group.attrs["stats"]
        lo, hi = stats["mean"]["min"], stats["mean"]["max"]
        paths = group["path"][:]
        files = group["file_index"][:][: args.limit]
        images = group["images"][: len(files)]
    diffs, lows, highs = [], [], []
    for row, file in enumerate(files):
        expected, low, high = librosa_image(args.input / str(paths[file]), lo, hi)
        diffs.append(np.abs(images[row].astype(np.int16) - expected))
        lows.append(low)
        highs.append(high)
    diff = np.stack(diffs)
    mean = (np.mean(lows), np.mean(highs))
    relative = max(abs(lo - mean[0]) / abs(mean[0]), abs(hi - mean[1]) / abs(mean[1]))
    print(
        f"{len(files)} clips, {diff.size} pixels: {(diff == 0).mean():.5%} equal to librosa's, "
        f"{(diff == 1).sum()} one level apart, largest difference {diff.max()} level(s); "
        f"'mean' statistics within {relative:.1e} relative of librosa's"
    )


if __name__ == "__main__":
    main()
