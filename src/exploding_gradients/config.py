"""Declared parameters and their validation.

Every experiment and every chapter declares its parameters as :class:`Param` objects.
Values from the CLI (strings), from papermill (YAML may turn ``2024-01-01`` into a date
or ``1e3`` into a string) and from Python all pass through :func:`resolve`, which fails
*before any compute* with a message naming the parameter and what it accepts.
"""

from __future__ import annotations

import math
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
                raise self._error(value, "a non-empty list")
            return [item.validate(v) for v in value]
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

    def _error(self, value: Any, expected: str | None = None) -> ConfigError:
        return ConfigError(
            f"parameter {self.name!r}: got {value!r} ({type(value).__name__}); "
            f"allowed: {expected or self.allowed()}"
        )


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
    if isinstance(value, bool):  # True is an int in Python, never a depth
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    if kind == "float":
        return float(value)
    if kind == "int":
        return int(value) if float(value).is_integer() and abs(value) < 2**53 else None
    raise ValueError(f"unknown parameter kind {kind!r}")


def resolve(params: tuple[Param, ...], overrides: dict[str, Any], what: str) -> dict[str, Any]:
    """Defaults updated with ``overrides``, every value validated.

    Unknown names are refused with the list of known ones, so a typo never silently
    runs the default experiment.
    """
    known = {p.name: p for p in params}
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ConfigError(
            f"{what}: unknown parameter(s) {', '.join(map(repr, unknown))}; "
            f"known parameters: {', '.join(known)}"
        )
    return {p.name: p.validate(overrides.get(p.name, p.default)) for p in params}


def parse_assignments(items: list[str]) -> dict[str, str]:
    """``["depth=30", "activation=tanh"]`` -> ``{"depth": "30", "activation": "tanh"}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value
    return out
