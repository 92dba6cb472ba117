"""The alerts besides divergence: each fires on exactly the condition its Prometheus rule states."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.alerts import CheckVerdict
from schemas.snapshot import Snapshot
from stream.core.checks import (
    check_transitions,
    churn_checks,
    conversion_checks,
    data_checks,
    drop_off_checks,
    hold,
    pipeline_checks,
    recent_increase,
    worker_checks,
)
from stream.core.policy import AlertPolicy

AS_OF = datetime(2026, 3, 18, 12, 0, tzinfo=UTC)
POLICY = AlertPolicy()
MINUTE = 60_000


def flows(**stages: tuple[int, int]) -> dict[str, Any]:
    """Stage -> (entries, drop-offs)."""
    return {
        stage: {"entries": entries, "exits": drops, "became_stale": 0, "drop_offs": drops, "in_stage": 0}
        for stage, (entries, drops) in stages.items()
    }


def funnel(stages: dict[str, Any], by_channel: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    def channel(stage_flows: dict[str, Any]) -> dict[str, Any]:
        names = list(stage_flows)
        pairs = {f"{a}_to_{b}": None for a, b in pairwise(names)}
        return {
            "stages": stage_flows,
            "period_conversion": pairs,
            "form_fills": 0,
            "opportunities_won": 0,
            "opportunities_lost": 0,
            "open_opportunities": 0,
            "pipeline_amount": "0",
            "weighted_pipeline": "0",
            "won_amount": "0",
        }

    return {
        **channel(stages),
        "by_channel": {name: channel(s) for name, s in (by_channel or {}).items()},
        "form_fills_by_type": {},
        "time_to_stage": {},
        "time_in_stage": {},
    }


def movements(**amounts: str) -> dict[str, Any]:
    kinds = ("new_business", "expansion", "reactivation", "contraction", "churned", "net_new")
    return {
        **{f"{kind}_mrr": amounts.get(kind, "0") for kind in kinds},
        **{f"{kind}_accounts": 0 for kind in ("new_business", "expansion", "reactivation", "contraction", "churn")},
    }


def snapshot(
    day: dict[str, Any] | None = None,
    week: dict[str, Any] | None = None,
    *,
    weighted_pipeline: str = "0",
    mrr: str = "100000",
    month: dict[str, str] | None = None,
    monthly_churn: tuple[float | None, ...] = (),
) -> Snapshot:
    """A snapshot holding just what the checks read (built without validation: the rest is irrelevant)."""
    empty = funnel({})
    window = {
        "start": AS_OF,
        "end": AS_OF,
        "traffic": {"sessions": 0, "engaged_sessions": 0, "unique_visitors": 0, "new_leads": 0, "by_channel": {}},
        "attribution": {"models": {}},
        "revenue": {
            "movements": movements(**(month or {})),
            "new_customers": 0,
            "new_customers_by_channel": {},
            "new_business_mrr_by_channel": {},
        },
        "acquisition": {"by_channel": {}},
    }
    windows = {
        "24h": {**window, "funnel": day or empty},
        "7d": {**window, "funnel": week or empty},
        "30d": {**window, "funnel": {**empty, "weighted_pipeline": weighted_pipeline}},
        "month": {**window, "funnel": empty},
    }
    months = {
        f"2026-{n + 1:02d}": {"revenue": {"month": f"2026-{n + 1:02d}", "gross_mrr_churn_rate": rate}}
        for n, rate in enumerate(monthly_churn)
    }
    return Snapshot.model_construct(
        as_of=AS_OF,
        reporting_currency="USD",
        windows={name: _Obj(w) for name, w in windows.items()},
        months={name: _Obj(m) for name, m in months.items()},
        revenue=_Obj({"mrr": Decimal(mrr)}),
        divergence=[],
    )


class _Obj:
    """Attribute access over plain dicts, for the few fields the checks read (money as Decimal)."""

    def __init__(self, data: dict[str, Any]) -> None:
        for name, value in data.items():
            if isinstance(value, dict) and name not in {"stages", "by_channel", "period_conversion"}:
                value = _Obj(value)
            elif name == "stages":
                value = {stage: _Obj(flow) for stage, flow in value.items()}
            elif name == "by_channel" and all(isinstance(v, dict) for v in value.values()):
                value = {channel: _Obj(f) for channel, f in value.items()}
            elif isinstance(value, str) and name.endswith(("_mrr", "pipeline", "_amount")):
                value = Decimal(value)
            setattr(self, name, value)


def verdict_of(verdicts: list[CheckVerdict], **labels: str) -> CheckVerdict:
    [found] = [v for v in verdicts if all(v.labels.get(k) == value for k, value in labels.items())]
    return found


# -- LeadDropOffSpike ---------------------------------------------------------------------------------------


def test_drop_off_spike_fires_when_the_day_loses_far_more_than_the_week() -> None:
    # paid mql: 10 of 20 in 24h (50 %) vs 30 of 100 over 7d (30 %): above 1.5x = 45 % and 20 points up
    day = funnel({}, {"paid": flows(mql=(20, 10)), "organic": flows(mql=(20, 6))})
    week = funnel({}, {"paid": flows(mql=(100, 30)), "organic": flows(mql=(100, 30))})
    verdicts = drop_off_checks(snapshot(day, week), POLICY)
    paid = verdict_of(verdicts, channel="paid", stage="mql")
    assert paid.firing
    assert paid.key == "LeadDropOffSpike:channel=paid,stage=mql"
    assert paid.value == 0.5
    assert paid.limit == pytest.approx(0.45)
    assert paid.figures == {"entries_24h": 20, "drop_offs_24h": 10, "entries_7d": 100, "drop_offs_7d": 30}
    assert not verdict_of(verdicts, channel="organic", stage="mql").firing  # 30 % = the week's


@pytest.mark.parametrize(
    ("day", "week", "fires"),
    [
        ((20, 9), (100, 30), False),  # 45 % is exactly 1.5x 30 %: not above
        ((20, 4), (100, 10), True),  # 20 % vs 10 %: above 1.5x, and exactly 10 points up counts
        ((20, 2), (100, 5), False),  # 10 % vs 5 %: above 1.5x, but only 5 points up
        ((19, 19), (100, 10), False),  # 19 entries in the 24h: too few to judge
    ],
)
def test_drop_off_spike_edges(day: tuple[int, int], week: tuple[int, int], fires: bool) -> None:
    verdicts = drop_off_checks(
        snapshot(funnel({}, {"paid": flows(sql=day)}), funnel({}, {"paid": flows(sql=week)})), POLICY
    )
    assert verdict_of(verdicts, channel="paid", stage="sql").firing is fires


def test_a_channel_that_left_the_day_still_gets_a_verdict_so_it_can_resolve() -> None:
    verdicts = drop_off_checks(snapshot(funnel({}), funnel({}, {"email": flows(lead=(50, 5))})), POLICY)
    email = verdict_of(verdicts, channel="email", stage="lead")
    assert not email.firing
    assert "0 entries in 24h" in email.reason


# -- StageConversionBelowTrailing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql_24h", "fires"),
    [
        (5, True),  # mql -> sql 5/20 = 25 % < 0.75 x 40 % = 30 %
        (6, False),  # 30 % exactly: not below
    ],
)
def test_stage_conversion_below_trailing(sql_24h: int, fires: bool) -> None:
    day = funnel(flows(mql=(20, 0), sql=(sql_24h, 0)))
    week = funnel(flows(mql=(100, 0), sql=(40, 0)))
    verdict = verdict_of(conversion_checks(snapshot(day, week), POLICY), from_stage="mql", to_stage="sql")
    assert verdict.firing is fires
    assert verdict.limit == pytest.approx(0.3)


def test_stage_conversion_needs_twenty_entries_into_the_from_stage() -> None:
    day = funnel(flows(mql=(19, 0), sql=(0, 0)))
    week = funnel(flows(mql=(100, 0), sql=(40, 0)))
    assert not verdict_of(conversion_checks(snapshot(day, week), POLICY), from_stage="mql").firing


# -- MrrChurnSpike --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("churned", "contraction", "monthly", "fires"),
    [
        ("4000", "2000", (0.01, 0.01), True),  # 6 % of the 100,000 at the month's start: above 5 %
        ("3000", "0", (0.01, 0.02), True),  # 3 %: above 1.5x the 1.5 % mean and above 2 %
        ("1900", "0", (0.01, 0.01), False),  # 1.9 %: above 1.5x the mean, but below the 2 % floor
        ("5000", "0", (), False),  # exactly 5 % is not above 5 %, and no monthly mean to compare with
    ],
)
def test_mrr_churn_spike(churned: str, contraction: str, monthly: tuple[float, ...], fires: bool) -> None:
    # MRR now 95,000 after a net -5,000 this month: 100,000 at its start
    month = {"churned": churned, "contraction": contraction, "net_new": "-5000"}
    [verdict] = churn_checks(snapshot(mrr="95000", month=month, monthly_churn=monthly), POLICY)
    rate = (Fraction(churned) + Fraction(contraction)) / 100_000
    assert verdict.value == float(rate)
    assert verdict.firing is fires


def test_no_churn_verdict_fires_without_mrr_at_the_start_of_the_month() -> None:
    [verdict] = churn_checks(snapshot(mrr="500", month={"net_new": "500"}), POLICY)
    assert not verdict.firing
    assert verdict.value is None


# -- PipelineCoverageLow --------------------------------------------------------------------------------------


def test_pipeline_coverage_is_judged_only_against_a_target() -> None:
    assert pipeline_checks(snapshot(weighted_pipeline="90000"), POLICY) == []
    targeted = AlertPolicy(pipeline_target=Decimal("100000"))
    [low] = pipeline_checks(snapshot(weighted_pipeline="90000"), targeted)
    [covered] = pipeline_checks(snapshot(weighted_pipeline="100000"), targeted)
    assert low.firing
    assert (low.value, low.limit) == (90000, 100000)
    assert not covered.firing


def test_no_data_verdicts_before_the_first_event() -> None:
    assert data_checks(Snapshot.model_construct(as_of=None), POLICY) == []


# -- ConsumerLagHigh and DeadLettersArriving ------------------------------------------------------------------


def test_consumer_lag_sums_the_partitions_of_each_topic() -> None:
    lag = {("site.visits", 0): 6000, ("site.visits", 1): 4001, ("crm.contacts", 0): 10_000}
    verdicts = worker_checks(lag, {}, ["site.visits", "crm.contacts", "billing.subscriptions"], [], POLICY)
    assert verdict_of(verdicts, topic="site.visits").firing  # 10,001 > 10,000
    assert not verdict_of(verdicts, topic="crm.contacts").firing  # exactly 10,000
    assert verdict_of(verdicts, topic="billing.subscriptions").value == 0


def test_dead_letters_fire_while_any_arrived_within_the_window() -> None:
    samples = [
        (0, {"not_json": 1}),
        (10 * MINUTE, {"not_json": 3, "invalid": 2}),
        (20 * MINUTE, {"not_json": 3, "invalid": 2}),
    ]
    # at 20 min the window starts at 5 min: the base is the sample at 0
    assert recent_increase(samples, 20 * MINUTE, 15 * MINUTE) == {"not_json": 2, "invalid": 2}
    # at 26 min it starts at 11 min: the base is the sample at 10 min, nothing new since
    assert recent_increase(samples, 26 * MINUTE, 15 * MINUTE) == {"not_json": 0, "invalid": 0}
    # at 12 min it starts before the first sample: everything since the worker started
    assert recent_increase(samples, 12 * MINUTE, 15 * MINUTE) == {"not_json": 3, "invalid": 2}
    verdicts = worker_checks({}, {"not_json": 2, "invalid": 0}, [], ["not_json", "invalid"], POLICY)
    assert verdict_of(verdicts, reason="not_json").firing
    assert not verdict_of(verdicts, reason="invalid").firing


@given(st.lists(st.integers(0, 5), min_size=1, max_size=30), st.integers(1, 40))
def test_recent_increase_never_exceeds_the_total_and_counts_all_within_a_window_longer_than_history(
    steps: list[int], window_minutes: int
) -> None:
    samples, total = [], 0
    for minute, step in enumerate(steps):
        total += step
        samples.append((minute * MINUTE, {"invalid": total}))
    now = (len(steps) - 1) * MINUTE
    increase = recent_increase(samples, now, window_minutes * MINUTE)["invalid"]
    assert 0 <= increase <= total
    if window_minutes > len(steps) - 1:  # the window reaches back before the first sample: since the start
        assert increase == total


# -- hold and transitions ------------------------------------------------------------------------------------


def lagging(behind: int) -> list[CheckVerdict]:
    return worker_checks({("site.visits", 0): behind}, {}, ["site.visits"], [], POLICY)


def test_a_condition_fires_only_after_holding_for_the_rules_for_duration() -> None:
    since: dict[str, int] = {}
    held, since = hold(lagging(20_000), since, 0, POLICY)
    assert not held[0].firing
    assert held[0].reason.startswith("pending 0 s of 600 s")
    held, since = hold(lagging(20_000), since, 9 * MINUTE, POLICY)
    assert not held[0].firing
    held, since = hold(lagging(20_000), since, 10 * MINUTE, POLICY)
    assert held[0].firing
    # a lapse starts the clock over
    held, since = hold(lagging(0), since, 11 * MINUTE, POLICY)
    held, since = hold(lagging(20_000), since, 12 * MINUTE, POLICY)
    assert not held[0].firing


def test_each_change_of_state_is_one_event_with_the_verdict_that_caused_it() -> None:
    at = datetime(2026, 3, 18, tzinfo=UTC)
    firing = check_transitions({}, lagging(20_000), at)
    assert [(a.alert_name, a.state, a.key) for a in firing] == [
        ("ConsumerLagHigh", "firing", "ConsumerLagHigh:topic=site.visits")
    ]
    assert firing[0].verdict.figures == {"messages_behind": 20_000}
    assert check_transitions({"ConsumerLagHigh:topic=site.visits": True}, lagging(20_000), at) == []
    [resolved] = check_transitions({"ConsumerLagHigh:topic=site.visits": True}, lagging(5), at)
    assert resolved.state == "resolved"
    assert resolved.alert_id == f"ConsumerLagHigh:topic=site.visits:resolved:{at.isoformat()}"
