"""Acquisition (lagging): what marketing and sales spend buys — leads, customers, new MRR.

Spend facts are append-only (a spend event never changes after the fact), so
a fold deduplicates by event_id and adds the amount. The entity is one
channel's spend of one UTC day (key `channel/YYYY-MM-DD`, see
`stream.core.links.entity_of`): its state is bounded by that day, yet it still
holds everything it ever contributed (per minute, category and campaign), so
totals rebuilt from states equal the totals folded event by event. The read
side joins spend with the funnel's lead entries and the revenue module's new
customers and LTV, all by channel, where a lead's or a customer's channel is
its first-touch channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, NamedTuple

from schemas.channels import NO_CAMPAIGN
from schemas.events import Spend, SpendCategory, Stage
from schemas.snapshot.acquisition import AcquisitionWindow, CampaignAcquisition, ChannelAcquisition
from stream.core.links import Step
from stream.core.policy import Policy
from stream.core.rates import ratio
from stream.core.revenue import (
    MRR_MOVEMENT,
    NEW_CUSTOMERS,
    MovementKind,
    revenue_month,
    revenue_now,
)
from stream.core.totals import Delta, Readable
from stream.core.windows import Span, floor_minute, month_label

SPEND = "spend"
"""Money, labels (channel, category, campaign or "none"); the amount at the spend's minute."""
STAGE_ENTRIES = "stage_entries"
"""Written by the funnel, labels (stage, channel, campaign); new leads are its `lead` entries."""
OTHER_CAMPAIGNS = "other"

SpendKey = tuple[int, str, str | None]
"""(minute start in ms, category, campaign)."""


class SpendRecord(NamedTuple):
    """The spend of one channel-day at one minute, in one category and campaign (reporting currency)."""

    minute_ms: int
    category: str
    campaign: str | None
    amount: Decimal


class SpendState:
    """One channel's spend of one UTC day: the ids of its events, and their amounts per minute, category and campaign.

    Bound: one channel-day — at most one amount per minute, category and campaign
    of that day, and the ids of that day's spend events. A day is shorter than
    the dedupe horizon, so a channel-day remembers all its ids and a duplicate
    spend event is never counted twice, however late it comes.
    """

    __slots__ = ("event_ids", "spends")

    def __init__(self) -> None:
        self.event_ids: set[str] = set()
        self.spends: dict[SpendKey, Decimal] = {}
        """(minute_ms, category, campaign) -> amount spent."""

    def to_wire(self) -> list[Any]:
        """[event ids (sorted), [SpendRecord, ...]]: JSON-ready, Decimals left to the codec."""
        return [sorted(self.event_ids), [SpendRecord(*key, amount) for key, amount in self.spends.items()]]

    @classmethod
    def from_wire(cls, wire: Sequence[Any]) -> SpendState:
        event_ids, records = wire
        state = cls()
        state.event_ids = set(event_ids)
        state.spends = {
            (minute_ms, category, campaign): Decimal(amount) for minute_ms, category, campaign, amount in records
        }
        return state


def spend_channel(key: str) -> str:
    """The channel of a spend entity's key (`channel/YYYY-MM-DD`; a bare channel is read as itself)."""
    return key.partition("/")[0]


def add_spend_facts(delta: Delta, channel: str, key: SpendKey, amount: Decimal) -> None:
    minute_ms, category, campaign = key
    delta.add_money(SPEND, (channel, category, campaign or NO_CAMPAIGN), minute_ms, amount)


def spend_delta(key: str, state: SpendState) -> Delta:
    """Everything a channel-day's spend contributes (for rebuilding totals from stored states)."""
    delta = Delta()
    channel = spend_channel(key)
    for spend_key, amount in state.spends.items():
        add_spend_facts(delta, channel, spend_key, amount)
    return delta


def apply_spend(state: SpendState, event: Spend, policy: Policy) -> Step:
    """Add a spend event's amount (in the reporting currency) at its minute, once per event_id."""
    event_id = event.event_id
    if event_id in state.event_ids:
        return Step(duplicate=True)
    amount = policy.to_reporting(event.amount, event.currency)  # before any change
    key = (floor_minute(event.occurred_ms), event.category.value, event.campaign)
    total = state.spends.get(key)
    state.spends[key] = amount if total is None else total + amount
    state.event_ids.add(event_id)
    delta = Delta()
    add_spend_facts(delta, event.channel.value, key, amount)
    return Step(delta)


# -- read side -------------------------------------------------------------------------


def cost_per_lead(marketing_spend: Decimal, new_leads: int) -> Decimal | None:
    """CPL = marketing spend / new leads (a contact's lead moment, in its first-touch channel)."""
    return marketing_spend / new_leads if new_leads else None


def customer_acquisition_cost(total_spend: Decimal, new_customers: int) -> Decimal | None:
    """CAC = (marketing + sales spend) / new paying customers (accounts with a new-business movement)."""
    return total_spend / new_customers if new_customers else None


def marketing_roi(new_business_mrr: Decimal, marketing_spend: Decimal) -> float | None:
    """Marketing ROI = (new MRR × 12 − marketing spend) / marketing spend, per channel and period."""
    return ratio(new_business_mrr * 12 - marketing_spend, marketing_spend)


def ltv_to_cac_ratio(lifetime_value: Decimal | None, cac: Decimal | None) -> float | None:
    """LTV:CAC = lifetime value / customer acquisition cost."""
    if lifetime_value is None or cac is None:
        return None
    return ratio(lifetime_value, cac)


def cac_payback_months(cac: Decimal | None, arpa: Decimal | None) -> float | None:
    """CAC payback months = CAC / ARPA: months of an average account's MRR that repay its acquisition."""
    if cac is None or arpa is None:
        return None
    return ratio(cac, arpa)


def _channel_acquisition(
    marketing: Decimal, sales: Decimal, leads: int, customers: int, new_mrr: Decimal
) -> ChannelAcquisition:
    return ChannelAcquisition(
        marketing_spend=marketing,
        sales_spend=sales,
        total_spend=marketing + sales,
        new_leads=leads,
        new_customers=customers,
        new_business_mrr=new_mrr,
        cost_per_lead=cost_per_lead(marketing, leads),
        customer_acquisition_cost=customer_acquisition_cost(marketing + sales, customers),
        marketing_roi=marketing_roi(new_mrr, marketing),
    )


def campaign_acquisition(totals: Readable, span: Span, top_n: int) -> dict[str, CampaignAcquisition]:
    """Spend and leads by campaign: the `top_n` campaigns by spend, the rest summed as `other`.

    Campaigns are ranked by total spend, then by leads (campaigns with leads and no
    spend still rank), then by name, so the cut is the same on every run.
    """
    marketing = totals.money_total_by(SPEND, span, 2, {1: SpendCategory.MARKETING.value})
    spend = totals.money_total_by(SPEND, span, 2)
    leads = {
        name: round(value) for name, value in totals.total_by(STAGE_ENTRIES, span, 2, {0: Stage.LEAD.value}).items()
    }
    names = sorted({*spend, *leads}, key=lambda name: (-spend.get(name, Decimal(0)), -leads.get(name, 0), name))
    grouped: dict[str, tuple[Decimal, Decimal, int]] = {}
    for rank, name in enumerate(names):
        key = name if rank < top_n else OTHER_CAMPAIGNS
        before = grouped.get(key, (Decimal(0), Decimal(0), 0))
        grouped[key] = (
            before[0] + marketing.get(name, Decimal(0)),
            before[1] + spend.get(name, Decimal(0)),
            before[2] + leads.get(name, 0),
        )
    return {
        name: CampaignAcquisition(
            marketing_spend=marketing_spend,
            total_spend=total_spend,
            new_leads=new_leads,
            cost_per_lead=cost_per_lead(marketing_spend, new_leads),
        )
        for name, (marketing_spend, total_spend, new_leads) in grouped.items()
    }


def acquisition_window(totals: Readable, span: Span, policy: Policy) -> AcquisitionWindow:
    """Spend, CPL, CAC, LTV:CAC, CAC payback and marketing ROI of a window, overall and by channel.

    LTV is that of the calendar month holding the window's end, ARPA that at the
    window's end; both describe the customer base the spend is judged against.
    """
    marketing = totals.money_total_by(SPEND, span, 0, {1: SpendCategory.MARKETING.value})
    sales = totals.money_total_by(SPEND, span, 0, {1: SpendCategory.SALES.value})
    leads = totals.total_by(STAGE_ENTRIES, span, 1, {0: Stage.LEAD.value})
    customers = totals.total_by(NEW_CUSTOMERS, span, 0)
    new_mrr = totals.money_total_by(MRR_MOVEMENT, span, 1, {0: MovementKind.NEW.value})
    zero = Decimal(0)

    def by(channel: str | None) -> ChannelAcquisition:
        if channel is None:
            return _channel_acquisition(
                sum(marketing.values(), zero),
                sum(sales.values(), zero),
                round(sum(leads.values())),
                round(sum(customers.values())),
                sum(new_mrr.values(), zero),
            )
        return _channel_acquisition(
            marketing.get(channel, zero),
            sales.get(channel, zero),
            round(leads.get(channel, 0)),
            round(customers.get(channel, 0)),
            new_mrr.get(channel, zero),
        )

    overall = by(None)
    as_of_ms = span.end_ms - 1
    ltv = revenue_month(totals, month_label(as_of_ms), as_of_ms).lifetime_value
    arpa = revenue_now(totals, as_of_ms).average_revenue_per_account
    cac = overall.customer_acquisition_cost
    channels = sorted({*marketing, *sales, *leads, *customers, *new_mrr})
    return AcquisitionWindow(
        **overall.model_dump(),
        currency=policy.reporting_currency,
        lifetime_value=ltv,
        ltv_to_cac_ratio=ltv_to_cac_ratio(ltv, cac),
        cac_payback_months=cac_payback_months(cac, arpa),
        by_channel={channel: by(channel) for channel in channels},
        by_campaign=campaign_acquisition(totals, span, policy.campaign_top_n),
    )
