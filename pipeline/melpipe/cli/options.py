"""The command line's options, made from the library's declarations of them
(:mod:`melpipe.parameters`): a flag, its help and its default are written once, on the
field they set, and every command that takes the option takes that one.

A command lists the options it takes by name, in the order ``--help`` shows them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from melpipe.analysis.config import SpectrogramConfig
from melpipe.analysis.stats import StatsOptions
from melpipe.parameters import Option, options_of
from melpipe.run.executors import Cluster, TLSFiles
from melpipe.run.plan import Request

Command = TypeVar("Command", bound=Callable[..., Any])  # a command's function

# Every declared option, by the keyword the library takes.
DECLARED: dict[str, Option] = {
    o.name: o
    for kind in (SpectrogramConfig, StatsOptions, Request, Cluster, TLSFiles)
    for o in options_of(kind)
}
# The options that make a config (SpectrogramConfig.from_options takes them).
CONFIG = tuple(o.name for o in options_of(SpectrogramConfig))
STATS = tuple(o.name for o in options_of(StatsOptions))
CLUSTER = tuple(o.name for o in options_of(Cluster))
TLS = tuple(o.name for o in options_of(TLSFiles))

SIZES = ("sample_rate", "n_mels", "hop_length", "n_fft", "fmin", "fmax", "duration", "frames")
CONVENTIONS = (
    "preset", "spectrum", "power", "win_length", "padding", "pad_mode", "mel_htk", "mel_norm",
    "drop_nyquist", "log", "eps", "stft_eps", "peak_normalize",
)  # fmt: skip
SEGMENTS = ("segments", "segment_hop", "tail", "max_clips_per_file", "select", "min_level_db")
PREPROCESS = (
    "files_from", *SIZES, *CONVENTIONS, *SEGMENTS, "stats", *STATS, "stats_from", *CLUSTER,
    "batch_size", *TLS, "scratch", "overwrite", "append", "duplicates",
)  # fmt: skip
SCAN = ("sample_rate", "hop_length", "duration", "frames", "preset", *SEGMENTS)


def help_of(option: Option) -> str:
    """The help ``--help`` shows: what it means, and its default in words."""
    return f"{option.help}  [default: {option.shown}]" if option.shown else option.help


def click_option(option: Option) -> Callable[[Command], Command]:
    """The click option of a declaration."""
    kwargs: dict[str, Any] = {"help": help_of(option)}
    if option.off is not None:
        kwargs["default"] = None  # not given: the library's default applies
    elif option.is_flag:
        kwargs["is_flag"] = True
    else:
        kind = option.kind
        if isinstance(kind, tuple):
            kwargs["type"] = click.Choice(kind)
        elif kind == "file":
            kwargs["type"] = click.Path(dir_okay=False)
        elif kind is not None:
            kwargs["type"] = kind
        if option.nargs != 1:
            kwargs["nargs"] = option.nargs
        if option.metavar is not None:
            kwargs["metavar"] = option.metavar
    return click.option("/".join(option.flags), option.name, **kwargs)


def declared(*names: str) -> Callable[[Command], Command]:
    """A decorator that gives a command the declared options ``names``, in that order."""

    def decorate(command: Command) -> Command:
        for name in reversed(names):
            command = click_option(DECLARED[name])(command)
        return command

    return decorate
