"""The monthly CSV: one row per month, the figures a spreadsheet needs, checked against hand-computed numbers."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from schemas.events import EVENT_ADAPTER
from schemas.snapshot import InputCounts
from stream.core.ledger import Ledger
from stream.core.policy import Policy
from stream.core.series import build_series
from stream.core.snapshot import build_snapshot
from stream.csvexport import cell, months_csv
from tests.core.test_series import AS_OF, EVENTS, at


def subscription(n: int, hours: float, amount: str) -> dict[str, Any]:
    return {
        "type": "subscription",
        "event_id": f"sub-{n}",
        "occurred_at": at(hours),
        "account_id": "a1",
        "subscription_id": "s1",
        "status": "active",
        "amount": amount,
        "currency": "USD",
        "interval": "month",
    }


def spend(n: int, hours: float, amount: str) -> dict[str, Any]:
    return {
        "type": "spend",
        "event_id": f"sp-{n}",
        "occurred_at": at(hours),
        "channel": "paid",
        "category": "marketing",
        "amount": amount,
        "currency": "USD",
    }


# November 30: the traffic of tests/core/test_series.py, a subscription of 100.00 a month, 50.00 of paid spend.
# December 1: an upgrade to 150.00 (expansion 50.00), 30.00 of paid spend.
EVENTS_WITH_REVENUE = [
    *EVENTS,
    subscription(1, 1, "100.00"),
    spend(1, 2, "50.00"),
    subscription(2, 25, "150.00"),
    spend(2, 25.1, "30.00"),
]


def rows() -> list[dict[str, str]]:
    policy = Policy()
    ledger = Ledger(policy)
    ledger.fold_all(EVENT_ADAPTER.validate_python(raw) for raw in EVENTS_WITH_REVENUE)
    totals = ledger.totals()
    counts = InputCounts(events=0, accepted=0, duplicates=0, invalid=0, rejected=0)
    snapshot = build_snapshot(totals, AS_OF, ledger.earliest_ms, policy, counts)
    text = months_csv(snapshot, build_series(totals, AS_OF, ledger.earliest_ms, policy))
    assert text.endswith("\r\n")
    assert text.count("\r\n") == 3
    return list(csv.DictReader(io.StringIO(text)))


def test_one_row_per_month_with_traffic_overall_and_by_channel() -> None:
    november, december = rows()
    assert (november["month"], december["month"]) == ("2026-11", "2026-12")
    assert november["currency"] == "USD"
    assert (november["sessions"], november["engaged_sessions"], november["new_leads"]) == ("4", "2", "1")
    assert november["visit_to_lead_rate"] == "0.25"
    assert november["unique_visitors"] == "3"  # v1, v2 and v3 (twice)
    assert (december["sessions"], december["unique_visitors"], december["visit_to_lead_rate"]) == ("2", "2", "0.5")
    assert (november["sessions_paid"], november["new_leads_paid"], november["visit_to_lead_rate_paid"]) == (
        "2",
        "1",
        "0.5",
    )
    assert (december["sessions_organic"], december["visit_to_lead_rate_organic"]) == ("0", "")
    assert november["lead_entries"] == "1"
    assert november["customer_entries"] == "0"


def test_revenue_and_acquisition_columns_in_cents() -> None:
    november, december = rows()
    assert (november["mrr_at_start"], november["mrr_at_end"], november["new_business_mrr"]) == (
        "0.00",
        "100.00",
        "100.00",
    )
    assert november["net_new_mrr"] == "100.00"
    assert november["customer_churn_rate"] == ""
    assert (december["mrr_at_start"], december["mrr_at_end"], december["expansion_mrr"]) == (
        "100.00",
        "150.00",
        "50.00",
    )
    assert (december["paying_customers_at_start"], december["paying_customers_at_end"]) == ("1", "1")
    assert december["customer_churn_rate"] == "0.0"
    assert december["gross_mrr_churn_rate"] == "0.0"
    assert december["net_mrr_churn_rate"] == "-0.5"
    assert december["net_revenue_retention"] == "1.5"
    assert december["quick_ratio"] == ""  # nothing lost: no denominator
    assert december["average_revenue_per_account"] == "150.00"
    assert (november["marketing_spend"], december["marketing_spend"]) == ("50.00", "30.00")
    assert november["cost_per_lead"] == "50.00"
    assert december["cost_per_lead"] == "30.00"


def test_cells() -> None:
    from decimal import Decimal

    assert [cell(None), cell(3), cell(0.125), cell(Decimal("2.345")), cell(Decimal("2.355")), cell("a,b")] == [
        "",
        "3",
        "0.125",
        "2.34",
        "2.36",
        "a,b",
    ]


def test_replay_prints_the_same_csv(tmp_path: Path) -> None:
    events = tmp_path / "events.ndjson"
    events.write_bytes(b"".join(orjson.dumps(raw) + b"\n" for raw in EVENTS_WITH_REVENUE))
    result = subprocess.run(
        [sys.executable, "-m", "stream.cli", "replay", str(events), "--format", "csv", "--quiet"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert list(csv.DictReader(io.StringIO(result.stdout.decode()))) == rows()
