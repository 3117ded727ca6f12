"""What a file's header says: its length, rate, channels and encoding, and for lossless
audio its PCM sample format and, in a FLAC's STREAMINFO, its samples' MD5.

Read by :func:`melpipe.sources.audio.open_audio`; the STREAMINFO layout is RFC 9639's
(section 8.2), the sample formats xiph/flac's (``src/libFLAC/md5.c``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import soundfile as sf

# A file's size in bytes and when it was last modified (seconds since 1970), where known.
Stamp = tuple[int, float]

# Bits per sample of libsndfile's subtypes; compressed subtypes have none.
BIT_DEPTHS = {
    "PCM_S8": 8, "PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32, "FLOAT": 32,
    "DOUBLE": 64, "ULAW": 8, "ALAW": 8, "DWVW_12": 12, "DWVW_16": 16, "DWVW_24": 24,
}  # fmt: skip


# The PCM sample formats whose samples can be hashed as FLAC's STREAMINFO hashes them
# (xiph/flac, src/libFLAC/md5.c, format_input_): interleaved, signed, little-endian, in as
# few whole bytes as the bit depth needs; floats little-endian. By libsndfile's subtype.
PCM_FORMATS = {
    "PCM_S8": "s8", "PCM_U8": "s8", "PCM_16": "s16le", "PCM_24": "s24le", "PCM_32": "s32le",
    "FLOAT": "f32le", "DOUBLE": "f64le",
}  # fmt: skip
PCM_BITS = {"s8": 8, "s16le": 16, "s24le": 24, "s32le": 32}


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What is known of one file: what its header says (its length in frames, sample
    rate, channels, container and encoding; zeros and "" where it could not be read), and
    why it gives no clip, or "". The one record of a file, from ``scan``'s headers to pass
    1's results; slotted, as pass 1 keeps one per file (100,000 of them in a large run)."""

    frames: int = 0
    sample_rate: int = 0
    channels: int = 0
    format: str = ""
    subtype: str = ""
    error: str = ""
    size: int = 0  # bytes, and when last modified (seconds since 1970), where known:
    modified: float = 0.0  # pass 2 checks that a file it decodes again is the same
    peak: float = math.nan  # the greatest |sample| at the store's rate, where measured
    # What tells duplicates (docs/cli.md, "Duplicates"): the PCM sample format of lossless
    # audio (:data:`PCM_FORMATS`, "" for any other encoding), and the MD5 of its samples
    # in that format where its header holds it (a FLAC's).
    pcm_format: str = ""
    pcm_md5: str = ""

    @classmethod
    def of(
        cls, f: sf.SoundFile, stamp: Stamp = (0, 0.0), flac: tuple[int, str] | None = None
    ) -> FileInfo:
        """The header of an open file, with its :data:`Stamp` and, for a FLAC, the bit
        depth and samples' MD5 of its STREAMINFO (:func:`flac_stream_info`). Its names are
        interned: a run holds one per file."""
        pcm, md5 = PCM_FORMATS.get(f.subtype, ""), ""
        if flac is not None:
            bits, md5 = flac
            if PCM_BITS.get(pcm) != bits:  # 20 bits, say: libsndfile gives them as 24
                pcm, md5 = "", ""
        return cls(f.frames, f.samplerate, f.channels, sys.intern(f.format),
                   sys.intern(f.subtype), size=stamp[0], modified=stamp[1],
                   pcm_format=sys.intern(pcm), pcm_md5=md5)  # fmt: skip

    @property
    def readable(self) -> bool:
        """Whether the header could be read (the file may still fail to decode)."""
        return self.sample_rate > 0

    @property
    def duration(self) -> float:
        """Seconds, as the header gives them; 0 where it could not be read."""
        return self.frames / self.sample_rate if self.sample_rate else 0.0

    @property
    def bit_depth(self) -> str:
        bits = BIT_DEPTHS.get(self.subtype)
        return f"{bits}-bit" if bits else "compressed"


def flac_stream_info(read_at: Callable[[int, int], bytes]) -> tuple[int, str] | None:
    """The bit depth of a FLAC stream and the MD5 of its samples, hex ("" where the
    encoder left it unset, all zeros), from its STREAMINFO block, read with
    ``read_at(offset, n)``; None where the bytes are not a FLAC stream's start.

    An ID3v2 tag before the stream is skipped. The block's layout (RFC 9639, 8.2): after
    "fLaC" and a 4-byte block header, 10 bytes of block and frame sizes, then 20 bits of
    sample rate, 3 of channels - 1, 5 of bits per sample - 1, 36 of total samples, and
    the 16-byte MD5.
    """
    head = read_at(0, 10)
    offset = 0
    if len(head) == 10 and head[:3] == b"ID3":
        # The tag's size: four bytes of seven bits each ("synchsafe"), after its flags.
        size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7
        size |= head[9] & 0x7F
        offset = 10 + size + (10 if head[5] & 0x10 else 0)  # a footer follows the tag
    block = read_at(offset, 42)
    if len(block) < 42 or block[:4] != b"fLaC" or block[4] & 0x7F != 0:  # 0: STREAMINFO
        return None
    info = block[8:]
    bits = ((info[12] & 0x01) << 4 | info[13] >> 4) + 1
    md5 = info[18:34]
    return bits, (md5.hex() if any(md5) else "")
