"""Series: the leading indicators over time (hourly, daily) and each calendar month's traffic, from the totals.

The page charts these; `/api/series/*` serves them. Each series has a fixed
number of buckets whatever the history (docs/architecture.md, "Series behind
the page"): 168 hours and 90 days, both inside the totals' hour retention, so
every bucket is exact, and the snapshot's months. A bucket's figures are the
same sums the snapshot's windows read (`stream.core.traffic`), over the bucket.
"""

from __future__ import annotations

from typing import Literal

from schemas.events import Stage
from schemas.snapshot.series import (
    DAILY_POINTS,
    HOURLY_POINTS,
    ChannelMonthTraffic,
    IndicatorColumns,
    IndicatorSeries,
    MonthTraffic,
    Series,
)
from stream.core.policy import Policy
from stream.core.rates import ratio, whole
from stream.core.totals import Readable
from stream.core.traffic import ENGAGED_SESSIONS, MONTH_VISITORS, MONTH_VISITORS_ALL, SESSIONS, STAGE_ENTRIES
from stream.core.windows import (
    DAY_MS,
    HOUR_MS,
    Span,
    Window,
    floor_day,
    floor_hour,
    month_span,
    months_between,
    to_datetime,
    window_span,
)

LEAD = {0: Stage.LEAD.value}
"""`stage_entries` labels are (stage, channel, campaign): a lead is an entry into `lead`."""


def bucket_starts(first_ms: int, as_of_ms: int, step_ms: int, points: int) -> list[int]:
    """Starts of the last `points` buckets of `step_ms` up to the one holding `as_of_ms`, none before `first_ms`'s."""
    floor = floor_hour if step_ms == HOUR_MS else floor_day
    last = floor(as_of_ms)
    first = max(last - (points - 1) * step_ms, floor(min(first_ms, as_of_ms)))
    return list(range(first, last + step_ms, step_ms))


def indicator_series(totals: Readable, first_ms: int | None, as_of_ms: int | None, step_ms: int) -> IndicatorSeries:
    """Per bucket (an hour, or a UTC day), overall and by channel:

    - sessions and engaged sessions (pageviews ≥ 2 or engaged_seconds ≥ 10);
    - new leads = contacts whose lead moment falls in the bucket, by their first-touch channel;
    - visit→lead rate = new leads / sessions of the bucket (null without sessions).

    Hourly: the last 168 hours; daily: the last 90 UTC days; never before the first event's bucket.
    The last bucket ends at the as-of minute's end, as the snapshot's windows do.
    """
    step: Literal["hour", "day"] = "hour" if step_ms == HOUR_MS else "day"
    points = HOURLY_POINTS if step_ms == HOUR_MS else DAILY_POINTS
    if as_of_ms is None:
        empty = IndicatorColumns(sessions=[], engaged_sessions=[], new_leads=[], visit_to_lead_rate=[])
        return IndicatorSeries(
            step=step, step_seconds=step_ms // 1000, start=None, end=None, times=[], overall=empty, by_channel={}
        )
    end = window_span(Window.LAST_1H, as_of_ms).end_ms
    starts = bucket_starts(first_ms if first_ms is not None else as_of_ms, as_of_ms, step_ms, points)
    spans = [Span(start, min(start + step_ms, end)) for start in starts]
    # each bucket's span is read once per family: no `reading()` scope, which would sum every stage's
    # series before matching `lead`
    sessions = [totals.total_by(SESSIONS, span, 0) for span in spans]
    engaged = [totals.total_by(ENGAGED_SESSIONS, span, 0) for span in spans]
    leads = [totals.total_by(STAGE_ENTRIES, span, 1, LEAD) for span in spans]
    channels = sorted({channel for bucket in (*sessions, *leads) for channel, value in bucket.items() if value})

    def columns(channel: str | None) -> IndicatorColumns:
        def pick(buckets: list[dict[str, float]]) -> list[int]:
            if channel is None:
                return [whole(sum(bucket.values())) for bucket in buckets]
            return [whole(bucket.get(channel, 0)) for bucket in buckets]

        session_counts, lead_counts = pick(sessions), pick(leads)
        return IndicatorColumns(
            sessions=session_counts,
            engaged_sessions=pick(engaged),
            new_leads=lead_counts,
            visit_to_lead_rate=[ratio(n, s) for n, s in zip(lead_counts, session_counts, strict=True)],
        )

    return IndicatorSeries(
        step=step,
        step_seconds=step_ms // 1000,
        start=to_datetime(starts[0]),
        end=to_datetime(end),
        times=[to_datetime(start) for start in starts],
        overall=columns(None),
        by_channel={channel: columns(channel) for channel in channels},
    )


def month_traffic(totals: Readable, month: str, as_of_ms: int) -> MonthTraffic:
    """One calendar month's sessions, engaged sessions, new leads and visit→lead rate, overall and by channel.

    Unique visitors (distinct visitor_id) come from `MONTH_VISITORS`: a visitor counts once in each month it
    visited in, at the month's start (`stream.core.traffic`).
    """
    whole_month = month_span(month)
    end = window_span(Window.MONTH, as_of_ms).end_ms
    span = Span(whole_month.start_ms, min(whole_month.end_ms, end))
    sessions = totals.total_by(SESSIONS, span, 0)
    engaged = totals.total_by(ENGAGED_SESSIONS, span, 0)
    leads = totals.total_by(STAGE_ENTRIES, span, 1, LEAD)
    visitors = totals.total_by(MONTH_VISITORS, span, 0)

    def channel_traffic(channel: str) -> ChannelMonthTraffic:
        channel_sessions, channel_leads = whole(sessions.get(channel, 0)), whole(leads.get(channel, 0))
        return ChannelMonthTraffic(
            sessions=channel_sessions,
            unique_visitors=whole(visitors.get(channel, 0)),
            engaged_sessions=whole(engaged.get(channel, 0)),
            new_leads=channel_leads,
            visit_to_lead_rate=ratio(channel_leads, channel_sessions),
        )

    total_sessions, total_leads = whole(sum(sessions.values())), whole(sum(leads.values()))
    return MonthTraffic(
        sessions=total_sessions,
        unique_visitors=whole(totals.total(MONTH_VISITORS_ALL, span)),
        engaged_sessions=whole(sum(engaged.values())),
        new_leads=total_leads,
        visit_to_lead_rate=ratio(total_leads, total_sessions),
        by_channel={channel: channel_traffic(channel) for channel in sorted({*sessions, *leads})},
    )


def build_series(totals: Readable, as_of_ms: int | None, first_event_ms: int | None, policy: Policy) -> Series:
    """The hourly and daily indicators and the months' traffic as of `as_of_ms` (the snapshot's months)."""
    months: list[str] = []
    if as_of_ms is not None:
        months = months_between(first_event_ms if first_event_ms is not None else as_of_ms, as_of_ms)
        months = months[-policy.snapshot_months :]
    return Series(
        as_of=None if as_of_ms is None else to_datetime(as_of_ms),
        hourly=indicator_series(totals, first_event_ms, as_of_ms, HOUR_MS),
        daily=indicator_series(totals, first_event_ms, as_of_ms, DAY_MS),
        months={month: month_traffic(totals, month, as_of_ms) for month in months} if as_of_ms is not None else {},
    )
