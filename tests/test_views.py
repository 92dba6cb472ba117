"""The JSON views: one pure function from a path to a status and a body, with the same numbers as `/metrics`."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Any

import orjson
import pytest
from prometheus_client.samples import Sample

from schemas.events import EVENT_ADAPTER
from schemas.snapshot import InputCounts, Snapshot
from stream.core.policy import Policy
from stream.metrics import RuntimeStats
from stream.simulation import generate_count
from stream.views import ROUTES, view
from tests.test_metrics import RUNTIME, Scrape, small_company_snapshot, snapshot_of

WINDOWS = ["1h", "24h", "7d", "30d", "day", "month"]


def body(path: str, snapshot: Snapshot | None, runtime: RuntimeStats = RUNTIME, status: int = 200) -> Any:
    code, raw = view(path, snapshot, runtime)
    assert code == status, raw
    return orjson.loads(raw)


@pytest.fixture(scope="module")
def small() -> Snapshot:
    return small_company_snapshot()


def test_the_snapshot_view_is_the_snapshot_as_replay_prints_it_with_absent_rates_left_out(small: Snapshot) -> None:
    snapshot = body("/api/snapshot", small)
    assert snapshot == small.model_dump(mode="json", exclude_none=True)
    assert snapshot["windows"]["1h"]["traffic"]["visit_to_lead_rate"] == pytest.approx(0.1)
    assert "win_rate" not in snapshot["windows"]["1h"]["funnel"]  # nothing closed: no rate, not 0


def test_a_window_view_holds_the_window_with_its_as_of_and_currency(small: Snapshot) -> None:
    window = body("/api/windows/1h", small)
    assert window["window"] == "1h"
    assert window["as_of"] == "2026-11-23T09:40:00Z"
    assert window["reporting_currency"] == "USD"
    assert window["start"] == "2026-11-23T08:41:00Z"
    assert window["traffic"]["sessions"] == 10
    assert window["traffic"]["by_channel"]["organic"]["engagement_rate"] == pytest.approx(0.4)
    assert window["acquisition"]["cost_per_lead"] == 50.0
    assert "cost_per_lead" not in window["acquisition"]["by_channel"]["paid"]


def test_an_unknown_window_answers_404_listing_the_valid_windows(small: Snapshot) -> None:
    answer = body("/api/windows/2h", small, status=404)
    assert answer == {"error": "unknown window '2h'", "windows": WINDOWS}
    assert body("/api/windows", small)["windows"] == WINDOWS


def test_months_are_listed_and_an_unknown_month_answers_404_with_the_valid_months(small: Snapshot) -> None:
    months = body("/api/months", small)["months"]
    assert list(months) == ["2026-11"]
    assert months["2026-11"]["revenue"]["movements"]["new_business_mrr"] == 100.0
    november = body("/api/months/2026-11", small)
    assert november["month"] == "2026-11"
    assert november["revenue"]["mrr_at_end"] == 100.0
    assert "customer_churn_rate" not in november["revenue"]  # nobody paying at the start
    answer = body("/api/months/2026-10", small, status=404)
    assert answer == {"error": "unknown month '2026-10' (write YYYY-MM)", "months": ["2026-11"]}


def test_revenue_cohorts_and_divergence_views(small: Snapshot) -> None:
    revenue = body("/api/revenue", small)
    assert revenue["now"] == {
        "mrr": 100.0,
        "arr": 1200.0,
        "paying_customers": 1,
        "average_revenue_per_account": 100.0,
        "mrr_by_plan": {"growth": 100.0},
    }
    assert revenue["months"]["2026-11"]["mrr_at_end"] == 100.0
    cohorts = body("/api/cohorts", small)["cohorts"]
    assert cohorts["2026-11"]["size"] == 1
    assert cohorts["2026-11"]["reached"]["mql"] == 1
    divergence = body("/api/divergence", small)
    assert divergence["firing"] == []
    overall = divergence["verdicts"][0]
    assert overall["scope"] == "overall"
    assert (overall["sessions_now"], overall["sessions_baseline"], overall["leads_now"]) == (10, 0, 1)
    assert "sessions_change" not in overall  # no baseline sessions


def test_status_has_the_input_counts_a_benchmark_polls_and_the_runtime_statistics(small: Snapshot) -> None:
    status = body("/api/status", small)
    assert status["ready"] is True
    assert status["as_of"] == "2026-11-23T09:40:00Z"
    assert status["input"] == {
        "events": 17,
        "accepted": 14,
        "duplicates": 1,
        "invalid": 2,
        "rejected": 0,
        "after_as_of": 0,
    }
    assert status["runtime"] == {
        "deadletters": {"late": 1, "not_json": 2},
        "messages_in": {"crm.stage_changes": 2, "site.visits": 3},
        "events_in": {"crm.stage_changes": 2, "site.visits": 11},
        "batches_folded": 4,
        "consumer_lag": {"site.visits": {"0": 7, "1": 0}},
        "rebalances": 1,
        "recovering": False,
        "partitions_assigned": 4,
        "partitions": [],
        "voice": False,
        "snapshot_seconds": 0.25,
        "snapshot_failures": 0,
        "publish_failures": 0,
        "started_at": "2026-11-23T08:00:00Z",
    }
    assert status["not_ready"] == []


def test_before_the_first_snapshot_status_says_not_ready_and_the_data_views_answer_503() -> None:
    status = body("/api/status", None, RuntimeStats(recovering=True), status=503)
    assert status["ready"] is False
    assert [m["condition"] for m in status["not_ready"]] == ["recovery"]
    assert status["input"] is None
    assert status["runtime"]["recovering"] is True
    answer = body("/api/windows/1h", None, status=503)
    assert "starting" in answer["error"]


def test_the_alerts_view_lists_every_verdict_and_the_firing_keys_as_on_the_alert_topic(small: Snapshot) -> None:
    alerts = body("/api/alerts", small)
    assert alerts["firing"] == ["DeadLettersArriving:reason=not_json"]  # RUNTIME: two not_json dead letters
    assert [v["key"] for v in alerts["checks"]] == [v.key for v in RUNTIME.alerts]
    assert len(alerts["divergence"]) == len(small.divergence)
    # the worker's own alerts are served while it starts, before any snapshot
    assert body("/api/alerts", None)["firing"] == ["DeadLettersArriving:reason=not_json"]


def test_status_from_the_live_counters_never_computes_a_snapshot() -> None:
    """Probes and `leadlag bench` poll /api/status several times a second; a snapshot costs far more."""

    def no_snapshot() -> Snapshot | None:
        raise AssertionError("/api/status computed the snapshot")

    counts = InputCounts(events=12, accepted=9, duplicates=1, invalid=1, rejected=1)
    runtime = RuntimeStats(input=counts, as_of=datetime(2026, 3, 2, 10, 0, tzinfo=UTC), reporting_currency="EUR")
    status = body("/api/status", no_snapshot, runtime)
    assert status["ready"] is True
    assert status["input"] == counts.model_dump()
    assert (status["as_of"], status["reporting_currency"]) == ("2026-03-02T10:00:00Z", "EUR")
    # the data views still compute it, once asked
    assert body("/api/windows/1h", lambda: None, runtime, status=503)


def test_an_unknown_route_answers_404_listing_every_route(small: Snapshot) -> None:
    for path in ("/api/nope", "/api/windows/1h/traffic", "/metrics/extra", "/api/revenue/now"):
        answer = body(path, small, status=404)
        assert answer["routes"] == list(ROUTES)
        assert path in answer["error"]
    assert body("/api", small) == {"routes": list(ROUTES)}


def test_a_trailing_slash_or_a_query_string_does_not_change_the_view(small: Snapshot) -> None:
    assert view("/api/windows/24h/?pretty=1", small, RUNTIME) == view("/api/windows/24h", small, RUNTIME)


# -- the same numbers as /metrics ----------------------------------------------------------------------------

TRAFFIC = {
    "leadlag_sessions": "sessions",
    "leadlag_unique_visitors": "unique_visitors",
    "leadlag_engaged_sessions": "engaged_sessions",
    "leadlag_engagement_ratio": "engagement_rate",
    "leadlag_bounce_ratio": "bounce_rate",
    "leadlag_average_engaged_seconds": "average_engaged_seconds",
    "leadlag_pageviews_per_session": "pageviews_per_session",
    "leadlag_new_leads": "new_leads",
    "leadlag_visit_to_lead_ratio": "visit_to_lead_rate",
}
FUNNEL = {
    "leadlag_form_fills": "form_fills",
    "leadlag_opportunities_won": "opportunities_won",
    "leadlag_win_ratio": "win_rate",
    "leadlag_open_opportunities": "open_opportunities",
    "leadlag_pipeline_amount": "pipeline_amount",
    "leadlag_weighted_pipeline_amount": "weighted_pipeline",
    "leadlag_average_deal_amount": "average_deal_value",
    "leadlag_sales_velocity_per_day": "sales_velocity",
}
STAGE = {
    "leadlag_stage_entries": "entries",
    "leadlag_stage_drop_off_ratio": "drop_off_rate",
    "leadlag_contacts_in_stage": "in_stage",
}
ACQUISITION = {
    "leadlag_cost_per_lead": "cost_per_lead",
    "leadlag_customer_acquisition_cost": "customer_acquisition_cost",
    "leadlag_marketing_roi_ratio": "marketing_roi",
    "leadlag_new_business_mrr": "new_business_mrr",
}
REVENUE_NOW = {
    "leadlag_mrr": "mrr",
    "leadlag_arr": "arr",
    "leadlag_paying_customers": "paying_customers",
    "leadlag_average_revenue_per_account": "average_revenue_per_account",
}
MONTH = {
    "leadlag_month_end_mrr": "mrr_at_end",
    "leadlag_month_customer_churn_ratio": "customer_churn_rate",
    "leadlag_month_net_revenue_retention_ratio": "net_revenue_retention",
    "leadlag_month_quick_ratio": "quick_ratio",
    "leadlag_month_lifetime_value": "lifetime_value",
    "leadlag_month_revenue_growth_ratio": "revenue_growth_rate",
}


@pytest.fixture(scope="module")
def simulated() -> Snapshot:
    policy = Policy(fx_rates={"EUR": Decimal("1.08")})
    events = [EVENT_ADAPTER.validate_python(event) for event in generate_count(6_000, seed=3, incident=True)]
    return snapshot_of(events, policy)


def view_value(sample: Sample, get: Any) -> Any:
    """The JSON value a sample must equal, found through the views alone (None: the view leaves it out)."""
    name, labels = sample.name, sample.labels
    channel = labels.get("channel")

    def by_channel(part: dict[str, Any]) -> dict[str, Any]:
        return part if channel == "all" else part["by_channel"][channel]

    if name in REVENUE_NOW:
        return get("/api/revenue")["now"].get(REVENUE_NOW[name])
    if name in MONTH:
        return get(f"/api/months/{labels['month']}")["revenue"].get(MONTH[name])
    window = get(f"/api/windows/{labels['window']}")
    if name in TRAFFIC:
        return by_channel(window["traffic"]).get(TRAFFIC[name])
    if name in FUNNEL:
        return by_channel(window["funnel"]).get(FUNNEL[name])
    if name in STAGE:
        return by_channel(window["funnel"])["stages"][labels["stage"]].get(STAGE[name])
    return by_channel(window["acquisition"]).get(ACQUISITION[name])


def test_every_view_shows_the_same_numbers_as_the_metrics(simulated: Snapshot) -> None:
    get = cache(lambda path: body(path, simulated))
    scrape = Scrape(simulated)
    families = {**TRAFFIC, **FUNNEL, **STAGE, **ACQUISITION, **REVENUE_NOW, **MONTH}
    compared = 0
    for sample in scrape.samples:
        if sample.name in families:
            assert view_value(sample, get) == pytest.approx(sample.value), sample
            compared += 1
    present_in_views = sum(
        value is not None
        for window in WINDOWS
        for part in [get(f"/api/windows/{window}")["traffic"]]
        for traffic in [part, *part["by_channel"].values()]
        for value in [traffic.get(field) for field in TRAFFIC.values()]
    )
    assert len([s for s in scrape.samples if s.name in TRAFFIC]) == present_in_views
    assert compared > 1_000


def test_status_input_counts_equal_the_input_counters(simulated: Snapshot) -> None:
    status = body("/api/status", simulated)
    scrape = Scrape(simulated)
    for field in ("events", "accepted", "duplicates", "invalid", "rejected"):
        assert scrape.value(f"leadlag_input_{field}_total") == status["input"][field]
    assert status["input"]["accepted"] == 6_000


def test_divergence_and_cohort_views_equal_their_metrics(simulated: Snapshot) -> None:
    scrape = Scrape(simulated)
    for verdict in body("/api/divergence", simulated)["verdicts"]:
        channel = verdict.get("channel", "all")
        assert scrape.value("leadlag_divergence_firing", channel=channel) == int(verdict["firing"])
        assert scrape.value("leadlag_divergence_sessions", channel=channel, period="now") == verdict["sessions_now"]
        if "p_value" in verdict:
            assert scrape.value("leadlag_divergence_p_value", channel=channel) == pytest.approx(verdict["p_value"])
        else:
            assert scrape.absent("leadlag_divergence_p_value", channel=channel)
    cohorts = body("/api/cohorts", simulated)["cohorts"]
    for month, cohort in list(cohorts.items())[-12:]:
        for stage, ratio in cohort["conversion"].items():
            labels = {"cohort_month": month, "stage": stage}
            if ratio is None:
                assert scrape.absent("leadlag_cohort_conversion_ratio", **labels)
            else:
                assert scrape.value("leadlag_cohort_conversion_ratio", **labels) == pytest.approx(ratio)


def test_status_answers_503_naming_each_readiness_condition_that_does_not_hold(small: Snapshot) -> None:
    """A probe reads the code, an operator the reasons: the same list `/readyz` gives."""
    not_ready = (("broker", "the broker has not answered for 21 s"), ("lag", "not known yet"))
    status = body("/api/status", small, RuntimeStats(not_ready=not_ready), status=503)
    assert status["ready"] is False
    assert status["not_ready"] == [
        {"condition": "broker", "reason": "the broker has not answered for 21 s"},
        {"condition": "lag", "reason": "not known yet"},
    ]
    assert status["input"]["accepted"] == 14  # the counts are still there, for a person looking
    assert body("/api/status", small, RuntimeStats(not_ready=()))["ready"] is True
