"""`/metrics`: every figure of the snapshot as a Prometheus sample, named and labelled by the conventions."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from schemas.events import EVENT_ADAPTER, Event
from schemas.snapshot import InputCounts, Snapshot
from stream.core.checks import worker_checks
from stream.core.ledger import Ledger
from stream.core.policy import AlertPolicy, Policy
from stream.core.snapshot import build_snapshot
from stream.core.windows import to_ms
from stream.metrics import RuntimeStats, SnapshotCollector, capped_plans, metrics_catalogue
from stream.simulation import generate_count

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
STARTED_AT = datetime(2026, 11, 23, 8, 0, tzinfo=UTC).timestamp()
"""The worker started an hour before the first event."""
IDS = ("visitor-7f3a", "contact-9c21", "account-51e0", "sess-x91", "subscription-b77", "ev-x91")
"""Every id of the small company below: none may ever appear in the exposition."""


def at(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def small_company_events() -> list[Event]:
    """Ten organic sessions in ten minutes, one of them becoming a lead then an MQL, one subscription, one spend.

    Sessions 1-4 are engaged (2 pageviews, 30 s), 5-10 bounce (1 pageview, 0 s):
    engagement 4/10, average engaged time 120 s / 10 = 12 s, 14 pageviews / 10 = 1.4.
    """
    raw: list[dict[str, Any]] = [
        {
            "type": "site_visit",
            "event_id": f"ev-x91-visit-{n}",
            "occurred_at": at(n - 1),
            "session_id": f"sess-x91-{n}",
            "visitor_id": f"visitor-7f3a-{n}",
            "channel": "organic",
            "pageviews": 2 if n <= 4 else 1,
            "engaged_seconds": 30 if n <= 4 else 0,
        }
        | ({"contact_id": "contact-9c21"} if n == 1 else {})
        for n in range(1, 11)
    ]
    raw += [
        {"type": "stage_change", "event_id": "ev-x91-lead", "occurred_at": at(10), "contact_id": "contact-9c21"}
        | {"to_stage": "lead"},
        {"type": "stage_change", "event_id": "ev-x91-mql", "occurred_at": at(20), "contact_id": "contact-9c21"}
        | {"to_stage": "mql"},
        {
            "type": "subscription",
            "event_id": "ev-x91-subscription",
            "occurred_at": at(30),
            "account_id": "account-51e0",
            "subscription_id": "subscription-b77",
            "status": "active",
            "plan": "growth",
            "amount": "100",
            "currency": "USD",
            "interval": "month",
        },
        {
            "type": "spend",
            "event_id": "ev-x91-spend",
            "occurred_at": at(40),
            "channel": "paid",
            "category": "marketing",
            "amount": "50",
            "currency": "USD",
        },
    ]
    return [EVENT_ADAPTER.validate_python(event) for event in raw]


def snapshot_of(events: list[Event], policy: Policy | None = None, invalid: int = 0) -> Snapshot:
    """Fold like the worker does and count input the way it reports it (invalid events never reach the ledger)."""
    ledger = Ledger(policy or Policy())
    ledger.fold_all(events)
    counts = ledger.counts
    return build_snapshot(
        ledger.totals(),
        ledger.watermark_ms,
        ledger.earliest_ms,
        ledger.policy,
        InputCounts(
            events=len(events) + invalid,
            accepted=counts.accepted,
            duplicates=counts.duplicates,
            invalid=invalid,
            rejected=counts.rejected,
        ),
    )


def small_company_snapshot() -> Snapshot:
    events = small_company_events()
    return snapshot_of([*events, events[0]], invalid=2)  # the first session delivered twice


RUNTIME = RuntimeStats(
    deadletters={"not_json": 2, "late": 1},
    messages_in={"site.visits": 3, "crm.stage_changes": 2},
    events_in={"site.visits": 11, "crm.stage_changes": 2},
    batches=4,
    consumer_lag={("site.visits", 0): 7, ("site.visits", 1): 0},
    rebalances=1,
    recovering=False,
    partitions_assigned=4,
    snapshot_seconds=0.25,
    started_at=STARTED_AT,
    alerts=tuple(
        worker_checks(
            {("site.visits", 0): 7, ("site.visits", 1): 0},
            {"not_json": 2, "late": 0},
            ["site.visits"],
            ["not_json", "late"],
            AlertPolicy(),
        )
    ),
    monthly_targets={"lead": 400, "customer": 12},
    pipeline_target=Decimal("250000"),
)


def exposition(snapshot: Snapshot | None, runtime: RuntimeStats = RUNTIME) -> str:
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(lambda: snapshot, lambda: runtime))
    return generate_latest(registry).decode()


def samples(text: str) -> list[Sample]:
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


class Scrape:
    """One scrape, looked up by sample name and labels."""

    def __init__(self, snapshot: Snapshot | None, runtime: RuntimeStats = RUNTIME) -> None:
        self.text = exposition(snapshot, runtime)
        self.samples = samples(self.text)

    def all(self, name: str, **labels: str) -> list[Sample]:
        return [s for s in self.samples if s.name == name and labels.items() <= s.labels.items()]

    def value(self, name: str, **labels: str) -> float:
        found = [s for s in self.samples if s.name == name and s.labels == labels]
        assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
        return found[0].value

    def absent(self, name: str, **labels: str) -> bool:
        return not self.all(name, **labels)


@pytest.fixture(scope="module")
def scrape() -> Scrape:
    return Scrape(small_company_snapshot())


ONE_HOUR_ORGANIC = {"window": "1h", "channel": "organic"}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("leadlag_sessions", 10),
        ("leadlag_unique_visitors", 10),
        ("leadlag_engaged_sessions", 4),
        ("leadlag_engagement_ratio", 0.4),
        ("leadlag_bounce_ratio", 0.6),
        ("leadlag_average_engaged_seconds", 12.0),
        ("leadlag_pageviews_per_session", 1.4),
        ("leadlag_new_leads", 1),
        ("leadlag_visit_to_lead_ratio", 0.1),
    ],
)
def test_traffic_of_ten_sessions_and_one_lead_is_exposed_per_window_and_channel(
    scrape: Scrape, name: str, expected: float
) -> None:
    assert scrape.value(name, **ONE_HOUR_ORGANIC) == pytest.approx(expected)
    assert scrape.value(name, window="1h", channel="all") == pytest.approx(expected)
    assert scrape.value(name, window="30d", channel="all") == pytest.approx(expected)


def test_a_session_delivered_twice_is_counted_once_and_the_input_counters_say_so(scrape: Scrape) -> None:
    assert scrape.value("leadlag_input_events_total") == 17  # 15 delivered + 2 invalid
    assert scrape.value("leadlag_input_accepted_total") == 14
    assert scrape.value("leadlag_input_duplicates_total") == 1
    assert scrape.value("leadlag_input_invalid_total") == 2
    assert scrape.value("leadlag_input_rejected_total") == 0


def test_the_funnel_counts_the_skipped_subscriber_stage_and_converts_lead_to_mql(scrape: Scrape) -> None:
    for stage in ("subscriber", "lead", "mql"):
        assert scrape.value("leadlag_stage_entries", window="1h", channel="all", stage=stage) == 1
    assert scrape.value("leadlag_stage_entries", window="1h", channel="all", stage="sql") == 0
    assert scrape.value("leadlag_contacts_in_stage", window="1h", channel="all", stage="mql") == 1
    conversion = {"window": "1h", "channel": "all"}
    assert scrape.value("leadlag_stage_conversion_ratio", **conversion, from_stage="lead", to_stage="mql") == 1.0
    assert scrape.value("leadlag_stage_conversion_ratio", **conversion, from_stage="mql", to_stage="sql") == 0.0


def test_rates_with_a_zero_denominator_have_no_sample(scrape: Scrape) -> None:
    """Never 0 and never NaN: no sessions, no closed deal, no paying customer at the month's start."""
    conversion = {"window": "1h", "channel": "all", "from_stage": "sql", "to_stage": "opportunity"}
    assert scrape.absent("leadlag_stage_conversion_ratio", **conversion)  # 0 SQLs
    assert scrape.absent("leadlag_win_ratio")  # nothing closed
    assert scrape.absent("leadlag_average_sales_cycle_seconds")
    assert scrape.absent("leadlag_cost_per_lead", window="1h", channel="paid")  # 50 spent, 0 leads
    assert scrape.absent("leadlag_month_customer_churn_ratio", month="2026-11")  # 0 paying at the start
    assert scrape.absent("leadlag_month_net_revenue_retention_ratio")
    assert scrape.absent("leadlag_divergence_sessions_change_ratio", channel="all")  # 0 sessions in the baseline
    assert not [s for s in scrape.samples if s.value != s.value], "a NaN sample"


def test_cost_per_lead_is_marketing_spend_over_new_leads(scrape: Scrape) -> None:
    one_hour = {"window": "1h", "currency": "USD"}
    assert scrape.value("leadlag_spend_amount", **one_hour, channel="paid", category="marketing") == 50
    assert scrape.value("leadlag_spend_amount", **one_hour, channel="all", category="sales") == 0
    assert scrape.value("leadlag_cost_per_lead", **one_hour, channel="all") == 50  # 50 / 1 lead


def test_revenue_now_has_mrr_arr_and_arpa_with_a_currency_label(scrape: Scrape) -> None:
    assert scrape.value("leadlag_mrr", currency="USD") == 100
    assert scrape.value("leadlag_arr", currency="USD") == 1200
    assert scrape.value("leadlag_paying_customers") == 1
    assert scrape.value("leadlag_average_revenue_per_account", currency="USD") == 100
    assert scrape.value("leadlag_plan_mrr", plan="growth", currency="USD") == 100


def test_the_month_shows_one_new_business_movement_and_its_mrr(scrape: Scrape) -> None:
    month = {"month": "2026-11"}
    assert scrape.value("leadlag_month_start_mrr", **month, currency="USD") == 0
    assert scrape.value("leadlag_month_end_mrr", **month, currency="USD") == 100
    assert scrape.value("leadlag_month_mrr_movement_amount", **month, kind="new_business", currency="USD") == 100
    assert scrape.value("leadlag_month_mrr_movement_amount", **month, kind="churn", currency="USD") == 0
    assert scrape.value("leadlag_month_mrr_movement_accounts", **month, kind="new_business") == 1
    assert scrape.value("leadlag_month_net_new_mrr", **month, currency="USD") == 100
    assert scrape.value("leadlag_mrr_movement_amount", window="24h", kind="new_business", currency="USD") == 100


@pytest.mark.parametrize("channel", ["all", "organic"])
def test_time_to_mql_is_a_histogram_with_cumulative_buckets_sum_and_count(scrape: Scrape, channel: str) -> None:
    """The lead at minute 10 became an MQL at minute 20: one observation of 600 s, overall and for its channel."""
    labels = {"window": "1h", "channel": channel, "stage": "mql"}
    buckets = {s.labels["le"]: s.value for s in scrape.all("leadlag_time_to_stage_seconds_bucket", **labels)}
    assert buckets["3600.0"] == 1
    assert buckets["+Inf"] == 1
    assert all(count == 1 for le, count in buckets.items() if float(le) >= 600)
    assert all(count == 0 for le, count in buckets.items() if float(le) < 600)
    assert scrape.value("leadlag_time_to_stage_seconds_count", **labels) == 1
    assert scrape.value("leadlag_time_to_stage_seconds_sum", **labels) == 600
    assert "# TYPE leadlag_time_to_stage_seconds histogram" in scrape.text


def test_the_cohort_of_the_lead_month_has_reached_mql_but_not_customer(scrape: Scrape) -> None:
    assert scrape.value("leadlag_cohort_size", cohort_month="2026-11") == 1
    assert scrape.value("leadlag_cohort_reached", cohort_month="2026-11", stage="mql") == 1
    assert scrape.value("leadlag_cohort_conversion_ratio", cohort_month="2026-11", stage="mql") == 1.0
    assert scrape.value("leadlag_cohort_conversion_ratio", cohort_month="2026-11", stage="customer") == 0.0


def test_attribution_credits_the_one_lead_to_its_organic_session_in_every_model(scrape: Scrape) -> None:
    assert scrape.value("leadlag_conversions", window="1h", conversion="lead") == 1
    credits = scrape.all("leadlag_attributed_conversions", window="1h", conversion="lead")
    assert {s.labels["model"] for s in credits} == {
        "first_touch",
        "last_touch",
        "linear",
        "u_shaped",
        "w_shaped",
        "full_path",
        "time_decay",
    }
    assert all(s.labels["channel"] == "organic" and s.value == pytest.approx(1.0) for s in credits)


def test_divergence_compares_the_window_with_its_baseline_and_is_not_firing_on_ten_sessions(scrape: Scrape) -> None:
    assert scrape.value("leadlag_divergence_firing", channel="all") == 0
    assert scrape.value("leadlag_divergence_sessions", channel="all", period="now") == 10
    assert scrape.value("leadlag_divergence_sessions", channel="all", period="baseline") == 0
    assert scrape.value("leadlag_divergence_leads", channel="all", period="now") == 1
    assert scrape.value("leadlag_divergence_conversion_ratio", channel="all", period="now") == pytest.approx(0.1)


def test_all_time_counters_sum_every_month_for_rate_in_promql(scrape: Scrape) -> None:
    assert scrape.value("leadlag_contacts_entered_stage_total", channel="all", stage="lead") == 1
    assert scrape.value("leadlag_leads_created_total", channel="all") == 1
    assert scrape.value("leadlag_spent_amount_total", channel="paid", category="marketing", currency="USD") == 50
    assert scrape.value("leadlag_mrr_moved_amount_total", kind="new_business", currency="USD") == 100
    assert scrape.value("leadlag_mrr_movements_total", kind="new_business") == 1
    assert scrape.value("leadlag_opportunities_closed_total", channel="all", outcome="won") == 0


def test_runtime_statistics_of_the_worker_are_exposed(scrape: Scrape) -> None:
    assert scrape.value("leadlag_deadletters_total", reason="not_json") == 2
    assert scrape.value("leadlag_deadletters_total", reason="late") == 1
    assert scrape.value("leadlag_messages_in_total", topic="site.visits") == 3
    assert scrape.value("leadlag_events_in_total", topic="site.visits") == 11
    assert scrape.value("leadlag_batches_folded_total") == 4
    assert scrape.value("leadlag_rebalances_total") == 1
    assert scrape.value("leadlag_consumer_lag_messages", topic="site.visits", partition="0") == 7
    assert scrape.value("leadlag_consumer_lag_messages", topic="site.visits", partition="1") == 0
    assert scrape.value("leadlag_recovery_in_progress") == 0
    assert scrape.value("leadlag_partitions_assigned") == 4
    assert scrape.value("leadlag_snapshot_computation_seconds") == 0.25
    assert scrape.value("leadlag_worker_start_time_seconds") == STARTED_AT
    assert scrape.value("leadlag_snapshot_timestamp_seconds") == to_ms(T0 + timedelta(minutes=40)) / 1000


def test_targets_are_exposed_beside_the_actuals_they_are_drawn_against(scrape: Scrape) -> None:
    assert scrape.value("leadlag_stage_entries_target", window="month", stage="lead") == 400
    assert scrape.value("leadlag_stage_entries_target", window="month", stage="customer") == 12
    assert scrape.value("leadlag_weighted_pipeline_target_amount", currency="USD") == 250000


def test_the_workers_own_alert_verdicts_are_a_gauge_labelled_like_the_rules(scrape: Scrape) -> None:
    unused = dict.fromkeys(("channel", "stage", "from_stage", "to_stage", "topic", "reason"), "")
    assert scrape.value("leadlag_alert_firing", **{**unused, "alert": "DeadLettersArriving", "reason": "not_json"}) == 1
    assert scrape.value("leadlag_alert_firing", **{**unused, "alert": "DeadLettersArriving", "reason": "late"}) == 0
    assert scrape.value("leadlag_alert_firing", **{**unused, "alert": "ConsumerLagHigh", "topic": "site.visits"}) == 0


def test_without_a_snapshot_only_the_runtime_statistics_are_exposed() -> None:
    scrape = Scrape(None, RuntimeStats(recovering=True, started_at=STARTED_AT))
    assert {s.name for s in scrape.samples} == {
        "leadlag_batches_folded_total",
        "leadlag_rebalances_total",
        "leadlag_recovery_in_progress",
        "leadlag_partitions_assigned",
        "leadlag_snapshot_computation_seconds",
        "leadlag_worker_start_time_seconds",
        "leadlag_ready",
        "leadlag_voice",
        "leadlag_snapshot_failures_total",
        "leadlag_publish_failures_total",
    }
    assert scrape.value("leadlag_recovery_in_progress") == 1
    assert scrape.value("leadlag_ready") == 0


def test_readiness_and_the_failures_the_worker_survived_are_exposed() -> None:
    """A failed snapshot build or publication never stops the worker: it is counted here instead."""
    runtime = RuntimeStats(not_ready=(("broker", "silent"),), snapshot_failures=3, publish_failures=2)
    scrape = Scrape(None, runtime)
    assert scrape.value("leadlag_ready") == 0
    assert scrape.value("leadlag_snapshot_failures_total") == 3
    assert scrape.value("leadlag_publish_failures_total") == 2
    assert Scrape(None, RuntimeStats(not_ready=())).value("leadlag_ready") == 1


def test_registering_the_collector_computes_no_snapshot_and_claims_every_catalogued_name() -> None:
    def no_snapshot_yet() -> Snapshot | None:
        raise AssertionError("the snapshot was computed at registration")

    registry = CollectorRegistry()
    registry.register(SnapshotCollector(no_snapshot_yet, RuntimeStats))
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(SnapshotCollector(no_snapshot_yet, RuntimeStats))


def test_no_id_ever_appears_in_the_exposition(scrape: Scrape) -> None:
    for id_fragment in IDS:
        assert id_fragment not in scrape.text


def test_every_name_follows_the_prometheus_conventions() -> None:
    catalogue = metrics_catalogue()
    names = [spec.name for spec in catalogue]
    assert len(names) == len(set(names))
    for spec in catalogue:
        assert re.fullmatch(r"leadlag_[a-z0-9_]+", spec.name), spec.name
        assert spec.name.endswith("_total") == (spec.type == "counter"), spec.name
        assert not spec.name.endswith(("_days", "_hours", "_minutes", "_milliseconds", "_percent")), spec.name
        assert spec.help.endswith("."), spec.name
        assert set(spec.labels) <= LABELS_FROM_BOUNDED_SETS, spec.name
        if "ratio" in spec.name:
            assert spec.name.endswith("_ratio"), spec.name


def test_no_two_families_share_a_name_once_counter_and_histogram_suffixes_are_taken_off() -> None:
    """OpenMetrics names a counter `x_total`'s family `x`: a gauge `x` beside it would clash."""
    exposed: list[str] = []
    for spec in metrics_catalogue():
        family = spec.name.removesuffix("_total") if spec.type == "counter" else spec.name
        suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
        exposed += [family, *(family + suffix for suffix in suffixes.get(spec.type, ()))]
    assert len(exposed) == len(set(exposed))


LABELS_FROM_BOUNDED_SETS = {
    "alert",
    "window",
    "channel",
    "stage",
    "from_stage",
    "to_stage",
    "form_type",
    "campaign",
    "plan",
    "currency",
    "month",
    "cohort_month",
    "kind",
    "conversion",
    "model",
    "category",
    "period",
    "reason",
    "outcome",
    "topic",
    "partition",
}


@pytest.fixture(scope="module")
def simulated() -> Snapshot:
    """Two months of a simulated company, EUR billing included: every family has samples to check."""
    policy = Policy(fx_rates={"EUR": Decimal("1.08")})
    events = [EVENT_ADAPTER.validate_python(event) for event in generate_count(6_000, seed=7, incident=True)]
    return snapshot_of(events, policy)


def test_every_exposed_sample_belongs_to_a_catalogued_family_with_its_labels(simulated: Snapshot) -> None:
    specs = {spec.name: spec for spec in metrics_catalogue()}
    text = exposition(simulated)
    for family in text_string_to_metric_families(text):
        spec = specs.get(family.name) or specs[family.name + "_total"]
        assert family.type == spec.type
        for sample in family.samples:
            assert re.fullmatch(r"leadlag_[a-z0-9_]+", sample.name)
            assert set(sample.labels) - {"le"} == set(spec.labels), sample
    exposed = {family.name for family in text_string_to_metric_families(text)}
    never_exposed = {name.removesuffix("_total") for name in specs} - exposed
    assert not never_exposed, "catalogued but never exposed"


def test_months_and_cohorts_are_limited_to_the_last_twelve(simulated: Snapshot) -> None:
    months = {f"2025-{m:02d}" for m in range(1, 13)} | {"2026-01", "2026-02"}
    long_ago = simulated.model_copy(
        update={
            "months": {month: next(iter(simulated.months.values())) for month in sorted(months)},
            "lead_cohorts": {month: next(iter(simulated.lead_cohorts.values())) for month in sorted(months)},
        }
    )
    scrape = Scrape(long_ago)
    exposed = {s.labels["month"] for s in scrape.all("leadlag_month_end_mrr")}
    assert exposed == set(sorted(months)[-12:])
    assert {s.labels["cohort_month"] for s in scrape.all("leadlag_cohort_size")} == set(sorted(months)[-12:])


def test_plans_past_the_top_twenty_are_summed_as_other() -> None:
    plans = {f"plan-{n:02d}": Decimal(n) for n in range(1, 26)}
    capped = capped_plans(plans)
    assert len(capped) == 21
    assert capped["other"] == Decimal(1 + 2 + 3 + 4 + 5)
    assert sum(capped.values()) == sum(plans.values())
