"""What finding duplicates costs for a file that another shares a size or a length with:
its header read alone (what every file costs, in pass 1 anyway), against reading it whole
for the SHA-256 of its bytes and the MD5 of its PCM samples (docs/cli.md, "Duplicates").

    python -m bench.bench_hashes [--files N] [--minutes M] [--workdir DIR]

Generated noise, in the kinds of file that set the cost: 1-second WAVs at 22,050 and
44,100 Hz, 1-second FLACs at 44,100 Hz, and WAVs of ``--minutes``. One process, files
warm in the page cache; each kind is read once to warm up, then the two reads alternate
three times and the medians are kept. Prints milliseconds per file and seconds per hour
of audio, and writes ``DIR/bench/results/hashes.json``. How many files a run reads whole,
and what that costs it, is in ``bench.bench_preprocess``'s recordings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from melpipe.sources.audio import read_header
from melpipe.sources.pcm import read_whole

ROOT = Path(__file__).resolve().parent.parent
RATE = 22050  # the store's rate, the package default


def files(folder: Path, kind: str, n: int, rate: int, seconds: float) -> list[Path]:
    """``n`` files of noise, made once."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = [folder / f"{i:04d}.{kind.lower()}" for i in range(n)]
    for path in paths:
        if not path.exists():
            y = 0.1 * rng.standard_normal(int(rate * seconds)).astype(np.float32)
            sf.write(path, y, rate, format=kind, subtype="PCM_16")
    return paths


def per_file(paths: list[Path], whole: bool) -> float:
    """Seconds per file of reading its header, or it whole for its hashes: of its bytes,
    and of its samples but where its header holds their MD5 (a FLAC's), as a run does."""
    start = time.perf_counter()
    for path in paths:
        if whole:
            samples = path.suffix != ".flac"
            read_whole(str(path), digest=True, samples=samples, peak=False, rate=RATE)
        else:
            read_header(path)
    return (time.perf_counter() - start) / len(paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=300, help="1-second files of each kind")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the long ones")
    parser.add_argument("--workdir", type=Path, default=ROOT, help="Where data/ and results go.")
    args = parser.parse_args()
    data = args.workdir / "data" / "bench-hashes"
    kinds = [
        ("WAV", RATE, 1.0, args.files),
        ("WAV", 2 * RATE, 1.0, args.files),
        ("FLAC", 2 * RATE, 1.0, args.files),
        ("WAV", 2 * RATE, 60 * args.minutes, 2),
    ]
    rows = []
    print("| files | header alone | read whole for both hashes | per hour of audio |")
    print("| --- | --- | --- | --- |")
    for kind, rate, seconds, n in kinds:
        paths = files(data / f"{kind}-{rate}-{seconds:g}s", kind, n, rate, seconds)
        per_file(paths, whole=True)  # warm-up: the page cache
        header, hashed = [], []
        for _ in range(3):
            header.append(per_file(paths, whole=False))
            hashed.append(per_file(paths, whole=True))
        a, b = statistics.median(header), statistics.median(hashed)
        hourly = b / seconds * 3600  # the read whole, on top of the header pass 1 reads
        row = {"kind": kind, "rate": rate, "seconds": seconds, "files": n,
               "header_s": a, "hashed_s": b, "per_audio_hour_s": hourly}  # fmt: skip
        rows.append(row)
        print(f"| {kind}, {rate:,} Hz, {seconds:g} s | {a * 1e3:.2f} ms | {b * 1e3:.2f} ms "
              f"| {row['per_audio_hour_s']:.1f} s |")  # fmt: skip
    out = args.workdir / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "hashes.json").write_text(json.dumps({"store_rate": RATE, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
