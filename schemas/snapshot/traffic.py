"""Traffic figures of one window (stream/core/traffic.py)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ChannelTraffic(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sessions: int
    unique_visitors: int
    engaged_sessions: int
    engagement_rate: float | None = None
    bounce_rate: float | None = None
    average_engaged_seconds: float | None = None
    pageviews_per_session: float | None = None
    pricing_page_sessions: int
    new_leads: int
    """Contacts whose lead moment falls in the window, by their first-touch channel."""
    visit_to_lead_rate: float | None = None


class TrafficWindow(ChannelTraffic):
    by_channel: dict[str, ChannelTraffic]
    sessions_by_campaign: dict[str, int]
    """The top campaigns by sessions; the rest summed as `other`, sessions without one as `none`."""
