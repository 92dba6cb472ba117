"""The monthly figures as CSV, the spreadsheet people paste into: `/api/months.csv` and `leadlag replay --format csv`.

One row per calendar month, oldest first (the snapshot's months), one column
per figure: traffic (overall, then each channel's sessions, leads and
visit→lead rate), the funnel's stage entries, revenue and acquisition. Money is
in the reporting currency with two decimals, rounded like the JSON; rates are
plain decimals (0.25 is 25 %); an absent rate (zero denominator) is an empty
cell, never 0. Pure: a string from the snapshot and its series.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from decimal import Decimal

from schemas.events import FUNNEL_STAGES
from schemas.snapshot import MonthMetrics, Snapshot
from schemas.snapshot.money import to_cents
from schemas.snapshot.series import ChannelMonthTraffic, MonthTraffic, Series

Cell = int | float | Decimal | str | None
Column = tuple[str, Callable[[MonthTraffic, MonthMetrics], Cell]]

TRAFFIC_COLUMNS: tuple[Column, ...] = (
    ("sessions", lambda t, m: t.sessions),
    ("unique_visitors", lambda t, m: t.unique_visitors),
    ("engaged_sessions", lambda t, m: t.engaged_sessions),
    ("new_leads", lambda t, m: t.new_leads),
    ("visit_to_lead_rate", lambda t, m: t.visit_to_lead_rate),
)
REVENUE_COLUMNS: tuple[Column, ...] = (
    ("mrr_at_start", lambda t, m: m.revenue.mrr_at_start),
    ("mrr_at_end", lambda t, m: m.revenue.mrr_at_end),
    ("new_business_mrr", lambda t, m: m.revenue.movements.new_business_mrr),
    ("expansion_mrr", lambda t, m: m.revenue.movements.expansion_mrr),
    ("reactivation_mrr", lambda t, m: m.revenue.movements.reactivation_mrr),
    ("contraction_mrr", lambda t, m: m.revenue.movements.contraction_mrr),
    ("churned_mrr", lambda t, m: m.revenue.movements.churned_mrr),
    ("net_new_mrr", lambda t, m: m.revenue.movements.net_new_mrr),
    ("paying_customers_at_start", lambda t, m: m.revenue.paying_customers_at_start),
    ("paying_customers_at_end", lambda t, m: m.revenue.paying_customers_at_end),
    ("churned_customers", lambda t, m: m.revenue.churned_customers),
    ("customer_churn_rate", lambda t, m: m.revenue.customer_churn_rate),
    ("gross_mrr_churn_rate", lambda t, m: m.revenue.gross_mrr_churn_rate),
    ("net_mrr_churn_rate", lambda t, m: m.revenue.net_mrr_churn_rate),
    ("net_revenue_retention", lambda t, m: m.revenue.net_revenue_retention),
    ("quick_ratio", lambda t, m: m.revenue.quick_ratio),
    ("average_revenue_per_account", lambda t, m: m.revenue.average_revenue_per_account),
    ("lifetime_value", lambda t, m: m.revenue.lifetime_value),
    ("revenue_growth_rate", lambda t, m: m.revenue.revenue_growth_rate),
)
ACQUISITION_COLUMNS: tuple[Column, ...] = (
    ("marketing_spend", lambda t, m: m.acquisition.marketing_spend),
    ("sales_spend", lambda t, m: m.acquisition.sales_spend),
    ("new_customers", lambda t, m: m.acquisition.new_customers),
    ("cost_per_lead", lambda t, m: m.acquisition.cost_per_lead),
    ("customer_acquisition_cost", lambda t, m: m.acquisition.customer_acquisition_cost),
)


def _channel_columns(channel: str) -> tuple[Column, ...]:
    def of(t: MonthTraffic) -> ChannelMonthTraffic | None:
        return t.by_channel.get(channel)

    return (
        (f"sessions_{channel}", lambda t, m: c.sessions if (c := of(t)) else 0),
        (f"new_leads_{channel}", lambda t, m: c.new_leads if (c := of(t)) else 0),
        (f"visit_to_lead_rate_{channel}", lambda t, m: c.visit_to_lead_rate if (c := of(t)) else None),
    )


def _stage_column(stage: str) -> Column:
    return (f"{stage}_entries", lambda t, m: flow.entries if (flow := m.funnel.stages.get(stage)) else 0)


def cell(value: Cell) -> str:
    """A CSV cell: empty for an absent value, money to the cent, counts and rates as plain numbers."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return f"{to_cents(value):.2f}"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def months_csv(snapshot: Snapshot, series: Series) -> str:
    """The months both the snapshot and its series hold, one row each, with a header row (RFC 4180, CRLF)."""
    months = [month for month in series.months if month in snapshot.months]
    channels = sorted({channel for month in months for channel in series.months[month].by_channel})
    columns: list[Column] = [
        *TRAFFIC_COLUMNS,
        *(column for channel in channels for column in _channel_columns(channel)),
        *(_stage_column(stage.value) for stage in FUNNEL_STAGES),
        *REVENUE_COLUMNS,
        *ACQUISITION_COLUMNS,
    ]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["month", "currency", *(name for name, _ in columns)])
    for month in months:
        traffic, metrics = series.months[month], snapshot.months[month]
        writer.writerow([month, snapshot.reporting_currency, *(cell(value(traffic, metrics)) for _, value in columns)])
    return out.getvalue()
