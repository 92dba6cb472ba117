"""The snapshot: every metric leadlag computes at one as-of instant.

`leadlag replay` prints it; the worker publishes its parts on the compacted
`leadlag.snapshots` topic and serves them over HTTP. Downstream consumers
rely on this shape (`schemas/json/snapshot.schema.json`). A rate whose
denominator is zero is absent (null), never 0 and never NaN.
"""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.snapshot.acquisition import AcquisitionWindow
from schemas.snapshot.attribution import AttributionWindow
from schemas.snapshot.divergence import DivergenceVerdict
from schemas.snapshot.funnel import FunnelWindow, LeadCohort
from schemas.snapshot.revenue import RevenueMonth, RevenueNow, RevenueWindow
from schemas.snapshot.traffic import TrafficWindow

SNAPSHOT_SCHEMA_VERSION = 1


class InputCounts(BaseModel):
    """What the run read, and what it did not count."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    events: int = Field(description="Events read (valid or not), envelopes counted event by event.")
    accepted: int
    duplicates: int = Field(description="Events whose event_id was already counted.")
    invalid: int = Field(description="Events that failed validation (dead letter in the worker).")
    rejected: int = Field(description="Valid events that could not be counted: late, or an unknown currency.")
    after_as_of: int = Field(default=0, description="Events after the as-of instant, left out (replay --as-of).")


class WindowMetrics(BaseModel):
    """All windowed figures of one window (rolling 1h/24h/7d/30d, calendar day/month)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: AwareDatetime
    end: AwareDatetime
    traffic: TrafficWindow
    funnel: FunnelWindow
    attribution: AttributionWindow
    revenue: RevenueWindow
    acquisition: AcquisitionWindow


class MonthMetrics(BaseModel):
    """One calendar month (UTC): revenue movements and churn, funnel and acquisition."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    revenue: RevenueMonth
    funnel: FunnelWindow
    acquisition: AcquisitionWindow


class Snapshot(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SNAPSHOT_SCHEMA_VERSION
    as_of: AwareDatetime | None = Field(description="The instant the figures describe; null with no events.")
    reporting_currency: str
    input: InputCounts
    windows: dict[str, WindowMetrics] = Field(description="Keyed by window: 1h, 24h, 7d, 30d, day, month.")
    months: dict[str, MonthMetrics] = Field(description="Keyed by calendar month YYYY-MM, oldest first.")
    revenue: RevenueNow
    lead_cohorts: dict[str, LeadCohort] = Field(description="Keyed by the month of the contacts' lead moment.")
    divergence: list[DivergenceVerdict] = Field(description="Traffic up while conversion down: overall, per channel.")
