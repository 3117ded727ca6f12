"""The floor that ``make bench`` measures melpipe against: the physical work of a run,
written here on its own, with none of melpipe's code.

Per clip: decode the samples needed (soundfile; the whole file for a long recording), mix
to mono, resample with soxr at its default quality, zero-pad and frame as librosa does
with ``center=True``, periodic Hann window, one float32 real FFT per batch
(``scipy.fft``), power, a float32 product with librosa's Slaney mel filter bank, and
``log(x + eps)``; batches of 64 clips. No Dask, no storage, no statistics, no checks.

``floor(...)`` runs it as one warmed-up process per core on a share of the files each
and returns clips/s and files/s summed over them. As a script (``python -m bench.floor``)
it is one such process: it reads the paths from standard input and prints a JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import librosa
import numpy as np
import scipy.fft
import scipy.signal
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parent.parent
BATCH = 64
EPS = np.float32(1e-9)


class Kernel:
    """The analysis of batches of clips of ``n_samples`` at ``rate``; ``n_mels=0`` for a
    linear spectrum (no filter bank)."""

    def __init__(self, rate: int, hop: int, n_fft: int, n_mels: int, n_samples: int) -> None:
        self.rate, self.hop, self.n_fft, self.n_samples = rate, hop, n_fft, n_samples
        self.audio_s = 0.0  # seconds of audio decoded so far
        self.window = scipy.signal.get_window("hann", n_fft, fftbins=True).astype(np.float32)
        self.bank_t = (
            np.ascontiguousarray(
                librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=n_mels, dtype=np.float32).T
            )
            if n_mels
            else None
        )

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        half = self.n_fft // 2
        padded = np.pad(clips, ((0, 0), (half, half)))
        frames = np.lib.stride_tricks.sliding_window_view(padded, self.n_fft, axis=-1)
        spectrum = scipy.fft.rfft(frames[:, :: self.hop] * self.window, axis=-1)
        power = spectrum.real**2 + spectrum.imag**2
        if self.bank_t is None:
            return np.log(power + EPS)  # (clips, frames, bins)
        return np.log(power @ self.bank_t + EPS)  # (clips, frames, mels)

    def clip(self, path: str) -> np.ndarray:
        """The first clip of a file: only the frames it needs decoded."""
        with sf.SoundFile(path) as f:
            needed = -(-self.n_samples * f.samplerate // self.rate) + 64
            samples, source = f.read(needed, dtype="float32", always_2d=True), f.samplerate
        y = self._mono_at_rate(samples, source)
        return librosa.util.fix_length(y, size=self.n_samples)

    def windows(self, path: str) -> np.ndarray:
        """Every clip of a whole file, end to end, the last padded with zeros."""
        samples, source = sf.read(path, dtype="float32", always_2d=True)
        y = self._mono_at_rate(samples, source)
        self.audio_s += len(y) / self.rate
        n = -(-len(y) // self.n_samples)
        return librosa.util.fix_length(y, size=n * self.n_samples).reshape(n, self.n_samples)

    def _mono_at_rate(self, samples: np.ndarray, source: int) -> np.ndarray:
        # The mean of the channels, column by column: numpy's mean over a (frames, 2)
        # array's short axis took 0.86 ms per second of stereo, these additions 0.03.
        y = samples[:, 0].copy()
        for channel in range(1, samples.shape[1]):
            y += samples[:, channel]
        if samples.shape[1] > 1:
            y /= np.float32(samples.shape[1])
        return y if source == self.rate else soxr.resample(y, source, self.rate)


def batches(kernel: Kernel, paths: Sequence[str], whole: bool) -> Iterator[np.ndarray]:
    """Batches of BATCH clips: the first of each file, or all of each (``whole``)."""
    pending: list[np.ndarray] = []
    for path in paths:
        pending.extend(kernel.windows(path) if whole else [kernel.clip(path)])
        while len(pending) >= BATCH:
            yield np.stack(pending[:BATCH])
            del pending[:BATCH]
    if pending:
        yield np.stack(pending)


def one_process(paths: Sequence[str], whole: bool, settings: dict[str, int]) -> dict:
    """Warm up on the first batch, then time every file; returns counts and seconds."""
    from threadpoolctl import threadpool_limits

    kernel = Kernel(**settings)
    with threadpool_limits(1):
        for batch in batches(kernel, paths[:BATCH], whole):
            kernel(batch)
        start, cpu, clips = time.perf_counter(), time.process_time(), 0
        kernel.audio_s = 0.0
        for batch in batches(kernel, paths, whole):
            kernel(batch)
            clips += len(batch)
        return {
            "files": len(paths),
            "clips": clips,
            "audio_s": kernel.audio_s,
            "s": time.perf_counter() - start,
            "cpu_s": time.process_time() - cpu,
        }


DEFAULTS = {"rate": 22050, "hop": 256, "n_fft": 512, "n_mels": 128, "n_samples": 22050}


def floor(
    paths: Sequence[str], processes: int, *, whole: bool = False, settings: dict | None = None
) -> dict:
    """The floor on ``paths`` in ``processes`` independent processes started together,
    each on every ``processes``-th file: files/s and clips/s summed over them, and CPU
    seconds per file and per clip."""
    settings = {**DEFAULTS, **(settings or {})}
    shares = [paths[k::processes] for k in range(processes)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.floor", "--settings", json.dumps(settings)]
            + (["--whole"] if whole else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in shares
    ]
    results = [
        json.loads(p.communicate("\n".join(share))[0].strip().splitlines()[-1])
        for p, share in zip(procs, shares, strict=True)
    ]
    if any(p.returncode for p in procs):
        sys.exit("A floor process failed.")
    files, clips = sum(r["files"] for r in results), sum(r["clips"] for r in results)
    cpu = sum(r["cpu_s"] for r in results)
    return {
        "processes": processes,
        "clips": clips,
        "audio_s": sum(r["audio_s"] for r in results),  # of whole files (``whole``)
        "files_per_s": sum(r["files"] / r["s"] for r in results),
        "clips_per_s": sum(r["clips"] / r["s"] for r in results),
        "audio_s_per_s": sum(r["audio_s"] / r["s"] for r in results),
        "cpu_ms_per_file": 1e3 * cpu / files,
        "cpu_ms_per_clip": 1e3 * cpu / clips,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--whole", action="store_true", help="Every clip of each file.")
    parser.add_argument("--settings", type=json.loads, default="{}")
    args = parser.parse_args()
    paths = [line for line in sys.stdin.read().splitlines() if line]
    print(json.dumps(one_process(paths, args.whole, {**DEFAULTS, **args.settings})))


if __name__ == "__main__":
    main()
