"""Reading a finished store: indexing, refusals, and the inverses to log-mel and to audio."""

import pickle
import shutil

import librosa
import numpy as np
import pytest
import soundfile as sf
import xarray as xr
import zarr

from melpipe.analysis.segments import SILENCE_DB
from melpipe.errors import ArgumentError, ClipIndexError, StoreError
from melpipe.read.reader import open_store
from melpipe.run.executors import LoopExecutor
from melpipe.run.runner import preprocess
from tests.helpers import GOOD_FILES, Interrupted, interrupt_images_after, librosa_clip_log_mel


@pytest.fixture(scope="module")
def reader(finished_store):
    return open_store(finished_store)


@pytest.fixture(scope="module")
def raw(finished_store):
    """The store's arrays as plain zarr reads them, to compare the reader against."""
    group = zarr.open_group(finished_store, mode="r")
    return {name: group[name][:] for name in ("images", "path", "file_index", "decoded", "error")}


def test_indexing_returns_what_zarr_stores(reader, raw):
    assert len(reader) == 10  # one clip of each file that decoded
    assert reader[3].shape == (64, 87) and reader[3].dtype == np.uint8
    np.testing.assert_array_equal(reader[3], raw["images"][3])
    np.testing.assert_array_equal(reader[-1], raw["images"][9])
    np.testing.assert_array_equal(reader[2:10:3], raw["images"][2:10:3])
    with pytest.raises(ClipIndexError, match="out of range"):
        reader[10]


def test_read_many_keeps_the_order_asked_for(reader, raw):
    # Unsorted, repeated, negative, and spread over several chunks of 4.
    indices = [9, 0, 5, 5, -2, 7, 4, 8]
    np.testing.assert_array_equal(reader[indices], raw["images"][indices])
    np.testing.assert_array_equal(reader[np.array(indices)], raw["images"][indices])
    mask = np.arange(10) % 3 == 1
    np.testing.assert_array_equal(reader[mask], raw["images"][mask])
    assert reader[[]].shape == (0, 64, 87)
    with pytest.raises(IndexError):
        reader[[0, 10]]
    with pytest.raises(IndexError):
        reader[np.ones(3, bool)]


def test_read_many_fills_out_alike_with_or_without_zarr_decoding(finished_store, reader, raw):
    # A local store's chunks are decoded by the reader itself; through fsspec, by zarr.
    through_zarr = open_store(finished_store.as_uri())
    assert reader._store._decoder is not None and through_zarr._store._decoder is None
    order = np.random.default_rng(0).permutation(10)
    for each in (reader, through_zarr):
        out = np.empty((10, 64, 87), np.uint8)
        assert each.read_many(order, out=out) is out
        np.testing.assert_array_equal(out, raw["images"][order])
        last_chunk = [9, 8, 9]  # 2 clips in a chunk of 4
        np.testing.assert_array_equal(each.read_many(last_chunk), raw["images"][last_chunk])
    with pytest.raises(ArgumentError, match="uint8 array of shape"):
        reader.read_many([1, 2], out=np.empty((3, 64, 87), np.uint8))


def test_a_pickled_reader_opens_the_store_again(reader):
    copy = pickle.loads(pickle.dumps(reader))
    assert copy is not reader and copy.path == reader.path
    np.testing.assert_array_equal(copy[[3, 9]], reader[[3, 9]])


def test_every_chunk_is_written_even_one_of_fill_values(tmp_path, config):
    # A silent file's clip has level_db at its floor and images that are one value: each
    # chunk is still written, so that a missing one always means missing data.
    source = tmp_path / "in"
    source.mkdir()
    sf.write(source / "a.wav", np.zeros(22050, np.float32), 22050)
    sf.write(source / "b.wav", 0.1 * np.sin(np.arange(22050) * 0.1), 22050)
    out = tmp_path / "ones.zarr"
    preprocess(source, out, config, executor=LoopExecutor(), batch_size=1, stats="extrema")
    reader = open_store(out)
    assert (reader[0] == 255).all() and reader.level_db[0] == SILENCE_DB
    assert (out / "images" / "c" / "0" / "0" / "0").is_file()
    assert (out / "clipped" / "c" / "0").is_file()  # 0, the fill value


def test_clip_and_file_arrays(reader, raw):
    assert reader.paths.tolist() == raw["path"][raw["file_index"]].tolist()
    assert reader.chunk_length == 4
    assert set(reader.paths) == {p for p, *_ in GOOD_FILES}
    assert all(reader.file_errors[reader.failed_files])
    assert not any(reader.file_errors[reader.decoded])
    assert len(reader.failed_files) == 5
    for i in range(len(reader)):
        assert reader.clips_of(int(reader.file_index[i])).tolist() == [i]
        assert reader.clips_of(str(reader.paths[i])).tolist() == [i]
        assert reader.label(i) == f"{reader.paths[i]}@0.000s"
    assert reader.clips_of(int(reader.failed_files[0])).tolist() == []
    with pytest.raises(ArgumentError, match=r"No file 'nowhere\.wav'"):
        reader.clips_of("nowhere.wav")
    assert reader.used == "mean"
    assert reader.config.n_mels == 64
    assert "10 clips of 15 files" in repr(reader)


def test_unfinished_and_foreign_stores_are_refused(dataset, tmp_path, config):
    path = tmp_path / "half.zarr"
    with pytest.raises(Interrupted):
        preprocess(
            dataset, path, config, executor=LoopExecutor(), progress=interrupt_images_after(1)
        )
    with pytest.raises(StoreError, match="unfinished"):
        open_store(path)
    zarr.open_group(tmp_path / "other.zarr", mode="w")
    with pytest.raises(StoreError, match="not a melpipe store"):
        open_store(tmp_path / "other.zarr")
    with pytest.raises(StoreError, match="No Zarr store"):
        open_store(tmp_path / "missing.zarr")


def test_a_store_of_another_format_version_is_refused(finished_store, tmp_path):
    copy = tmp_path / "old.zarr"
    shutil.copytree(finished_store, copy)
    group = zarr.open_group(copy, mode="r+", use_consolidated=False)
    group.attrs["format_version"] = 2
    with pytest.raises(StoreError, match=r"format version 2.*Make it again: preprocess its input"):
        open_store(copy)


def test_to_logmel_is_within_half_a_step_where_not_clipped(reader, dataset, config):
    """Against librosa's own log-mel of each file, not the pipeline's."""
    scale = reader.scale
    half_step = (scale.max - scale.min) / 510
    checked = 0
    for i in range(len(reader)):
        reference = librosa_clip_log_mel(dataset / reader.paths[i], config)
        restored = reader.to_logmel(reader[i])
        inside = (reference >= scale.min) & (reference <= scale.max)
        error = np.abs(restored - reference)[inside]
        # The slack covers float32 rounding of values that sit on a level's boundary.
        assert error.max() <= half_step * (1 + 1e-3) + 1e-5, reader.paths[i]
        checked += inside.sum()
        # Clipped pixels come back as the nearest end of the range, never wrapped.
        np.testing.assert_allclose(restored[reference > scale.max], scale.max, atol=1e-5)
        np.testing.assert_allclose(restored[reference < scale.min], scale.min, atol=1e-5)
    # With the mean statistic this small dataset clips about a fifth of its pixels.
    assert checked > 0.5 * len(reader) * 64 * 87


def spectral_convergence(reference_power: np.ndarray, power: np.ndarray) -> float:
    """||ref - est||_F / ||ref||_F over mel magnitudes (square roots of the mel powers)."""
    ref, est = np.sqrt(reference_power), np.sqrt(power)
    return float(np.linalg.norm(ref - est) / np.linalg.norm(ref))


def test_to_audio_reanalysed_is_close_to_the_original(dataset, config, tmp_path):
    """Griffin-Lim from the stored image does as well as librosa's from the exact log-mel.

    Inverting 64 mel bands loses detail whatever the input, so the reference is librosa's
    own ``mel_to_audio`` of the unquantized mel power: the store's quantization must add
    little to what the inversion itself loses. The store is scaled with the extrema, since
    what the mean statistic clips is lost by design (the README gives both figures).
    """
    preprocess(dataset, tmp_path / "extrema.zarr", config, executor=LoopExecutor(), stats="extrema")
    reader = open_store(tmp_path / "extrema.zarr")
    mel_options = {
        "sr": config.sample_rate,
        "n_fft": config.n_fft,
        "hop_length": config.hop_length,
        "fmin": config.fmin,
        "fmax": config.fmax,
    }
    ours, librosas = [], []
    for i in range(len(reader)):
        y = reader.to_audio(int(i))
        assert y.shape == (config.n_samples,) and y.dtype == np.float32
        logmel = librosa_clip_log_mel(dataset / reader.paths[i], config).astype(np.float64)
        original = np.maximum(np.exp(logmel) - 1e-9, 0.0)
        direct = librosa.feature.inverse.mel_to_audio(
            original, length=config.n_samples, **mel_options
        )
        again = librosa.feature.melspectrogram(y=y, n_mels=config.n_mels, **mel_options)
        again_direct = librosa.feature.melspectrogram(y=direct, n_mels=config.n_mels, **mel_options)
        ours.append(spectral_convergence(original, again))
        librosas.append(spectral_convergence(original, again_direct))
    ours_, librosas_ = np.array(ours), np.array(librosas)
    print("spectral convergence, store:", ours_.round(3), "librosa:", librosas_.round(3))
    # Measured: median 0.23 (librosa 0.22), worst 0.37 (librosa 0.37); see the README.
    assert np.all(ours_ <= librosas_ + 0.03)
    assert np.median(ours_) < 0.3


def test_to_audio_is_reproducible_and_takes_an_image(reader):
    i = 0
    np.testing.assert_array_equal(reader.to_audio(i), reader.to_audio(reader[i]))
    assert not np.array_equal(reader.to_audio(i, seed=0), reader.to_audio(i, seed=1))
    with pytest.raises(ArgumentError, match="one image of shape"):
        reader.to_audio(reader[[i, i]])


def test_xarray_opens_it_with_named_dimensions_and_coordinates(finished_store, reader, config):
    ds = xr.open_zarr(finished_store)
    assert ds["images"].dims == ("clip", "mel", "frame")
    assert ds["images"].dtype == np.uint8  # 255 is a pixel value, not a missing value
    np.testing.assert_array_equal(ds["images"].values, reader[:])
    assert ds["path"].values.tolist() == reader.file_paths.tolist()
    # Row 0 is the highest band; each coordinate is where that row's filter peaks.
    filters = librosa.filters.mel(
        sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels, fmax=config.fmax
    )
    bins = librosa.fft_frequencies(sr=config.sample_rate, n_fft=config.n_fft)
    peaks = bins[filters.argmax(axis=1)][::-1]
    bin_width = config.sample_rate / config.n_fft
    assert np.all(np.abs(ds["mel"].values - peaks) <= bin_width)
    assert np.all(np.diff(ds["mel"].values) < 0)
    assert ds["mel"].attrs["units"] == "Hz"
    expected_times = np.arange(config.n_frames) * config.hop_length / config.sample_rate
    np.testing.assert_allclose(ds["frame"].values, expected_times)
    assert ds["frame"].attrs["units"] == "s"
    assert ds.attrs["status"] == "complete"
    assert ds["path"].dims == ("file",)
    # The clip's file and start time are coordinates of the clip dimension.
    assert set(ds["images"].coords) >= {"file_index", "start", "mel", "frame"}
    np.testing.assert_array_equal(ds["file_index"].values, reader.file_index)
    assert ds["start"].dims == ("clip",) and ds["start"].attrs["units"] == "s"
