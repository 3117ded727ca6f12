"""``make bench-scale``: how tasks and memory grow with the number of files.

For each size, generates that many tiny audio files (0.05 s, so that the run measures
orchestration, not audio work), starts a scheduler and two workers with
cluster/local's scripts, runs ``melpipe preprocess --scheduler`` as a separate client
process, and samples the resident memory of every process and the CPU time of the
client and the scheduler. Reports per size: batches, Dask tasks, peak RSS of the client,
the scheduler, the workers and all together, wall time, and the coordinator's CPU;
then, between the two largest sizes, the coordinator's CPU and memory per file. Results
also go to bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "cluster" / "local"
BIN = Path(sys.executable).parent
MiB = 2**20


def tiny_dataset(n: int, workdir: Path) -> Path:
    folder = workdir / "data" / f"scale-{n}"
    done = folder / ".complete"
    if done.exists():
        return folder
    print(f"Generating {n} files in {folder} ...", flush=True)
    rng = np.random.default_rng(n)
    for i in range(n):
        path = folder / f"{i // 1000:04d}" / f"clip_{i:07d}.wav"
        if i % 1000 == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (0.1 * rng.standard_normal(800)).astype(np.float32), 16000, "PCM_16")
    done.touch()
    return folder


class PeakRSS:
    """Samples the resident memory of named processes (and their children) until stopped,
    and the CPU time of each named process itself (user and system, without children)."""

    def __init__(self, processes: dict[str, int]) -> None:
        self.pids = processes
        self.peak = dict.fromkeys(processes, 0)
        self.peak_total = 0
        self.cpu = {name: _cpu(pid) for name, pid in processes.items()}  # at the start
        self.cpu_end = dict(self.cpu)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self, pid: int) -> int:
        try:
            root = psutil.Process(pid)
            return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
        except psutil.Error:
            return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            now = {name: self._rss(pid) for name, pid in self.pids.items()}
            for name, rss in now.items():
                self.peak[name] = max(self.peak[name], rss)
                self.cpu_end[name] = max(self.cpu_end[name], _cpu(self.pids[name]))
            self.peak_total = max(self.peak_total, sum(now.values()))
            time.sleep(0.1)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _cpu(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def start(script: str, *args: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(RECIPES / script), *args],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **env},
    )


def measure(n: int, root: Path, workdir: Path) -> dict:
    folder = tiny_dataset(n, root)
    scheduler_file = workdir / f"scheduler-{n}.json"
    scheduler_file.unlink(missing_ok=True)
    common = {"HOST": "127.0.0.1"}
    procs = [
        start(
            "start-scheduler.sh",
            env={
                **common,
                "PORT": "0",
                "DASHBOARD": "127.0.0.1:0",
                "SCHEDULER_FILE": str(scheduler_file),
            },
            log=workdir / f"scheduler-{n}.log",
        )
    ]
    try:
        address = None
        while address is None:  # the scheduler writes the file in place: wait till it is whole
            time.sleep(0.1)
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, KeyError):
                address = json.loads(scheduler_file.read_text())["address"]
        procs += [
            start(
                "start-workers.sh",
                address,
                env={**common, "NWORKERS": "1", "NAME": f"w{i}"},
                log=workdir / f"worker-{n}-{i}.log",
            )
            for i in range(2)
        ]
        time.sleep(3)  # let the workers connect
        idle = idle_cpu(address, procs[0].pid)
        command = [
            sys.executable, "-m", "melpipe", "preprocess", str(folder),
            str(root / "data" / f"scale-{n}.zarr"), "--scheduler", address, "--overwrite",
            "--duration", "0.05", "--n-mels", "32", "--hop-length", "128",
        ]  # fmt: skip
        start_time = time.perf_counter()
        client = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        watched = {"client": client.pid, "scheduler": procs[0].pid}
        watched |= {f"worker{i}": p.pid for i, p in enumerate(procs[1:])}
        with PeakRSS(watched) as peaks:
            out, err = client.communicate()
        wall = time.perf_counter() - start_time
        if client.returncode != 0:
            sys.exit(f"run of {n} files failed:\n{out}\n{err}")
    finally:
        for p in procs:
            os.killpg(p.pid, 9)
            p.wait()
    tasks = int(re.search(r"Dask tasks: (\d+)", out).group(1))  # type: ignore[union-attr]
    return {
        "files": n,
        "batches": -(-n // 64),
        "tasks": tasks,
        "client_mib": peaks.peak["client"] / MiB,
        "scheduler_mib": peaks.peak["scheduler"] / MiB,
        "workers_mib": (peaks.peak["worker0"] + peaks.peak["worker1"]) / MiB,
        "all_mib": peaks.peak_total / MiB,
        "seconds": wall,
        # The coordinator: the client process and the scheduler, CPU seconds during the run.
        "client_cpu_s": peaks.cpu_end["client"] - peaks.cpu["client"],
        "scheduler_cpu_s": peaks.cpu_end["scheduler"] - peaks.cpu["scheduler"],
        # What a connected client and the scheduler spend per second doing nothing (their
        # heartbeats with each other and the workers), to subtract for the run's own cost.
        "idle_cpu_per_s": idle,
    }


IDLE_SECONDS = 5.0


def idle_cpu(address: str, scheduler_pid: int) -> float:
    """CPU seconds per second of a Dask client that only stays connected, and of the
    scheduler meanwhile: the heartbeats that grow with a run's time, not its files."""
    waiting = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from distributed import Client; c = Client(sys.argv[1]); "
        "print('up', flush=True); time.sleep(1e6)"), address],
        stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert waiting.stdout is not None and waiting.stdout.readline().strip() == "up"
        time.sleep(1.0)  # past the connection's own work
        before = _cpu(waiting.pid) + _cpu(scheduler_pid)
        time.sleep(IDLE_SECONDS)
        return (_cpu(waiting.pid) + _cpu(scheduler_pid) - before) / IDLE_SECONDS
    finally:
        waiting.kill()
        waiting.wait()


def coordinator_summary(smaller: dict, larger: dict) -> str:
    """What the coordinator (client and scheduler) spends per file between two sizes:
    CPU, and growth of their peak memory together. Each file is one clip here."""
    files = larger["files"] - smaller["files"]

    def cpu(row: dict) -> float:
        return row["client_cpu_s"] + row["scheduler_cpu_s"]

    def memory(row: dict) -> float:
        return (row["client_mib"] + row["scheduler_mib"]) * MiB

    def net(row: dict) -> float:  # without the heartbeats of the run's wall time
        return cpu(row) - row["idle_cpu_per_s"] * row["seconds"]

    per_file_us = 1e6 * (cpu(larger) - cpu(smaller)) / files
    net_us = 1e6 * (net(larger) - net(smaller)) / files
    growth = (memory(larger) - memory(smaller)) / files
    return (
        f"coordinator from {smaller['files']} to {larger['files']} files: "
        f"{per_file_us:.1f} us of CPU per file, {net_us:.1f} us net of idle heartbeats "
        f"({larger['idle_cpu_per_s'] * 1e3:.0f} ms per second) (client "
        f"{larger['client_cpu_s']:.1f} s, scheduler {larger['scheduler_cpu_s']:.1f} s at "
        f"{larger['files']}), so at most "
        f"{1e6 / net_us if net_us > 0 else float('inf'):,.0f} files/s from one "
        f"client; peak memory {growth:,.0f} bytes more per file"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--workdir", type=Path, default=ROOT, help="Where data/ and results go.")
    args = parser.parse_args()
    workdir = args.workdir / "data" / "scale-logs"
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"{'files':>8} {'batches':>8} {'tasks':>7} {'client':>8} {'scheduler':>10} "
          f"{'workers':>8} {'all':>8} {'seconds':>8} {'coord. CPU s':>13}"
          "   (peak RSS in MiB)")  # fmt: skip
    for n in args.sizes:
        row = measure(n, args.workdir, workdir)
        rows.append(row)
        print(
            f"{row['files']:>8} {row['batches']:>8} {row['tasks']:>7} {row['client_mib']:>8.0f} "
            f"{row['scheduler_mib']:>10.0f} {row['workers_mib']:>8.0f} {row['all_mib']:>8.0f} "
            f"{row['seconds']:>8.1f} {row['client_cpu_s'] + row['scheduler_cpu_s']:>13.2f}",
            flush=True,
        )
    if len(rows) > 1:
        print(coordinator_summary(rows[-2], rows[-1]))
    out = args.workdir / "bench" / "results" / "scale.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"Results in {out}.")


if __name__ == "__main__":
    main()
