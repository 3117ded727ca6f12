"""The five statistics side by side on one corpus: how each spends the 256 levels, and the
same clips scaled each way.

    python -m bench.compare_stats INPUT [--workdir DIR] [--count N] [-- PREPROCESS OPTIONS]

runs ``melpipe preprocess`` (with the options after ``--``) once per statistic
(``--stats-from`` the first run, so that all five scale with the same numbers), prints
each one's range and figures as ``info`` does (share of the pixels that hold audio at
each end of the scale, the fewest levels that hold 99% of them, decibels per level), and
draws the same ``--count`` clips under each statistic into ``DIR/stats-compare.png``.

``--collect-real DIR`` first copies into DIR every real recording this machine's Python
ships: CPython's ``test/audiodata`` (one plucked string, 0.3 s at 11,025 Hz in stereo,
in up to sixteen encodings) and IPython's ``test.wav``, if IPython is installed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np

from melpipe.analysis.stats import STATS_NAMES
from melpipe.read.reader import open_store

ROOT = Path(__file__).resolve().parent.parent
AUDIO = (".wav", ".aif", ".aiff", ".aifc", ".au", ".flac")


def collect_real(folder: Path) -> Path:
    """Copy the real recordings that come with this Python into ``folder``."""
    found = sorted((Path(sysconfig.get_paths()["stdlib"]) / "test" / "audiodata").glob("*"))
    try:
        import IPython

        found.append(Path(IPython.__file__).parent / "lib" / "tests" / "test.wav")
    except ImportError:
        pass
    found = [p for p in found if p.suffix.lower() in AUDIO and p.is_file()]
    if not found:
        sys.exit("This Python ships no test recordings (test/audiodata): give INPUT instead.")
    folder.mkdir(parents=True, exist_ok=True)
    for path in found:
        shutil.copy(path, folder / f"{path.parent.name}-{path.name}")
    print(f"Copied {len(found)} recordings into {folder}.")
    return folder


def run(input_dir: Path, workdir: Path, extra: list[str]) -> dict[str, Path]:
    stores: dict[str, Path] = {}
    for name in STATS_NAMES:
        out = workdir / f"stats-{name}.zarr"
        source = ["--stats-from", str(stores["mean"])] if stores else []
        command = [sys.executable, "-m", "melpipe", "preprocess", str(input_dir), str(out),
                   "--overwrite", "--stats", name, *source, *extra]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, text=True)
        stores[name] = out
    return stores


def table(store: Path) -> list[str]:
    reader = open_store(store)
    rows = [
        "| statistic | range (log units) | dB per level | at min | at max | levels for 99% |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, scale in reader.stats.ranges().items():
        lo, hi = scale.bounds()
        span = f"{lo.min():.2f} .. {hi.max():.2f}" + (" (per band)" if scale.per_band else "")
        f = reader.figures[name]
        rows.append(
            f"| `{name}` | {span} | {f.db_per_level:.3f} | {f.at_min:.1%} | {f.at_max:.1%} | "
            f"{f.levels_99} |"
        )
    return rows


def picture(stores: dict[str, Path], output: Path, count: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    readers = {name: open_store(path) for name, path in stores.items()}
    first = readers["mean"]
    shown = np.unique(np.linspace(0, len(first) - 1, count).round().astype(int))
    fig, axes = plt.subplots(
        len(readers), len(shown), figsize=(2.2 * len(shown), 2.0 * len(readers)),
        layout="constrained", squeeze=False,
    )  # fmt: skip
    for row, (name, reader) in zip(axes, readers.items(), strict=True):
        for ax, i, image in zip(row, shown, reader.read_many(shown), strict=True):
            ax.imshow(image, cmap="gray", vmin=0, vmax=255, aspect="auto", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(reader.label(int(i))[-28:], fontsize=6)
        row[0].set_ylabel(name, fontsize=9)
    fig.suptitle("the same clips scaled by each statistic (black: most energy)", fontsize=10)
    fig.savefig(output, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, nargs="?")
    parser.add_argument("--workdir", type=Path, default=ROOT / "data" / "compare-stats")
    parser.add_argument("--count", type=int, default=6, help="clips drawn per statistic")
    parser.add_argument("--collect-real", type=Path, help="copy the real recordings here first")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, extra = parser.parse_args(argv[:cut]), argv[cut + 1 :]
    input_dir = collect_real(args.collect_real) if args.collect_real else args.input
    if input_dir is None:
        parser.error("give INPUT, or --collect-real DIR")
    args.workdir.mkdir(parents=True, exist_ok=True)
    stores = run(input_dir, args.workdir, extra)
    print("\n".join(table(stores["mean"])))
    picture(stores, args.workdir / "stats-compare.png", args.count)
    print(f"Wrote {args.workdir / 'stats-compare.png'}.")


if __name__ == "__main__":
    main()
