"""``make bench``: melpipe against the floor and the post's loop, on one clip per file.

Two datasets: 16,000 generated 1-second WAV clips (``--files``) at 16, 22.05, 44.1 and
48 kHz, mono and stereo, each file one clip long; and 8,000 recordings (``--recordings``)
shaped like real ones, 2 to 10 s long (2 to 10 times the clip), in WAV (16 and 24 bits),
FLAC and OGG Vorbis at 8 to 96 kHz, mono and stereo, one in a hundred a copy or a FLAC of
another, so that finding duplicates has files to read. Reports, from one invocation on
the same files, for each number of workers given (``--workers 2``, or ``--workers 4 16``
for the scaling of one machine), on each dataset:

- the floor (bench/floor.py, written apart from melpipe: decode the samples needed,
  resample, a float32 batched STFT and mel product, the log), with no Dask and no
  storage, in as many independent processes as the run has workers, each warmed up, in
  files/s summed over them; measured before and after the run and averaged;
- ``melpipe preprocess --workers N`` end to end, as a share of the floor, with pass 1,
  pass 2 and the time outside them apart, the share of the run spent before pass 1 on
  the files (the survey of headers, none with one clip per file) and after it on their
  duplicates (reading whole the files that share a size or a length with another), and
  the peak resident memory of all its processes together;
- the fixed cost: the wall time of ``melpipe preprocess`` with default options on 8
  files (Python, imports, listing, planning, closing, next to no per-file work; where
  it runs is its own choice, which is reported);
- the coordinator: the CPU time of the command's own process (the client, and the
  scheduler of its local cluster) per file beyond what it spends on the 8 files;
- the post's sequential loop (``librosa.load`` and ``melspectrogram`` per file, two
  passes, one PNG per file), timed on the first 2,000 files (``--loop-files``), and the
  ratio to it;
- the choice behind the second pass (recompute the log-mels, or read float copies kept
  by the first pass), and what the padding-aware statistics add to pass 1's per-batch
  work.

Results also go to bench/results/preprocess.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import zarr

from bench.floor import floor
from bench.measure import run_measured
from melpipe.analysis.config import SpectrogramConfig
from melpipe.analysis.pixels import PixelStats
from melpipe.analysis.segments import Piece
from melpipe.run.tasks import analyse
from melpipe.sources.discover import list_audio_files

ROOT = Path(__file__).resolve().parent.parent


RATES = (16000, 22050, 44100, 48000)


def dataset(count: int, workdir: Path = ROOT) -> Path:
    """``count`` 1-second clips: a decaying tone over noise, cycling through four rates;
    file ``i`` is the same in every dataset that has it. Written by one process per core."""
    folder = workdir / "data" / f"bench-clips-{count}"
    done = folder / ".complete"
    if done.exists():
        return folder
    print(f"Generating {count} 1-second clips in {folder} ...", flush=True)
    for rate in RATES:
        (folder / f"{rate}").mkdir(parents=True, exist_ok=True)
    with concurrent.futures.ProcessPoolExecutor() as pool:
        step = 500
        list(
            pool.map(
                _write_clips, [(folder, i, min(i + step, count)) for i in range(0, count, step)]
            )
        )
    done.touch()
    return folder


def _write_clips(job: tuple[Path, int, int]) -> None:
    folder, lo, hi = job
    for i in range(lo, hi):
        rng = np.random.default_rng(i)
        rate, channels = RATES[i % len(RATES)], 1 + (i // len(RATES)) % 2
        t = np.arange(rate) / rate
        tone = np.sin(2 * np.pi * rng.uniform(80, 4000) * t) * np.exp(-rng.uniform(1, 6) * t)
        audio = 0.5 * tone[:, None] + 0.05 * rng.standard_normal((rate, channels))
        sf.write(folder / f"{rate}" / f"clip_{i:06d}.wav", audio.astype(np.float32), rate,
                 subtype="PCM_16")  # fmt: skip


# (container, encoding) and rates cycled over the recordings; one in DUPLICATE_EVERY of
# them repeats an earlier one, as a byte copy or as a FLAC of the same samples.
KINDS = (("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("WAV", "PCM_24"),
         ("FLAC", "PCM_24"), ("OGG", "VORBIS"))  # fmt: skip
RECORDING_RATES = (8000, 16000, 22050, 32000, 44100, 48000, 96000)
DUPLICATE_EVERY = 100


def recordings(count: int, workdir: Path = ROOT) -> Path:
    """``count`` recordings of 2 to 10 s (a decaying tone over noise) in the kinds of
    :data:`KINDS`; recording ``i`` is the same in every dataset that has it. Written by
    one process per core."""
    folder = workdir / "data" / f"bench-recordings-{count}"
    done = folder / ".complete"
    if done.exists():
        return folder
    print(f"Generating {count} recordings of 2 to 10 s in {folder} ...", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    with concurrent.futures.ProcessPoolExecutor() as pool:
        step = 200
        jobs = [(folder, i, min(i + step, count)) for i in range(0, count, step)]
        list(pool.map(_write_recordings, jobs))
    done.touch()
    return folder


def _write_recordings(job: tuple[Path, int, int]) -> None:
    folder, lo, hi = job
    for i in range(lo, hi):
        kind, encoding = KINDS[i % len(KINDS)]
        path = folder / f"rec_{i:06d}.{kind.lower()}"
        if i % DUPLICATE_EVERY == DUPLICATE_EVERY - 1:  # an earlier recording again
            source = _recording_path(folder, i - DUPLICATE_EVERY // 2)
            kind, encoding = KINDS[(i - DUPLICATE_EVERY // 2) % len(KINDS)]
            if kind == "OGG":  # a byte copy: Vorbis samples change when encoded again
                path.with_suffix(".ogg").write_bytes(source.read_bytes())
            else:  # the same samples as a FLAC of the same bit depth
                audio, rate = sf.read(source, dtype="int32")
                sf.write(path.with_suffix(".flac"), audio, rate, subtype=encoding)
            continue
        rng = np.random.default_rng(i)
        rate = RECORDING_RATES[(i // len(KINDS)) % len(RECORDING_RATES)]
        channels = 1 + (i // 3) % 2
        n = int(rate * rng.uniform(2, 10))
        t = np.arange(n) / rate
        pitch = rng.uniform(80, min(4000, rate / 2.5))
        tone = np.sin(2 * np.pi * pitch * t) * np.exp(-rng.uniform(0.2, 2) * t)
        audio = 0.5 * tone[:, None] + 0.05 * rng.standard_normal((n, channels))
        sf.write(path, audio.astype(np.float32), rate, format=kind, subtype=encoding)


def _recording_path(folder: Path, i: int) -> Path:
    return folder / f"rec_{i:06d}.{KINDS[i % len(KINDS)][0].lower()}"


def floor_of(folder: Path, processes: int, limit: int | None = None) -> dict:
    """The floor (bench/floor.py) on the first window of every file (of the first
    ``limit`` if given), as ``processes`` independent processes."""
    paths = [str(folder / p) for p in list_audio_files(folder).files[:limit]]
    return floor(paths, processes)


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
        scratch = zarr.create_array(  # laid out as melpipe.store.writer lays out images
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


def run_melpipe(folder: Path, *options: str) -> dict:
    """``melpipe preprocess`` end to end as a subprocess: wall time, its own laps, the
    peak resident memory of all its processes together, and the CPU time of its own
    process (the coordinator: client, and the scheduler of a local cluster)."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "melpipe", "preprocess", str(folder),
                   str(Path(tmp) / "bench.zarr"), *options]  # fmt: skip
        run = run_measured(command)
    seconds_line = next(x for x in run.result.stdout.splitlines() if x.startswith("Seconds:"))
    pairs = (lap.rsplit(" ", 1) for lap in seconds_line[9:].rstrip(".").split(", "))
    laps = {name: float(value) for name, value in pairs}
    return {
        "command": " ".join(command[1:]),
        "seconds": run.seconds,
        "pass1_s": laps["statistics"],
        "pass2_s": laps["images"],
        # Reading the files' headers before pass 1 (--segments all only), and whole after
        # it the files that another shares a size or a length with, for their duplicates.
        "survey_s": laps.get("survey", 0.0),
        "duplicates_s": laps.get("duplicates", 0.0),
        # Everything that is not the two passes: Python and imports, the cluster, the
        # listing and the plan, and closing.
        "outside_passes_s": run.seconds - laps["statistics"] - laps["images"],
        "peak_rss_mib": run.tree / 2**20,
        "coordinator_cpu_s": run.own_cpu,
        "ran_in_process": "Running in this process" in run.result.stderr,
    }


def measure(folder: Path, tiny: Path, n: int, workers: int, limit: int | None) -> dict:
    """For one number of workers: the floor as that many processes (before and after),
    the run, the fixed cost as the wall time of the default command on a few files, and
    the coordinator's CPU per file beyond what it spends on those few."""
    before = floor_of(folder, workers, limit)
    print(f"floor, {workers} processes: {before['files_per_s']:.0f} files/s", flush=True)
    ours = run_melpipe(folder, "--workers", str(workers))
    print(f"melpipe --workers {workers}: {ours['seconds']:.1f} s", flush=True)
    # Measured again after the run: on a shared machine the floor itself moves by a tenth
    # or more from one minute to the next, and the mean of both is the fairer baseline.
    after = floor_of(folder, workers, limit)
    print(f"floor again: {after['files_per_s']:.0f} files/s", flush=True)
    # The fixed cost: the default command, which chooses where to run, as a user types it.
    tiny_runs = [run_melpipe(tiny) for _ in range(3)]
    fixed = min(r["seconds"] for r in tiny_runs)
    # The coordinator beyond its fixed cost: against the same cluster on the few files.
    small = min((run_melpipe(tiny, "--workers", str(workers)) for _ in range(2)),
                key=lambda r: r["coordinator_cpu_s"])  # fmt: skip
    floor_files_per_s = (before["files_per_s"] + after["files_per_s"]) / 2
    passes = ours["pass1_s"] + ours["pass2_s"]
    extra_cpu = ours["coordinator_cpu_s"] - small["coordinator_cpu_s"]
    return {
        "workers": workers,
        "floor_files_per_s": floor_files_per_s,
        "floor_before_and_after": [before, after],
        "melpipe": {**ours, "files_per_s": n / ours["seconds"]},
        "fixed_s": fixed,
        "fixed_ran_in_process": all(r["ran_in_process"] for r in tiny_runs),
        "coordinator_us_per_file": 1e6 * extra_cpu / (n - TINY),
        "coordinator_cpu_s": [small["coordinator_cpu_s"], ours["coordinator_cpu_s"]],
        "fraction_of_floor": n / ours["seconds"] / floor_files_per_s,
        "survey_share": (ours["survey_s"] + ours["duplicates_s"]) / ours["seconds"],
        "fraction_of_floor_per_pass": n / passes / floor_files_per_s,
        "fraction_of_floor_pass1": n / ours["pass1_s"] / floor_files_per_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=int(os.environ.get("BENCH_FILES", 16000)))
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[2], help="One run per number given."
    )
    parser.add_argument(
        "--loop-files", type=int, default=2000, help="Files the post's loop is timed on."
    )
    parser.add_argument(
        "--floor-files", type=int, help="Time the floor on the first N files only (default all)."
    )
    parser.add_argument(
        "--recordings", type=int, default=8000, help="Recordings of 2 to 10 s, one clip each."
    )
    parser.add_argument("--workdir", type=Path, default=ROOT, help="Where data/ and results go.")
    args = parser.parse_args()
    folder = dataset(args.files, args.workdir)
    recorded = recordings(args.recordings, args.workdir)
    tiny = dataset(TINY, args.workdir)
    config = SpectrogramConfig.from_options()
    n = args.files
    print(f"Dataset: {n} 1-second clips in {folder}; {os.cpu_count()} cores.", flush=True)
    runs = [measure(folder, tiny, n, workers, args.floor_files) for workers in args.workers]
    print(f"Dataset: {args.recordings} recordings of 2 to 10 s in {recorded}.", flush=True)
    recording_runs = [measure(recorded, tiny, args.recordings, workers, args.floor_files)
                      for workers in args.workers]  # fmt: skip

    loop_files = min(args.loop_files, n)
    with tempfile.TemporaryDirectory() as pngs:
        loop_folder = dataset(loop_files, args.workdir)  # the first files of the dataset
        loop_command = [
            sys.executable,
            str(ROOT / "bench" / "post_loop.py"),
            str(loop_folder),
            pngs,
        ]
        loop_run = run_measured(loop_command)
    loop = json.loads(loop_run.result.stdout.strip().splitlines()[-1])
    if loop["files"] != loop_files:
        sys.exit(f"The post's loop saw {loop['files']} files, not {loop_files}.")
    print(f"post's loop: {loop_run.seconds:.1f} s on {loop_files} files", flush=True)
    loop_files_per_s = loop_files / loop_run.seconds
    for r in runs:
        r["speedup"] = r["melpipe"]["files_per_s"] / loop_files_per_s

    results = {
        "files": n,
        "clip_seconds": 1.0,
        "cores": os.cpu_count(),
        "runs": runs,
        "recordings": {"files": args.recordings, "runs": recording_runs},
        "post_loop": {
            "files": loop_files,
            "seconds": loop_run.seconds,
            "files_per_s": loop_files_per_s,
            "peak_rss_mib": loop_run.tree / 2**20,
        },
        "second_pass": second_pass_choice(folder, config),
        "pass1_statistics": statistics_cost(folder, config),
    }
    report(results)
    out_dir = args.workdir / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "preprocess.json").write_text(json.dumps(results, indent=2))


TINY = 8  # files in the run that measures the fixed cost


def report(r: dict) -> None:
    loop, second, cost = r["post_loop"], r["second_pass"], r["pass1_statistics"]
    print()
    print(f"One clip per file, {r['cores']} cores; the floor (bench/floor.py) is that many "
          "independent processes, measured before and after each run; 'files' is the "
          "share of the run spent reading files apart from the clips (the survey, the "
          "duplicates)")  # fmt: skip
    print(f"{'dataset':<28}{'workers':>8}{'floor files/s':>15}{'melpipe files/s':>18}"
          f"{'share':>7}{'passes only':>13}{'pass 1 only':>13}{'files':>7}"
          f"{'peak RSS MiB':>14}")  # fmt: skip
    datasets = [
        (f"{r['files']} 1-second clips", r["runs"]),
        (f"{r['recordings']['files']} recordings, 2-10 s", r["recordings"]["runs"]),
    ]
    for name, runs in datasets:
        for run in runs:
            ours = run["melpipe"]
            print(
                f"{name:<28}{run['workers']:>8}{run['floor_files_per_s']:>15.0f}"
                f"{ours['files_per_s']:>18.0f}{run['fraction_of_floor']:>7.0%}"
                f"{run['fraction_of_floor_per_pass']:>13.0%}"
                f"{run['fraction_of_floor_pass1']:>13.0%}{run['survey_share']:>7.1%}"
                f"{ours['peak_rss_mib']:>14.0f}"
            )
    for run in r["recordings"]["runs"]:
        ours = run["melpipe"]
        print(
            f"recordings, --workers {run['workers']}: pass 1 {ours['pass1_s']:.2f} s, pass 2 "
            f"{ours['pass2_s']:.2f} s, duplicates {ours['duplicates_s']:.2f} s, outside the "
            f"passes {ours['outside_passes_s']:.2f} s"
        )
    for run in r["runs"]:
        ours = run["melpipe"]
        print(
            f"--workers {run['workers']}: pass 1 {ours['pass1_s']:.2f} s, pass 2 "
            f"{ours['pass2_s']:.2f} s, outside the passes {ours['outside_passes_s']:.2f} s; "
            f"{run['speedup']:.1f}x the post's loop"
        )
        print(
            f"  fixed cost (`melpipe preprocess` on {TINY} files, "
            f"{'in this process' if run['fixed_ran_in_process'] else 'on a local cluster'}): "
            f"{run['fixed_s']:.2f} s; coordinator CPU beyond its fixed cost: "
            f"{run['coordinator_us_per_file']:.0f} us per file "
            f"({run['coordinator_cpu_s'][0]:.2f} s on {TINY} files, "
            f"{run['coordinator_cpu_s'][1]:.2f} s on {r['files']})"
        )
    if len(r["runs"]) > 1:
        first, last = r["runs"][0], r["runs"][-1]
        ratio = last["melpipe"]["files_per_s"] / first["melpipe"]["files_per_s"]
        print(f"--workers {last['workers']} / --workers {first['workers']}: {ratio:.2f}x")
    print(
        f"post's loop (librosa, 2 passes, PNGs): {loop['files_per_s']:.1f} files/s on "
        f"{loop['files']} files, {loop['peak_rss_mib']:.0f} MiB"
    )
    print(
        f"second pass, per file: recompute {second['recompute_ms_per_file']:.2f} ms; float32 "
        f"scratch write {second['scratch_write_ms_per_file']:.2f} ms + read "
        f"{second['scratch_read_ms_per_file']:.2f} ms, "
        f"{second['scratch_bytes_per_file'] / 1e3:.0f} kB on disk"
    )
    print(
        f"per file on one core: analysis {cost['analysis_ms_per_file']:.2f} ms, pixel "
        f"statistics (histogram, band moments) {cost['pixel_statistics_ms_per_file']:.3f} ms "
        f"= {cost['share_of_analysis']:.1%} of it"
    )


if __name__ == "__main__":
    main()
