"""Each preset through the whole pipeline, against its source's feature function
(:mod:`tests.references`), in one process and on a Dask cluster."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from melpipe.analysis.config import SpectrogramConfig
from melpipe.analysis.presets import PRESET_NAMES, PRESETS
from melpipe.read.reader import SpectrogramStore, open_store
from melpipe.run.executors import LoopExecutor
from melpipe.run.runner import preprocess
from tests.helpers import (
    TESTS,
    Interrupted,
    assert_images_match,
    assert_one_line_error,
    assert_same_arrays,
    interrupt_images_after,
    librosa_log_mel,
    read_all,
    reference_image,
    run_cli,
    synth,
)
from tests.references import REFERENCES, audio_diffusion_image

PLUCK = TESTS / "audio" / "pluck-pcm16.wav"


# --- The sources' feature functions ---------------------------------------------------


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> Path:
    """The recorded pluck (shorter than every preset's clip), two generated files longer
    than the longest clip (three seconds at 22,050 Hz) at other rates and channel counts,
    and a broken file."""
    root = tmp_path_factory.mktemp("recordings")
    rng = np.random.default_rng(22)
    (root / "pluck.wav").write_bytes(PLUCK.read_bytes())
    sf.write(root / "tone_48k.flac", synth(rng, 48000, 2, 3.2), 48000, subtype="PCM_24")
    sf.write(root / "noise_16k.wav", synth(rng, 16000, 1, 3.5), 16000, subtype="FLOAT")
    (root / "broken.wav").write_bytes(b"RIFF, but nothing after it")
    return root


def source_images(store: SpectrogramStore, root: Path, name: str) -> tuple[list, np.ndarray]:
    """Each clip's features by the preset's source, from ``librosa.load`` of its file at
    the store's rate (with HiFi-GAN's and BigVGAN's ``normalize(audio) * 0.95`` where the
    preset has it), and their images: on the store's scale, or for audio-diffusion its
    own image of the slice, flipped and inverted as melpipe's are."""
    config, found, images = store.config, [], []
    relative = store.scale.relative
    lo, hi = store.scale.bounds() if not relative else (None, None)
    for i in range(len(store)):
        y, _ = librosa.load(root / store.paths[i], sr=config.sample_rate, mono=True)
        if config.peak_normalize is not None:
            y = librosa.util.normalize(y) * config.peak_normalize
        start = int(store.start_sample[i])
        clip = librosa.util.fix_length(y[start : start + config.n_samples], size=config.n_samples)
        found.append(REFERENCES.get(name, lambda y: librosa_log_mel(y, config))(clip))
        if relative:
            assert name == "audio-diffusion", "only its preset scales each image by its own"
            images.append(255 - np.flipud(audio_diffusion_image(clip)))
        else:
            images.append(reference_image(found[-1], lo, hi))
    return found, np.stack(images)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_a_preset_through_the_whole_pipeline(name, recordings, tmp_path):
    """Made by the command line; the images within one level of the source's features on
    the store's scale and ``to_features`` within half a level of them; the preset's
    statistic; every convention recorded; resumed and ``--stats-from`` runs equal; another
    preset's statistics refused."""
    out = tmp_path / f"{name}.zarr"
    args = ["--preset", name, "--segments", "all", "--batch-size", "2"]
    run_cli("preprocess", recordings, out, *args)
    store = open_store(out)
    config = store.config
    assert config == SpectrogramConfig.from_options(preset=name, segments="all")
    assert store.used == PRESETS[name].stats
    recorded_config = read_all(out)[1]["config"]
    assert {k: recorded_config[k] for k in PRESETS[name].config} == PRESETS[name].config
    assert list(store.file_errors != "") == [True, False, False, False]  # broken.wav only

    features, expected = source_images(store, recordings, name)
    images = store[:]
    assert_images_match(images, expected, f"{name} images")
    source = np.stack(features)
    lo, hi = store.scale.bounds(store.array("clip_max") if store.scale.relative else None)
    inside = (source >= lo) & (source <= hi)
    error = np.abs(store.features(slice(None)) - source) - (hi - lo) / 510
    assert (error[inside] <= 1e-4).all(), name  # 1e-4: float32 and the source's rounding

    resumed = tmp_path / "resumed.zarr"
    with pytest.raises(Interrupted):
        preprocess(recordings, resumed, config, batch_size=2, executor=LoopExecutor(),
                   progress=interrupt_images_after(1))  # fmt: skip
    preprocess(recordings, resumed, config, batch_size=2, executor=LoopExecutor())
    assert_same_arrays(resumed, out)

    scaled = tmp_path / "scaled.zarr"
    preprocess(recordings, scaled, config, batch_size=2, stats_from=out, executor=LoopExecutor())
    np.testing.assert_array_equal(open_store(scaled)[:], images)
    other = "vocos" if name != "vocos" else "hifigan"
    refused = run_cli("preprocess", recordings, tmp_path / "other.zarr", "--preset", other,
                      "--segments", "all", "--stats-from", out, check=False)  # fmt: skip
    assert_one_line_error(refused, "--stats-from", f"preset ('{other}', '{name}')")


@pytest.mark.cluster
@pytest.mark.parametrize("name", ["hifigan", "specgan"])
def test_a_preset_gives_the_same_bits_on_a_dask_cluster(name, recordings, tmp_path, dask_executor):
    """Every step on worker processes: the store equals the one plain loops make, bit
    for bit, with another batch size and without scratch. With batches of 3 windows,
    the longer files' peaks are read before pass 1; in batches of 64, their tasks
    measure them as they decode their windows."""
    config = SpectrogramConfig.from_options(preset=name, segments="all")
    loops, cluster = tmp_path / "loops.zarr", tmp_path / "cluster.zarr"
    preprocess(recordings, loops, config, batch_size=64, executor=LoopExecutor())
    preprocess(recordings, cluster, config, batch_size=3, scratch=False, executor=dask_executor)
    assert_same_arrays(cluster, loops)
    if config.peak_normalize is not None:
        peaks = open_store(cluster).array("peak")
        assert np.isnan(peaks[0]) and (peaks[1:] > 0).all()  # broken.wav has none
