"""How configuration values arrive and are checked.

Type and range checks shared by :mod:`tilesky.config`'s sections (a bool is
not a number, a float is not an integer, every bound is named in the
message), and the two ways text becomes values: a TOML file and a
``key=value`` override whose value is TOML.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tilesky.errors import ConfigError


def _pair(name: str, value: Any) -> tuple[int, int]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = (value, value)
    try:
        pair = tuple(value)
    except TypeError:
        msg = f"{name} must be an integer or a pair (ny, nx) of integers, got {value!r}"
        raise ConfigError(msg) from None
    if len(pair) != 2 or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and float(v).is_integer()
        for v in pair
    ):
        msg = f"{name} must be an integer or a pair (ny, nx) of integers, got {value!r}"
        raise ConfigError(msg)
    return (int(pair[0]), int(pair[1]))


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if isinstance(value, bool) or not isinstance(value, int | float) or not ok:
        bound = ">= 0" if allow_zero else "> 0"
        msg = f"{name} must be a number {bound}, got {value!r}"
        raise ConfigError(msg)
    if not math.isfinite(value):
        msg = f"{name} must be finite, got {value!r}"
        raise ConfigError(msg)


def _number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{name} must be a number, got {value!r}"
        raise ConfigError(msg)


def _fraction(name: str, value: Any) -> None:
    _number(name, value)
    if not 0 <= value <= 1:
        msg = f"{name} must be between 0 and 1, got {value!r}"
        raise ConfigError(msg)


def _maxiters(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"{name} must be an integer >= 1, got {value!r}"
        raise ConfigError(msg)


def _dq_bits(value: Any) -> None:
    # DQ extensions are 32-bit integers (JWST uint32, HST int16).
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        msg = (
            "dq_bits must be an integer from 0 to 4294967295 (the DQ bits that make "
            f"a pixel unusable, e.g. 1 for JWST's DO_NOT_USE), got {value!r}"
        )
        raise ConfigError(msg)


def _choice(name: str, value: str, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        msg = f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}"
        raise ConfigError(msg)


def _floats(name: str, value: Any) -> tuple[float, ...]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = (value,)
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        msg = f"{name} must be a list of numbers, got {value!r}"
        raise ConfigError(msg) from None
    return out


def _parse_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _read_toml(path: str | Path) -> dict:
    """The tables of a TOML file; one-line errors for unreadable ones."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        msg = f"cannot read configuration file {str(path)!r}: {exc.strerror}"
        raise ConfigError(msg) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        msg = (
            f"configuration file {str(path)!r} is not UTF-8 text (byte "
            f"{exc.start}); TOML files are UTF-8: save it as UTF-8"
        )
        raise ConfigError(msg) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = f"configuration file {str(path)!r} is not valid TOML: {exc}"
        raise ConfigError(msg) from None
