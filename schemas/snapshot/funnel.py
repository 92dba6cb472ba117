"""Funnel read models (stream/core/funnel.py): stage entries, conversion, drop-off, time to convert, pipeline.

Money is in the reporting currency; a rate whose denominator is zero is None.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from schemas.snapshot.money import MoneyAmount


class StageFlow(BaseModel):
    """What happened at one stage in the window, and who sits in it at the window's end."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entries: int = Field(description="Contacts that reached the stage (skipped stages included, once each).")
    exits: int = Field(description="Contacts disqualified or lost from this stage.")
    became_stale: int = Field(description="Contacts still in the stage when its staleness limit ran out.")
    drop_offs: int = Field(description="Contacts that exited or went stale, each counted once per stage.")
    drop_off_rate: float | None = Field(default=None, description="drop_offs / entries.")
    in_stage: int = Field(description="Contacts sitting in the stage at the window's end.")


class StageDuration(BaseModel):
    """A duration histogram (seconds) of one stage: time to reach it from the lead moment, or time in it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    count: int
    mean_seconds: float | None = None
    buckets: dict[str, int] = Field(
        description="Cumulative counts keyed by upper bound in seconds (`le`), ending with `+Inf`."
    )


class ChannelFunnel(BaseModel):
    """The funnel of one channel (a contact's first-touch channel) or of all channels."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stages: dict[str, StageFlow] = Field(description="Keyed by stage, subscriber to customer.")
    period_conversion: dict[str, float | None] = Field(
        description=(
            "`S_to_T` = entries into T / entries into S, same window; each consecutive pair and lead_to_customer."
        )
    )
    form_fills: int = Field(description="By the fill's own channel (its session's when it names none).")
    opportunities_won: int
    opportunities_lost: int
    win_rate: float | None = None
    time_to_stage: dict[str, StageDuration] = Field(
        description="From the lead moment to mql, sql, opportunity and customer, observed at the reach time."
    )
    time_in_stage: dict[str, StageDuration] = Field(description="Observed when a contact leaves the stage.")
    open_opportunities: int = Field(description="At the window's end.")
    pipeline_amount: MoneyAmount = Field(description="Sum of the open opportunities' deal values at the window's end.")
    weighted_pipeline: MoneyAmount = Field(description="Σ deal value × stage probability at the window's end.")
    won_amount: MoneyAmount
    average_deal_value: MoneyAmount | None = None
    average_sales_cycle_days: float | None = Field(default=None, description="Lead moment to customer, won deals.")
    sales_velocity: MoneyAmount | None = Field(
        default=None,
        description="open opportunities × average deal value × win rate / average sales cycle days, per day.",
    )


class FunnelWindow(ChannelFunnel):
    by_channel: dict[str, ChannelFunnel]
    form_fills_by_type: dict[str, int]


class CohortProgress(BaseModel):
    """How far the contacts of a lead cohort (or of one of its channels) have got so far."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: int = Field(description="Contacts that became leads in the month.")
    reached: dict[str, int] = Field(description="Of them, how many have reached mql, sql, opportunity, customer.")
    conversion: dict[str, float | None] = Field(description="reached / size, by stage: cohort conversion lead→stage.")


class LeadCohort(CohortProgress):
    """Contacts whose lead moment falls in one calendar month, and how far they have got so far."""

    cohort_month: str
    by_channel: dict[str, CohortProgress] = Field(
        default_factory=dict, description="The same per first-touch channel of the contacts."
    )
