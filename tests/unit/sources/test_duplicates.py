"""Duplicates found without decoding, against references written here apart from melpipe:
the MD5 of samples packed one by one with Python's ``int.to_bytes`` (as FLAC's
format_input_ packs them), a FLAC's STREAMINFO, a WAV's data chunk found by walking its
RIFF chunks; and which files the candidates' rule reads."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from melpipe.sources import duplicates
from melpipe.sources.audio import open_audio
from melpipe.sources.headers import flac_stream_info
from melpipe.sources.pcm import pcm_md5
from tests.helpers import reference_md5

BITS = {"PCM_S8": 8, "PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32}


def integers(rng: np.random.Generator, bits: int, frames: int, channels: int) -> np.ndarray:
    """Random samples of ``bits`` bits, the loudest of each sign included."""
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    values = rng.integers(low, high + 1, (frames, channels), dtype=np.int64)
    values[0, 0], values[1, 0] = low, high
    return values


def write_integers(path: Path, values: np.ndarray, bits: int, subtype: str, rate: int) -> None:
    """Write samples of ``bits`` bits exactly: soundfile takes int32 as full scale."""
    sf.write(path, (values << (32 - bits)).astype(np.int32), rate, subtype=subtype)


def reader_of(data: bytes):
    return lambda offset, n: data[offset : offset + n]


@pytest.mark.parametrize("subtype", ["PCM_S8", "PCM_16", "PCM_24"])
def test_a_flac_header_holds_the_md5_of_its_samples_as_flac_defines_it(tmp_path, rng, subtype):
    bits = BITS[subtype]
    values = integers(rng, bits, 3001, 2)
    path = tmp_path / "a.flac"
    write_integers(path, values, bits, subtype, 16000)
    expected = reference_md5(values, bits)
    assert flac_stream_info(reader_of(path.read_bytes())) == (bits, expected)
    with open_audio(path) as (f, info):
        assert (info.pcm_format, info.pcm_md5) == (f"s{bits}" + ("le" if bits > 8 else ""),
                                                   expected)  # fmt: skip
        assert pcm_md5(f, info.pcm_format) == expected  # the decoded samples hash alike


def test_a_flac_stream_info_is_found_after_an_id3_tag_and_an_unset_md5_is_unknown(tmp_path, rng):
    path = tmp_path / "a.flac"
    write_integers(path, integers(rng, 16, 500, 1), 16, "PCM_16", 8000)
    data = path.read_bytes()
    size = 300  # synchsafe: seven bits a byte
    tag = b"ID3\x04\x00\x00" + bytes([0, 0, size >> 7, size & 0x7F]) + b"\x00" * size
    assert flac_stream_info(reader_of(tag + data)) == flac_stream_info(reader_of(data))
    unset = bytearray(data)
    unset[8 + 18 : 8 + 34] = bytes(16)  # the MD5 of the STREAMINFO block after "fLaC"
    assert flac_stream_info(reader_of(bytes(unset))) == (16, "")
    sf.write(tmp_path / "a.wav", np.zeros(10, np.float32), 8000)
    assert flac_stream_info(reader_of((tmp_path / "a.wav").read_bytes())) is None


def data_chunk(path: Path) -> bytes:
    """The bytes of a WAV's data chunk, found by walking its chunks."""
    data = path.read_bytes()
    offset = 12
    while offset < len(data):
        name, size = (
            data[offset : offset + 4],
            struct.unpack("<I", data[offset + 4 : offset + 8])[0],
        )
        if name == b"data":
            return data[offset + 8 : offset + 8 + size]
        offset += 8 + size + (size & 1)
    raise AssertionError("no data chunk")


@pytest.mark.parametrize(("container", "subtype"), [
    ("WAV", "PCM_U8"), ("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "PCM_32"),
    ("AIFF", "PCM_S8"), ("AIFF", "PCM_16"), ("AIFF", "PCM_24"), ("AIFF", "PCM_32"),
])  # fmt: skip
def test_the_pcm_hash_of_any_container_is_the_md5_flac_gives_its_samples(
    tmp_path, rng, container, subtype
):
    bits = BITS[subtype]
    values = integers(rng, bits, 2000, 3)
    path = tmp_path / f"a.{container.lower()}"
    write_integers(path, values, bits, subtype, 44100)
    with open_audio(path) as (f, info):
        assert info.pcm_md5 == ""  # only a FLAC's header holds it
        assert pcm_md5(f, info.pcm_format) == reference_md5(values, bits)
    if container == "WAV" and bits > 8:  # the data chunk is those bytes already
        assert reference_md5(values, bits) == hashlib.md5(data_chunk(path)).hexdigest()


def test_float_samples_hash_as_little_endian_floats_and_lossy_ones_not_at_all(tmp_path, rng):
    y = rng.uniform(-1, 1, (700, 2)).astype(np.float32)
    sf.write(tmp_path / "a.aiff", y, 22050, subtype="FLOAT")
    with open_audio(tmp_path / "a.aiff") as (f, info):
        assert info.pcm_format == "f32le"
        assert (
            pcm_md5(f, "f32le") == hashlib.md5(struct.pack(f"<{y.size}f", *y.ravel())).hexdigest()
        )
    sf.write(tmp_path / "b.ogg", y, 22050)
    with open_audio(tmp_path / "b.ogg") as (_, info):
        assert (info.pcm_format, info.pcm_md5) == ("", "")


def test_only_groups_with_a_new_file_and_one_probe_are_read_and_hashes_decide():
    # Two of the store's files, then seven new ones: a group of the store's alone is not
    # read again, a known hash not again either, one size with two probes is no group,
    # a size of 0 (a file that did not decode) matches nothing.
    sizes = [10, 10, 20, 20, 30, 40, 40, 0, 0]
    probes = [1, 1, 5, 5, 5, 7, 8, 3, 3]
    new = np.arange(9) >= 2
    digests = np.array(["", "", "x", *[""] * 6], dtype=object)
    want, _ = duplicates.wanted(sizes, [""] * 9, probes, digests, digests.copy(), new)
    assert np.flatnonzero(want).tolist() == [3]
    _, by_shape = duplicates.wanted([0] * 9, ["s"] * 9, probes, digests, digests.copy(), new)
    assert np.flatnonzero(by_shape).tolist() == [3, 4, 7, 8]  # 2 has its MD5 already
    shape = duplicates.shape_of("s16le", 44100, 2, 5)
    assert (
        duplicates.shape_of("", 44100, 2, 5) == "" and duplicates.shape_of("s16le", 8, 1, 0) == ""
    )
    # The store's two files (a copy and its original), then three new ones.
    of = duplicates.assign(["b", "b", "", "b", "c"], ["", "", shape, "", shape],
                           ["", "", "m", "", "m"], old_duplicate_of=[-1, 0])  # fmt: skip
    assert of.tolist() == [-1, 0, 2]
