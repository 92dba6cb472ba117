"""Divergence: the leading indicator disagreeing with itself — traffic up, conversion down.

More sessions with fewer leads per session usually means something broke
between the ad and the form (bot traffic, a broken form, a campaign aimed at
the wrong audience). The rule compares a window with a baseline and fires
only when the fall is large *and* statistically real, so a quiet channel's
noise never pages anyone. Everything here is a pure read of `Totals`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Literal, NamedTuple

from schemas.channels import Channel
from schemas.events import Stage
from schemas.snapshot.divergence import DivergenceAlert, DivergenceVerdict
from stream.core.checks import state_changes
from stream.core.policy import DivergencePolicy, Policy
from stream.core.rates import whole
from stream.core.totals import Readable
from stream.core.traffic import SESSIONS, STAGE_ENTRIES
from stream.core.windows import DAY_MS, MINUTE_MS, Span, floor_minute, to_datetime

BASELINES = ("previous", "week_ago")


class ZTest(NamedTuple):
    z: float
    p_value: float


def two_proportion_z_test(successes_now: int, trials_now: int, successes_base: int, trials_base: int) -> ZTest | None:
    """Pooled two-proportion z-test of "the proportion now is lower than in the baseline".

    z = (p_now − p_base) / √(p̂ (1 − p̂) (1/n_now + 1/n_base)), with the pooled
    p̂ = (x_now + x_base) / (n_now + n_base). The p-value is **one-sided**,
    P(Z ≤ z) = ½·erfc(−z/√2): the alert asks whether conversion *fell*, so a
    rise is never significant (p near 1), and a fall needs half the evidence
    a two-sided test would.

    Absent (None) when the test is undefined: a window with no trials, or a
    pooled proportion of 0 or ≥ 1 (no variance to measure against).
    """
    if trials_now <= 0 or trials_base <= 0:
        return None
    pooled = (successes_now + successes_base) / (trials_now + trials_base)
    if not 0 < pooled < 1:
        return None
    standard_error = math.sqrt(pooled * (1 - pooled) * (1 / trials_now + 1 / trials_base))
    z = (successes_now / trials_now - successes_base / trials_base) / standard_error
    return ZTest(z, 0.5 * math.erfc(-z / math.sqrt(2)))


def _exact(threshold: float) -> Fraction:
    """A decimal setting as the exact fraction it was written as (0.2 -> 1/5), so edges compare exactly."""
    return Fraction(repr(threshold))


def divergence_verdict(
    scope: Literal["overall", "channel"],
    channel: str | None,
    sessions_now: int,
    leads_now: int,
    sessions_base: int,
    leads_base: int,
    policy: DivergencePolicy,
    window: Span,
    baseline: Span,
) -> DivergenceVerdict:
    """ "Traffic up, conversion down" for one scope (README, "The snapshot").

    Fires when, comparing the window with the baseline, all hold:
    - sessions rose by at least `sessions_rise` (relative: now / base − 1 ≥ 0.20);
    - visit→lead conversion (new leads / sessions) fell by at least
      `conversion_fall` (relative: conv_now / conv_base − 1 ≤ −0.20);
    - the fall is statistically real: one-sided two-proportion z-test p < `p_value`;
    - minimum samples: ≥ `min_sessions` sessions in each window and
      ≥ `min_leads` leads in the baseline.
    Thresholds are compared exactly (an exact +20 % counts as a rise of 20 %).
    Rates that cannot be computed (no sessions) are absent and the verdict
    does not fire; `reason` names every condition that failed.
    """
    conversion_now = leads_now / sessions_now if sessions_now else None
    conversion_base = leads_base / sessions_base if sessions_base else None
    sessions_ratio = Fraction(sessions_now, sessions_base) if sessions_base else None
    conversion_ratio = (
        Fraction(leads_now * sessions_base, sessions_now * leads_base)
        if sessions_now and sessions_base and leads_base
        else None
    )
    test = two_proportion_z_test(leads_now, sessions_now, leads_base, sessions_base)

    failed: list[str] = []
    if sessions_base < policy.min_sessions:
        failed.append(f"not enough sessions in baseline ({sessions_base} < {policy.min_sessions})")
    if sessions_now < policy.min_sessions:
        failed.append(f"not enough sessions in window ({sessions_now} < {policy.min_sessions})")
    if leads_base < policy.min_leads:
        failed.append(f"not enough leads in baseline ({leads_base} < {policy.min_leads})")
    if sessions_ratio is None:
        failed.append("sessions change absent: no sessions in baseline")
    elif sessions_ratio - 1 < _exact(policy.sessions_rise):
        failed.append(f"sessions {_percent(sessions_ratio - 1)} < +{policy.sessions_rise:.0%}")
    if conversion_ratio is None:
        failed.append(_absent_conversion_reason(sessions_now, sessions_base))
    elif conversion_ratio - 1 > -_exact(policy.conversion_fall):
        failed.append(f"conversion {_percent(conversion_ratio - 1)} > -{policy.conversion_fall:.0%}")
    if test is None:
        failed.append("z-test undefined (no sessions, or no variance in conversion)")
    elif not test.p_value < policy.p_value:
        failed.append(f"p = {test.p_value:.3g} ≥ {policy.p_value:g}")

    firing = not failed
    if firing and sessions_ratio is not None and conversion_ratio is not None and test is not None:
        reason = (
            f"sessions {_percent(sessions_ratio - 1)} while conversion "
            f"{_percent(conversion_ratio - 1)} (p = {test.p_value:.3g})"
        )
    else:
        reason = "; ".join(failed)
    return DivergenceVerdict(
        scope=scope,
        channel=channel,
        window_start=to_datetime(window.start_ms),
        window_end=to_datetime(window.end_ms),
        baseline_start=to_datetime(baseline.start_ms),
        baseline_end=to_datetime(baseline.end_ms),
        sessions_now=sessions_now,
        sessions_baseline=sessions_base,
        leads_now=leads_now,
        leads_baseline=leads_base,
        conversion_now=conversion_now,
        conversion_baseline=conversion_base,
        sessions_change=None if sessions_ratio is None else float(sessions_ratio - 1),
        conversion_change=None if conversion_ratio is None else float(conversion_ratio - 1),
        z=None if test is None else test.z,
        p_value=None if test is None else test.p_value,
        firing=firing,
        reason=reason,
    )


def _absent_conversion_reason(sessions_now: int, sessions_base: int) -> str:
    if not sessions_now and not sessions_base:
        return "conversion absent: no sessions in window or baseline"
    if not sessions_now:
        return "conversion absent: no sessions in window"
    if not sessions_base:
        return "conversion absent: no sessions in baseline"
    return "conversion change absent: no leads in baseline"


def _percent(change: Fraction) -> str:
    return f"{float(change):+.1%}"


def divergence_spans(as_of_ms: int, policy: DivergencePolicy) -> tuple[Span, Span]:
    """The window ending at the minute-aligned as-of, and its baseline.

    The window is [end − window_ms, end) with end = floor_minute(as_of) + 1 min
    (as `windows.window_span`); the baseline is the same length just before it
    (`previous`) or the same window 7 days earlier (`week_ago`).
    """
    end = floor_minute(as_of_ms) + MINUTE_MS
    window = Span(end - policy.window_ms, end)
    if policy.baseline == "previous":
        return window, window.shifted(-policy.window_ms)
    if policy.baseline == "week_ago":
        return window, window.shifted(-7 * DAY_MS)
    raise ValueError(f"unknown divergence baseline {policy.baseline!r}: use one of {', '.join(BASELINES)}")


def divergence_verdicts(totals: Readable, as_of_ms: int, policy: Policy) -> list[DivergenceVerdict]:
    """Verdicts as of an instant: overall first, then every channel (sorted).

    Every channel of `schemas.channels.Channel` gets a verdict even with no
    traffic, plus any other channel label the totals hold (a lead's `unknown`
    first touch), so a scope that fired can always be seen to resolve. A
    channel's leads are the contacts whose first-touch channel it is.
    """
    rule = policy.divergence
    window, baseline = divergence_spans(as_of_ms, rule)
    lead = {0: Stage.LEAD.value}
    sessions_now = totals.total_by(SESSIONS, window, 0)
    sessions_base = totals.total_by(SESSIONS, baseline, 0)
    leads_now = totals.total_by(STAGE_ENTRIES, window, 1, lead)
    leads_base = totals.total_by(STAGE_ENTRIES, baseline, 1, lead)
    verdicts = [
        divergence_verdict(
            "overall",
            None,
            whole(totals.total(SESSIONS, window)),
            whole(totals.total(STAGE_ENTRIES, window, lead)),
            whole(totals.total(SESSIONS, baseline)),
            whole(totals.total(STAGE_ENTRIES, baseline, lead)),
            rule,
            window,
            baseline,
        )
    ]
    channels = sorted({*(c.value for c in Channel), *sessions_now, *sessions_base, *leads_now, *leads_base})
    for channel in channels:
        verdicts.append(
            divergence_verdict(
                "channel",
                channel,
                whole(sessions_now.get(channel, 0)),
                whole(leads_now.get(channel, 0)),
                whole(sessions_base.get(channel, 0)),
                whole(leads_base.get(channel, 0)),
                rule,
                window,
                baseline,
            )
        )
    return verdicts


def alert_transitions(previous: Mapping[str, bool], verdicts: Iterable[DivergenceVerdict]) -> list[DivergenceAlert]:
    """One alert per scope whose state changed: `firing` when it starts, `resolved` when it stops.

    `previous` maps a verdict's `key` to whether it was firing (a key never
    seen counts as not firing); it is not modified — the caller keeps
    `{v.key: v.firing for v in verdicts}` as the next `previous`. A scope with
    no verdict this time keeps its state and raises nothing. The alert's
    time is the end of the evaluated window.
    """
    return [
        DivergenceAlert(
            alert_id=f"{verdict.key}:{state}:{verdict.window_end.isoformat()}",
            state=state,
            key=verdict.key,
            at=verdict.window_end,
            verdict=verdict,
        )
        for verdict, state in state_changes(previous, verdicts)
    ]
