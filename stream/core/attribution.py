"""Attribution: which channels earned a contact's lead, opportunity and new customer.

Credits are a pure function of the contact's touchpoints — `(ts_ms, channel)` in
touch order — and the moments of its funnel milestones, so the contact can
recompute them whenever a late touch or stage change arrives and move its
`attribution_credit` facts by the difference (the funnel writes them). Every
model is computed at once, side by side, and each sums to 1 per conversion.

The position-based models (U-shaped, W-shaped, full-path) name touches by the
milestone they created: the first touch, and for each milestone the last touch
at or before its moment. A milestone that has not happened by the conversion,
or that had no touch before it, names no touch; the shares of the positions
that are named are then scaled up so the credits still sum to 1 (a W-shaped
credit of a lead is 3/7 first touch, 3/7 lead-creation touch, 1/7 the rest).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

from schemas.channels import UNKNOWN_CHANNEL
from schemas.snapshot.attribution import AttributionWindow, ConversionAttribution
from stream.core.totals import Totals
from stream.core.windows import DAY_MS, Span

ATTRIBUTION_CREDIT = "attribution_credit"
"""Count (float credit), labels (model, conversion, channel); the funnel writes it at the conversion."""

TIME_DECAY_HALF_LIFE_MS = 7 * DAY_MS
CREDIT_EPSILON = 1e-9
"""Credits whose magnitude is below this are float residue of moved facts, not credit."""


class AttributionModel(StrEnum):
    FIRST_TOUCH = "first_touch"
    LAST_TOUCH = "last_touch"
    LINEAR = "linear"
    U_SHAPED = "u_shaped"
    W_SHAPED = "w_shaped"
    FULL_PATH = "full_path"
    TIME_DECAY = "time_decay"


class Conversion(StrEnum):
    LEAD = "lead"
    OPPORTUNITY = "opportunity"
    CUSTOMER = "customer"


@dataclass(frozen=True, slots=True)
class Milestones:
    """When the contact became a lead, an opportunity and a customer (None: not yet)."""

    lead_ms: int | None = None
    opportunity_ms: int | None = None
    customer_ms: int | None = None

    def moment(self, conversion: Conversion) -> int | None:
        if conversion is Conversion.LEAD:
            return self.lead_ms
        if conversion is Conversion.OPPORTUNITY:
            return self.opportunity_ms
        return self.customer_ms


AttributionTouch = tuple[int, str]
"""(ts_ms, channel) of one touchpoint."""

# (share of the first touch, shares of the lead-, opportunity- and closed-won-creation touches), rest share
_POSITION_SHARES: dict[AttributionModel, tuple[tuple[Fraction, ...], Fraction]] = {
    AttributionModel.U_SHAPED: ((Fraction(2, 5), Fraction(2, 5)), Fraction(1, 5)),
    AttributionModel.W_SHAPED: ((Fraction(3, 10), Fraction(3, 10), Fraction(3, 10)), Fraction(1, 10)),
    AttributionModel.FULL_PATH: ((Fraction(9, 40),) * 4, Fraction(1, 10)),
}


def _last_at_or_before(touches: Sequence[AttributionTouch], moment_ms: int | None, until_ms: int) -> int | None:
    """Index of the touch that created a milestone: the last one at or before its moment."""
    if moment_ms is None or moment_ms > until_ms:
        return None
    found = None
    for index, (ts, _) in enumerate(touches):
        if ts <= moment_ms:
            found = index
    return found


def position_weights(
    model: AttributionModel, touches: Sequence[AttributionTouch], conversion_ms: int, milestones: Milestones
) -> list[Fraction]:
    """Position-based credit per touch (U-shaped, W-shaped, full-path), summing to 1.

    U-shaped (HubSpot): 40 % first touch, 40 % lead-creation touch, 20 % split
    evenly over the touches between them. W-shaped: 30 % first, 30 % lead
    creation, 30 % opportunity creation, 10 % over the rest. Full-path: 22.5 %
    each to first, lead-, opportunity- and closed-won-creation touches, 10 %
    over the rest. "The rest" are the touches between the first and the last
    named position; when there are none, the rest share is split evenly over
    the named positions. Positions that coincide add up on that touch.
    """
    named_shares, rest_share = _POSITION_SHARES[model]
    milestone_moments = (milestones.lead_ms, milestones.opportunity_ms, milestones.customer_ms)
    candidates = [0, *(_last_at_or_before(touches, m, conversion_ms) for m in milestone_moments)]
    named = [(share, index) for share, index in zip(named_shares, candidates, strict=False) if index is not None]
    weights = [Fraction(0)] * len(touches)
    named_indices = {index for _, index in named}
    rest = [i for i in range(min(named_indices), max(named_indices) + 1) if i not in named_indices]
    for share, index in named:
        weights[index] += share
    if rest:
        for index in rest:
            weights[index] += rest_share / len(rest)
    else:
        for _, index in named:
            weights[index] += rest_share / len(named)
    scale = sum(weights, Fraction(0))
    return [weight / scale for weight in weights]


def model_weights(
    model: AttributionModel, touches: Sequence[AttributionTouch], conversion_ms: int, milestones: Milestones
) -> list[float]:
    """Credit per touch under one model; `touches` are those at or before the conversion, in order."""
    count = len(touches)
    if model is AttributionModel.FIRST_TOUCH:
        return [1.0] + [0.0] * (count - 1)
    if model is AttributionModel.LAST_TOUCH:
        return [0.0] * (count - 1) + [1.0]
    if model is AttributionModel.LINEAR:
        return [1.0 / count] * count
    if model is AttributionModel.TIME_DECAY:
        # 2^(−age/half-life), computed relative to the newest touch so old touches never underflow to 0
        newest = touches[-1][0]
        raw = [2.0 ** ((ts - newest) / TIME_DECAY_HALF_LIFE_MS) for ts, _ in touches]
        total = sum(raw)
        return [weight / total for weight in raw]
    return [float(weight) for weight in position_weights(model, touches, conversion_ms, milestones)]


def attribution_credits(
    touches: Sequence[AttributionTouch], conversion: Conversion, milestones: Milestones
) -> dict[AttributionModel, dict[str, float]]:
    """Credit per channel, by every model, for one conversion of one contact (empty if not converted).

    Touchpoints count up to the conversion moment (inclusive). Time-decay weighs
    each by 2^(−age/7 days) before the moment, normalised. A conversion with no
    touchpoint credits 1.0 to `unknown` in every model, so credits always add
    up to the number of conversions.
    """
    moment = milestones.moment(conversion)
    if moment is None:
        return {}
    ordered = sorted(touches, key=lambda touch: touch[0])  # stable: ties keep the caller's order
    upto = [touch for touch in ordered if touch[0] <= moment]
    if not upto:
        return {model: {UNKNOWN_CHANNEL: 1.0} for model in AttributionModel}
    credits: dict[AttributionModel, dict[str, float]] = {}
    for model in AttributionModel:
        by_channel: dict[str, float] = {}
        for (_, channel), weight in zip(upto, model_weights(model, upto, moment, milestones), strict=True):
            if weight:
                by_channel[channel] = by_channel.get(channel, 0.0) + weight
        credits[model] = by_channel
    return credits


# -- read side -------------------------------------------------------------------------


def attribution_window(totals: Totals, span: Span) -> AttributionWindow:
    """Credits of the conversions whose moment falls in the window, per conversion, model and channel.

    `conversions` counts them (each conversion's credits sum to 1 in every model).
    """
    by_conversion: dict[str, ConversionAttribution] = {}
    for conversion in Conversion:
        models: dict[str, dict[str, float]] = {}
        for model in AttributionModel:
            credits = totals.total_by(ATTRIBUTION_CREDIT, span, 2, {0: model.value, 1: conversion.value})
            models[model.value] = {
                channel: round(credit, 9)
                for channel, credit in sorted(credits.items())
                if abs(credit) >= CREDIT_EPSILON
            }
        conversions = round(sum(models[AttributionModel.FIRST_TOUCH.value].values()))
        by_conversion[conversion.value] = ConversionAttribution(conversions=conversions, credits=models)
    return AttributionWindow(by_conversion=by_conversion)
