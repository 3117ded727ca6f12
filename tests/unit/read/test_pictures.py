"""Pictures for people and the reading commands: info, export-png, preview, invert."""

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from PIL import Image

from melpipe.analysis.config import SpectrogramConfig
from melpipe.cli.app import main
from melpipe.errors import MelpipeError
from melpipe.read import pictures
from melpipe.read.reader import open_store
from melpipe.run.executors import LoopExecutor
from melpipe.run.runner import preprocess


def run(*args, code=0):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result.output


def test_parse_indices():
    assert pictures.parse_indices("0, 5,10-12", 20).tolist() == [0, 5, 10, 11, 12]
    for bad in ("3-1", "20", "x", "", "1-25"):
        with pytest.raises(MelpipeError):
            pictures.parse_indices(bad, 20)


@pytest.fixture(scope="module")
def corpus_store(dataset, tmp_path_factory):
    """The session dataset cut into half-second windows."""
    config = SpectrogramConfig.from_options(n_mels=32, duration=0.5, segments="all")
    out = tmp_path_factory.mktemp("windows") / "windows.zarr"
    preprocess(dataset, out, config, executor=LoopExecutor())
    return out


def test_png_path_keeps_the_audio_extension_and_stays_inside(tmp_path):
    target = pictures.png_path(tmp_path, "a/b.wav@12.000s")
    assert target == (tmp_path / "a" / "b.wav@12.000s.png").resolve()
    with pytest.raises(MelpipeError, match="would leave"):
        pictures.png_path(tmp_path, "../escape.wav")


def test_export_png_writes_the_stored_pixels(finished_store, tmp_path):
    reader = open_store(finished_store)
    out = run("export-png", finished_store, tmp_path / "png")
    assert "Wrote 10 PNG files" in out
    files = sorted((tmp_path / "png").rglob("*.png"))
    assert len(files) == 10
    for i in range(len(reader)):
        with Image.open(tmp_path / "png" / f"{reader.paths[i]}@0.000s.png") as image:
            assert image.mode == "L"
            np.testing.assert_array_equal(np.asarray(image), reader[i])
    out = run("export-png", finished_store, tmp_path / "some", "--indices", "3,0-1")
    assert "Wrote 3 PNG files" in out


def test_info_reports_parameters_statistics_counts_and_failures(finished_store):
    reader = open_store(finished_store)
    out = run("info", finished_store)
    assert "clips 10 from 15 files: 10 decoded, 5 failed" in out
    assert "of which the clips hold" in out
    assert "n_mels             64" in out
    assert "segments           first" in out
    row = next(line for line in out.splitlines() if line.startswith("* mean "))
    assert f"{reader.stats.mean.min:9.3f} {reader.stats.mean.max:9.3f}" in row  # * marks the used
    assert "bad/not_audio.wav: LibsndfileError: Format not recognised" in out
    assert "size on disk" in out
    assert "(2 of 5 shown)" in run("info", finished_store, "--failures", 2)


def test_preview_writes_a_picture(finished_store, tmp_path):
    target = tmp_path / "preview.png"
    run("preview", finished_store, "-o", target, "--count", 5)
    with Image.open(target) as image:
        assert image.format == "PNG" and image.width > 600 and image.height > 400


def test_preview_labels_each_clip_with_its_file_and_start(corpus_store):
    reader = open_store(corpus_store)
    shown = np.array([0, 3, len(reader) - 1])
    fig = pictures.contact_sheet(reader, shown, columns=2)
    titles = [ax.get_title() for ax in fig.axes[: len(shown)]]
    for i, title in zip(shown, titles, strict=True):
        assert title.endswith(pictures._shorten(reader.label(int(i))))
        assert "@" in title and title.startswith(f"{i}: ")
    start = reader.start[shown[1]]
    assert fig.axes[1].get_xlim()[0] == pytest.approx(start)  # the time axis is the file's


def test_export_png_names_each_clip_after_its_file_and_start(corpus_store, tmp_path):
    reader = open_store(corpus_store)
    run("export-png", corpus_store, tmp_path / "png", "--indices", "0-4")
    for i in range(5):
        with Image.open(tmp_path / "png" / f"{reader.label(i)}.png") as image:
            np.testing.assert_array_equal(np.asarray(image), reader[i])
    assert reader.label(1).endswith("@0.500s")


def test_invert_writes_audio_at_the_store_rate(finished_store, tmp_path):
    reader = open_store(finished_store)
    i = 2
    target = tmp_path / "clip.wav"
    run("invert", finished_store, "--index", i, "-o", target, "--n-iter", 8)
    audio, rate = sf.read(target, dtype="float32")
    assert rate == reader.config.sample_rate and audio.shape == (reader.config.n_samples,)
    np.testing.assert_allclose(audio, reader.to_audio(i, n_iter=8), atol=1e-4)  # 16-bit WAV


def test_reading_commands_fail_clearly(finished_store, tmp_path):
    assert "outside the store's clips" in run(
        "invert", finished_store, "--index", 99, "-o", tmp_path / "x.wav", code=1
    )
    assert "no format soundfile writes" in run(
        "invert", finished_store, "--index", 0, "-o", tmp_path / "x.abc", code=1
    )
    assert "No Zarr store" in run("info", tmp_path / "nothing.zarr", code=1)
    assert "outside the store's clips" in run(
        "export-png", finished_store, tmp_path / "p", "--indices", "0-99", code=1
    )
