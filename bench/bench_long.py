"""``make bench``, long recordings: ``--segments all`` against a floor, end to end.

The dataset: generated recordings of several minutes (16 to 48 kHz, mono and stereo, WAV
and FLAC), cut into 1-second clips with ``--segments all``. Reports, from one invocation
on the same files:

- the floor (bench/floor.py, written apart from melpipe): each whole file decoded,
  mixed to mono and resampled with soxr, cut into clips and analysed in float32 batches
  of 64, in independent processes, one per core, with no Dask and no storage; each
  process is warmed up before it is timed, and the floor is the sum of their
  throughputs, measured before and after the run and averaged;
- ``melpipe preprocess --segments all --workers N`` end to end, cluster start-up
  included, in clips/s and hours of audio per second, as a share of the floor;
- the peak resident memory of each worker process, and of the whole process tree;
- the coordinator's CPU (the command's own process: the client and its local cluster's
  scheduler), in all and per clip, its fixed cost included.

Results also go to bench/results/long.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from bench.floor import floor
from bench.measure import run_measured

ROOT = Path(__file__).resolve().parent.parent
# (rate, channels, format) cycled over the files; lengths cycle over LENGTHS seconds.
KINDS = ((44100, 2, "FLAC"), (48000, 1, "WAV"), (16000, 1, "FLAC"), (22050, 2, "WAV"),
         (48000, 2, "FLAC"), (32000, 1, "WAV"))  # fmt: skip
LENGTHS = (180, 300, 240)


def dataset(minutes: float, workdir: Path = ROOT) -> Path:
    """Recordings adding up to about ``minutes`` minutes: tones that drift over noise,
    with quieter passages, written 10 s at a time."""
    folder = workdir / "data" / f"bench-long-{minutes:g}min"
    done = folder / ".complete"
    if done.exists():
        return folder
    print(f"Generating about {minutes:g} minutes of recordings in {folder} ...", flush=True)
    rng = np.random.default_rng(7)
    total, i = 0.0, 0
    while total < minutes * 60:
        rate, channels, kind = KINDS[i % len(KINDS)]
        seconds = min(LENGTHS[i % len(LENGTHS)], max(minutes * 60 - total, 10))
        path = folder / f"rec_{i:03d}_{rate}.{kind.lower()}"
        path.parent.mkdir(parents=True, exist_ok=True)
        with sf.SoundFile(path, "w", rate, channels, "PCM_16", format=kind) as f:
            for start in range(0, int(seconds), 10):
                t = start + np.arange(10 * rate) / rate
                tone = np.sin(2 * np.pi * rng.uniform(100, 3000) * t)
                gain = 0.5 if (start // 10) % 4 else 0.02
                noise = 0.03 * rng.standard_normal((len(t), channels))
                f.write((gain * tone[:, None] + noise).astype(np.float32))
        total, i = total + seconds, i + 1
    done.touch()
    return folder


def floor_of(folder: Path, processes: int) -> dict:
    """The floor (bench/floor.py) over whole files, shared among ``processes``
    independent processes."""
    files = sorted(str(p) for p in folder.iterdir() if p.suffix in (".wav", ".flac"))
    return floor(files, processes, whole=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=60.0, help="Audio to generate.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=ROOT, help="Where data/ and results go.")
    args = parser.parse_args()
    folder = dataset(args.minutes, args.workdir)
    print(f"Dataset: {folder}; {os.cpu_count()} cores.", flush=True)

    before = floor_of(folder, args.workers)
    print(f"floor, {args.workers} processes: {before['clips_per_s']:.0f} clips/s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        options = ["--segments", "all", "--workers", str(args.workers)]
        command = [sys.executable, "-m", "melpipe", "preprocess", str(folder), f"{tmp}/l.zarr"]
        command += options
        measured = run_measured(command)
    stdout, seconds = measured.result.stdout, measured.seconds
    # Measured again after the run: on a shared machine the floor itself varies by a tenth
    # or more from one minute to the next, and the mean of both is the fairer baseline.
    after = floor_of(folder, args.workers)
    print(f"floor again: {after['clips_per_s']:.0f} clips/s", flush=True)
    base = {
        **before,
        "clips_per_s": (before["clips_per_s"] + after["clips_per_s"]) / 2,
        "audio_s_per_s": (before["audio_s_per_s"] + after["audio_s_per_s"]) / 2,
        "clips_per_s_before_and_after": [before["clips_per_s"], after["clips_per_s"]],
    }
    clips = int(stdout.split()[1])  # "Wrote N clips to ..."
    seconds_line = next(x for x in stdout.splitlines() if x.startswith("Seconds:"))
    results = {
        "floor": base,
        "melpipe": {
            "command": " ".join(command[1:]),
            "clips": clips,
            "seconds": seconds,
            "clips_per_s": clips / seconds,
            "audio_hours_per_s": base["audio_s"] / 3600 / seconds,
            "laps": seconds_line,
            "peak_rss_per_worker_mib": measured.largest_child / 2**20,
            "peak_rss_tree_mib": measured.tree / 2**20,
            # The command's own process: the client and its local cluster's scheduler.
            "coordinator_cpu_s": measured.own_cpu,
        },
    }
    results["fraction_of_floor"] = results["melpipe"]["clips_per_s"] / base["clips_per_s"]
    report(results)
    out_dir = args.workdir / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "long.json").write_text(json.dumps(results, indent=2))


def report(r: dict) -> None:
    base, ours = r["floor"], r["melpipe"]
    print()
    print(f"{base['audio_s'] / 3600:.2f} hours of audio, {ours['clips']} clips of 1 s")
    print(f"{'':38}{'clips/s':>10}{'audio h/s':>11}")
    first, second = base["clips_per_s_before_and_after"]
    print(f"(the floor, measured before and after the run: {first:.0f}, {second:.0f} clips/s)")
    name = f"floor, {base['processes']} independent processes"
    print(f"{name:38}{base['clips_per_s']:>10.1f}{base['audio_s_per_s'] / 3600:>11.3f}")
    print(
        f"{'melpipe --segments all, end to end':38}{ours['clips_per_s']:>10.1f}"
        f"{ours['audio_hours_per_s']:>11.3f}"
    )
    print(f"melpipe / floor: {r['fraction_of_floor']:.0%}  ({ours['laps']})")
    print(
        f"peak RSS: {ours['peak_rss_per_worker_mib']:.0f} MiB in the largest worker, "
        f"{ours['peak_rss_tree_mib']:.0f} MiB for the whole process tree"
    )
    print(
        f"coordinator CPU: {ours['coordinator_cpu_s']:.2f} s, "
        f"{1e6 * ours['coordinator_cpu_s'] / ours['clips']:.0f} us per clip with its fixed cost"
    )


if __name__ == "__main__":
    main()
