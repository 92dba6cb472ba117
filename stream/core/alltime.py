"""All-time flows, for the counters `rate()` and `increase()` need: the sum of every calendar month.

The snapshot's months partition event time from the first event onwards, so their sum is the
whole history; summing them here keeps /metrics a plain reading of figures the core computed.
Overall figures are keyed by channel `None`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from schemas.snapshot import MonthMetrics
from schemas.snapshot.acquisition import ChannelAcquisition
from schemas.snapshot.funnel import ChannelFunnel

MOVEMENT_KINDS: tuple[tuple[str, str, str], ...] = (
    ("new_business", "new_business_mrr", "new_business_accounts"),
    ("expansion", "expansion_mrr", "expansion_accounts"),
    ("reactivation", "reactivation_mrr", "reactivation_accounts"),
    ("contraction", "contraction_mrr", "contraction_accounts"),
    ("churn", "churned_mrr", "churn_accounts"),
)
"""Movement kind label -> (amount field, accounts field) of `MrrMovements`."""

Channel = str | None


@dataclass(slots=True)
class AllTime:
    """Flows summed over every month; keys are channels (None: all channels) unless named otherwise."""

    stage_entries: Counter[tuple[Channel, str]] = field(default_factory=Counter)
    """(channel, stage) -> contacts that entered the stage."""
    new_leads: Counter[Channel] = field(default_factory=Counter)
    new_customers: Counter[Channel] = field(default_factory=Counter)
    opportunities_won: Counter[Channel] = field(default_factory=Counter)
    opportunities_lost: Counter[Channel] = field(default_factory=Counter)
    won_amount: dict[Channel, Decimal] = field(default_factory=dict)
    spend: dict[tuple[Channel, str], Decimal] = field(default_factory=dict)
    """(channel, marketing | sales) -> amount."""
    form_fills: Counter[str] = field(default_factory=Counter)
    """By form type."""
    movement_amount: dict[str, Decimal] = field(default_factory=lambda: {k: Decimal(0) for k, _, _ in MOVEMENT_KINDS})
    movement_accounts: Counter[str] = field(default_factory=lambda: Counter({k: 0 for k, _, _ in MOVEMENT_KINDS}))


def all_time(months: Iterable[MonthMetrics]) -> AllTime | None:
    """The sum of `months` (all of the snapshot's); None when there are none yet."""
    total = AllTime()
    seen = False
    for month in months:
        seen = True
        _add_funnel(total, None, month.funnel)
        for channel, funnel in month.funnel.by_channel.items():
            _add_funnel(total, channel, funnel)
        total.form_fills.update(month.funnel.form_fills_by_type)
        _add_acquisition(total, None, month.acquisition)
        for channel, acquisition in month.acquisition.by_channel.items():
            _add_acquisition(total, channel, acquisition)
        for kind, amount_field, accounts_field in MOVEMENT_KINDS:
            total.movement_amount[kind] += getattr(month.revenue.movements, amount_field)
            total.movement_accounts[kind] += getattr(month.revenue.movements, accounts_field)
    return total if seen else None


def _add_funnel(total: AllTime, channel: Channel, funnel: ChannelFunnel) -> None:
    for stage, flow in funnel.stages.items():
        total.stage_entries[channel, stage] += flow.entries
    total.opportunities_won[channel] += funnel.opportunities_won
    total.opportunities_lost[channel] += funnel.opportunities_lost
    total.won_amount[channel] = total.won_amount.get(channel, Decimal(0)) + funnel.won_amount


def _add_acquisition(total: AllTime, channel: Channel, acquisition: ChannelAcquisition) -> None:
    total.new_leads[channel] += acquisition.new_leads
    total.new_customers[channel] += acquisition.new_customers
    for category, amount in (("marketing", acquisition.marketing_spend), ("sales", acquisition.sales_spend)):
        total.spend[channel, category] = total.spend.get((channel, category), Decimal(0)) + amount
