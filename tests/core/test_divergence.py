"""Divergence: "traffic up, conversion down" fires only when the fall is large, real and well sampled."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.channels import Channel
from schemas.snapshot.divergence import DivergenceVerdict
from stream.core.divergence import (
    alert_transitions,
    divergence_spans,
    divergence_verdict,
    divergence_verdicts,
    two_proportion_z_test,
)
from stream.core.policy import DivergencePolicy, Policy
from stream.core.totals import Totals
from stream.core.windows import DAY_MS, HOUR_MS, MINUTE_MS, Span, to_ms

AS_OF = to_ms(datetime(2026, 3, 10, 10, 17, 30, tzinfo=UTC))
WINDOW_END = to_ms(datetime(2026, 3, 10, 10, 18, tzinfo=UTC))
WINDOW = Span(WINDOW_END - DAY_MS, WINDOW_END)
BASELINE = Span(WINDOW_END - 2 * DAY_MS, WINDOW_END - DAY_MS)
RULE = DivergencePolicy()


def verdict(
    sessions_now: int, leads_now: int, sessions_base: int, leads_base: int, rule: DivergencePolicy = RULE
) -> DivergenceVerdict:
    return divergence_verdict(
        "overall", None, sessions_now, leads_now, sessions_base, leads_base, rule, WINDOW, BASELINE
    )


# -- the z-test --------------------------------------------------------------------------------


def test_z_test_matches_the_hand_computed_example_50_of_1000_against_80_of_1000() -> None:
    # pooled p = 130 / 2000 = 0.065; se = √(0.065 · 0.935 · (1/1000 + 1/1000)) = √0.00012155 = 0.011025
    # z = (0.05 − 0.08) / 0.011025 = −2.7211; one-sided p = Φ(−2.7211) = 0.003253
    test = two_proportion_z_test(50, 1000, 80, 1000)
    assert test is not None
    assert test.z == pytest.approx(-2.7211, abs=1e-4)
    assert test.p_value == pytest.approx(0.003253, abs=1e-6)


def test_the_p_value_is_one_sided_so_a_rise_in_conversion_is_never_significant() -> None:
    test = two_proportion_z_test(80, 1000, 50, 1000)
    assert test is not None
    assert test.z == pytest.approx(2.7211, abs=1e-4)
    assert test.p_value == pytest.approx(1 - 0.003253, abs=1e-6)


def test_equal_proportions_give_z_zero_and_p_one_half() -> None:
    assert two_proportion_z_test(30, 600, 50, 1000) == (0.0, 0.5)


@pytest.mark.parametrize(
    ("successes_now", "trials_now", "successes_base", "trials_base", "why"),
    [
        (0, 0, 50, 1000, "no trials now"),
        (50, 1000, 0, 0, "no trials in the baseline"),
        (0, 1000, 0, 1000, "pooled proportion 0: no variance"),
        (1000, 1000, 500, 500, "pooled proportion 1: no variance"),
    ],
)
def test_the_z_test_is_absent_when_it_is_undefined(
    successes_now: int, trials_now: int, successes_base: int, trials_base: int, why: str
) -> None:
    assert two_proportion_z_test(successes_now, trials_now, successes_base, trials_base) is None, why


counts = st.integers(min_value=1, max_value=100_000)


@settings(max_examples=200, deadline=None)
@given(trials_now=counts, trials_base=counts, data=st.data())
def test_swapping_the_windows_negates_z_and_mirrors_the_one_sided_p(
    trials_now: int, trials_base: int, data: st.DataObject
) -> None:
    successes_now = data.draw(st.integers(0, trials_now))
    successes_base = data.draw(st.integers(0, trials_base))
    forward = two_proportion_z_test(successes_now, trials_now, successes_base, trials_base)
    backward = two_proportion_z_test(successes_base, trials_base, successes_now, trials_now)
    if forward is None or backward is None:
        assert forward is None
        assert backward is None
        return
    assert 0 <= forward.p_value <= 1
    assert forward.z == pytest.approx(-backward.z, abs=1e-9)
    assert forward.p_value + backward.p_value == pytest.approx(1, abs=1e-9)


# -- one verdict -------------------------------------------------------------------------------


def test_sessions_up_fifty_percent_and_conversion_down_forty_percent_fires() -> None:
    # baseline 2000 sessions, 100 leads (5 %); now 3000 sessions, 90 leads (3 %)
    found = verdict(3000, 90, 2000, 100)
    assert found.firing
    assert found.sessions_change == pytest.approx(0.5)
    assert found.conversion_now == pytest.approx(0.03)
    assert found.conversion_baseline == pytest.approx(0.05)
    assert found.conversion_change == pytest.approx(-0.4)
    assert found.p_value is not None
    assert found.p_value < 0.05
    assert found.reason == f"sessions +50.0% while conversion -40.0% (p = {found.p_value:.3g})"


# Large samples so the z-test is clearly significant at both edges:
# baseline 10000 sessions / 500 leads (5 %); now 12000 sessions (+20 %) / 480 leads (4 %, −20 %).
@pytest.mark.parametrize(
    ("sessions_now", "leads_now", "firing", "why"),
    [
        (12000, 480, True, "exactly +20 % sessions and exactly −20 % conversion: both thresholds met"),
        (11999, 480, False, "sessions +19.99 %: just short of the rise"),
        (12000, 481, False, "conversion 481/12000 = −19.83 %: just short of the fall"),
        (9000, 300, False, "conversion −33 % but sessions fell: not traffic up"),
    ],
)
def test_the_rise_and_fall_thresholds_are_inclusive_at_their_edges(
    sessions_now: int, leads_now: int, firing: bool, why: str
) -> None:
    assert verdict(sessions_now, leads_now, 10000, 500).firing is firing, why


def test_a_p_value_equal_to_the_threshold_is_not_significant() -> None:
    test = two_proportion_z_test(90, 3000, 100, 2000)
    assert test is not None
    at_threshold = DivergencePolicy(p_value=test.p_value)
    just_above = DivergencePolicy(p_value=math.nextafter(test.p_value, 1))
    assert not verdict(3000, 90, 2000, 100, at_threshold).firing
    assert verdict(3000, 90, 2000, 100, just_above).firing


def test_a_large_fall_that_is_not_statistically_real_does_not_fire() -> None:
    # baseline 200 sessions, 10 leads (5 %); now 300 sessions, 9 leads (3 %): −40 %, but p ≈ 0.13
    found = verdict(300, 9, 200, 10)
    assert not found.firing
    assert found.p_value is not None
    assert found.p_value > 0.05
    assert found.reason.startswith("p = ")


@pytest.mark.parametrize(
    ("sessions_now", "leads_now", "sessions_base", "leads_base", "reason"),
    [
        (3000, 10, 120, 12, "not enough sessions in baseline (120 < 200)"),
        (150, 1, 100, 12, "not enough sessions in window (150 < 200)"),
        (3000, 1, 1000, 9, "not enough leads in baseline (9 < 10)"),
    ],
)
def test_minimum_samples_keep_a_thin_comparison_from_firing(
    sessions_now: int, leads_now: int, sessions_base: int, leads_base: int, reason: str
) -> None:
    found = verdict(sessions_now, leads_now, sessions_base, leads_base)
    assert not found.firing
    assert reason in found.reason


def test_a_verdict_with_no_sessions_now_has_absent_rates_and_does_not_fire() -> None:
    found = verdict(0, 0, 2000, 100)
    assert not found.firing
    assert found.conversion_now is None
    assert found.conversion_change is None
    assert found.z is None
    assert found.p_value is None
    assert found.conversion_baseline == pytest.approx(0.05)
    assert found.sessions_change == pytest.approx(-1.0)
    assert "conversion absent: no sessions in window" in found.reason


def test_a_verdict_with_no_sessions_anywhere_has_every_rate_absent() -> None:
    found = verdict(0, 0, 0, 0)
    assert not found.firing
    assert found.conversion_now is None
    assert found.conversion_baseline is None
    assert found.sessions_change is None
    assert found.conversion_change is None
    assert found.z is None
    assert found.p_value is None
    assert "no sessions in window or baseline" in found.reason


@settings(max_examples=200, deadline=None)
@given(
    sessions_now=st.integers(0, 50_000),
    sessions_base=st.integers(0, 50_000),
    data=st.data(),
)
def test_a_verdict_fires_only_when_every_condition_holds(
    sessions_now: int, sessions_base: int, data: st.DataObject
) -> None:
    leads_now = data.draw(st.integers(0, sessions_now))
    leads_base = data.draw(st.integers(0, sessions_base))
    found = verdict(sessions_now, leads_now, sessions_base, leads_base)
    if found.firing:
        assert sessions_now >= 200
        assert sessions_base >= 200
        assert leads_base >= 10
        assert sessions_now * 5 >= sessions_base * 6
        assert leads_now * sessions_base * 5 <= leads_base * sessions_now * 4
        assert found.p_value is not None
        assert found.p_value < 0.05
    else:
        assert found.reason


# -- windows and verdicts read from totals --------------------------------------------------------


def test_the_window_ends_one_minute_after_the_minute_of_the_as_of() -> None:
    window, baseline = divergence_spans(AS_OF, DivergencePolicy())
    assert window == WINDOW
    assert baseline == BASELINE


def test_a_week_ago_baseline_is_the_same_window_seven_days_earlier() -> None:
    window, baseline = divergence_spans(AS_OF, DivergencePolicy(window_ms=HOUR_MS, baseline="week_ago"))
    assert window == Span(WINDOW_END - HOUR_MS, WINDOW_END)
    assert baseline == Span(WINDOW_END - HOUR_MS - 7 * DAY_MS, WINDOW_END - 7 * DAY_MS)


def test_an_unknown_baseline_is_refused_with_the_accepted_names() -> None:
    with pytest.raises(ValueError, match="previous, week_ago"):
        divergence_spans(AS_OF, DivergencePolicy(baseline="yesterday"))


def add_window(totals: Totals, span: Span, channel: str, sessions: int, leads: int) -> None:
    """Sessions and lead entries of one channel, spread over the span's first and last minute."""
    first, last = span.start_ms, span.end_ms - MINUTE_MS + 59_000
    totals.add("sessions", (channel, "none"), first, sessions - sessions // 2)
    totals.add("sessions", (channel, "spring-sale"), last, sessions // 2)
    totals.add("stage_entries", ("lead", channel, "none"), first, leads - leads // 2)
    totals.add("stage_entries", ("lead", channel, "spring-sale"), last, leads // 2)
    # entries into other stages must not count as leads
    totals.add("stage_entries", ("mql", channel, "none"), last, leads)


def test_verdicts_come_overall_then_per_channel_from_the_totals() -> None:
    totals = Totals()
    # paid: 1000 sessions / 50 leads (5 %) -> 2000 / 40 (2 %): +100 % sessions, −60 % conversion
    add_window(totals, BASELINE, "paid", 1000, 50)
    add_window(totals, WINDOW, "paid", 2000, 40)
    # organic: steady 1000 / 50
    add_window(totals, BASELINE, "organic", 1000, 50)
    add_window(totals, WINDOW, "organic", 1000, 50)
    # a minute outside both spans counts in neither
    totals.add("sessions", ("paid", "none"), WINDOW.end_ms, 5000)
    totals.add("sessions", ("paid", "none"), BASELINE.start_ms - 1, 5000)

    verdicts = divergence_verdicts(totals, AS_OF, Policy())

    assert [v.key for v in verdicts] == [
        "overall",
        *(f"channel:{c}" for c in sorted(c.value for c in Channel)),
    ]
    by_key = {v.key: v for v in verdicts}
    overall = by_key["overall"]
    # overall: 2000 / 100 (5 %) -> 3000 / 90 (3 %): +50 % sessions, −40 % conversion
    assert (overall.sessions_baseline, overall.leads_baseline) == (2000, 100)
    assert (overall.sessions_now, overall.leads_now) == (3000, 90)
    assert overall.firing
    paid = by_key["channel:paid"]
    assert (paid.sessions_now, paid.leads_now, paid.sessions_baseline, paid.leads_baseline) == (
        2000,
        40,
        1000,
        50,
    )
    assert paid.sessions_change == pytest.approx(1.0)
    assert paid.conversion_change == pytest.approx(-0.6)
    assert paid.firing
    organic = by_key["channel:organic"]
    assert not organic.firing
    assert organic.conversion_change == pytest.approx(0.0)
    quiet = by_key["channel:email"]
    assert not quiet.firing
    assert quiet.conversion_now is None
    assert paid.window_start == datetime(2026, 3, 9, 10, 18, tzinfo=UTC)
    assert paid.baseline_end == datetime(2026, 3, 9, 10, 18, tzinfo=UTC)


def test_a_lead_with_no_touch_gets_its_own_channel_verdict() -> None:
    totals = Totals()
    totals.add("stage_entries", ("lead", "unknown", "none"), WINDOW.start_ms, 3)
    keys = [v.key for v in divergence_verdicts(totals, AS_OF, Policy())]
    assert "channel:unknown" in keys


# -- alerts ----------------------------------------------------------------------------------


def test_an_alert_fires_once_and_resolves_once_as_the_verdict_changes() -> None:
    calm, storm = verdict(2000, 100, 2000, 100), verdict(3000, 90, 2000, 100)
    state: dict[str, bool] = {}
    published = []
    for verdicts in ([calm], [storm], [storm], [calm], [calm]):
        published.append([(a.state, a.key) for a in alert_transitions(state, verdicts)])
        state = {v.key: v.firing for v in verdicts}
    assert published == [[], [("firing", "overall")], [], [("resolved", "overall")], []]


def test_an_alert_carries_the_verdict_and_a_stable_id() -> None:
    storm = verdict(3000, 90, 2000, 100)
    (alert,) = alert_transitions({}, [storm])
    assert alert.alert_name == "TrafficUpConversionDown"
    assert alert.at == storm.window_end
    assert alert.verdict == storm
    assert alert_transitions({}, [storm])[0].alert_id == alert.alert_id


def test_alert_transitions_leave_the_previous_states_untouched() -> None:
    previous = {"overall": True}
    alert_transitions(previous, [verdict(2000, 100, 2000, 100)])
    assert previous == {"overall": True}
