"""Acquisition read models: spend, cost per lead, CAC, LTV:CAC, payback and ROI of a window.

Money is in the reporting currency; a rate whose denominator is zero is None.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict


class ChannelAcquisition(BaseModel):
    """Spend and what it bought, for one channel or for all of them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    marketing_spend: Decimal
    sales_spend: Decimal
    total_spend: Decimal
    new_leads: int
    new_customers: int
    new_business_mrr: Decimal
    cost_per_lead: Decimal | None = None
    customer_acquisition_cost: Decimal | None = None
    marketing_roi: float | None = None


class CampaignAcquisition(BaseModel):
    """Spend and leads of one campaign (or of `other`, the campaigns past the top N)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    marketing_spend: Decimal
    total_spend: Decimal
    new_leads: int
    cost_per_lead: Decimal | None = None


class AcquisitionWindow(ChannelAcquisition):
    """The window's acquisition overall, with LTV-based ratios, by channel and by campaign."""

    currency: str
    lifetime_value: Decimal | None = None
    """LTV of the calendar month holding the window's end."""
    ltv_to_cac_ratio: float | None = None
    cac_payback_months: float | None = None
    by_channel: dict[str, ChannelAcquisition]
    by_campaign: dict[str, CampaignAcquisition]
