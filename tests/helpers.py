"""Helpers shared by the tests: generated datasets, independent references, store readers,
and ways to stop a run part-way. Test files import from here, never from each other."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import soundfile as sf
import zarr

from melpipe.analysis.config import SpectrogramConfig
from melpipe.analysis.pixels import BINS_PER_UNIT
from melpipe.analysis.stats import GlobalStats, PixelSummary, Range, StatsOptions

REPO = Path(__file__).resolve().parent.parent  # the checkout: docs, recipes, the package
TESTS = REPO / "tests"

# (relative path, sample rate, channels, seconds, subtype): a small dataset that mixes what
# real ones mix, with clips both shorter and longer than the default one-second clip.
GOOD_FILES = [
    ("a/tone_16k.wav", 16000, 1, 0.6, "PCM_16"),
    ("a/tone_44k_stereo.wav", 44100, 2, 1.4, "PCM_24"),
    ("a/sub/noise_48k.flac", 48000, 1, 1.1, "PCM_16"),
    ("b/chirp_22k.wav", 22050, 1, 1.0, "FLOAT"),
    ("b/chirp_32k_stereo.flac", 32000, 2, 0.3, "PCM_24"),
    ("b/vorbis_22k.ogg", 22050, 1, 0.8, "VORBIS"),
    ("c/long_8k.wav", 8000, 1, 3.0, "PCM_16"),
    ("c/quiet_22k.wav", 22050, 2, 1.7, "PCM_16"),
    ("d/pulse_44k.aiff", 44100, 1, 0.5, "PCM_16"),
    ("d/Upper_case.WAV", 22050, 1, 0.9, "PCM_16"),
]
BROKEN_FILES = [
    "bad/empty.wav",
    "bad/header_only.wav",
    "bad/not_audio.wav",
    "bad/nan.wav",
    "bad/truncated.wav",
]
# Every array of a store whose contents a run decides.
ARRAYS = (
    "images", "file_index", "start", "start_sample", "clip_min", "clip_max", "level_db",
    "clipped", "path", "decoded", "error", "duration", "sample_rate", "channels", "n_clips",
    "first_clip", "audio_frames", "histogram", "peak",
)  # fmt: skip


def synth(rng: np.random.Generator, sr: int, channels: int, seconds: float) -> np.ndarray:
    """A decaying tone plus noise, distinct per channel, float32 of shape (frames, channels)."""
    n = int(sr * seconds)
    t = np.arange(n) / sr
    columns = []
    for c in range(channels):
        f0 = rng.uniform(100, min(3000, sr / 4))
        tone = np.sin(2 * np.pi * f0 * t + c) * np.exp(-rng.uniform(1, 5) * t)
        columns.append(0.5 * tone + 0.05 * rng.standard_normal(n))
    return (np.stack(columns, axis=1) * rng.uniform(0.2, 0.9)).astype(np.float32)


def write_dataset(root: Path, rng: np.random.Generator, *, broken: bool = True) -> Path:
    """GOOD_FILES (and, with ``broken``, BROKEN_FILES) under ``root``, plus a text file and a
    hidden file that are not listed."""
    for rel, sr, channels, seconds, subtype in GOOD_FILES:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, synth(rng, sr, channels, seconds), sr, subtype=subtype)
    (root / "a" / "notes.txt").write_text("not audio, and not listed\n")
    (root / ".hidden.wav").write_bytes(b"hidden files are skipped")
    if broken:
        bad = root / "bad"
        bad.mkdir(parents=True, exist_ok=True)
        (bad / "empty.wav").write_bytes(b"")
        sf.write(bad / "header_only.wav", np.zeros((0, 1), np.float32), 22050)
        (bad / "not_audio.wav").write_text("this is text, not RIFF\n")
        nan = synth(rng, 22050, 1, 0.5)
        nan[100] = np.nan
        sf.write(bad / "nan.wav", nan, 22050, subtype="FLOAT")
        sf.write(bad / "truncated.wav", synth(rng, 22050, 1, 1.0), 22050, subtype="PCM_16")
        size = os.path.getsize(bad / "truncated.wav")
        os.truncate(bad / "truncated.wav", size // 3)
    return root


def librosa_log_mel(y: np.ndarray, config: SpectrogramConfig) -> np.ndarray:
    """The independent reference: librosa's own melspectrogram, then the post's log."""
    mel = librosa.feature.melspectrogram(
        y=y,
        sr=config.sample_rate,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        n_mels=config.n_mels,
        fmin=config.fmin,
        fmax=config.fmax,
    )
    return np.log(mel + 1e-9)


def librosa_clip_log_mel(path: Path, config: SpectrogramConfig) -> np.ndarray:
    """A file's reference log-mel: librosa.load at the rate, cropped or padded, analysed."""
    y, _ = librosa.load(path, sr=config.sample_rate, mono=True)
    return librosa_log_mel(librosa.util.fix_length(y, size=config.n_samples), config)


def reference_image(logmel: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The post's scaling done right, in plain numpy: clipped, rounded, flipped, inverted."""
    scaled = np.clip(np.rint((logmel.astype(np.float64) - lo) / (hi - lo) * 255), 0, 255)
    return 255 - np.flipud(scaled).astype(np.uint8)


def assert_images_match(actual: np.ndarray, expected: np.ndarray, what: str = "images") -> None:
    """The exactness users need of images made two ways (melpipe's analysis and
    librosa's, or two versions): every pixel within one level of the other, and at least
    99.9% of them equal."""
    assert actual.shape == expected.shape, what
    diff = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
    assert diff.max(initial=0) <= 1, f"{what}: a pixel differs by {diff.max()} levels"
    if diff.size:
        assert (diff == 0).mean() >= 0.999, f"{what}: {(diff != 0).mean():.4%} of pixels differ"


# Keys of the stats attribute that are shares of pixels, or counts of levels, not values.
_SHARES, _LEVEL_COUNTS = {"at_min", "at_max", "clipped_fraction"}, {"levels_99"}


def assert_stats_match(actual: Any, expected: Any, key: str = "stats") -> None:
    """Two stats attributes alike within float32 rounding: statistics to
    1e-5 relative (the percentiles to one bin of the histogram they are read from, which
    is their own resolution), shares of pixels to 0.1% of the pixels, and counts of
    levels to one."""
    name = key.rsplit(".", 1)[-1]
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), key
        for k in expected:
            assert_stats_match(actual[k], expected[k], f"{key}.{k}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), key
        for a, e in zip(actual, expected, strict=True):
            assert_stats_match(a, e, key)
    elif isinstance(expected, float):
        if name in _SHARES:
            tolerance = 1e-3
        elif "percentile" in key.split("."):
            tolerance = 1.0 / BINS_PER_UNIT
        else:
            tolerance = 1e-5 * abs(expected) + 1e-5
        assert abs(actual - expected) <= tolerance, f"{key}: {actual!r} against {expected!r}"
    elif name in _LEVEL_COUNTS:
        assert abs(actual - expected) <= 1, f"{key}: {actual!r} against {expected!r}"
    else:
        assert actual == expected, key


def assert_arrays_match(actual: np.ndarray, expected: np.ndarray, name: str) -> None:
    """A store's array against another version's within float32 rounding:
    images as :func:`assert_images_match`; float32 values, which come from log-mels (a
    clip's extrema), to 1e-5 relative; the per-clip counts of clipped pixels to
    0.1% of a clip's pixels and the histogram's counts to 0.1% of all; the rest equal."""
    assert actual.shape == expected.shape, name
    if actual.dtype == np.uint8:
        assert_images_match(actual, expected, name)
    elif actual.dtype == np.float32:
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5, err_msg=name)
    elif name == "clipped":
        np.testing.assert_allclose(actual, expected, atol=1e-3 * IMAGE_PIXELS, err_msg=name)
    elif name == "histogram":
        assert actual.sum() == expected.sum(), name
        moved = np.abs(actual - expected).sum() / 2  # each value that changed bin, counted once
        assert moved <= 1e-3 * expected.sum(), f"{name}: {moved} values in other bins"
    else:
        np.testing.assert_array_equal(actual, expected, err_msg=name)


# Pixels of the default image, the largest that the tests compare.
IMAGE_PIXELS = math.prod(SpectrogramConfig.from_options().image_shape)


def read_all(path: Path | str) -> tuple[dict[str, np.ndarray], dict]:
    """Every array a run decides, and the attributes, as plain zarr reads them."""
    group = zarr.open_group(str(path), mode="r")
    return {name: group[name][:] for name in ARRAYS if name in group}, dict(group.attrs)


def assert_same_arrays(store: Path | str, reference: Path | str) -> None:
    arrays, attrs = read_all(store)
    expected, expected_attrs = read_all(reference)
    for name in ARRAYS:
        np.testing.assert_array_equal(arrays[name], expected[name], err_msg=name)
    for key in ("stats", "counts"):
        assert attrs[key] == expected_attrs[key], key


def stored_objects(store: Path) -> dict[str, bytes]:
    """Every stored object but the root metadata (times, paths) and the lock file (owner)."""
    skip = {store / "zarr.json", store / "melpipe.lock"}
    return {
        p.relative_to(store).as_posix(): p.read_bytes()
        for p in sorted(store.rglob("*"))
        if p.is_file() and p not in skip and not p.name.endswith(".partial")
    }


def assert_same_bytes(store: Path, reference: Path) -> None:
    ours, theirs = stored_objects(store), stored_objects(reference)
    assert ours.keys() == theirs.keys()
    different = [k for k in ours if ours[k] != theirs[k]]
    assert not different, different[:5]
    assert read_all(store)[1]["stats"] == read_all(reference)[1]["stats"]


def run_cli(
    *args: object, check: bool = True, timeout: float = 240, **kwargs
) -> subprocess.CompletedProcess:
    """Run the command line as a user does, in a new process."""
    result = subprocess.run(
        [sys.executable, "-m", "melpipe", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """A failed command printed one line of error, with each fragment and no traceback."""
    assert result.returncode != 0, result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


class Interrupted(Exception):
    pass


def interrupt_images_after(n_batches: int):
    """A progress callback that stops the run after ``n_batches`` batches of images, as a
    killed client stops it: no cleanup, no completion mark."""

    class Bar:
        def __init__(self, description: str) -> None:
            self.images, self.done = "images" in description, 0

        def update(self, n: int = 1) -> None:
            self.done += n
            if self.images and self.done >= n_batches:
                raise Interrupted

        def close(self) -> None:
            pass

    return lambda description, total: Bar(description)


def simple_stats(
    mean: tuple[float, float], extrema: tuple[float, float], n_mels: int = 4
) -> GlobalStats:
    """Recorded statistics made from two ranges: ``percentile`` is ``mean``, ``top-db``
    ends at the maximum, and every band has the mean's low end and a std of 1."""
    pixels = PixelSummary(1000, extrema[1], (mean[0],) * n_mels, (1.0,) * n_mels)
    placeholder = Range(*mean)
    stats = GlobalStats(Range(*mean), Range(*extrema), placeholder, placeholder, placeholder,
                        StatsOptions(), pixels)  # fmt: skip
    return stats._derive(stats.options)


def random_rows(rng: np.random.Generator, n: int, config: SpectrogramConfig) -> tuple[dict, dict]:
    """Values for every clip array and every file array of a store of ``n`` clips, as a
    run would write them: files of 1 to 3 clips, with some failed files among them."""
    n_clips: list[int] = []
    while sum(n_clips) < n:
        if rng.random() < 0.2:
            n_clips.append(0)  # a file that did not decode
        n_clips.append(min(int(rng.integers(1, 4)), n - sum(n_clips)))
    n_clips = np.array(n_clips, dtype=np.int64)
    decoded = n_clips > 0
    n_files = len(n_clips)
    starts = np.concatenate([np.arange(k) * config.n_samples for k in n_clips]).astype(np.int64)
    lows = rng.uniform(-21, -5, n).astype(np.float32)
    clips = {
        "images": rng.integers(0, 256, (n, *config.image_shape), dtype=np.uint8),
        "file_index": np.repeat(np.arange(n_files), n_clips),
        "start_sample": starts,
        "start": starts / config.sample_rate,
        "clip_min": lows,
        "clip_max": lows + 10,
        "level_db": rng.uniform(-60, 0, n).astype(np.float32),
        "clipped": rng.integers(0, 50, n).astype(np.uint32),
        "audio_frames": rng.integers(1, config.n_frames + 1, n),
    }
    files = {
        "path": np.array([f"dir/clip_{i:04d}.wav" for i in range(n_files)], dtype=object),
        "decoded": decoded,
        "error": np.array(
            ["" if ok else f"AudioError: broken {i} ✗" for i, ok in enumerate(decoded)],
            dtype=object,
        ),
        "duration": np.where(decoded, n_clips * config.n_samples / config.sample_rate, np.nan),
        "frames": np.where(decoded, n_clips * config.n_samples, 0),
        "sample_rate": np.where(decoded, 44100, 0),
        "channels": np.where(decoded, 2, 0),
        "size": np.where(decoded, 44 + 4 * n_clips * config.n_samples, 0),
        "peak": np.where(decoded, rng.uniform(0.1, 1.0, n_files), np.nan),
        "source": np.zeros(n_files, np.int64),
        "pcm_format": np.array(["s16le" if ok else "" for ok in decoded], dtype=object),
        "pcm_md5": np.array(
            [f"{i + 1:032x}" if ok else "" for i, ok in enumerate(decoded)], dtype=object
        ),
        "bytes_sha256": np.array([f"{i:064x}" for i in range(n_files)], dtype=object),
        "probe": np.where(decoded, np.arange(n_files) * 7919 + 1, 0),
        "duplicate_of": np.full(n_files, -1, np.int64),
        "n_clips": n_clips,
        "first_clip": np.cumsum(n_clips) - n_clips,
    }
    return clips, files


def a_source(files: int, clips: int, **fields: Any) -> Any:
    """The table-of-sources entry of a run that added ``files`` files and ``clips`` clips."""
    from melpipe.store.schema import SourceRecord

    values = dict(action="run", run_id="test-run", created="2026-11-26T00:00:00+00:00",
                  input="nowhere", first_file=0, files=files, first_clip=0, clips=clips,
                  skipped=0, duplicates=0, dropped=0, clipped_low=0, clipped_high=0, pixels=0,
                  own=None)  # fmt: skip
    return SourceRecord(**{**values, **fields})


def write_store(
    path: Path, rows: tuple[dict, dict], config: SpectrogramConfig, batch_size: int
) -> None:
    """A complete store holding ``rows`` (see :func:`random_rows`), written through the
    store module's own API."""
    import dataclasses

    from melpipe.analysis.pixels import histogram_grid
    from melpipe.run.plan import plan_batches
    from melpipe.store import lock, writer
    from melpipe.store.schema import Counts, Sizes, StatsRecord, StoreAttrs

    clips, files = rows
    n, n_files = len(clips["file_index"]), len(files["path"])
    attrs = StoreAttrs(
        status="incomplete",
        run_id="test-run",
        created="2026-11-26T00:00:00+00:00",
        input="nowhere",
        config=config,
        plan={"test": True},
        versions={},
    )
    with lock.hold(str(path), lock.Owner.new("test-run"), create=True) as claim:
        sizes = Sizes(clips=0, files=n_files, windows=n)
        writer.create(claim, attrs, sizes=sizes, batch_size=batch_size)
        writer.create_windows(claim, n, batch_size, scratch=False)
        writer.create_clips(claim, n, batch_size)
        windows = {
            "window_ok": np.ones(n, bool),
            "window_level": clips["level_db"],
            "window_min": clips["clip_min"],
            "window_max": clips["clip_max"],
            "window_frames": clips["audio_frames"],
            "window_audio_max": clips["clip_max"],
            "window_size": np.full(n, 1000, np.int64),
            "window_modified": np.full(n, 1.8e9),
        }
        small = {k: v for k, v in clips.items() if k not in ("images", "clipped")}
        histogram = np.zeros((1, histogram_grid(config.eps)[1]), np.int64)
        writer.write_chosen(claim, {**files, **small, **windows, "histogram": histogram})
        for batch in plan_batches(n, batch_size):
            part = {k: clips[k][batch.start : batch.stop] for k in ("images", "clipped")}
            writer.write(claim, batch, part)
        stats = simple_stats((-15.0, 0.0), (-21.0, 5.0), n_mels=config.n_mels)
        counts = Counts(n_files, int(np.count_nonzero(files["decoded"])), n)
        record = StatsRecord(stats, "mean", None, 0.0)
        done = dataclasses.replace(attrs, status="complete", stats=record, counts=counts,
                                   sources=(a_source(n_files, n),))  # fmt: skip
        writer.finish(claim, done)


def as_nobody(fn, *args):
    """``fn(*args)`` in a forked process that runs as user ``nobody``, so that permissions
    apply even when the tests run as root; its result comes back through a pipe."""
    import multiprocessing
    import pickle

    if os.geteuid() != 0:
        return fn(*args)
    reader, writer = multiprocessing.get_context("fork").Pipe(duplex=False)
    pid = os.fork()
    if pid == 0:  # the child: drop root for good, then do the work
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            writer.send(("ok", fn(*args)))
        except BaseException as exc:
            writer.send(("error", pickle.dumps(exc)))
        finally:
            os._exit(0)
    writer.close()
    kind, value = reader.recv()
    os.waitpid(pid, 0)
    if kind == "error":
        raise pickle.loads(value)
    return value


def world_readable_folder() -> Path:
    """A new folder that user nobody can enter (pytest's own are private to root)."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="melpipe-test-"))
    folder.chmod(0o755)
    return folder


def copy_of(path: Path, tmp_path: Path, name: str = "copy.zarr") -> Path:
    """A copy of a store, to alter."""
    copy = tmp_path / name
    shutil.copytree(path, copy)
    return copy


def edit_attrs(path: Path, change: Callable[[dict], object]) -> None:
    """Change a store's group attributes in place, as a hand or a tool would."""
    metadata = json.loads((path / "zarr.json").read_text())
    change(metadata["attributes"])
    (path / "zarr.json").write_text(json.dumps(metadata))


def tones(folder: Path, n: int, seed: int, rate: int = 22050, prefix: str = "t") -> Path:
    """``n`` short decaying tones of random pitch and loudness, as PCM-16 WAVs."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        t = np.arange(int(rate * rng.uniform(0.3, 0.8))) / rate
        y = rng.uniform(0.05, 0.9) * np.sin(2 * np.pi * rng.uniform(100, 3000) * t) * np.exp(-3 * t)
        sf.write(folder / f"{prefix}{i:02d}.wav", y.astype(np.float32), rate, subtype="PCM_16")
    return folder


def long_and_short(root: Path) -> dict[str, tuple[Path, int]]:
    """A minute of 44.1 kHz stereo noise as a WAV, and a second less as a FLAC (of one
    length, they would be read whole to compare their samples), 20 MB in all, under
    ``root/long``; the same two cut to three and two seconds under ``root/short``. By
    name, each folder and the bytes of its files."""
    rng = np.random.default_rng(9)
    y = (0.2 * rng.standard_normal((60 * 44100, 2))).astype(np.float32)
    found = {}
    for name, seconds in (("long", 60), ("short", 3)):
        folder = root / name
        folder.mkdir(parents=True)
        sf.write(folder / "a.wav", y[: seconds * 44100], 44100, subtype="PCM_16")
        sf.write(folder / "b.flac", y[: (seconds - 1) * 44100], 44100, subtype="PCM_16")
        found[name] = folder, sum(p.stat().st_size for p in folder.iterdir())
    return found


@dataclass(frozen=True)
class Values:
    """A partial result that keeps order and merges associatively: any grouping of
    merges gives the same result."""

    items: tuple[Any, ...] = ()

    @classmethod
    def empty(cls) -> Values:
        return cls()

    def merge(self, other: Values) -> Values:
        return Values(self.items + other.items)


def square_and_add(item: tuple[int, int], scale: int) -> Values:
    x, y = item
    return Values((Fraction(scale * x * x + y),))


class Bar:
    def __init__(self) -> None:
        self.updates = 0

    def update(self, n: int = 1) -> None:
        self.updates += n

    def close(self) -> None:
        pass


def reference_md5(values: np.ndarray, bits: int) -> str:
    """FLAC's MD5 of samples: interleaved, each signed little-endian in bits / 8 bytes."""
    width = bits // 8
    packed = b"".join(v.to_bytes(width, "little", signed=True) for v in values.ravel().tolist())
    return hashlib.md5(packed).hexdigest()


def reference_starts(n_audio: int, n: int, hop: int, tail: str) -> list[int]:
    """Window starts by a plain loop: every whole window, then (with "pad") one more that
    reaches past the end if audio is left; a file shorter than a clip gives one window."""
    if n_audio <= n:
        return [0]
    starts, s = [], 0
    while s + n <= n_audio:
        starts.append(s)
        s += hop
    if tail == "pad" and starts[-1] + n < n_audio and s < n_audio:
        starts.append(s)
    return starts


def config_of(**options) -> SpectrogramConfig:
    return SpectrogramConfig.from_options(n_mels=32, hop_length=128, **options)


def start_and_wait_for(
    argv: list[str], text: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str]:
    """Start a command and read its error output until ``text`` appears.

    The pipe is read a byte at a time, unbuffered: a buffer would hold output read past
    ``text`` that :func:`rest_of` (which reads the pipe itself) never sees.
    """
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
                               env=env)  # fmt: skip
    seen, wanted = b"", text.encode()
    while wanted not in seen:
        byte = process.stderr.read(1)
        assert byte, f"the command ended before {text!r}:\n{seen.decode(errors='replace')}"
        seen += byte
    return process, seen.decode()


def rest_of(process: subprocess.Popen, timeout: float) -> str:
    """The error output of a command from :func:`start_and_wait_for`, once it ended."""
    return process.communicate(timeout=timeout)[1].decode()
