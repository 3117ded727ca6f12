"""Records as JSON values: one serializer for every dataclass melpipe writes down.

A store's attributes, its config and statistics, and a lock file's owner are frozen
dataclasses, *records*. :func:`to_dict` turns one into plain JSON values, field by field;
:func:`from_dict` reads one back, every field under its key and checked against its type
hint, so that a key that is missing or holds the wrong kind of value is refused with a
:class:`~melpipe.errors.RecordError` naming it, dotted for a nested record
(``'stats.pixels.band_mean'``), instead of surfacing later as a ``KeyError``.

A field's metadata says how it is recorded (:func:`key`, :func:`flat`, :func:`not_recorded`);
a record may also have a ``derived()`` method, keys computed from its fields or constant
(a config's ``n_frames``), which :func:`to_dict` writes and :func:`from_dict` checks.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from melpipe.errors import MelpipeError, RecordError

R = TypeVar("R")
_KEY, _FLAT, _SKIP = "melpipe_key", "melpipe_flat", "melpipe_skip"


def key(name: str) -> dict[str, Any]:
    """Field metadata: the field is recorded under ``name``, not its own name."""
    return {_KEY: name}


def flat() -> dict[str, Any]:
    """Field metadata: the field, a record (or None), is recorded with its keys beside its
    parent's rather than under a key of its own (None: each of them null)."""
    return {_FLAT: True}


def not_recorded() -> dict[str, Any]:
    """Field metadata: the field is not recorded (it needs a default)."""
    return {_SKIP: True}


def _fields(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if not f.metadata.get(_SKIP)]


def _key(field: dataclasses.Field[Any]) -> str:
    return str(field.metadata.get(_KEY, field.name))


def keys(cls: type) -> list[str]:
    """Every key a record of ``cls`` writes at its own level, derived ones aside."""
    hints = get_type_hints(cls)
    names: list[str] = []
    for f in _fields(cls):
        names += keys(_record_class(hints[f.name])) if f.metadata.get(_FLAT) else [_key(f)]
    return names


def to_dict(record: Any) -> dict[str, Any]:
    """``record`` as JSON values: each field under its key, then its derived keys."""
    hints = get_type_hints(type(record))
    out: dict[str, Any] = {}
    for f in _fields(type(record)):
        value = getattr(record, f.name)
        if f.metadata.get(_FLAT):
            nested = _record_class(hints[f.name])
            out.update(to_dict(value) if value is not None else dict.fromkeys(keys(nested)))
        else:
            out[_key(f)] = plain(value)
    derived = getattr(record, "derived", None)
    if derived is not None:
        out.update(plain(derived()))
    return out


def plain(value: Any) -> Any:
    """A value as JSON holds it: records as dicts, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def from_dict(cls: type[R], data: Any, where: str = "") -> R:
    """The record of ``cls`` that :func:`to_dict` gave ``data`` for. Keys that are not the
    record's are ignored; ``where`` is the dotted key of ``data`` itself, for messages.

    Raises
    ------
    RecordError
        A key is missing, holds the wrong kind of value, or a derived key disagrees; or
        the record's own checks refuse the values.
    """
    if not isinstance(data, Mapping):
        raise RecordError(f"{_named(where)} holds {_kind(data)}, not a mapping of keys")
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in _fields(cls):
        if f.metadata.get(_FLAT):
            values[f.name] = _flattened(hints[f.name], data, where)
            continue
        path = _join(where, _key(f))
        if _key(f) not in data:
            raise RecordError(f"lacks {path!r}")
        values[f.name] = _parse(hints[f.name], data[_key(f)], path)
    try:
        record = cls(**values)
    except (MelpipeError, TypeError, ValueError) as exc:  # the record's own checks
        raise RecordError(f"{_named(where)} cannot be used: {exc}") from None
    derived = getattr(record, "derived", None)
    _check_derived(plain(derived() if derived is not None else {}), data, where)
    return record


def _check_derived(expected: Mapping[str, Any], data: Mapping[str, Any], where: str) -> None:
    """Refuse ``data`` unless it holds each of the ``expected`` keys with its value (in a
    mapping, key by key), naming the first that it lacks or holds otherwise."""
    for name, value in expected.items():
        path = _join(where, name)
        if name not in data:
            raise RecordError(f"lacks {path!r}")
        if isinstance(value, Mapping) and isinstance(data[name], Mapping):
            _check_derived(value, data[name], path)
        elif data[name] != value:
            raise RecordError(
                f"{path!r} is {data[name]!r}, where this version of melpipe has {value!r}"
            )


def _flattened(hint: Any, data: Mapping[str, Any], where: str) -> Any:
    nested = _record_class(hint)
    optional = type(None) in get_args(hint)
    if optional and all(data.get(k, 0) is None for k in keys(nested)):
        return None
    return from_dict(nested, data, where)


def _parse(hint: Any, value: Any, path: str) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        # float | tuple[float, ...]: a list is read as the tuple, anything else as the other
        sequences = [a for a in options if get_origin(a) is tuple]
        others = [a for a in options if a not in sequences] or options
        return _parse((sequences if isinstance(value, list) and sequences else others)[0],
                      value, path)  # fmt: skip
    if origin is Literal:
        if value not in args:
            raise RecordError(f"{path!r} holds {value!r}, not one of {', '.join(map(repr, args))}")
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_dict(hint, value, path)
    if origin is tuple:
        return _parse_tuple(args, value, path)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise RecordError(f"{path!r} holds {_kind(value)}, not a mapping")
        return {str(k): _parse(args[1], v, _join(path, str(k))) for k, v in value.items()}
    return _parse_scalar(hint, value, path)


def _parse_tuple(args: tuple[Any, ...], value: Any, path: str) -> tuple[Any, ...]:
    if not isinstance(value, list | tuple):
        raise RecordError(f"{path!r} holds {_kind(value)}, not a list")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_parse(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    if len(value) != len(args):
        raise RecordError(f"{path!r} holds {len(value)} values, not {len(args)}")
    pairs = enumerate(zip(args, value, strict=True))
    return tuple(_parse(a, v, f"{path}[{i}]") for i, (a, v) in pairs)


# What JSON may hold for each scalar type (a whole number is a float too, never a bool).
_SCALARS: dict[Any, tuple[type, ...]] = {
    bool: (bool,),
    int: (int,),
    float: (int, float),
    str: (str,),
}


def _parse_scalar(hint: Any, value: Any, path: str) -> Any:
    accepted = _SCALARS.get(hint)
    if accepted is None:
        raise TypeError(f"records cannot read a field of type {hint!r}")
    if not isinstance(value, accepted) or (hint is not bool and isinstance(value, bool)):
        raise RecordError(f"{path!r} holds {_kind(value)}, not {hint.__name__}")
    return hint(value)


def _record_class(hint: Any) -> type:
    records = [a for a in (get_args(hint) or (hint,)) if dataclasses.is_dataclass(a)]
    if not records:
        raise TypeError(f"a flat field must hold a record, not {hint!r}")
    return typing.cast(type, records[0])


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _named(where: str) -> str:
    return repr(where) if where else "the record"


def _kind(value: Any) -> str:
    return "nothing (null)" if value is None else f"{type(value).__name__} {value!r}"[:80]
