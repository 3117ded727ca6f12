"""Each preset's analysis against the floor with the same STFT sizes, and the size of one
level of each preset's images on a corpus.

    python -m bench.bench_presets [--seconds S] [--workdir DIR]
    python -m bench.bench_presets --corpus DIR [--collect-real] [--workdir DIR]

The first form times ``features.spectrogram`` on a batch of 64 (``--batch``) generated clips of each
preset's length, one process, one BLAS thread, after a warm-up, against the floor's
kernel (bench/floor.py: float32 FFT, power, the dense float32 mel product, no checks)
with the preset's rate, FFT size, hop, bands and clip length, alternating the two; it
prints clips/s of each and their ratio, and writes ``DIR/presets.json``. The analysis
alone is timed: decoding and the rest of a run are the same for every preset and are
what ``bench_preprocess`` measures.

The second runs ``melpipe preprocess CORPUS --preset P --scheduler sync`` for each
preset and prints what one level of its images stands for: in the model's log units
(the range of the statistic the preset scales with, over 255; the median over bands for
``band-moments``) and in decibels. With ``--collect-real``, DIR is first filled with the
real recordings this machine's Python ships (``bench.compare_stats.collect_real``).
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from bench.compare_stats import collect_real
from bench.floor import Kernel
from melpipe.analysis.config import SpectrogramConfig
from melpipe.analysis.features import spectrogram
from melpipe.analysis.presets import PRESET_NAMES
from melpipe.read.reader import open_store

ROOT = Path(__file__).resolve().parent.parent
BATCH = 64  # clips per timed call, as a task's batch


def rate(fn, batch: np.ndarray, seconds: float) -> float:
    """Clips per second of ``fn`` on ``batch``, over at least ``seconds``."""
    fn(batch)  # warm-up: caches, the filter bank, the allocator
    start, runs = time.perf_counter(), 0
    while runs == 0 or time.perf_counter() - start < seconds:
        fn(batch)
        runs += 1
    return runs * len(batch) / (time.perf_counter() - start)


def speed(seconds: float, batch_size: int = BATCH) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for name in PRESET_NAMES:
        config = SpectrogramConfig.from_options(preset=name)
        batch = (0.3 * rng.standard_normal((batch_size, config.n_samples))).astype(np.float32)
        kernel = Kernel(config.sample_rate, config.hop_length, config.n_fft,
                        config.n_mels or 0, config.n_samples)  # fmt: skip
        analysis = functools.partial(spectrogram, analysis=config)
        ours, floor = [], []
        with threadpool_limits(1):
            for _ in range(3):  # alternated, so that a drift of the machine hits both
                ours.append(rate(analysis, batch, seconds))
                floor.append(rate(kernel, batch, seconds))
        row: dict[str, Any] = {"preset": name, "n_fft": config.n_fft, "hop": config.hop_length,
               "bands": config.n_bands, "frames": config.n_frames,
               "clips_per_s": float(np.median(ours)),
               "floor_clips_per_s": float(np.median(floor))}  # fmt: skip
        row["share_of_floor"] = row["clips_per_s"] / row["floor_clips_per_s"]
        rows.append(row)
        print(f"{name:16s} n_fft {config.n_fft:5d} hop {config.hop_length:4d} "
              f"{config.n_bands:4d} x {config.n_frames:4d}: {row['clips_per_s']:8.1f} "
              f"clips/s, floor {row['floor_clips_per_s']:8.1f}, "
              f"{row['share_of_floor']:.0%} of it")  # fmt: skip
    return rows


def levels(corpus: Path, workdir: Path) -> list[dict]:
    rows = []
    for name in PRESET_NAMES:
        out = workdir / f"levels-{name}.zarr"
        subprocess.run([sys.executable, "-m", "melpipe", "preprocess", str(corpus), str(out),
                        "--preset", name, "--scheduler", "sync", "--overwrite"],
                       check=True, capture_output=True)  # fmt: skip
        store = open_store(out)
        span = float(np.median(store.scale.span))
        unit = span / 255
        db = unit * store.config.db_per_unit
        rows.append({"preset": name, "stats": store.used, "units_per_level": unit,
                     "db_per_level": db})  # fmt: skip
        print(f"{name:16s} {store.used:13s} {unit:.4f} log units per level, {db:.3f} dB")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="Per timing.")
    parser.add_argument("--batch", type=int, default=BATCH, help="Clips per timed call.")
    parser.add_argument("--corpus", type=Path, help="Measure the level sizes on this corpus.")
    parser.add_argument("--collect-real", action="store_true", help="Fill --corpus first.")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.collect_real:
        collect_real(args.corpus)
    if args.corpus is not None:
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            rows = levels(args.corpus, Path(tmp))
        (args.workdir / "preset-levels.json").write_text(json.dumps(rows, indent=2))
        return
    rows = speed(args.seconds, args.batch)
    (args.workdir / "presets.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
