import librosa
import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import describe_error, read_clip, source_frames_needed
from pipeline.errors import EmptyAudioError, NonFiniteAudioError, TruncatedAudioError
from tests.helpers import synth


def librosa_clip(path, sample_rate, n_samples):
    y, _ = librosa.load(path, sr=sample_rate, mono=True)
    return librosa.util.fix_length(y, size=n_samples)


@pytest.mark.parametrize("source_rate", [8000, 16000, 22050, 44100, 48000, 96000])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("seconds", [0.3, 1.0, 2.5])
def test_equals_librosa_load_cropped_and_padded(tmp_path, rng, source_rate, channels, seconds):
    path = tmp_path / "clip.wav"
    sf.write(path, synth(rng, source_rate, channels, seconds), source_rate, subtype="FLOAT")
    ours = read_clip(path, sample_rate=22050, n_samples=22050)
    assert ours.shape == (22050,)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, librosa_clip(path, 22050, 22050), rtol=0, atol=2e-6)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_integer_and_float_encodings(tmp_path, rng, subtype):
    path = tmp_path / "clip.flac" if subtype != "FLOAT" else tmp_path / "clip.wav"
    sf.write(path, synth(rng, 44100, 2, 1.2), 44100, subtype=subtype)
    ours = read_clip(path, sample_rate=16000, n_samples=16000)
    np.testing.assert_allclose(ours, librosa_clip(path, 16000, 16000), atol=2e-6)


def test_short_file_is_zero_padded_at_the_end(tmp_path, rng):
    path = tmp_path / "short.wav"
    sf.write(path, synth(rng, 22050, 1, 0.25), 22050, subtype="FLOAT")
    clip = read_clip(path, sample_rate=22050, n_samples=22050)
    assert np.abs(clip[: int(22050 * 0.25)]).max() > 0
    assert not clip[int(22050 * 0.25) :].any()


def test_only_the_needed_samples_are_decoded():
    assert source_frames_needed(22050, 22050, 22050) == 22050
    needed = source_frames_needed(22050, 44100, 22050)
    assert 44100 < needed < 44100 + 4096


def test_empty_file(tmp_path):
    path = tmp_path / "header_only.wav"
    sf.write(path, np.zeros((0, 1), np.float32), 22050)
    with pytest.raises(EmptyAudioError, match="no samples"):
        read_clip(path, sample_rate=22050, n_samples=100)


@pytest.mark.parametrize("extension", ["wav", "aiff"])
def test_truncated_file(tmp_path, rng, extension):
    path = tmp_path / f"truncated.{extension}"
    sf.write(path, synth(rng, 22050, 1, 1.0), 22050, subtype="PCM_16")
    with open(path, "r+b") as f:
        f.truncate(10000)
    with pytest.raises(TruncatedAudioError, match=r"header declares 441\d\d bytes"):
        read_clip(path, sample_rate=22050, n_samples=100)


def test_truncated_flac_is_a_decoding_error(tmp_path, rng):
    path = tmp_path / "truncated.flac"
    sf.write(path, synth(rng, 22050, 1, 1.0), 22050, subtype="PCM_16")
    with open(path, "r+b") as f:
        f.truncate(10000)
    with pytest.raises(sf.LibsndfileError):
        read_clip(path, sample_rate=22050, n_samples=22050)


def test_non_finite_samples(tmp_path, rng):
    path = tmp_path / "nan.wav"
    data = synth(rng, 22050, 1, 0.5)
    data[10] = np.inf
    sf.write(path, data, 22050, subtype="FLOAT")
    with pytest.raises(NonFiniteAudioError):
        read_clip(path, sample_rate=22050, n_samples=100)


def test_undecodable_file_reason(tmp_path):
    path = tmp_path / "text.wav"
    path.write_text("hello")
    with pytest.raises(sf.LibsndfileError) as info:
        read_clip(path, sample_rate=22050, n_samples=100)
    assert describe_error(info.value) == "LibsndfileError: Format not recognised"


def test_describe_error_of_our_own_errors():
    assert describe_error(EmptyAudioError("the file holds no samples")) == (
        "EmptyAudioError: the file holds no samples"
    )
