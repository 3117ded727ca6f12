"""Finding the audio files of a dataset and fixing their order.

The sorted list of relative paths defines the row of every file in the store, so it must
not depend on the file system's listing order, the worker count or the batch size.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import InputError

# Extensions of the containers libsndfile reads (soundfile.available_formats()). Files with
# other extensions (metadata, transcripts, READMEs) are not audio and are left alone; a file
# with an audio extension that does not decode is recorded as a failure.
AUDIO_EXTENSIONS = frozenset(
    """
    .aif .aifc .aiff .au .avr .caf .flac .htk .iff .mat .mp2 .mp3 .mpc .nist .oga .ogg
    .opus .paf .pvf .rf64 .sd2 .sds .sf .snd .sph .svx .voc .w64 .wav .wave .wve .xi
    """.split()
)


def utf8_safe(text: str) -> str:
    """``text`` with any undecodable file-name bytes as backslash escapes ("caf\\xe9.wav").

    A file name that is not valid UTF-8 reaches Python with surrogate escapes, which can
    be neither stored as UTF-8 nor printed; the file itself is still opened by its real name.
    """
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_audio_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS


def list_audio_files(root: str | os.PathLike[str]) -> list[str]:
    """Relative paths, with "/" separators, of the audio files under ``root``, sorted.

    Hidden files and folders (names starting with ".") are skipped.

    Raises
    ------
    InputError
        ``root`` is not a folder, or holds no audio file.
    """
    base = Path(root)
    if not base.is_dir():
        raise InputError(f"Input {str(root)!r} is not a folder.")
    found: list[str] = []
    for folder, subfolders, names in os.walk(base):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        rel = Path(folder).relative_to(base)
        found.extend((rel / name).as_posix() for name in names if is_audio_name(name))
    if not found:
        extensions = ", ".join(sorted(AUDIO_EXTENSIONS))
        raise InputError(f"No audio files under {str(root)!r} (looked for {extensions}).")
    return sorted(found)
