"""Attribution: channel credit of a contact's lead, opportunity and customer (stream/core/attribution.py)."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.channels import UNKNOWN_CHANNEL
from stream.core.attribution import (
    ATTRIBUTION_CREDIT,
    AttributionModel,
    Conversion,
    Milestones,
    attribution_credits,
    attribution_window,
)
from stream.core.totals import Totals
from stream.core.windows import DAY_MS, HOUR_MS, Span

M = AttributionModel
H = HOUR_MS

# four touches an hour apart, a different channel each, lead created at the fourth
FOUR = [(0, "organic"), (1 * H, "paid"), (2 * H, "email"), (3 * H, "social")]


def credits_of(
    touches: list[tuple[int, str]], conversion: Conversion, milestones: Milestones, model: AttributionModel
) -> dict[str, float]:
    return attribution_credits(touches, conversion, milestones)[model]


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (M.FIRST_TOUCH, {"organic": 1.0}),
        (M.LAST_TOUCH, {"social": 1.0}),
        (M.LINEAR, {"organic": 0.25, "paid": 0.25, "email": 0.25, "social": 0.25}),
        # 40 % first, 40 % lead creation, 20 % split over the two between
        (M.U_SHAPED, {"organic": 0.4, "paid": 0.1, "email": 0.1, "social": 0.4}),
        # no opportunity yet: first 0.3, lead 0.3, rest 0.1, scaled by 1/0.7
        (M.W_SHAPED, {"organic": 3 / 7, "paid": 0.5 / 7, "email": 0.5 / 7, "social": 3 / 7}),
        # first and lead 0.225 each, rest 0.1, scaled by 1/0.55
        (
            M.FULL_PATH,
            {"organic": 0.225 / 0.55, "paid": 0.05 / 0.55, "email": 0.05 / 0.55, "social": 0.225 / 0.55},
        ),
    ],
)
def test_every_model_credits_a_lead_created_at_the_last_of_four_touches(
    model: AttributionModel, expected: dict[str, float]
) -> None:
    credits = credits_of(FOUR, Conversion.LEAD, Milestones(lead_ms=3 * H), model)
    assert credits == pytest.approx(expected)


def test_time_decay_halves_a_touch_s_weight_every_seven_days_before_the_moment() -> None:
    touches = [(0, "organic"), (7 * DAY_MS, "paid"), (14 * DAY_MS, "email")]
    credits = credits_of(touches, Conversion.LEAD, Milestones(lead_ms=14 * DAY_MS), M.TIME_DECAY)
    # weights 1/4, 1/2, 1 -> normalised by 7/4
    assert credits == pytest.approx({"organic": 1 / 7, "paid": 2 / 7, "email": 4 / 7})


def test_touches_after_the_conversion_moment_get_no_credit() -> None:
    credits = credits_of(FOUR, Conversion.LEAD, Milestones(lead_ms=1 * H), M.LINEAR)
    assert credits == pytest.approx({"organic": 0.5, "paid": 0.5})


def test_w_shaped_credits_first_lead_and_opportunity_creation_touches_at_an_opportunity() -> None:
    # touches 0..4; lead created at touch 1, opportunity at touch 3, the conversion at touch 4
    touches = [(0, "organic"), (1 * H, "paid"), (2 * H, "email"), (3 * H, "social"), (4 * H, "direct")]
    milestones = Milestones(lead_ms=1 * H, opportunity_ms=4 * H)
    credits = credits_of(touches, Conversion.OPPORTUNITY, milestones, M.W_SHAPED)
    # named: organic (first), paid (lead creation), direct (opportunity creation, the last at or
    # before 4 h); the rest, email and social, share 10 %: 0.05 each
    assert credits == pytest.approx({"organic": 0.3, "paid": 0.3, "email": 0.05, "social": 0.05, "direct": 0.3})


def test_u_shaped_gives_nothing_to_touches_after_lead_creation_at_an_opportunity() -> None:
    touches = [(0, "organic"), (1 * H, "paid"), (2 * H, "email"), (3 * H, "social")]
    milestones = Milestones(lead_ms=1 * H, opportunity_ms=3 * H)
    credits = credits_of(touches, Conversion.OPPORTUNITY, milestones, M.U_SHAPED)
    # no touch between first and lead creation: the 20 % goes half to each named position
    assert credits == pytest.approx({"organic": 0.5, "paid": 0.5})


def test_full_path_credits_four_named_touches_and_the_rest_at_a_win() -> None:
    touches = [(n * H, channel) for n, channel in enumerate(["organic", "paid", "email", "social", "direct", "event"])]
    milestones = Milestones(lead_ms=1 * H, opportunity_ms=3 * H, customer_ms=5 * H)
    credits = credits_of(touches, Conversion.CUSTOMER, milestones, M.FULL_PATH)
    assert credits == pytest.approx(
        {"organic": 0.225, "paid": 0.225, "email": 0.05, "social": 0.225, "direct": 0.05, "event": 0.225}
    )


def test_coinciding_positions_add_up_on_one_touch() -> None:
    # one touch is first, lead creation and opportunity creation at once
    touches = [(0, "organic"), (2 * H, "paid")]
    milestones = Milestones(lead_ms=1 * H, opportunity_ms=1 * H, customer_ms=2 * H)
    credits = credits_of(touches, Conversion.CUSTOMER, milestones, M.FULL_PATH)
    # organic: 3 × 0.225, paid: 0.225; no rest touches -> 0.1 split over the 4 positions
    assert credits == pytest.approx({"organic": 3 * 0.25, "paid": 0.25})


def test_same_channel_touches_add_up_to_one_channel_credit() -> None:
    touches = [(0, "paid"), (1 * H, "organic"), (2 * H, "paid")]
    credits = credits_of(touches, Conversion.LEAD, Milestones(lead_ms=2 * H), M.LINEAR)
    assert credits == pytest.approx({"paid": 2 / 3, "organic": 1 / 3})


@pytest.mark.parametrize("model", list(M))
def test_a_conversion_with_no_touchpoint_credits_unknown_in_every_model(model: AttributionModel) -> None:
    assert credits_of([], Conversion.LEAD, Milestones(lead_ms=0), model) == {UNKNOWN_CHANNEL: 1.0}
    # touches only after the moment count as none
    assert credits_of([(H, "paid")], Conversion.LEAD, Milestones(lead_ms=0), model) == {UNKNOWN_CHANNEL: 1.0}


def test_a_conversion_that_has_not_happened_has_no_credit() -> None:
    assert attribution_credits(FOUR, Conversion.CUSTOMER, Milestones(lead_ms=0)) == {}


def test_only_touches_within_the_lookback_before_the_conversion_earn_credit() -> None:
    touches = [(0, "organic"), (10 * DAY_MS, "paid"), (95 * DAY_MS, "email")]
    milestones = Milestones(lead_ms=100 * DAY_MS)
    every = attribution_credits(touches, Conversion.LEAD, milestones, lookback_ms=90 * DAY_MS)
    # the window is [day 10, day 100], both ends included: organic (day 0) earns nothing
    assert every[M.FIRST_TOUCH] == {"paid": 1.0}
    assert every[M.LAST_TOUCH] == {"email": 1.0}
    assert every[M.LINEAR] == pytest.approx({"paid": 0.5, "email": 0.5})
    # without a lookback every earlier touch counts
    assert credits_of(touches, Conversion.LEAD, milestones, M.FIRST_TOUCH) == {"organic": 1.0}


def test_a_conversion_whose_touches_are_all_older_than_the_lookback_credits_unknown() -> None:
    credits = attribution_credits([(0, "organic")], Conversion.LEAD, Milestones(lead_ms=91 * DAY_MS), 90 * DAY_MS)
    assert credits[M.LINEAR] == {UNKNOWN_CHANNEL: 1.0}


def test_position_models_name_the_touches_within_the_lookback() -> None:
    touches = [(0, "organic"), (10 * DAY_MS, "paid"), (100 * DAY_MS, "email"), (150 * DAY_MS, "social")]
    milestones = Milestones(lead_ms=5 * DAY_MS, opportunity_ms=150 * DAY_MS)
    credits = attribution_credits(touches, Conversion.OPPORTUNITY, milestones, lookback_ms=90 * DAY_MS)
    # window [day 60, day 150]: the first touch in it is email, the opportunity-creation touch is social;
    # the lead's creation touch (organic, day 0) is outside, so W-shaped names two positions, 0.3 + 0.05 each
    # of 0.7: half and half
    assert credits[M.W_SHAPED] == pytest.approx({"email": 0.5, "social": 0.5})
    assert credits[M.U_SHAPED] == pytest.approx({"email": 1.0})


def exact_position_credits(
    model: AttributionModel, touches: Sequence[tuple[int, str]], moment: int, milestones: Milestones
) -> dict[str, Fraction]:
    """The position-based models by their definition, in exact fractions, touch by touch."""
    named_shares, rest_share = {
        M.U_SHAPED: ((Fraction(2, 5),) * 2, Fraction(1, 5)),
        M.W_SHAPED: ((Fraction(3, 10),) * 3, Fraction(1, 10)),
        M.FULL_PATH: ((Fraction(9, 40),) * 4, Fraction(1, 10)),
    }[model]
    ordered = sorted((touch for touch in touches if touch[0] <= moment), key=lambda touch: touch[0])
    created = [0]
    for milestone in (milestones.lead_ms, milestones.opportunity_ms, milestones.customer_ms):
        before = [index for index, (ts, _) in enumerate(ordered) if milestone is not None and ts <= milestone <= moment]
        created.append(before[-1] if before else -1)
    named = [(share, index) for share, index in zip(named_shares, created, strict=False) if index >= 0]
    weights = [Fraction(0)] * len(ordered)
    positions = {index for _, index in named}
    rest = [index for index in range(max(positions) + 1) if index not in positions]
    for share, index in named:
        weights[index] += share
    for index in rest or [index for _, index in named]:
        weights[index] += rest_share / len(rest or named)
    total = sum(weights)
    exact: dict[str, Fraction] = {}
    for (_, channel), weight in zip(ordered, weights, strict=True):
        if weight:
            exact[channel] = exact.get(channel, Fraction(0)) + weight / total
    return exact


touch_lists = st.lists(
    st.tuples(st.integers(0, 60 * DAY_MS), st.sampled_from(["organic", "paid", "email", "social", "direct"])),
    max_size=12,
)
moments = st.one_of(st.none(), st.integers(0, 60 * DAY_MS))


@settings(max_examples=300, deadline=None)
@given(touch_lists, moments, moments, moments, st.sampled_from([None, 7 * DAY_MS, 30 * DAY_MS]))
def test_credits_sum_to_one_per_conversion_in_every_model(
    touches: list[tuple[int, str]],
    lead: int | None,
    opportunity: int | None,
    customer: int | None,
    lookback_ms: int | None,
) -> None:
    milestones = Milestones(lead, opportunity, customer)
    for conversion in Conversion:
        credits = attribution_credits(touches, conversion, milestones, lookback_ms)
        if milestones.moment(conversion) is None:
            assert credits == {}
            continue
        assert set(credits) == set(M)
        for by_channel in credits.values():
            assert sum(by_channel.values()) == pytest.approx(1.0)
            assert all(credit > 0 for credit in by_channel.values())


def test_the_window_reads_credits_per_conversion_model_and_channel() -> None:
    totals = Totals()
    for model in M:
        totals.add(ATTRIBUTION_CREDIT, (model.value, "lead", "paid"), 10 * H, 0.75)
        totals.add(ATTRIBUTION_CREDIT, (model.value, "lead", "organic"), 10 * H, 0.25)
        totals.add(ATTRIBUTION_CREDIT, (model.value, "lead", "organic"), 11 * H, 1.0)
        totals.add(ATTRIBUTION_CREDIT, (model.value, "customer", "paid"), 30 * H, 1.0)  # outside
    window = attribution_window(totals, Span(0, 24 * H))
    lead = window.by_conversion["lead"]
    assert lead.conversions == 2
    assert lead.credits["u_shaped"] == {"organic": 1.25, "paid": 0.75}
    assert window.by_conversion["customer"].conversions == 0
    assert window.by_conversion["customer"].credits["linear"] == {}


@settings(max_examples=300, deadline=None)
@given(touch_lists.filter(bool), moments, moments, moments)
def test_float_credits_equal_the_exact_shares_of_the_definition(
    touches: list[tuple[int, str]], lead: int | None, opportunity: int | None, customer: int | None
) -> None:
    milestones = Milestones(lead, opportunity, customer)
    for conversion in Conversion:
        moment = milestones.moment(conversion)
        if moment is None or not any(ts <= moment for ts, _ in touches):
            continue
        credits = attribution_credits(touches, conversion, milestones)
        for model in (M.U_SHAPED, M.W_SHAPED, M.FULL_PATH):
            exact = exact_position_credits(model, touches, moment, milestones)
            assert credits[model] == pytest.approx(
                {channel: float(share) for channel, share in exact.items()}, rel=1e-12
            )
