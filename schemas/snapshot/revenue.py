"""Revenue read models: MRR now, a calendar month's movements and rates, a window's movements.

Money is in the reporting currency; a rate whose denominator is zero is None.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from schemas.snapshot.money import MoneyAmount


class MrrMovements(BaseModel):
    """MRR movements of a period: amounts (positive magnitudes) and accounts, one per movement."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    new_business_mrr: MoneyAmount
    expansion_mrr: MoneyAmount
    reactivation_mrr: MoneyAmount
    contraction_mrr: MoneyAmount
    churned_mrr: MoneyAmount
    net_new_mrr: MoneyAmount
    new_business_accounts: int
    expansion_accounts: int
    reactivation_accounts: int
    contraction_accounts: int
    churn_accounts: int
    """Churn movements; an account that churns twice in the period counts twice."""


class RevenueNow(BaseModel):
    """Current-state revenue as of an instant."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mrr: MoneyAmount
    arr: MoneyAmount
    paying_customers: int
    average_revenue_per_account: MoneyAmount | None = None
    mrr_by_plan: dict[str, MoneyAmount]


class RevenueMonth(BaseModel):
    """One calendar month (up to the as-of instant when it is the current month)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    month: str
    mrr_at_start: MoneyAmount
    mrr_at_end: MoneyAmount
    paying_customers_at_start: int
    paying_customers_at_end: int
    movements: MrrMovements
    churned_customers: int
    """Customer-churn numerator: paying at the start of the month and not at its end."""
    customer_churn_rate: float | None = None
    gross_mrr_churn_rate: float | None = None
    net_mrr_churn_rate: float | None = None
    net_revenue_retention: float | None = None
    quick_ratio: float | None = None
    average_revenue_per_account: MoneyAmount | None = None
    """At the end of the month."""
    lifetime_value: MoneyAmount | None = None
    trailing_customer_churn_rate: float | None = None
    """Mean customer churn rate of this month and the five before (months with a rate)."""
    lifetime_value_trailing_churn: MoneyAmount | None = None
    revenue_growth_rate: float | None = None


class RevenueWindow(BaseModel):
    """Movements and new customers of any span (rolling windows)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    movements: MrrMovements
    new_customers: int
    new_customers_by_channel: dict[str, int]
    new_business_mrr_by_channel: dict[str, MoneyAmount]
