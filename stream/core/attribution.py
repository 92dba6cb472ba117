"""Attribution: which channels earned a contact's lead, opportunity and new customer.

Credits are a pure function of the contact's touchpoints — `(ts_ms, channel)` in
touch order — within the attribution lookback before the conversion, and of
the moments of its funnel milestones, so the contact can recompute one
conversion's credits whenever a touch inside its window or a stage change
arrives and move its `attribution_credit` facts by the difference (the funnel
writes them). Every model is computed at once, in one pass over the window,
and each sums to 1 per conversion. Credits are floats: equal to the exact
rational shares to well within the 9 significant digits the snapshot keeps.

The position-based models (U-shaped, W-shaped, full-path) name touches by the
milestone they created: the first touch, and for each milestone the last touch
at or before its moment. A milestone that has not happened by the conversion,
or that had no touch before it, names no touch; the shares of the positions
that are named are then scaled up so the credits still sum to 1 (a W-shaped
credit of a lead is 3/7 first touch, 3/7 lead-creation touch, 1/7 the rest).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from math import exp2
from operator import itemgetter

from schemas.channels import UNKNOWN_CHANNEL
from schemas.snapshot.attribution import AttributionWindow, ConversionAttribution
from stream.core.totals import Readable
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
_POSITION_SHARES: dict[AttributionModel, tuple[tuple[float, ...], float]] = {
    AttributionModel.U_SHAPED: ((0.4, 0.4), 0.2),
    AttributionModel.W_SHAPED: ((0.3, 0.3, 0.3), 0.1),
    AttributionModel.FULL_PATH: ((0.225,) * 4, 0.1),
}


def _credit(by_channel: dict[str, float], channel: str, credit: float) -> None:
    by_channel[channel] = by_channel.get(channel, 0.0) + credit


def _position_credits(
    model: AttributionModel, channels: list[str], creating: list[int | None], touches_upto: dict[int, Counter[str]]
) -> dict[str, float]:
    """Position-based credit per channel (U-shaped, W-shaped, full-path), summing to 1.

    U-shaped (HubSpot): 40 % first touch, 40 % lead-creation touch, 20 % split
    evenly over the touches between them. W-shaped: 30 % first, 30 % lead
    creation, 30 % opportunity creation, 10 % over the rest. Full-path: 22.5 %
    each to first, lead-, opportunity- and closed-won-creation touches, 10 %
    over the rest. "The rest" are the touches between the first and the last
    named position; when there are none, the rest share is split evenly over
    the named positions. Positions that coincide add up on that touch.
    `touches_upto[i]` counts the touches per channel at indices 0..i.
    """
    named_shares, rest_share = _POSITION_SHARES[model]
    named = [(share, index) for share, index in zip(named_shares, creating, strict=False) if index is not None]
    scale = sum(share for share, _ in named) + rest_share
    unique = {index for _, index in named}
    last = max(unique)  # the first named position is the first touch, index 0
    rest_count = last + 1 - len(unique)
    by_channel: dict[str, float] = {}
    for share, index in named:
        _credit(by_channel, channels[index], share / scale)
    if rest_count:
        each = rest_share / rest_count / scale
        rest = dict(touches_upto[last])
        for index in unique:
            rest[channels[index]] -= 1
        for channel, touches in rest.items():
            if touches:
                _credit(by_channel, channel, touches * each)
    else:
        each = rest_share / len(named) / scale
        for _, index in named:
            _credit(by_channel, channels[index], each)
    return by_channel


def _credits_by_model(
    window: list[AttributionTouch], moment_ms: int, milestones: Milestones
) -> dict[AttributionModel, dict[str, float]]:
    """Every model's credit per channel over a non-empty window of touches in time order."""
    times = [ts for ts, _ in window]
    channels = [channel for _, channel in window]
    # the touch that created each milestone: the last one at or before its moment (none if the window has none)
    creating: list[int | None] = [0]
    for milestone_ms in (milestones.lead_ms, milestones.opportunity_ms, milestones.customer_ms):
        index = -1 if milestone_ms is None or milestone_ms > moment_ms else bisect_right(times, milestone_ms) - 1
        creating.append(None if index < 0 else index)
    # touches per channel up to the last position each model names, and over the whole window
    reaches = {len(window) - 1}
    for named_shares, _ in _POSITION_SHARES.values():
        reaches.add(max(index for index in creating[: len(named_shares)] if index is not None))
    touches_upto = {last: Counter(channels[: last + 1]) for last in reaches}
    # 2^(−age/half-life), relative to the newest touch so old touches never underflow to 0
    newest, per_ms = times[-1], 1.0 / TIME_DECAY_HALF_LIFE_MS
    decay: dict[str, float] = {}
    for ts, channel in window:
        decay[channel] = decay.get(channel, 0.0) + exp2((ts - newest) * per_ms)
    decay_total = sum(decay.values())
    count = len(window)
    return {
        AttributionModel.FIRST_TOUCH: {channels[0]: 1.0},
        AttributionModel.LAST_TOUCH: {channels[-1]: 1.0},
        AttributionModel.LINEAR: {channel: touches / count for channel, touches in touches_upto[count - 1].items()},
        AttributionModel.U_SHAPED: _position_credits(AttributionModel.U_SHAPED, channels, creating, touches_upto),
        AttributionModel.W_SHAPED: _position_credits(AttributionModel.W_SHAPED, channels, creating, touches_upto),
        AttributionModel.FULL_PATH: _position_credits(AttributionModel.FULL_PATH, channels, creating, touches_upto),
        AttributionModel.TIME_DECAY: {channel: weight / decay_total for channel, weight in decay.items()},
    }


def attribution_credits(
    touches: Sequence[AttributionTouch],
    conversion: Conversion,
    milestones: Milestones,
    lookback_ms: int | None = None,
) -> dict[AttributionModel, dict[str, float]]:
    """Credit per channel, by every model, for one conversion of one contact (empty if not converted).

    Touchpoints count from `lookback_ms` before the conversion moment up to the
    moment, both inclusive — the lookback window of HubSpot's and GA4's
    attribution reports (leadlag's default is `Policy.attribution_lookback_ms`,
    90 days; None counts every earlier touch). A touch older than that earns
    no credit, and the position-based models name their first touch and the
    milestone-creation touches within the window. Time-decay weighs each touch
    by 2^(−age/7 days) before the moment, normalised. A conversion with no
    touchpoint in its window credits 1.0 to `unknown` in every model, so each
    conversion's credits always add up to 1 in every model.
    """
    moment = milestones.moment(conversion)
    if moment is None:
        return {}
    start = None if lookback_ms is None else moment - lookback_ms
    window = [touch for touch in touches if touch[0] <= moment and (start is None or touch[0] >= start)]
    if not window:
        return {model: {UNKNOWN_CHANNEL: 1.0} for model in AttributionModel}
    window.sort(key=itemgetter(0))  # stable: ties keep the caller's order
    return _credits_by_model(window, moment, milestones)


# -- read side -------------------------------------------------------------------------


def attribution_window(totals: Readable, span: Span) -> AttributionWindow:
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
