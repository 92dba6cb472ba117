"""`--format table`: the snapshot's headline figures as terminal tables, for a person reading."""

from __future__ import annotations

from decimal import Decimal

from rich.console import Console
from rich.table import Table

from schemas.snapshot import Snapshot

ABSENT = "–"


def _pct(value: float | None) -> str:
    return ABSENT if value is None else f"{value:.1%}"


def _money(value: Decimal | None, currency: str) -> str:
    return ABSENT if value is None else f"{value:,.2f} {currency}"


def _num(value: float | Decimal | None, digits: int = 1) -> str:
    return ABSENT if value is None else f"{value:,.{digits}f}"


def print_snapshot(snapshot: Snapshot, console: Console) -> None:
    """Traffic and funnel of the last 30 days, revenue now and by month, acquisition, divergence."""
    cur = snapshot.reporting_currency
    as_of = snapshot.as_of.isoformat() if snapshot.as_of else "no events"
    console.print(f"[bold]leadlag snapshot[/] as of {as_of}  ({snapshot.input.accepted:,} events counted)")
    if "30d" not in snapshot.windows or snapshot.as_of is None:
        return
    window = snapshot.windows["30d"]

    traffic = Table(title="Traffic, last 30 days", title_justify="left")
    for column in ("channel", "sessions", "visitors", "engaged", "bounce", "leads", "visit→lead"):
        traffic.add_column(column, justify="left" if column == "channel" else "right")
    rows = [("all", window.traffic), *sorted(window.traffic.by_channel.items())]
    for name, row in rows:
        traffic.add_row(
            name,
            f"{row.sessions:,}",
            f"{row.unique_visitors:,}",
            _pct(row.engagement_rate),
            _pct(row.bounce_rate),
            f"{row.new_leads:,}",
            _pct(row.visit_to_lead_rate),
        )
    console.print(traffic)

    funnel = Table(title="Funnel, last 30 days", title_justify="left")
    for column in ("stage", "entries", "in stage", "drop-off", "conversion to next"):
        funnel.add_column(column, justify="left" if column == "stage" else "right")
    stages = list(window.funnel.stages)
    for index, stage in enumerate(stages):
        flow = window.funnel.stages[stage]
        following = stages[index + 1] if index + 1 < len(stages) else None
        conversion = window.funnel.period_conversion.get(f"{stage}_to_{following}") if following else None
        funnel.add_row(stage, f"{flow.entries:,}", f"{flow.in_stage:,}", _pct(flow.drop_off_rate), _pct(conversion))
    console.print(funnel)
    console.print(
        f"win rate {_pct(window.funnel.win_rate)} · open opportunities {window.funnel.open_opportunities:,} · "
        f"pipeline {_money(window.funnel.pipeline_amount, cur)} · "
        f"weighted {_money(window.funnel.weighted_pipeline, cur)}"
        f" · sales velocity {_money(window.funnel.sales_velocity, cur)}/day"
    )

    revenue = snapshot.revenue
    console.print(
        f"\n[bold]Revenue now[/]: MRR {_money(revenue.mrr, cur)} · ARR {_money(revenue.arr, cur)} · "
        f"paying customers {revenue.paying_customers:,} · ARPA {_money(revenue.average_revenue_per_account, cur)}"
    )
    months = Table(title="Revenue by month", title_justify="left")
    for column in ("month", "MRR end", "net new", "new", "expansion", "churned", "customer churn", "NRR", "LTV"):
        months.add_column(column, justify="left" if column == "month" else "right")
    for label, month in list(snapshot.months.items())[-6:]:
        m = month.revenue
        months.add_row(
            label,
            _num(m.mrr_at_end, 0),
            _num(m.movements.net_new_mrr, 0),
            _num(m.movements.new_business_mrr, 0),
            _num(m.movements.expansion_mrr, 0),
            _num(m.movements.churned_mrr, 0),
            _pct(m.customer_churn_rate),
            _pct(m.net_revenue_retention),
            _num(m.lifetime_value, 0),
        )
    console.print(months)

    acquisition = Table(title="Acquisition, last 30 days", title_justify="left")
    for column in ("channel", "spend", "leads", "CPL", "customers", "CAC", "ROI"):
        acquisition.add_column(column, justify="left" if column == "channel" else "right")
    acq_rows = [("all", window.acquisition), *sorted(window.acquisition.by_channel.items())]
    for name, acq in acq_rows:
        acquisition.add_row(
            name,
            _num(acq.total_spend, 0),
            f"{acq.new_leads:,}",
            _num(acq.cost_per_lead, 2),
            f"{acq.new_customers:,}",
            _num(acq.customer_acquisition_cost, 0),
            _pct(acq.marketing_roi),
        )
    console.print(acquisition)
    console.print(
        f"LTV:CAC {_num(window.acquisition.ltv_to_cac_ratio)} · CAC payback "
        f"{_num(window.acquisition.cac_payback_months)} months"
    )

    console.print("\n[bold]Traffic up, conversion down[/]")
    for verdict in snapshot.divergence:
        scope = "overall" if verdict.channel is None else verdict.channel
        mark = "[bold red]FIRING[/]" if verdict.firing else "[green]ok[/]"
        console.print(f"  {mark} {scope}: {verdict.reason}", highlight=False)
