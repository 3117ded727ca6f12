"""Parsing a config's parameters: each value checked as it is read, and the filter bank's
defaults filled in; every refusal a :class:`~melpipe.errors.ConfigError` naming the
parameter and what came in (zarr-python's ``parse_*`` functions do the same for its
metadata).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from melpipe.analysis import features
from melpipe.errors import ConfigError

N_MELS = 128
FMIN = 0.0


def positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"Expected `{name}` to be a positive integer. Got {value!r} instead.")
    return int(value)


def choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"Expected `{name}` to be one of {', '.join(choices)}. Got {value!r}.")
    return str(value)


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"Expected `{name}` to be True or False. Got {value!r} instead.")
    return bool(value)


def bank(
    spectrum: str,
    sample_rate: int,
    n_mels: Any,
    fmin: Any,
    fmax: Any,
    mel_htk: Any,
    mel_norm: Any,
) -> dict[str, Any]:
    """The filter bank's parameters, checked: defaults for a mel spectrum, and none at all
    for a linear one, which refuses any that is given."""
    given = {"n_mels": n_mels, "fmin": fmin, "fmax": fmax, "mel_htk": mel_htk,
             "mel_norm": mel_norm}  # fmt: skip
    if spectrum == "linear":
        named = [f"`{k}`" for k, v in given.items() if v is not None]
        if named:
            raise ConfigError(
                f"{', '.join(named)} only appl{'ies' if len(named) == 1 else 'y'} with "
                "`spectrum='mel'`; `spectrum='linear'` keeps the FFT's frequency bins."
            )
        return dict.fromkeys(given)
    return {
        "n_mels": positive_int("n_mels", N_MELS if n_mels is None else n_mels),
        "fmin": finite_float("fmin", FMIN if fmin is None else fmin),
        "fmax": finite_float("fmax", sample_rate / 2 if fmax is None else fmax),
        "mel_htk": False if mel_htk is None else flag("mel_htk", mel_htk),
        "mel_norm": choice(
            "mel_norm", "slaney" if mel_norm is None else mel_norm, features.MEL_NORMS
        ),
    }


def finite_float(name: str, value: Any) -> float:
    try:
        parsed = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"Expected `{name}` to be a number. Got {value!r} instead.") from None
    if not math.isfinite(parsed):
        raise ConfigError(f"Expected `{name}` to be a finite number. Got {value!r} instead.")
    return parsed
