"""``make bench``: specpipe against the floor and the post's loop, on 1-second clips.

The dataset: generated 1-second WAV clips at 16, 22.05, 44.1 and 48 kHz, mono and stereo.
Reports, from one invocation on the same files:

- the floor: the per-file work alone (``tasks.analyse`` over batches of 64: decode the
  samples needed, resample, one batched STFT and mel product), with no Dask and no
  storage, in as many independent processes as the run has workers, each warmed up, in
  files/s summed over them; measured before and after the run and averaged;
- ``specpipe preprocess --workers N`` end to end, as a share of the floor, with its
  passes and its fixed cost (everything but the two passes: Python, imports, the
  cluster, listing, planning, closing) apart, and its peak memory;
- the post's sequential loop (``librosa.load`` and ``melspectrogram`` per file, two
  passes, one PNG per file) and the ratio to it;
- the choice behind the second pass (recompute the log-mels, or read float copies kept
  by the first pass), and what the padding-aware statistics add to pass 1's per-batch
  work.

Results also go to bench/results/preprocess.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import zarr

from bench.measure import run_measured
from pipeline.config import SpectrogramConfig
from pipeline.discover import list_audio_files
from pipeline.segments import Piece
from pipeline.stats import PixelStats
from pipeline.tasks import analyse

ROOT = Path(__file__).resolve().parent.parent


RATES = (16000, 22050, 44100, 48000)


def dataset(count: int, workdir: Path = ROOT) -> Path:
    """``count`` 1-second clips: a decaying tone over noise, cycling through four rates."""
    folder = workdir / "data" / f"bench-1s-{count}"
    done = folder / ".complete"
    if done.exists():
        return folder
    print(f"Generating {count} 1-second clips in {folder} ...", flush=True)
    rng = np.random.default_rng(count)
    for i in range(count):
        rate, channels = RATES[i % len(RATES)], 1 + (i // len(RATES)) % 2
        t = np.arange(rate) / rate
        tone = np.sin(2 * np.pi * rng.uniform(80, 4000) * t) * np.exp(-rng.uniform(1, 6) * t)
        audio = 0.5 * tone[:, None] + 0.05 * rng.standard_normal((rate, channels))
        path = folder / f"{rate}" / f"clip_{i:06d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, audio.astype(np.float32), rate, subtype="PCM_16")
    done.touch()
    return folder


FLOOR = r"""
import json, sys, time
import numpy as np
from threadpoolctl import threadpool_limits
from pipeline.config import SpectrogramConfig
from pipeline.segments import Piece
from pipeline.tasks import analyse

root, paths = sys.argv[1], sys.argv[2:]
config = SpectrogramConfig.from_options()
pieces = [Piece(i, p, np.zeros(1, np.int64)) for i, p in enumerate(paths)]
batches = [pieces[i : i + 64] for i in range(0, len(pieces), 64)]
with threadpool_limits(1):
    analyse(root, batches[0], config)  # warm up: imports, filter banks, first calls
    start = time.perf_counter()
    for batch in batches:
        analyse(root, batch, config)
    print(json.dumps({"files": len(paths), "s": time.perf_counter() - start}))
"""


def floor(folder: Path, processes: int) -> float:
    """Files/s of the per-file work alone (``tasks.analyse`` over batches of 64: decode
    the samples needed, resample, one batched STFT and mel product) in ``processes``
    independent processes, each warmed up and timed on its share of the files, summed."""
    paths = list_audio_files(folder).files
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", FLOOR, str(folder), *paths[k::processes]],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for k in range(processes)
    ]
    results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    return sum(r["files"] / r["s"] for r in results)


def first_windows(folder: Path, batch: int) -> list[list[Piece]]:
    """The first window of every file, in batches, as ``tasks.analyse`` takes them."""
    paths = list_audio_files(folder).files
    pieces = [Piece(i, p, np.zeros(1, np.int64)) for i, p in enumerate(paths)]
    return [pieces[i : i + batch] for i in range(0, len(pieces), batch)]


def second_pass_choice(folder: Path, config: SpectrogramConfig, batch: int = 64) -> dict:
    """Per batch: recomputing the log-mels vs writing and reading back float32 copies."""
    batches = first_windows(folder, batch)[:8]
    n = sum(len(b) for b in batches)
    analyse(str(folder), batches[0], config)  # warm: imports and first-call costs
    start = time.perf_counter()
    logmels = [analyse(str(folder), b, config).logmel for b in batches]
    recompute = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        scratch = zarr.create_array(  # laid out as pipeline.store lays out images
            f"{tmp}/scratch.zarr",
            shape=(n, *config.image_shape),
            dtype="float32",
            chunks=(batch, *config.image_shape),
            compressors=None,
        )
        start = time.perf_counter()
        for i, logmel in enumerate(logmels):
            scratch[i * batch : i * batch + len(logmel)] = logmel
        write = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(len(batches)):
            np.asarray(scratch[i * batch : (i + 1) * batch])
        read = time.perf_counter() - start
        stored = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
    return {
        "files": n,
        "recompute_ms_per_file": 1e3 * recompute / n,
        "scratch_write_ms_per_file": 1e3 * write / n,
        "scratch_read_ms_per_file": 1e3 * read / n,
        "scratch_bytes_per_file": stored / n,
    }


def statistics_cost(folder: Path, config: SpectrogramConfig, batch: int = 64) -> dict:
    """Per file, on one core: pass 1's analysis, and the pixel statistics of its
    log-mels (``PixelStats.of``), each warmed up first, over the same batches."""
    from threadpoolctl import threadpool_limits

    batches = first_windows(folder, batch)[:16]
    n = sum(len(b) for b in batches)
    with threadpool_limits(1):
        warm = analyse(str(folder), batches[0], config)
        PixelStats.of(warm.logmel, warm.windows.frames, config.log_floor)
        start = time.perf_counter()
        results = [analyse(str(folder), b, config) for b in batches]
        analysis = time.perf_counter() - start
        start = time.perf_counter()
        for r in results:
            PixelStats.of(r.logmel, r.windows.frames, config.log_floor)
        statistics = time.perf_counter() - start
    return {
        "files": n,
        "analysis_ms_per_file": 1e3 * analysis / n,
        "pixel_statistics_ms_per_file": 1e3 * statistics / n,
        "share_of_analysis": statistics / analysis,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=int(os.environ.get("BENCH_FILES", 8000)))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=ROOT, help="Where data/ and results go.")
    args = parser.parse_args()
    folder = dataset(args.files, args.workdir)
    config = SpectrogramConfig.from_options()
    cores = args.workers  # the floor runs as this many processes, beside the run's workers
    print(f"Dataset: {args.files} 1-second clips in {folder}; {os.cpu_count()} cores.", flush=True)

    before = floor(folder, cores)
    print(f"floor, {cores} processes: {before:.0f} files/s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.zarr"
        command = [
            sys.executable,
            "-m",
            "pipeline",
            "preprocess",
            str(folder),
            str(out),
            "--workers",
            str(args.workers),
        ]
        ours = run_measured(command)
        result, ours_seconds, ours_peak = ours.result, ours.seconds, ours.tree
        seconds_line = next(x for x in result.stdout.splitlines() if x.startswith("Seconds:"))
        pairs = (lap.rsplit(" ", 1) for lap in seconds_line[9:].rstrip(".").split(", "))
        laps = {name: float(value) for name, value in pairs}
        startup = laps["executor"] + laps["startup"]  # cluster, listing, plan
    print(f"specpipe --workers {args.workers}: {ours_seconds:.1f} s ({seconds_line})", flush=True)
    # Measured again after the run: on a shared machine the floor itself moves by a tenth
    # or more from one minute to the next, and the mean of both is the fairer baseline.
    after = floor(folder, cores)
    print(f"floor again: {after:.0f} files/s", flush=True)
    floor_files_per_s = (before + after) / 2

    with tempfile.TemporaryDirectory() as pngs:
        loop_command = [sys.executable, str(ROOT / "bench" / "post_loop.py"), str(folder), pngs]
        loop_run = run_measured(loop_command)
        loop_result, loop_seconds, loop_peak = loop_run.result, loop_run.seconds, loop_run.tree
    loop = json.loads(loop_result.stdout.strip().splitlines()[-1])
    if loop["files"] != args.files:
        sys.exit(f"The post's loop saw {loop['files']} files, not {args.files}.")
    print(f"post's loop: {loop_seconds:.1f} s", flush=True)

    n = args.files
    passes = laps["statistics"] + laps["images"]
    results = {
        "files": n,
        "clip_seconds": 1.0,
        "cores": cores,
        "floor_files_per_s": floor_files_per_s,
        "floor_before_and_after": [before, after],
        "specpipe": {
            "command": " ".join(command[1:]),
            "seconds": ours_seconds,
            "files_per_s": n / ours_seconds,
            "files_per_s_after_startup": n / (ours_seconds - startup),
            "cluster_startup_s": startup,
            "pass1_s": laps["statistics"],
            "pass2_s": laps["images"],
            # Everything that is not per-file work: Python and imports, the cluster, the
            # listing and the plan, and closing.
            "fixed_s": ours_seconds - passes,
            "peak_rss_mib": ours_peak / 2**20,
        },
        "post_loop": {
            "seconds": loop_seconds,
            "files_per_s": n / loop_seconds,
            "peak_rss_mib": loop_peak / 2**20,
        },
        "second_pass": second_pass_choice(folder, config),
        "pass1_statistics": statistics_cost(folder, config),
    }
    ours = results["specpipe"]
    results["fraction_of_floor"] = ours["files_per_s"] / floor_files_per_s
    results["fraction_of_floor_after_startup"] = (
        ours["files_per_s_after_startup"] / floor_files_per_s
    )
    results["fraction_of_floor_per_pass"] = n / passes / floor_files_per_s
    results["speedup"] = ours["files_per_s"] / results["post_loop"]["files_per_s"]
    results["speedup_after_startup"] = (
        ours["files_per_s_after_startup"] / results["post_loop"]["files_per_s"]
    )
    report(results)
    out_dir = args.workdir / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "preprocess.json").write_text(json.dumps(results, indent=2))


def report(r: dict) -> None:
    ours, loop, second = r["specpipe"], r["post_loop"], r["second_pass"]
    cost = r["pass1_statistics"]
    cores = r["cores"]
    first, again = r["floor_before_and_after"]
    print()
    print(f"(the floor, measured before and after the run: {first:.0f}, {again:.0f} files/s)")
    print(f"{'':34}{'files/s':>10}{'peak RSS MiB':>14}")
    print(f"{f'floor, {cores} independent processes':34}{r['floor_files_per_s']:>10.1f}")
    print(
        f"{'specpipe preprocess --workers 2':34}{ours['files_per_s']:>10.1f}"
        f"{ours['peak_rss_mib']:>14.0f}"
    )
    print(f"{'  same, without cluster start-up':34}{ours['files_per_s_after_startup']:>10.1f}")
    print(
        f"{'post loop (librosa, 2 passes)':34}{loop['files_per_s']:>10.1f}"
        f"{loop['peak_rss_mib']:>14.0f}"
    )
    print(
        f"specpipe / floor: {r['fraction_of_floor']:.0%} end to end, "
        f"{r['fraction_of_floor_after_startup']:.0%} without start-up, "
        f"{r['fraction_of_floor_per_pass']:.0%} over the two passes alone"
    )
    print(
        f"seconds: pass 1 {ours['pass1_s']:.2f}, pass 2 {ours['pass2_s']:.2f}, fixed "
        f"{ours['fixed_s']:.2f} (of which the cluster, listing and plan "
        f"{ours['cluster_startup_s']:.2f}; the rest Python, imports and closing)"
    )
    print(
        f"ratio specpipe / post loop: {r['speedup']:.1f}x end to end, "
        f"{r['speedup_after_startup']:.1f}x without start-up"
    )
    print(
        f"second pass, per file: recompute {second['recompute_ms_per_file']:.2f} ms; float32 "
        f"scratch write {second['scratch_write_ms_per_file']:.2f} ms + read "
        f"{second['scratch_read_ms_per_file']:.2f} ms, "
        f"{second['scratch_bytes_per_file'] / 1e3:.0f} kB on disk"
    )
    print(
        f"pass 1 took {ours['pass1_s']:.2f} s; per file on one core: analysis "
        f"{cost['analysis_ms_per_file']:.2f} ms, pixel statistics (histogram, band moments) "
        f"{cost['pixel_statistics_ms_per_file']:.3f} ms = {cost['share_of_analysis']:.1%} of it"
    )


if __name__ == "__main__":
    main()
