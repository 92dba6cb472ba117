"""Time series behind the worker's page: leading indicators by hour and day, and months of traffic.

Built from the totals with the snapshot, on the same timer, and served as
`/api/series/hourly`, `/api/series/daily` and `/api/series/months`. Every
series has a fixed upper bound on its points (docs/architecture.md, "Series
behind the page"), so a body's size follows channels, never events or history.
Columns, not rows: `times[i]` is the start of bucket i and every column's item
i belongs to it, the shape chart libraries draw directly. A rate whose
denominator is zero is null in its column (no sample), never 0 and never NaN.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

HOURLY_POINTS = 7 * 24
"""Hourly buckets: the last 7 days."""
DAILY_POINTS = 90
"""Daily buckets (UTC days): the last 90 days."""


class IndicatorColumns(BaseModel):
    """The leading indicators of one scope (all channels or one), one item per bucket."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sessions: list[int]
    engaged_sessions: list[int] = Field(description="Sessions with pageviews ≥ 2 or engaged_seconds ≥ 10.")
    new_leads: list[int] = Field(description="Contacts whose lead moment falls in the bucket, by first-touch channel.")
    visit_to_lead_rate: list[float | None] = Field(
        description="new_leads / sessions of the bucket; null without sessions."
    )


class IndicatorSeries(BaseModel):
    """Sessions, engaged sessions, new leads and visit→lead rate per hour or per UTC day, overall and by channel."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    step: Literal["hour", "day"]
    step_seconds: int
    start: AwareDatetime | None = Field(description="Start of the first bucket; null with no events.")
    end: AwareDatetime | None = Field(
        description="End of the last bucket (exclusive): the minute after the as-of instant, so it may be partial."
    )
    times: list[AwareDatetime] = Field(
        description="Start of each bucket, oldest first: at most 168 hours or 90 days, none before the first event."
    )
    overall: IndicatorColumns
    by_channel: dict[str, IndicatorColumns] = Field(description="Every channel with sessions or leads in the range.")


class ChannelMonthTraffic(BaseModel):
    """Traffic of one calendar month, for one channel or for all of them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sessions: int
    unique_visitors: int = Field(
        description=(
            "Distinct visitors (visitor_id) with a session in the month (in this channel), exact: each visitor "
            "remembers the months it visited in, as many as the snapshot lists."
        ),
    )
    engaged_sessions: int
    new_leads: int
    visit_to_lead_rate: float | None = None


class MonthTraffic(ChannelMonthTraffic):
    """One calendar month's traffic (up to the as-of instant when it is the current month)."""

    by_channel: dict[str, ChannelMonthTraffic]


class Series(BaseModel):
    """Everything `stream.core.series.build_series` computes from the totals at one as-of instant."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    as_of: AwareDatetime | None = Field(description="The instant the series describe; null with no events.")
    hourly: IndicatorSeries
    daily: IndicatorSeries
    months: dict[str, MonthTraffic] = Field(
        description="Keyed by calendar month YYYY-MM, oldest first: the snapshot's months (LEADLAG_SNAPSHOT_MONTHS)."
    )
