"""Rounding noise shown as the bound it satisfies, in pure Python (Part 1 may not import ``insideout.utils``).

Same contract and text as ``insideout.utils.within`` (the tests check that the two agree): the exact size of
rounding noise depends on the machine's math library and summation order, so a chapter prints the bound, and the
exact value appears only in the assertion message when the bound fails.
"""

from __future__ import annotations


def within(value: float, bound: float, kind: str = "float64 rounding") -> str:
    """Assert that a rounding-noise size ``value`` is at most ``bound``; return text that shows only the bound."""
    value = float(value)
    if not value <= bound:  # also catches NaN
        raise AssertionError(f"{value!r} exceeds the bound {bound:.0e} expected of {kind}")
    return f"<= {bound:.0e} ({kind})"


__all__ = ["within"]
