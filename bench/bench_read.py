"""``make bench-read``: training-time reads, the store against a folder of PNG files.

One invocation, the same images: a store made from generated demo audio, and the same
clips exported as one PNG per clip (the post's output). Each is read through a PyTorch
DataLoader with 2 worker processes, batches of 64, in random order, as float32 tensors in
[-1, 1]: the PNG folder as training code reads it (one file decoded per item), the store
through each of ``melpipe.torch``'s reading paths. Then both again as uint8 items.
The loop reads one value in every memory page of each batch, as training would. After
one warm-up epoch each (so that both are read from the page cache, as in a training
run's later epochs), timed passes of a few epochs, taken in turn, give the median
images/s. Reports the ratios and the number of files on disk of each. Results also go
to bench/results/read.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from melpipe.errors import StoreError
from melpipe.read.pictures import export_png
from melpipe.read.reader import open_store
from melpipe.store.schema import FORMAT_VERSION
from melpipe.torch import (
    ChunkBatchSampler,
    ChunkShuffleSampler,
    SpectrogramDataset,
    SpectrogramLoader,
)

ROOT = Path(__file__).resolve().parent.parent
BATCH = 64
WORKERS = 2
PAGE = os.sysconf("SC_PAGE_SIZE")


class PngFolder(Dataset):
    """What training code does with the post's output: open and decode one PNG per item."""

    def __init__(self, files: list[Path], as_float: bool = True) -> None:
        self.files = files
        self.as_float = as_float

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.files[i]) as image:
            pixels = np.array(image)  # a writable copy, as torch wants
        item = torch.from_numpy(pixels).unsqueeze(0)
        return item.to(torch.float32).div_(127.5).sub_(1.0) if self.as_float else item


def prepare(count: int, workdir: Path) -> tuple[Path, list[Path]]:
    audio = workdir / "data" / f"bench-read-{count}"
    # Named by store format: a store of another format holds arrays that this melpipe
    # does not know as its own, and --overwrite rightly refuses to remove those.
    store = workdir / "data" / f"bench-read-{count}-v{FORMAT_VERSION}.zarr"
    pngs = workdir / "data" / f"bench-read-{count}-v{FORMAT_VERSION}-png"
    melpipe = [sys.executable, "-m", "melpipe"]
    if not audio.exists():
        subprocess.run([*melpipe, "demo", audio, "--count", str(count), "--no-broken"], check=True)
    if not _readable(store):  # absent, or left by another version of melpipe
        subprocess.run(
            [*melpipe, "preprocess", audio, store, "--workers", "2", "--overwrite"], check=True
        )
        shutil.rmtree(pngs, ignore_errors=True)
    if not pngs.exists():
        export_png(open_store(store), pngs)
    return store, sorted(pngs.rglob("*.png"))


def _readable(store: Path) -> bool:
    try:
        open_store(store)
    except StoreError:
        return False
    return True


def loader(dataset: Dataset, sampler: Sampler[int] | None) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=BATCH,
        num_workers=WORKERS,
        shuffle=sampler is None,
        sampler=sampler,
        persistent_workers=True,
    )


def batch_loader(dataset: SpectrogramDataset) -> DataLoader:
    """Whole batches read by the dataset, no collation."""
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=WORKERS,
        sampler=ChunkBatchSampler(dataset, BATCH, seed=0),
        persistent_workers=True,
    )


def store_loader(dataset: SpectrogramDataset) -> SpectrogramLoader:
    return SpectrogramLoader(dataset, BATCH, seed=0, num_workers=WORKERS, persistent_workers=True)


def touch(batch: torch.Tensor) -> None:
    """Read one value in every memory page of a batch, as a training step reads them all.

    A batch that a worker wrote to shared memory is mapped into this process page by page
    on first read; leaving it unread would leave that cost out of the figures.
    """
    flat = batch.reshape(-1)
    flat[:: max(1, PAGE // flat.element_size())].sum()


def one_pass(batches: Iterable[torch.Tensor], epochs: int = 1) -> float:
    """Images/s over ``epochs`` back-to-back epochs of a loader."""
    n = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in batches:
            n += len(batch)
            touch(batch)
    return n / (time.perf_counter() - start)


def measure(
    loaders: dict[str, Iterable[torch.Tensor]], passes: int, epochs: int
) -> dict[str, float]:
    """Median images/s per loader over passes taken in turn, so that drift in the machine's
    speed falls on every contender alike; one warm-up epoch each first. A pass is several
    epochs back to back, as in training: a store epoch here lasts only about 0.2 s, and its
    first batches pay for what the previous contender's pass left in memory."""
    for batches in loaders.values():
        one_pass(batches)  # worker start, imports, page cache
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    for _ in range(passes):
        for name, batches in loaders.items():
            rates[name].append(one_pass(batches, epochs))
    return {name: float(np.median(r)) for name, r in rates.items()}


def files_under(path: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=5000, help="Clips in the dataset.")
    parser.add_argument("--passes", type=int, default=5, help="Timed passes of each.")
    parser.add_argument("--epochs", type=int, default=3, help="Epochs in each timed pass.")
    parser.add_argument("--workdir", type=Path, default=ROOT, help="Where data/ and results go.")
    args = parser.parse_args()
    torch.set_num_threads(1)

    store, png_files = prepare(args.count, args.workdir)
    dataset = SpectrogramDataset(store)
    raw = SpectrogramDataset(store, as_float=False)
    png = PngFolder([png_files[i] for i in range(len(png_files))])
    assert len(png) == len(dataset), "the PNG export and the store disagree"

    results: dict[str, Any] = {
        "count": len(dataset),
        "image_shape": list(dataset.config.image_shape),
        "batch_size": BATCH,
        "num_workers": WORKERS,
        "files_on_disk": {"store": files_under(store), "png_folder": len(png_files)},
        "images_per_second": measure(
            {
                "png_folder": loader(png, None),
                "store_random": loader(dataset, None),
                "store_chunk_shuffle": loader(dataset, ChunkShuffleSampler(dataset, seed=0)),
                "store_chunk_batches": batch_loader(dataset),
                "store_loader": store_loader(dataset),
                # uint8 items, converted after the batch arrives (on the GPU, in training):
                "png_folder_uint8": loader(PngFolder(png.files, as_float=False), None),
                "store_loader_uint8": store_loader(raw),
            },
            args.passes,
            args.epochs,
        ),
    }
    speed = results["images_per_second"]
    results["ratio_to_png"] = {
        k: speed[k] / speed["png_folder"]
        for k in speed
        if k.startswith("store_") and "uint8" not in k
    }
    results["ratio_to_png_uint8"] = speed["store_loader_uint8"] / speed["png_folder_uint8"]
    out = args.workdir / "bench" / "results" / "read.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")

    print(
        f"{len(dataset)} images of {dataset.config.image_shape}, batches of {BATCH}, "
        f"{WORKERS} DataLoader workers, median of {args.passes} passes of {args.epochs} epochs:"
    )
    files = results["files_on_disk"]
    print(
        f"  {'PNG folder, shuffle=True':<44} {speed['png_folder']:8.0f} images/s  "
        f"({files['png_folder']} files)"
    )
    for key, label in (
        ("store_random", "store, shuffle=True"),
        ("store_chunk_shuffle", "store, ChunkShuffleSampler"),
        ("store_chunk_batches", "store, batch_size=None + ChunkBatchSampler"),
        ("store_loader", "store, SpectrogramLoader"),
    ):
        print(
            f"  {label:<44} {speed[key]:8.0f} images/s  ({files['store']} files)  "
            f"{results['ratio_to_png'][key]:.1f}x the PNG folder"
        )
    print(
        f"  uint8 items: PNG folder {speed['png_folder_uint8']:.0f} images/s, store "
        f"through SpectrogramLoader {speed['store_loader_uint8']:.0f} images/s, "
        f"{results['ratio_to_png_uint8']:.1f}x"
    )
    print(f"Results in {out}.")


if __name__ == "__main__":
    main()
