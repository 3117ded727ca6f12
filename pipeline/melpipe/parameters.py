"""A parameter declared once: its default, its help and its flag, in the field metadata of
the frozen object it belongs to.

The library's objects (:class:`melpipe.analysis.config.SpectrogramConfig`, the statistics'
options, a run's request) declare their fields with :func:`parameter`; the command line
makes its options from those declarations (:mod:`melpipe.cli.options`), and a test checks
docs/cli.md's table of options against them. Nothing else writes a default or a help text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

OPTION = "option"  # the metadata key of a field's declaration


@dataclass(frozen=True, kw_only=True)
class Option:
    """How a person gives a parameter: a flag (``--hop-length``), what it means, and the
    default as ``--help`` and the docs show it.

    ``name`` is the keyword the library takes (the field's, unless the command line gives
    the value in other units, as ``duration`` gives ``n_samples``); ``off`` names the flag
    that turns a boolean off (``--no-scratch``), ``is_flag`` one that only turns it on. An
    option not given passes nothing (None, or False for ``is_flag``), so that the library's
    default, the field's, applies.
    """

    name: str = ""
    help: str
    shown: str | None = None  # the default in words; None: the field's, "": none
    kind: Any = None  # str, int, float, or a tuple of the choices
    metavar: str | None = None
    nargs: int = 1
    off: str | None = None
    is_flag: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def flags(self) -> tuple[str, ...]:
        return (self.flag,) if self.off is None else (self.flag, self.off)


def parameter(default: Any, *options: Option) -> Any:
    """A dataclass field with ``default``, given on the command line as ``options`` (one,
    usually; two where a value can be given two ways, as a clip's length)."""
    return dataclasses.field(default=default, metadata={OPTION: options})


def required(*options: Option) -> Any:
    """A dataclass field without a default, given on the command line as ``options``."""
    return dataclasses.field(metadata={OPTION: options})


def options_of(kind: type) -> Iterator[Option]:
    """The options a frozen dataclass's fields declare, in field order, each named and with
    its default in words (the field's own, where the option does not say otherwise)."""
    for f in dataclasses.fields(kind):
        for option in f.metadata.get(OPTION, ()):
            named = {"name": option.name or f.name}
            if option.shown is None:
                given = f.default not in (dataclasses.MISSING, None)
                named["shown"] = shown(f.default) if given else ""
            yield dataclasses.replace(option, **named)


def shown(value: Any) -> str:
    """A default as ``--help`` shows it: ``22050``, ``1e-09``, ``0.1 99.9``."""
    if isinstance(value, tuple):
        return " ".join(map(shown, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
