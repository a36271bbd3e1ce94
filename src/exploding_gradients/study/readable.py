"""Numbers and tables written for readers, not for Python.

:func:`number` writes 4.4 × 10¹⁰ where Python would write 4.44e+10, "–" for a missing
value and "diverged" for a run that has none; :func:`table` shows a DataFrame with every
float written that way, so a page never prints ``nan`` or six decimals.
"""

from __future__ import annotations

import math

import pandas as pd

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def number(value, digits: int = 3, missing: str = "–") -> str:
    """``value`` with ``digits`` significant digits, in scientific notation (a × 10ᵏ)
    outside [0.001, 10 000); ``missing`` for NaN or None, ``∞`` for infinity."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    value = float(value)
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        text = f"{value:.{digits}g}"
        if "e" in text:  # more integer digits than significant ones: 1e+02 is 100
            text = str(int(float(text)))
        return text.replace("-", "−")
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa
    power = f"10{str(int(exponent)).translate(_SUPERSCRIPT)}"
    text = power if mantissa in ("1", "-1") else f"{mantissa} × {power}"
    return ("−" + text if mantissa == "-1" else text).replace("-", "−")


def table(df: pd.DataFrame, digits: int = 3, missing: str = "–",
          formats: dict | None = None):
    """``df`` as the page shows it: floats by :func:`number`, missing values ``missing``,
    ``formats`` (column -> callable or format string) for columns that need their own,
    and no index."""
    formats = dict(formats or {})
    for column in df.columns:
        if column not in formats and pd.api.types.is_float_dtype(df[column]):
            formats[column] = lambda v, d=digits: number(v, d, missing)
    return df.style.format(formats, na_rep=missing).hide()


def median_range(values, digits: int = 3, missing: str = "–") -> str:
    """``"median [min, max]"`` of the non-missing ``values``, each by :func:`number`; a
    single value alone; ``missing`` when there is none (as ``study.outcomes.med_range``,
    written for readers)."""
    values = pd.Series(values, dtype=float).dropna()
    if values.empty:
        return missing
    if len(values) == 1:
        return number(values.iloc[0], digits)
    return (f"{number(values.median(), digits)} [{number(values.min(), digits)}, "
            f"{number(values.max(), digits)}]")
