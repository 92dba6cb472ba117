"""The read side in one call: every metric at an as-of instant, from the totals alone."""

from __future__ import annotations

from schemas.snapshot import InputCounts, MonthMetrics, Snapshot, WindowMetrics
from stream.core.acquisition import acquisition_window
from stream.core.attribution import attribution_window
from stream.core.divergence import divergence_verdicts
from stream.core.funnel import funnel_window, lead_cohorts
from stream.core.policy import Policy
from stream.core.revenue import revenue_month, revenue_now, revenue_window
from stream.core.totals import Readable
from stream.core.traffic import traffic_window
from stream.core.windows import Span, Window, month_span, months_between, to_datetime, window_span


def window_metrics(totals: Readable, span: Span, policy: Policy) -> WindowMetrics:
    return WindowMetrics(
        start=to_datetime(span.start_ms),
        end=to_datetime(span.end_ms),
        traffic=traffic_window(totals, span, policy.campaign_top_n),
        funnel=funnel_window(totals, span, policy),
        attribution=attribution_window(totals, span),
        revenue=revenue_window(totals, span),
        acquisition=acquisition_window(totals, span, policy),
    )


def month_metrics(totals: Readable, month: str, as_of_ms: int, policy: Policy) -> MonthMetrics:
    whole = month_span(month)
    span = Span(whole.start_ms, min(whole.end_ms, window_span(Window.MONTH, as_of_ms).end_ms))
    return MonthMetrics(
        revenue=revenue_month(totals, month, as_of_ms),
        funnel=funnel_window(totals, span, policy),
        acquisition=acquisition_window(totals, span, policy),
    )


def build_snapshot(
    totals: Readable,
    as_of_ms: int | None,
    first_event_ms: int | None,
    policy: Policy,
    input_counts: InputCounts,
) -> Snapshot:
    """Every metric as of `as_of_ms`; the calendar months from the first event's month on, at most the
    latest `policy.snapshot_months` of them, so the snapshot's cost does not grow with history."""
    if as_of_ms is None:
        as_of_ms = 0
        months: list[str] = []
    else:
        months = months_between(first_event_ms if first_event_ms is not None else as_of_ms, as_of_ms)
        months = months[-policy.snapshot_months :]
    with totals.reading():
        return _snapshot(totals, as_of_ms, months, policy, input_counts)


def _snapshot(
    totals: Readable, as_of_ms: int, months: list[str], policy: Policy, input_counts: InputCounts
) -> Snapshot:
    return Snapshot(
        as_of=to_datetime(as_of_ms) if months else None,
        reporting_currency=policy.reporting_currency,
        input=input_counts,
        windows={window.value: window_metrics(totals, window_span(window, as_of_ms), policy) for window in Window},
        months={month: month_metrics(totals, month, as_of_ms, policy) for month in months},
        revenue=revenue_now(totals, as_of_ms),
        lead_cohorts=lead_cohorts(totals, as_of_ms),
        divergence=divergence_verdicts(totals, as_of_ms, policy) if months else [],
    )
