"""Acquisition read models: spend, cost per lead, CAC, LTV:CAC, payback and ROI of a window.

Money is in the reporting currency; a rate whose denominator is zero is None.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from schemas.snapshot.money import MoneyAmount


class ChannelAcquisition(BaseModel):
    """Spend and what it bought, for one channel or for all of them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    marketing_spend: MoneyAmount
    sales_spend: MoneyAmount
    total_spend: MoneyAmount
    new_leads: int
    new_customers: int
    new_business_mrr: MoneyAmount
    cost_per_lead: MoneyAmount | None = None
    customer_acquisition_cost: MoneyAmount | None = None
    marketing_roi: float | None = None


class CampaignAcquisition(BaseModel):
    """Spend and leads of one campaign (or of `other`, the campaigns past the top N)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    marketing_spend: MoneyAmount
    total_spend: MoneyAmount
    new_leads: int
    cost_per_lead: MoneyAmount | None = None


class AcquisitionWindow(ChannelAcquisition):
    """The window's acquisition overall, with LTV-based ratios, by channel and by campaign."""

    currency: str
    lifetime_value: MoneyAmount | None = None
    """LTV of the calendar month holding the window's end."""
    ltv_to_cac_ratio: float | None = None
    cac_payback_months: float | None = None
    by_channel: dict[str, ChannelAcquisition]
    by_campaign: dict[str, CampaignAcquisition]
