"""Finding the audio files of a dataset and fixing their order.

The sorted list of relative paths defines the row of every file in the store, so it must
not depend on the file system's listing order, the worker count or the batch size.
INPUT is a local folder or an fsspec URL (``s3://bucket/audio``); a file's location is
always ``join(root, relative_path)``.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from melpipe.errors import InputError
from melpipe.sources.sorted_paths import PathsOnDisk, sort_paths

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


def filesystem(location: str | os.PathLike[str]) -> tuple[Any, str]:
    """The fsspec file system of a local path or URL, and the path in it, no trailing "/"."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(os.fspath(location))
    return fs, path.rstrip("/")


def join(root: str, rel: str) -> str:
    """The location of file ``rel`` (with "/" separators) under ``root``."""
    return f"{root.rstrip('/')}/{rel}" if is_url(root) else os.path.join(root, rel)


def is_audio_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS


@dataclass(frozen=True)
class SkippedFolder:
    """A folder under the input that was not listed, and why."""

    path: str  # relative to the input, "/"-separated
    reason: str


@dataclass(frozen=True)
class Listing:
    """The audio files under an input location, in store order, and the folders skipped.
    A walk's or a manifest's ``files`` are on disk (:class:`PathsOnDisk`), read by row."""

    root: str
    files: Sequence[str]
    skipped: tuple[SkippedFolder, ...] = ()

    def __len__(self) -> int:
        return len(self.files)

    def close(self) -> None:
        """Let the files' temporary file go, if they have one."""
        if isinstance(self.files, PathsOnDisk):
            self.files.close()

    def sha256(self) -> str:
        """A fingerprint of the list of files, which fixes every file's row."""
        # In parts, not one joined string: that would be the size of the listing again,
        # at its peak (about 0.8 GB for ten million paths). The digest is the same.
        digest, part = hashlib.sha256(), 65536
        for start in range(0, len(self.files), part):
            if start:
                digest.update(b"\n")
            digest.update(
                "\n".join(self.files[start : start + part]).encode("utf-8", "surrogateescape")
            )
        return digest.hexdigest()


def list_audio_files(root: str | os.PathLike[str]) -> Listing:
    """The audio files under ``root``, as relative "/"-separated paths, sorted.

    Hidden files and folders (names starting with ".") are left out on purpose. Links to
    folders are followed, each folder listed once; a folder that cannot be read, or that
    a link leads back to, is reported in ``skipped`` with the reason. Any entry with an
    audio name that is not a folder is listed, even a FIFO or a broken link: it fails
    when opened, with its reason in the store, rather than disappearing.

    Raises
    ------
    InputError
        ``root`` is not a folder, cannot be listed, or holds no audio file.
    """
    location = os.fspath(root)
    listing = _list_url(location) if is_url(location) else _list_local(location)
    if not listing.files:
        extensions = ", ".join(sorted(AUDIO_EXTENSIONS))
        raise InputError(f"No audio files under {location!r} (looked for {extensions}).")
    return listing


def _list_local(root: str) -> Listing:
    try:
        top = os.stat(root)
    except FileNotFoundError:
        raise InputError(f"Input {root!r} does not exist.") from None
    except OSError as exc:
        raise InputError(f"Input {root!r} cannot be read: {exc.strerror}.") from None
    if not stat.S_ISDIR(top.st_mode):
        raise InputError(f"Input {root!r} is not a folder.")
    walk = _Walk(root, (top.st_dev, top.st_ino))
    files = sort_paths(walk.run())
    return Listing(root, files, tuple(sorted(walk.skipped, key=lambda s: s.path)))


class _Walk:
    """A walk of a local folder that follows links to folders, listing each folder once.

    Real folders are walked before links, so that a folder reachable both ways is listed
    under its own name; a link is followed only to a folder not listed yet, which also
    ends any loop.
    """

    def __init__(self, root: str, identity: tuple[int, int]) -> None:
        self.root = root
        self.skipped: list[SkippedFolder] = []
        self.seen = {identity: ""}  # folder identity -> the path it is listed under
        self.folders: list[str] = [""]  # real folders still to list, a stack
        self.links: list[str] = []  # links to folders, followed once no real folder is left

    def run(self) -> Iterator[str]:
        """The audio files' paths, as found."""
        while self.folders or self.links:
            if self.folders:
                yield from self._list(self.folders.pop())
            else:
                yield from self._follow(self.links.pop(0))

    def _follow(self, path: str) -> Iterator[str]:
        try:
            info = os.stat(os.path.join(self.root, path))
        except OSError as exc:  # the link broke meanwhile
            self._skip(path, exc)
            return
        first = self.seen.get((info.st_dev, info.st_ino))
        if first is not None:
            where = first or "the input folder itself"
            self.skipped.append(SkippedFolder(path, f"a link to {where}, which is listed already"))
            return
        self.seen[(info.st_dev, info.st_ino)] = path
        yield from self._list(path)

    def _list(self, rel: str) -> Iterator[str]:
        try:
            with os.scandir(os.path.join(self.root, rel) if rel else self.root) as entries:
                listed = sorted(entries, key=lambda e: e.name)
        except OSError as exc:
            self._skip(rel, exc)
            return
        folders = []
        for entry in listed:
            if entry.name.startswith("."):
                continue  # hidden files and folders, on purpose
            path = f"{rel}/{entry.name}" if rel else entry.name
            if not _is_folder(entry):
                if is_audio_name(entry.name):
                    yield path
            elif entry.is_symlink():
                self.links.append(path)
            else:
                info = entry.stat()
                self.seen[(info.st_dev, info.st_ino)] = path
                folders.append(path)
        self.folders.extend(reversed(folders))
        self.links.sort()

    def _skip(self, path: str, exc: OSError) -> None:
        reason = f"cannot be read: [Errno {exc.errno}] {exc.strerror}"
        self.skipped.append(SkippedFolder(path, reason))


def _is_folder(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows links, so a link to a folder is a folder
    except OSError:
        return False


# Prefixes listed at once: an object store pages each listing, 1,000 keys a request, so
# one prefix at a time waits on one round trip after another.
LISTING_THREADS = 16


def _find_by_prefix(fs: Any, base: str) -> Iterator[str]:
    """Every file under ``base``: the top level's files, and each folder (prefix) under it
    listed whole, several at a time."""
    from concurrent.futures import ThreadPoolExecutor

    top = fs.ls(base, detail=True)
    yield from (e["name"] for e in top if e["type"] != "directory")
    folders = [e["name"] for e in top if e["type"] == "directory"]
    # hidden folders are left out (as below), so not listed at all
    folders = [f for f in folders if not f.rstrip("/").rsplit("/", 1)[-1].startswith(".")]
    if folders:
        with ThreadPoolExecutor(min(LISTING_THREADS, len(folders))) as pool:
            for found in pool.map(fs.find, folders):
                yield from found


def _list_url(root: str) -> Listing:
    try:
        fs, base = filesystem(root)
        if not fs.isdir(base):
            raise InputError(f"Input {root!r} is not a folder.")
        files = sort_paths(_audio_under(_find_by_prefix(fs, base), base))
    except InputError:
        raise
    except Exception as exc:  # each file system raises its own errors (auth, no bucket...)
        raise InputError(f"Cannot list input {root!r}: {type(exc).__name__}: {exc}") from exc
    return Listing(root, files)


def _audio_under(listed: Iterator[str], base: str) -> Iterator[str]:
    """The audio files of an object store's listing, relative to ``base``."""
    for path in listed:
        rel = path[len(base) :].lstrip("/")
        parts = rel.split("/")
        if not any(p.startswith(".") for p in parts[:-1]) and is_audio_name(parts[-1]):
            yield rel
