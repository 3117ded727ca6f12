"""Finding the audio files of a dataset and fixing their order.

The sorted list of relative paths defines the row of every file in the store, so it must
not depend on the file system's listing order, the worker count or the batch size.
INPUT is a local folder or an fsspec URL (``s3://bucket/audio``); a file's location is
always ``join(root, relative_path)``.
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


def is_url(location: str) -> bool:
    """Whether a location is an fsspec URL rather than a local path."""
    return "://" in location


def join(root: str, rel: str) -> str:
    """The location of file ``rel`` (with "/" separators) under ``root``."""
    return f"{root.rstrip('/')}/{rel}" if is_url(root) else os.path.join(root, rel)


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
    found = _list_url(os.fspath(root)) if is_url(os.fspath(root)) else _list_local(root)
    if not found:
        extensions = ", ".join(sorted(AUDIO_EXTENSIONS))
        raise InputError(f"No audio files under {str(root)!r} (looked for {extensions}).")
    return sorted(found)


def _list_local(root: str | os.PathLike[str]) -> list[str]:
    base = Path(root)
    if not base.is_dir():
        raise InputError(f"Input {str(root)!r} is not a folder.")
    found: list[str] = []
    for folder, subfolders, names in os.walk(base):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        rel = Path(folder).relative_to(base)
        found.extend((rel / name).as_posix() for name in names if is_audio_name(name))
    return found


def _list_url(root: str) -> list[str]:
    import fsspec

    try:
        fs, base = fsspec.core.url_to_fs(root)
        base = base.rstrip("/")
        if not fs.isdir(base):
            raise InputError(f"Input {root!r} is not a folder.")
        listed = fs.find(base)
    except InputError:
        raise
    except Exception as exc:  # each file system raises its own errors (auth, no bucket...)
        raise InputError(f"Cannot list input {root!r}: {type(exc).__name__}: {exc}") from exc
    found = []
    for path in listed:
        rel = path[len(base) :].lstrip("/")
        parts = rel.split("/")
        if not any(p.startswith(".") for p in parts[:-1]) and is_audio_name(parts[-1]):
            found.append(rel)
    return found
