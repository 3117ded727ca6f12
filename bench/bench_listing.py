"""What keeping a listing on disk costs the client, against holding it in memory.

    python -m bench.bench_listing [--paths N] [--workdir DIR]

``N`` relative paths shaped as a dataset's ("0042/clip_0042137.wav", a thousand to a
folder), made as they are consumed, in the order a walk gives them (nearly sorted) and
shuffled (a manifest in no order). The baseline is what the client did before the
listing went to disk: the paths sorted in memory, each once, ``sorted(set(paths))``.
Measured beside it, in the same process: ``sort_paths`` in one run (a listing of up to
a million paths), in runs of 2**18 that are merged, and reading every path back. Each
timing is the best of three.
Prints seconds and microseconds per path, the ratio to the baseline, and the Python
memory each holds at its peak (tracemalloc, on a separate run), and writes
``DIR/bench/results/listing.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from melpipe.sources.sorted_paths import sort_paths

ROOT = Path(__file__).resolve().parent.parent


def best_of_three(work: Callable[[], Any]) -> float:
    times = []
    for _ in range(3):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_bytes(work: Callable[[], Any]) -> int:
    """Python memory allocated by ``work`` at its peak, what it keeps included."""
    tracemalloc.start()
    try:
        kept = work()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del kept
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=ROOT, help="Where results go.")
    args = parser.parse_args()
    n = args.paths
    order = random.Random(0).sample(range(n), n)

    def walked() -> Iterator[str]:
        return (f"{i // 1000:04d}/clip_{i:07d}.wav" for i in range(n))

    def shuffled() -> Iterator[str]:
        return (f"{i // 1000:04d}/clip_{i:07d}.wav" for i in order)

    cases: dict[str, Callable[[], Any]] = {
        "baseline: sorted(set(paths)), walked": lambda: sorted(set(walked())),
        "baseline: sorted(set(paths)), shuffled": lambda: sorted(set(shuffled())),
        "sort_paths, walked": lambda: sort_paths(walked()),
        "sort_paths, shuffled": lambda: sort_paths(shuffled()),
        "sort_paths, walked, runs of 2**18": lambda: sort_paths(walked(), run=1 << 18),
    }
    listed = sort_paths(walked())
    cases["reading every path back"] = lambda: sum(1 for _ in listed)
    baseline = {"walked": 0.0, "shuffled": 0.0}
    results = []
    print(f"{n:,} paths")
    for name, work in cases.items():
        seconds = best_of_three(work)
        peak = peak_bytes(work)
        kind = "shuffled" if "shuffled" in name else "walked"
        if name.startswith("baseline"):
            baseline[kind] = seconds
        ratio = seconds / baseline[kind]
        results.append({"case": name, "seconds": seconds, "peak_bytes": peak, "ratio": ratio})
        print(f"{name:40s} {seconds:6.2f} s  {1e6 * seconds / n:5.2f} us/path  "
              f"{ratio:4.2f}x baseline  peak {peak / n:6.1f} B/path")  # fmt: skip
    out = args.workdir / "bench" / "results" / "listing.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"paths": n, "results": results}, indent=2))


if __name__ == "__main__":
    main()
