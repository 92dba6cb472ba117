"""Money in outputs: exact `Decimal` in Python, a JSON number rounded to cents on the wire."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated

from pydantic import PlainSerializer

CENT = Decimal("0.01")


def to_cents(value: Decimal) -> float:
    """Round half to even at the cent, as accounting reports do, then to a JSON number."""
    return float(value.quantize(CENT, rounding=ROUND_HALF_EVEN))


MoneyAmount = Annotated[Decimal, PlainSerializer(to_cents, return_type=float, when_used="json")]
"""An amount in the reporting currency."""
