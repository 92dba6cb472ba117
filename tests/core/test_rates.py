"""Ratios: the exact quotient rounded once, absent when the denominator is zero."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from stream.core.rates import ratio

counts = st.integers(-(10**20), 10**20)
floats = st.floats(-1e9, 1e9).filter(lambda x: x == 0 or abs(x) >= 1e-6)  # quotients stay finite
amounts = st.decimals(min_value=-(10**9), max_value=10**9, places=4, allow_nan=False, allow_infinity=False)


@given(numerator=counts | amounts | floats, denominator=counts | amounts | floats)
def test_a_ratio_is_the_exact_quotient_rounded_once_to_a_float(
    numerator: int | Decimal | float, denominator: int | Decimal | float
) -> None:
    got = ratio(numerator, denominator)
    if not denominator:
        assert got is None
    else:
        assert got == float(Fraction(numerator) / Fraction(denominator))
        assert got.__class__ is float


def test_a_ratio_of_counts_is_not_the_quotient_of_their_floats_when_those_round() -> None:
    """2**53 + 1 is not a float: dividing floats would round twice."""
    assert ratio(2**53 + 1, 3) == float(Fraction(2**53 + 1, 3))
    assert ratio(0, 7) == 0.0
    assert ratio(5, 0) is None
