"""The reference post's method as a sequential loop, the baseline of ``make bench``.

Per file and per pass: ``librosa.load`` (resampling to the rate), ``melspectrogram`` (which
rebuilds the mel filter bank every call) and the log. Pass 1 averages per-file extrema,
pass 2 scales each spectrogram to uint8 and saves it as one PNG file. Clips are cropped or
padded to the same length as melpipe's, so both do the same amount of analysis. Prints a
JSON line with its timings.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import librosa
import numpy as np
from PIL import Image

from melpipe.sources.discover import list_audio_files


def log_mel(path: str, args: argparse.Namespace) -> np.ndarray:
    y, sr = librosa.load(path, sr=args.sample_rate)
    y = librosa.util.fix_length(y, size=round(args.duration * sr))
    mels = librosa.feature.melspectrogram(
        y=y, sr=sr, n_mels=args.n_mels, n_fft=args.hop_length * 2, hop_length=args.hop_length
    )
    return np.log(mels + 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("output", help="Folder for the PNG files.")
    parser.add_argument("--sample-rate", type=int, default=22050)
    parser.add_argument("--hop-length", type=int, default=256)
    parser.add_argument("--n-mels", type=int, default=128)
    parser.add_argument("--duration", type=float, default=1.0)
    args = parser.parse_args()
    paths = [os.path.join(args.input, p) for p in list_audio_files(args.input).files]

    start = time.perf_counter()
    lo = hi = 0.0
    for path in paths:
        mels = log_mel(path, args)
        lo += mels.min()
        hi += mels.max()
    lo, hi = lo / len(paths), hi / len(paths)
    middle = time.perf_counter()
    checksum = 0
    for i, path in enumerate(paths):
        mels = log_mel(path, args)
        image = np.clip(np.rint((mels - lo) / (hi - lo) * 255), 0, 255).astype(np.uint8)
        image = 255 - np.flip(image, axis=0)
        Image.fromarray(image).save(os.path.join(args.output, f"{i:07d}.png"))
        checksum += int(image.sum())
    end = time.perf_counter()
    print(
        json.dumps(
            {
                "files": len(paths),
                "pass1": middle - start,
                "pass2": end - middle,
                "seconds": end - start,
                "checksum": checksum,
            }
        )
    )


if __name__ == "__main__":
    main()
