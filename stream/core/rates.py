"""Ratios as the snapshot defines them: absent when the denominator is zero, never 0 and never NaN."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction


def ratio(numerator: float | Decimal, denominator: float | Decimal) -> float | None:
    """numerator / denominator, computed exactly then rounded once to a float; None when the denominator is 0."""
    if not denominator:
        return None
    if numerator.__class__ is int and denominator.__class__ is int:
        return numerator / denominator  # int / int is already the exact quotient rounded once
    return float(Fraction(numerator) / Fraction(denominator))


def whole(count: float) -> int:
    """A count summed from ±1 facts, as an int (float sums of whole numbers are exact below 2**53)."""
    return round(count)
