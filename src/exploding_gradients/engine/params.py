"""Declared parameters and their validation (the run machinery's first piece).

Every experiment and every chapter declares its parameters as :class:`Param` objects.
Values from the CLI (strings), from papermill (YAML may turn ``2024-01-01`` into a date
or ``1e3`` into a string) and from Python all pass through :func:`resolve`, which fails
*before any compute* with a message naming the parameter and what it accepts.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A parameter value, or name, that the experiment does not accept."""


_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


@dataclass(frozen=True)
class Param:
    """One named parameter: its type, default, and the values it allows.

    ``kind`` is ``int``, ``float``, ``str``, ``bool``, or a list of one of these written
    as ``list[int]`` etc. (lists come from the notebooks' sweeps).  ``low``/``high`` are
    inclusive bounds for numbers (and for every element of a list).
    """

    name: str
    kind: str
    default: Any
    help: str = ""
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    optional: bool = False  # ``None`` allowed (meaning "take it from the profile")

    def allowed(self) -> str:
        """Human-readable description of the allowed values."""
        if self.choices is not None:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        else:
            bounds = []
            if self.low is not None:
                bounds.append(f">= {self.low:g}")
            if self.high is not None:
                bounds.append(f"<= {self.high:g}")
            text = f"{self.kind}" + (" " + " and ".join(bounds) if bounds else "")
        if self.kind.startswith("list[") and self.choices is not None:
            text = f"a list whose elements are {text}"
        return text + (" (or None)" if self.optional else "")

    def validate(self, value: Any) -> Any:
        """Return ``value`` coerced to this parameter's type, or raise :class:`ConfigError`."""
        if value is None:
            if self.optional:
                return None
            raise self._error(value)
        if self.kind.startswith("list["):
            item = Param(self.name, self.kind[5:-1], None, choices=self.choices,
                         low=self.low, high=self.high)
            if isinstance(value, str):  # "1,2,3" or "[1, 2, 3]" from a command line
                value = [v for v in value.strip().strip("[]").split(",") if v.strip()]
            if not isinstance(value, (list, tuple)) or len(value) == 0:
                raise self._error(value, "a non-empty list of " + item.allowed())
            out = []
            for i, v in enumerate(value):
                try:
                    out.append(item.validate(v))
                except ConfigError:
                    raise self._error(v, item.allowed(), f"element {i} of the list: ") from None
            return out
        coerced = _coerce(self.kind, value)
        if coerced is None:
            raise self._error(value)
        if self.choices is not None and coerced not in self.choices:
            raise self._error(value)
        if self.kind in ("int", "float"):
            if (self.low is not None and coerced < self.low) or (
                self.high is not None and coerced > self.high
            ):
                raise self._error(value)
        return coerced

    def _error(self, value: Any, expected: str | None = None, where: str = "") -> ConfigError:
        return ConfigError(
            f"parameter {self.name!r}: {where}got {short_repr(value)} ({type(value).__name__}); "
            f"allowed: {expected or self.allowed()}"
        )


# Plain ASCII decimal numbers only: no "0x10", "1_000", "nan", "inf" or full-width "１２"
# (which float() would accept), so what is accepted is what a reader sees.
_INT_TEXT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_FLOAT_TEXT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)
_MAX_TEXT = 400  # characters; longer "numbers" are refused rather than parsed


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters; never raises (huge ints, odd objects)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"<int with about {int(value.bit_length() * 0.30103)} digits>"
    try:
        text = repr(value)
    except Exception:  # a repr that fails must not hide the real error
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[:limit] + "..."


def _number(value: Any) -> int | float | None:
    """``value`` as a Python int or finite-or-not float; ``None`` if it is not a number."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        return None  # True is an int in Python, never a depth; dates, lists, ... are not numbers
    if isinstance(value, str):
        text = value.strip()
        if len(text) > _MAX_TEXT:
            return None
        if _INT_TEXT.fullmatch(text):
            return int(text)
        if _FLOAT_TEXT.fullmatch(text):
            return float(text)
        return None
    if isinstance(value, numbers.Integral):  # int, numpy integers
        return int(value)
    try:
        return float(value)  # float, numpy floats, Fraction
    except (OverflowError, ValueError, TypeError):
        return None


def _coerce(kind: str, value: Any) -> Any:
    """Convert ``value`` to ``kind``; ``None`` when that is impossible or ambiguous."""
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        return None
    if kind == "str":
        return value.strip() if isinstance(value, str) and value.strip() else None
    if kind not in ("int", "float"):
        raise ValueError(f"unknown parameter kind {kind!r}")
    number = _number(value)
    if number is None:
        return None
    if isinstance(number, int):  # exact: Python compares huge ints with float bounds exactly
        if kind == "int":
            return number
        try:
            return float(number)
        except OverflowError:
            return None
    if not math.isfinite(number):
        return None
    if kind == "float":
        return number + 0.0  # -0.0 -> 0.0: one value, one cache key
    return int(number) if number.is_integer() and abs(number) < 2**53 else None


def resolve(params: tuple[Param, ...], overrides: dict[str, Any], what: str) -> dict[str, Any]:
    """Defaults updated with ``overrides``, every value validated.

    Unknown names are refused with the list of known ones, so a typo never silently
    runs the default experiment.
    """
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{what}: parameters must be a mapping of name to value, got "
                          f"{short_repr(overrides)} ({type(overrides).__name__})")
    known = {p.name: p for p in params}
    unknown = sorted((k for k in overrides if k not in known), key=repr)  # keys of any type
    if unknown:
        raise ConfigError(
            f"{what}: unknown parameter(s) {', '.join(short_repr(k) for k in unknown)}; "
            f"known parameters: {', '.join(known)}"
        )
    return {p.name: p.validate(overrides.get(p.name, p.default)) for p in params}


def parse_assignments(items: list[str]) -> dict[str, str]:
    """``["depth=30", "activation=tanh"]`` -> ``{"depth": "30", "activation": "tanh"}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {short_repr(item)}")
        out[key.strip()] = value
    return out
