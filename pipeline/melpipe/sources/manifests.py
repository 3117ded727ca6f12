"""Files named by a manifest (``--files-from``) instead of found by a walk of INPUT.

A manifest is read as a stream, one line at a time, in one of the forms datasets already
come with (docs/cli.md, "Manifests"):

- plain text: one path per line;
- JSON Lines (``.jsonl``, ``.json``): one object per line, its path under ``path``
  (AudioCraft), ``audio_filepath`` (NeMo), or a lhotse recording's first file source
  (``sources[0].source``, ``type`` "file");
- CSV or TSV (``.csv``, ``.tsv``) with a header row: the column ``path`` or
  ``audio_filepath``.

Any of them may be compressed (``.gz``, ``.bz2``, ``.xz``, ``.zst``: fsspec infers it from
the name), and local or an fsspec URL. Paths are relative to INPUT, or absolute ones under
INPUT. Every line names a file of the run whatever its extension: one that names no file
fails when it is opened, and is listed with the other failures. The files take the store's
order (sorted), and a path given twice is one file. A manifest is sorted in ranges that
spill to disk (:mod:`melpipe.sources.sorted_paths`), never held whole.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator
from typing import IO, Any

from melpipe.errors import InputError
from melpipe.sources.discover import Listing, is_url
from melpipe.sources.sorted_paths import sort_paths

# The keys and columns that hold a file's path, in the order they are looked for.
PATH_KEYS = ("path", "audio_filepath")
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")


def manifest_kind(location: str) -> str:
    """A manifest's form from its name (a compression suffix aside): "jsonl", "csv",
    "tsv" or "text"."""
    name = location.lower()
    for suffix in COMPRESSIONS:
        name = name.removesuffix(suffix)
    extension = os.path.splitext(name)[1]
    return {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv"}.get(
        extension, "text"
    )


def read_manifest(location: str | os.PathLike[str], root: str | os.PathLike[str]) -> Listing:
    """The files a manifest names, as paths relative to ``root``, in store order.

    Raises
    ------
    InputError
        The manifest cannot be read, a line of it names no path or a path outside
        ``root``, or it names no file at all.
    """
    location, root = os.fspath(location), os.fspath(root)
    _check_root(root)
    kind = manifest_kind(location)
    try:
        with _open_text(location) as stream:
            named = (_relative(path, root, location, number)
                     for number, path in _paths(stream, kind, location))  # fmt: skip
            files = sort_paths(named)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"The manifest {location!r} does not exist.") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(
            f"Cannot read the manifest {location!r}: {type(exc).__name__}: {exc}"
        ) from exc
    if not files:
        raise InputError(f"The manifest {location!r} names no file.")
    return Listing(root, files)


def _check_root(root: str) -> None:
    if not is_url(root) and not os.path.isdir(root):
        raise InputError(f"Input {root!r} is not a folder: the manifest's paths are under it.")


def _open_text(location: str) -> Any:
    import fsspec

    return fsspec.open(location, "rt", encoding="utf-8", newline="", compression="infer")


def _paths(stream: IO[str], kind: str, location: str) -> Iterator[tuple[int, str]]:
    """Each line's number and path."""
    if kind == "jsonl":
        yield from _json_paths(stream, location)
    elif kind in ("csv", "tsv"):
        yield from _table_paths(stream, "\t" if kind == "tsv" else ",", location)
    else:
        for number, line in enumerate(stream, 1):
            path = line.rstrip("\r\n")
            if path.strip():
                yield number, path


def _json_paths(lines: Iterable[str], location: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"Line {number} of the manifest {location!r} is not JSON: "
                             f"{exc.msg}.") from None  # fmt: skip
        path = _json_path(entry) if isinstance(entry, dict) else None
        if not isinstance(path, str) or not path:
            keys = ", ".join(PATH_KEYS)
            raise InputError(f"Line {number} of the manifest {location!r} names no file: "
                             f"give it one of {keys}, or lhotse's sources.")  # fmt: skip
        yield number, path


def _json_path(entry: dict[str, Any]) -> Any:
    for key in PATH_KEYS:
        if key in entry:
            return entry[key]
    sources = entry.get("sources")  # a lhotse recording
    first = sources[0] if isinstance(sources, list) and sources else None
    return first.get("source") if isinstance(first, dict) and first.get("type") == "file" else None


def _table_paths(lines: IO[str], delimiter: str, location: str) -> Iterator[tuple[int, str]]:
    reader = csv.reader(lines, delimiter=delimiter)
    header = next(reader, [])
    column = next((header.index(k) for k in PATH_KEYS if k in header), None)
    if column is None:
        raise InputError(f"The manifest {location!r} has no column named "
                         f"{' or '.join(PATH_KEYS)} in its first row.")  # fmt: skip
    for row in reader:
        if any(cell.strip() for cell in row):
            number = reader.line_num
            if column >= len(row) or not row[column]:
                raise InputError(f"Line {number} of the manifest {location!r} names no file.")
            yield number, row[column]


def _relative(path: str, root: str, location: str, number: int) -> str:
    """``path`` relative to ``root``, "/"-separated; an absolute one must lie under it."""
    where = f"Line {number} of the manifest {location!r} names {path!r}, which"
    fix = "give paths relative to INPUT, or as INPUT a folder that holds them all."
    if is_url(path) or os.path.isabs(path):
        base = root.rstrip("/") if is_url(root) else os.path.abspath(root)
        full = path if is_url(path) else os.path.normpath(path)
        if not full.startswith(base + "/"):
            raise InputError(f"{where} is not under INPUT {root!r}: {fix}")
        path = full[len(base) + 1 :]
    parts = [p for p in path.replace(os.sep, "/").split("/") if p not in ("", ".")]
    if ".." in parts or not parts:
        raise InputError(f"{where} is not a file under INPUT: {fix}")
    return "/".join(parts)
