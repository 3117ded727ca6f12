"""Running a command as a benchmark does: wall time, the resident memory of its process
tree and the CPU time of its own process, sampled every 50 ms."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Measured:
    result: subprocess.CompletedProcess[str]
    seconds: float
    largest_child: int  # peak RSS in bytes of the largest process under the command
    tree: int  # peak RSS in bytes of the command and all its processes together
    # CPU seconds (user and system) of the command's own process, without its children:
    # for melpipe with a local cluster, the client and the scheduler it hosts. Sampled
    # every 50 ms, so short by at most that.
    own_cpu: float


def run_measured(command: list[str]) -> Measured:
    """Run ``command`` to its end (exiting if it fails), sampling its processes' memory."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks: dict[int, int] = {}
    tree_peak, own_cpu = 0, 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal tree_peak, own_cpu
        parent = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [parent, *parent.children(recursive=True)]
                sizes = {p.pid: p.memory_info().rss for p in tree if p.is_running()}
                times = parent.cpu_times()
                own_cpu = max(own_cpu, times.user + times.system)
            except psutil.Error:
                sizes = {}
            for pid, rss in sizes.items():
                peaks[pid] = max(peaks.get(pid, 0), rss)
            tree_peak = max(tree_peak, sum(sizes.values()))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{stdout}\n{stderr}")
    result = subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)
    children = [rss for pid, rss in peaks.items() if pid != proc.pid]
    return Measured(result, seconds, max(children, default=0), tree_peak, own_cpu)
