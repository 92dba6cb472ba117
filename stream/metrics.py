"""Prometheus metrics computed from the snapshot at scrape time (README, "Dashboards and alerts").

`SnapshotCollector` is a custom collector in prometheus_client's pattern:
nothing is updated per event and nothing is locked on the hot path; each
scrape turns the current `Snapshot` (the same one the JSON views serve) and
the worker's `RuntimeStats` into metric families. Every name, type, help text
and label set is declared once in `CATALOGUE`, so the docs can be generated
from it and the collector cannot emit a name the catalogue does not know.

Conventions: `leadlag_` prefix, base units (seconds), `_total` only on
counters, `_ratio` on ratios; money in the reporting currency (a `currency`
label), rounded to cents exactly as the JSON views round it. Labels come only
from bounded sets, never an id. Families with a `channel` label carry the
whole (every channel together) as `channel="all"`, so exclude it before
summing over channels. A rate the snapshot leaves out has no sample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from schemas.alerts import CheckVerdict
from schemas.snapshot import InputCounts, MonthMetrics, Snapshot, WindowMetrics
from schemas.snapshot.acquisition import ChannelAcquisition
from schemas.snapshot.funnel import ChannelFunnel, StageDuration
from schemas.snapshot.money import to_cents
from schemas.snapshot.revenue import MrrMovements
from schemas.snapshot.traffic import ChannelTraffic
from stream.core.alltime import MOVEMENT_KINDS, all_time

MONTHS_EXPOSED = 12
"""Calendar months (and lead cohorts) exposed with a `month` label: the last 12, so the label set stays bounded."""
PLANS_EXPOSED = 20
"""Plans exposed by name, by MRR; the rest are summed as `other` (plan names come from billing events)."""
ALL = "all"
"""The `channel` label value of a figure over every channel."""
DAY_SECONDS = 86_400

ALERT_LABELS = ("channel", "stage", "from_stage", "to_stage", "topic", "reason")
"""The scope labels of `leadlag_alert_firing`, named as in the Prometheus rules; unused ones are empty."""

MetricType = Literal["gauge", "counter", "histogram"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric family: its exposed name (counters end in `_total`), type, help and label names."""

    name: str
    type: MetricType
    help: str
    labels: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RuntimeStats:
    """What only the running worker knows: its intake, its consumer and its own health."""

    deadletters: Mapping[str, int] = field(default_factory=dict)
    """Dead letters by reason kind (not_json, not_object, invalid, late, unknown_currency, too_large, ...)."""
    messages_in: Mapping[str, int] = field(default_factory=dict)
    """Kafka messages read, by input topic (an envelope is one message)."""
    events_in: Mapping[str, int] = field(default_factory=dict)
    """Events read, by input topic (an envelope counts each of its events)."""
    batches: int = 0
    """Batches folded through the reducers."""
    consumer_lag: Mapping[tuple[str, int], int] = field(default_factory=dict)
    """Messages behind the end offset, by (topic, partition)."""
    rebalances: int = 0
    recovering: bool = False
    """True while the worker recovers its tables (its figures are incomplete)."""
    partitions_assigned: int = 0
    partitions: tuple[int, ...] = ()
    """The partitions this worker owns (their entities it folds); the others it reads from their changelog."""
    voice: bool = False
    """Whether this worker publishes the company's snapshot and alerts (it owns partition 0)."""
    snapshot_seconds: float = 0.0
    """How long the last snapshot took to compute."""
    started_at: float = 0.0
    """Worker start, Unix seconds."""
    alerts: tuple[CheckVerdict, ...] = ()
    """The worker's verdicts of the alerts besides divergence (held for their `for:`)."""
    monthly_targets: Mapping[str, int] = field(default_factory=dict)
    """Stage entries to reach per calendar month (LEADLAG_MONTHLY_TARGETS)."""
    pipeline_target: Decimal | None = None
    """Weighted open pipeline to keep (LEADLAG_PIPELINE_TARGET), in `reporting_currency`."""
    reporting_currency: str = "USD"
    input: InputCounts | None = None
    """The input counters as they stand (no snapshot needed): what `/api/status` reports."""
    as_of: datetime | None = None
    """The instant the next snapshot will describe."""
    not_ready: tuple[tuple[str, str], ...] | None = None
    """The readiness conditions that do not hold, as (condition, reason); None where nobody judged them."""
    snapshot_failures: int = 0
    """Snapshot builds that raised (the last good snapshot kept being served)."""
    publish_failures: int = 0
    """Publications of the snapshot and alert topics that failed (the worker kept running)."""


def _gauge(name: str, help: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, "gauge", help, labels)


def _counter(name: str, help: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, "counter", help, labels)


def _histogram(name: str, help: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, "histogram", help, labels)


W, CH, ST, CUR, MO, KIND, CONV = "window", "channel", "stage", "currency", "month", "kind", "conversion"

CATALOGUE: tuple[MetricSpec, ...] = (
    # -- snapshot and input -------------------------------------------------------------------------
    _gauge("leadlag_snapshot_timestamp_seconds", "The event-time instant the figures describe (as of), Unix seconds."),
    _counter(
        "leadlag_input_events_total",
        "Events read, valid or not; an envelope counts each of its events. The company's, on every worker: take max.",
    ),
    _counter("leadlag_input_accepted_total", "Events counted in the metrics (the company's: take max, never sum)."),
    _counter("leadlag_input_duplicates_total", "Events whose event_id was already counted (the company's)."),
    _counter("leadlag_input_invalid_total", "Events that failed validation, sent to the dead letter (the company's)."),
    _counter("leadlag_input_rejected_total", "Valid events not counted: late, or an unknown currency (the company's)."),
    # -- traffic, per window and channel --------------------------------------------------------------
    _gauge("leadlag_sessions", "Web sessions in the window.", W, CH),
    _gauge("leadlag_unique_visitors", "Distinct visitors in the window.", W, CH),
    _gauge("leadlag_engaged_sessions", "Sessions with at least 2 pageviews or 10 engaged seconds.", W, CH),
    _gauge("leadlag_engagement_ratio", "Engaged sessions / sessions.", W, CH),
    _gauge("leadlag_bounce_ratio", "1 - engagement ratio.", W, CH),
    _gauge("leadlag_average_engaged_seconds", "Mean engaged time per session.", W, CH),
    _gauge("leadlag_pageviews_per_session", "Mean pageviews per session.", W, CH),
    _gauge("leadlag_pricing_page_sessions", "Sessions that visited a /pricing page.", W, CH),
    _gauge("leadlag_new_leads", "Contacts whose lead moment falls in the window, by first-touch channel.", W, CH),
    _gauge("leadlag_visit_to_lead_ratio", "New leads / sessions, same window and channel.", W, CH),
    _gauge("leadlag_campaign_sessions", "Sessions by campaign (top N; the rest `other`, none `none`).", W, "campaign"),
    # -- funnel, per window (and channel: the contact's first-touch channel) ---------------------------
    _gauge("leadlag_stage_entries", "Contacts that reached the stage (skipped stages counted once).", W, CH, ST),
    _gauge("leadlag_stage_exits", "Contacts disqualified or lost from the stage.", W, CH, ST),
    _gauge("leadlag_stage_became_stale", "Contacts still in the stage when its staleness limit ran out.", W, CH, ST),
    _gauge("leadlag_stage_drop_offs", "Contacts that exited or went stale at the stage.", W, CH, ST),
    _gauge("leadlag_stage_drop_off_ratio", "Drop-offs / entries at the stage.", W, CH, ST),
    _gauge("leadlag_contacts_in_stage", "Contacts sitting in the stage at the window's end.", W, CH, ST),
    _gauge(
        "leadlag_stage_conversion_ratio",
        "Period conversion: entries into to_stage / entries into from_stage, same window.",
        W,
        CH,
        "from_stage",
        "to_stage",
    ),
    _gauge("leadlag_form_fills", "Form fills, by the fill's own channel.", W, CH),
    _gauge("leadlag_form_fills_by_type", "Form fills by form type.", W, "form_type"),
    _gauge("leadlag_opportunities_won", "Opportunities closed won.", W, CH),
    _gauge("leadlag_opportunities_lost", "Opportunities closed lost.", W, CH),
    _gauge("leadlag_win_ratio", "Won / (won + lost) among closed opportunities.", W, CH),
    _gauge("leadlag_open_opportunities", "Open opportunities at the window's end.", W, CH),
    _gauge("leadlag_pipeline_amount", "Sum of the open opportunities' deal values at the window's end.", W, CH, CUR),
    _gauge(
        "leadlag_weighted_pipeline_amount", "Sum of deal value x stage probability at the window's end.", W, CH, CUR
    ),
    _gauge("leadlag_won_amount", "Deal value of the opportunities won.", W, CH, CUR),
    _gauge("leadlag_average_deal_amount", "Mean deal value of the opportunities won.", W, CH, CUR),
    _gauge("leadlag_average_sales_cycle_seconds", "Mean time from lead moment to customer, won deals.", W, CH),
    _gauge(
        "leadlag_sales_velocity_per_day",
        "Open opportunities x average deal value x win ratio / average sales cycle days: money per day.",
        W,
        CH,
        CUR,
    ),
    _histogram("leadlag_time_to_stage_seconds", "Time from the lead moment to reaching the stage.", W, CH, ST),
    _histogram("leadlag_time_in_stage_seconds", "Time spent in the stage, observed when leaving it.", W, ST),
    # -- attribution -------------------------------------------------------------------------------------
    _gauge(
        "leadlag_conversions", "Conversions (lead, opportunity, customer) whose moment falls in the window.", W, CONV
    ),
    _gauge(
        "leadlag_attributed_conversions",
        "Channel credit of the window's conversions by attribution model; each model sums to the conversions.",
        W,
        CONV,
        "model",
        CH,
    ),
    # -- revenue movements and acquisition, per window ---------------------------------------------------
    _gauge("leadlag_mrr_movement_amount", "MRR moved in the window, by movement kind (magnitudes).", W, KIND, CUR),
    _gauge("leadlag_mrr_movement_accounts", "Accounts with a movement in the window, by movement kind.", W, KIND),
    _gauge("leadlag_net_new_mrr", "New + expansion + reactivation - contraction - churn MRR.", W, CUR),
    _gauge("leadlag_spend_amount", "Spend by channel and category (marketing, sales).", W, CH, "category", CUR),
    _gauge("leadlag_new_customers", "New paying customers, by first-touch channel.", W, CH),
    _gauge("leadlag_new_business_mrr", "New-business MRR, by first-touch channel.", W, CH, CUR),
    _gauge("leadlag_cost_per_lead", "Marketing spend / new leads.", W, CH, CUR),
    _gauge("leadlag_customer_acquisition_cost", "(Marketing + sales spend) / new paying customers.", W, CH, CUR),
    _gauge("leadlag_marketing_roi_ratio", "(New MRR x 12 - spend) / spend.", W, CH),
    _gauge("leadlag_ltv_to_cac_ratio", "LTV of the month holding the window's end / CAC.", W),
    _gauge("leadlag_cac_payback_months", "CAC / ARPA, in months.", W),
    _gauge(
        "leadlag_campaign_spend_amount", "Marketing spend by campaign (top N, the rest `other`).", W, "campaign", CUR
    ),
    _gauge("leadlag_campaign_new_leads", "New leads by campaign.", W, "campaign"),
    _gauge("leadlag_campaign_cost_per_lead", "Marketing spend / new leads, by campaign.", W, "campaign", CUR),
    # -- revenue now ---------------------------------------------------------------------------------------
    _gauge("leadlag_mrr", "Monthly recurring revenue now.", CUR),
    _gauge("leadlag_arr", "Annual recurring revenue now (12 x MRR).", CUR),
    _gauge("leadlag_paying_customers", "Accounts with MRR > 0 now."),
    _gauge("leadlag_average_revenue_per_account", "MRR / paying customers now (ARPA).", CUR),
    _gauge("leadlag_plan_mrr", "MRR by plan now (top plans by MRR, the rest `other`).", "plan", CUR),
    # -- revenue per calendar month (the last 12) -----------------------------------------------------------
    _gauge("leadlag_month_start_mrr", "MRR at the start of the month.", MO, CUR),
    _gauge("leadlag_month_end_mrr", "MRR at the end of the month (now, for the current month).", MO, CUR),
    _gauge("leadlag_month_start_paying_customers", "Paying customers at the start of the month.", MO),
    _gauge("leadlag_month_end_paying_customers", "Paying customers at the end of the month.", MO),
    _gauge(
        "leadlag_month_mrr_movement_amount", "MRR moved in the month, by movement kind (magnitudes).", MO, KIND, CUR
    ),
    _gauge("leadlag_month_mrr_movement_accounts", "Accounts with a movement in the month, by kind.", MO, KIND),
    _gauge("leadlag_month_net_new_mrr", "Net new MRR of the month.", MO, CUR),
    _gauge("leadlag_month_churned_customers", "Paying at the start of the month and not at its end.", MO),
    _gauge("leadlag_month_customer_churn_ratio", "Churned customers / paying customers at the start.", MO),
    _gauge("leadlag_month_gross_mrr_churn_ratio", "(Churn + contraction) / MRR at the start.", MO),
    _gauge(
        "leadlag_month_net_mrr_churn_ratio", "(Churn + contraction - expansion - reactivation) / MRR at the start.", MO
    ),
    _gauge("leadlag_month_net_revenue_retention_ratio", "1 - net MRR churn ratio (NRR).", MO),
    _gauge("leadlag_month_quick_ratio", "(New + expansion + reactivation) / (churn + contraction).", MO),
    _gauge("leadlag_month_average_revenue_per_account", "ARPA at the end of the month.", MO, CUR),
    _gauge("leadlag_month_lifetime_value", "ARPA / customer churn ratio (LTV).", MO, CUR),
    _gauge(
        "leadlag_month_trailing_customer_churn_ratio", "Mean customer churn ratio of the month and the 5 before.", MO
    ),
    _gauge("leadlag_month_lifetime_value_trailing_churn", "ARPA / trailing customer churn ratio.", MO, CUR),
    _gauge("leadlag_month_revenue_growth_ratio", "(MRR at end - MRR at start) / MRR at start.", MO),
    # -- lead cohorts (the last 12 cohort months) ----------------------------------------------------------------
    _gauge("leadlag_cohort_size", "Contacts whose lead moment falls in the cohort month.", "cohort_month"),
    _gauge("leadlag_cohort_reached", "Of the cohort, contacts that have reached the stage so far.", "cohort_month", ST),
    _gauge("leadlag_cohort_conversion_ratio", "Cohort conversion lead -> stage so far.", "cohort_month", ST),
    # -- divergence: traffic up, conversion down ------------------------------------------------------------------
    _gauge(
        "leadlag_stage_entries_target", "Stage entries to reach in the window (OKR, LEADLAG_MONTHLY_TARGETS).", W, ST
    ),
    _gauge("leadlag_weighted_pipeline_target_amount", "Weighted open pipeline to keep (LEADLAG_PIPELINE_TARGET).", CUR),
    _gauge(
        "leadlag_alert_firing",
        "1 while the worker's own verdict of an alert (besides divergence) fires, held for the rule's `for:`.",
        "alert",
        *ALERT_LABELS,
    ),
    _gauge("leadlag_divergence_firing", "1 while sessions rise and conversion falls significantly, else 0.", CH),
    _gauge(
        "leadlag_divergence_sessions", "Sessions in the compared window (period=now) and its baseline.", CH, "period"
    ),
    _gauge("leadlag_divergence_leads", "New leads in the compared window (period=now) and its baseline.", CH, "period"),
    _gauge("leadlag_divergence_conversion_ratio", "Visit-to-lead conversion, now and baseline.", CH, "period"),
    _gauge("leadlag_divergence_sessions_change_ratio", "Relative change of sessions, now vs baseline.", CH),
    _gauge("leadlag_divergence_conversion_change_ratio", "Relative change of conversion, now vs baseline.", CH),
    _gauge("leadlag_divergence_z_score", "Two-proportion z statistic of the conversion change.", CH),
    _gauge("leadlag_divergence_p_value", "One-sided p-value that conversion fell.", CH),
    # -- all time (event time, summed over every calendar month), for rate() and increase() ----------------------
    _counter("leadlag_contacts_entered_stage_total", "Contacts that reached the stage, all time.", CH, ST),
    _counter("leadlag_leads_created_total", "New leads, all time, by first-touch channel.", CH),
    _counter("leadlag_customers_acquired_total", "New paying customers, all time, by first-touch channel.", CH),
    _counter("leadlag_forms_filled_total", "Form fills, all time, by form type.", "form_type"),
    _counter(
        "leadlag_opportunities_closed_total", "Opportunities closed, all time, by outcome (won, lost).", CH, "outcome"
    ),
    _counter("leadlag_deal_amount_won_total", "Deal value won, all time.", CH, CUR),
    _counter("leadlag_spent_amount_total", "Spend, all time, by channel and category.", CH, "category", CUR),
    _counter("leadlag_mrr_moved_amount_total", "MRR moved, all time, by movement kind (magnitudes).", KIND, CUR),
    _counter("leadlag_mrr_movements_total", "MRR movements, all time, by kind (one per account and change).", KIND),
    # -- the worker ------------------------------------------------------------------------------------------------
    # these describe this worker alone: sum them over workers
    _counter(
        "leadlag_deadletters_total", "Dead letters this worker sent, by reason kind (sum over workers).", "reason"
    ),
    _counter(
        "leadlag_messages_in_total", "Kafka messages this worker read, by input topic (an envelope is one).", "topic"
    ),
    _counter(
        "leadlag_events_in_total", "Events this worker read, by input topic (each event of an envelope).", "topic"
    ),
    _counter("leadlag_batches_folded_total", "Batches folded through the reducers."),
    _counter("leadlag_rebalances_total", "Consumer group rebalances this worker went through."),
    _gauge("leadlag_consumer_lag_messages", "Messages behind the partition's end offset.", "topic", "partition"),
    _gauge("leadlag_recovery_in_progress", "1 while the worker recovers its tables (figures incomplete), else 0."),
    _gauge("leadlag_partitions_assigned", "Partitions of the entity table this worker owns."),
    _gauge("leadlag_snapshot_computation_seconds", "How long the last snapshot took to compute."),
    _gauge("leadlag_worker_start_time_seconds", "When the worker started, Unix seconds."),
    _gauge("leadlag_ready", "1 while the worker is ready (see /readyz), else 0."),
    _gauge("leadlag_voice", "1 on the one worker that publishes the company's snapshot and alerts (owns partition 0)."),
    _counter("leadlag_snapshot_failures_total", "Snapshot builds that failed; the last good snapshot is served."),
    _counter("leadlag_publish_failures_total", "Publications to the snapshot and alert topics that failed."),
)

_SPECS: dict[str, MetricSpec] = {spec.name: spec for spec in CATALOGUE}


def metrics_catalogue() -> list[MetricSpec]:
    """Every metric the collector can expose, in exposition order: the source of the generated docs."""
    return list(CATALOGUE)


Number = int | float | Decimal | None


class _Families:
    """Metric families created on first use from the catalogue; a None value adds no sample."""

    __slots__ = ("families",)

    def __init__(self) -> None:
        self.families: dict[str, Metric] = {}

    def family(self, name: str) -> Metric:
        found = self.families.get(name)
        if found is None:
            found = self.families[name] = new_family(_SPECS[name])
        return found

    def add(self, name: str, value: Number, *labels: str) -> None:
        if value is None:
            return
        metric = self.family(name)
        assert isinstance(metric, GaugeMetricFamily | CounterMetricFamily)
        metric.add_metric(list(labels), number(value))

    def histogram(self, name: str, duration: StageDuration, *labels: str) -> None:
        metric = self.family(name)
        assert isinstance(metric, HistogramMetricFamily)
        buckets = [(le if le == "+Inf" else repr(float(le)), float(count)) for le, count in duration.buckets.items()]
        total = (duration.mean_seconds or 0.0) * duration.count
        metric.add_metric(list(labels), buckets, total)

    def in_catalogue_order(self) -> Iterator[Metric]:
        for spec in CATALOGUE:
            if spec.name in self.families:
                yield self.families[spec.name]


def new_family(spec: MetricSpec) -> Metric:
    labels = list(spec.labels)
    if spec.type == "counter":
        return CounterMetricFamily(spec.name, spec.help, labels=labels)
    if spec.type == "histogram":
        return HistogramMetricFamily(spec.name, spec.help, labels=labels)
    return GaugeMetricFamily(spec.name, spec.help, labels=labels)


def number(value: int | float | Decimal) -> float:
    """A sample value; money is rounded to cents the way the JSON views round it."""
    return to_cents(value) if isinstance(value, Decimal) else float(value)


class SnapshotCollector:
    """Every figure of the snapshot and the worker's runtime statistics, computed when Prometheus scrapes."""

    def __init__(self, snapshot: Callable[[], Snapshot | None], runtime: Callable[[], RuntimeStats]) -> None:
        self._snapshot = snapshot
        self._runtime = runtime

    def describe(self) -> Iterable[Metric]:
        """The catalogue, so registering the collector neither computes a snapshot nor misses a name clash."""
        return [new_family(spec) for spec in CATALOGUE]

    def collect(self) -> Iterable[Metric]:
        families = _Families()
        snapshot = self._snapshot()
        if snapshot is not None:
            add_snapshot(families, snapshot)
        add_runtime(families, self._runtime())
        return list(families.in_catalogue_order())


def add_snapshot(f: _Families, snapshot: Snapshot) -> None:
    cur = snapshot.reporting_currency
    if snapshot.as_of is not None:
        f.add("leadlag_snapshot_timestamp_seconds", snapshot.as_of.timestamp())
    counts = snapshot.input
    f.add("leadlag_input_events_total", counts.events)
    f.add("leadlag_input_accepted_total", counts.accepted)
    f.add("leadlag_input_duplicates_total", counts.duplicates)
    f.add("leadlag_input_invalid_total", counts.invalid)
    f.add("leadlag_input_rejected_total", counts.rejected)
    for window, metrics in snapshot.windows.items():
        add_window(f, window, metrics, cur)
    add_revenue_now(f, snapshot, cur)
    months = list(snapshot.months.items())
    for month, month_metrics in months[-MONTHS_EXPOSED:]:
        add_month(f, month, month_metrics, cur)
    add_all_time(f, [metrics for _, metrics in months], cur)
    for cohort_month, cohort in list(snapshot.lead_cohorts.items())[-MONTHS_EXPOSED:]:
        f.add("leadlag_cohort_size", cohort.size, cohort_month)
        for stage, reached in cohort.reached.items():
            f.add("leadlag_cohort_reached", reached, cohort_month, stage)
        for stage, ratio in cohort.conversion.items():
            f.add("leadlag_cohort_conversion_ratio", ratio, cohort_month, stage)
    for verdict in snapshot.divergence:
        ch = verdict.channel if verdict.scope == "channel" and verdict.channel else ALL
        f.add("leadlag_divergence_firing", int(verdict.firing), ch)
        f.add("leadlag_divergence_sessions", verdict.sessions_now, ch, "now")
        f.add("leadlag_divergence_sessions", verdict.sessions_baseline, ch, "baseline")
        f.add("leadlag_divergence_leads", verdict.leads_now, ch, "now")
        f.add("leadlag_divergence_leads", verdict.leads_baseline, ch, "baseline")
        f.add("leadlag_divergence_conversion_ratio", verdict.conversion_now, ch, "now")
        f.add("leadlag_divergence_conversion_ratio", verdict.conversion_baseline, ch, "baseline")
        f.add("leadlag_divergence_sessions_change_ratio", verdict.sessions_change, ch)
        f.add("leadlag_divergence_conversion_change_ratio", verdict.conversion_change, ch)
        f.add("leadlag_divergence_z_score", verdict.z, ch)
        f.add("leadlag_divergence_p_value", verdict.p_value, ch)


def add_window(f: _Families, window: str, metrics: WindowMetrics, cur: str) -> None:
    traffic = metrics.traffic
    add_traffic(f, window, ALL, traffic)
    for channel, channel_traffic in traffic.by_channel.items():
        add_traffic(f, window, channel, channel_traffic)
    for campaign, sessions in traffic.sessions_by_campaign.items():
        f.add("leadlag_campaign_sessions", sessions, window, campaign)

    funnel = metrics.funnel
    add_funnel(f, window, ALL, funnel, cur)
    for channel, channel_funnel in funnel.by_channel.items():
        add_funnel(f, window, channel, channel_funnel, cur)
    for form_type, fills in funnel.form_fills_by_type.items():
        f.add("leadlag_form_fills_by_type", fills, window, form_type)
    for stage, duration in funnel.time_in_stage.items():
        f.histogram("leadlag_time_in_stage_seconds", duration, window, stage)

    for conversion, attribution in metrics.attribution.by_conversion.items():
        f.add("leadlag_conversions", attribution.conversions, window, conversion)
        for model, credits in attribution.credits.items():
            for channel, credit in credits.items():
                f.add("leadlag_attributed_conversions", credit, window, conversion, model, channel)

    movements = metrics.revenue.movements
    add_movements(f, "leadlag_mrr_movement_amount", "leadlag_mrr_movement_accounts", movements, (window,), cur)
    f.add("leadlag_net_new_mrr", metrics.revenue.movements.net_new_mrr, window, cur)

    acquisition = metrics.acquisition
    add_acquisition(f, window, ALL, acquisition, cur)
    for channel, channel_acquisition in acquisition.by_channel.items():
        add_acquisition(f, window, channel, channel_acquisition, cur)
    f.add("leadlag_ltv_to_cac_ratio", acquisition.ltv_to_cac_ratio, window)
    f.add("leadlag_cac_payback_months", acquisition.cac_payback_months, window)
    for campaign, spent in acquisition.by_campaign.items():
        f.add("leadlag_campaign_spend_amount", spent.marketing_spend, window, campaign, cur)
        f.add("leadlag_campaign_new_leads", spent.new_leads, window, campaign)
        f.add("leadlag_campaign_cost_per_lead", spent.cost_per_lead, window, campaign, cur)


def add_traffic(f: _Families, window: str, channel: str, traffic: ChannelTraffic) -> None:
    f.add("leadlag_sessions", traffic.sessions, window, channel)
    f.add("leadlag_unique_visitors", traffic.unique_visitors, window, channel)
    f.add("leadlag_engaged_sessions", traffic.engaged_sessions, window, channel)
    f.add("leadlag_engagement_ratio", traffic.engagement_rate, window, channel)
    f.add("leadlag_bounce_ratio", traffic.bounce_rate, window, channel)
    f.add("leadlag_average_engaged_seconds", traffic.average_engaged_seconds, window, channel)
    f.add("leadlag_pageviews_per_session", traffic.pageviews_per_session, window, channel)
    f.add("leadlag_pricing_page_sessions", traffic.pricing_page_sessions, window, channel)
    f.add("leadlag_new_leads", traffic.new_leads, window, channel)
    f.add("leadlag_visit_to_lead_ratio", traffic.visit_to_lead_rate, window, channel)


def add_funnel(f: _Families, window: str, channel: str, funnel: ChannelFunnel, cur: str) -> None:
    for stage, flow in funnel.stages.items():
        f.add("leadlag_stage_entries", flow.entries, window, channel, stage)
        f.add("leadlag_stage_exits", flow.exits, window, channel, stage)
        f.add("leadlag_stage_became_stale", flow.became_stale, window, channel, stage)
        f.add("leadlag_stage_drop_offs", flow.drop_offs, window, channel, stage)
        f.add("leadlag_stage_drop_off_ratio", flow.drop_off_rate, window, channel, stage)
        f.add("leadlag_contacts_in_stage", flow.in_stage, window, channel, stage)
    for pair, ratio in funnel.period_conversion.items():
        from_stage, to_stage = pair.split("_to_", 1)
        f.add("leadlag_stage_conversion_ratio", ratio, window, channel, from_stage, to_stage)
    f.add("leadlag_form_fills", funnel.form_fills, window, channel)
    f.add("leadlag_opportunities_won", funnel.opportunities_won, window, channel)
    f.add("leadlag_opportunities_lost", funnel.opportunities_lost, window, channel)
    f.add("leadlag_win_ratio", funnel.win_rate, window, channel)
    for stage, duration in funnel.time_to_stage.items():
        f.histogram("leadlag_time_to_stage_seconds", duration, window, channel, stage)
    f.add("leadlag_open_opportunities", funnel.open_opportunities, window, channel)
    f.add("leadlag_pipeline_amount", funnel.pipeline_amount, window, channel, cur)
    f.add("leadlag_weighted_pipeline_amount", funnel.weighted_pipeline, window, channel, cur)
    f.add("leadlag_won_amount", funnel.won_amount, window, channel, cur)
    f.add("leadlag_average_deal_amount", funnel.average_deal_value, window, channel, cur)
    cycle_days = funnel.average_sales_cycle_days
    cycle_seconds = None if cycle_days is None else cycle_days * DAY_SECONDS
    f.add("leadlag_average_sales_cycle_seconds", cycle_seconds, window, channel)
    f.add("leadlag_sales_velocity_per_day", funnel.sales_velocity, window, channel, cur)


def add_movements(
    f: _Families, amount_name: str, accounts_name: str, movements: MrrMovements, labels: tuple[str, ...], cur: str
) -> None:
    """One sample per movement kind: the amount (labels, kind, currency) and the accounts (labels, kind)."""
    for kind, amount_field, accounts_field in MOVEMENT_KINDS:
        amount: Decimal = getattr(movements, amount_field)
        accounts: int = getattr(movements, accounts_field)
        f.add(amount_name, amount, *labels, kind, cur)
        f.add(accounts_name, accounts, *labels, kind)


def add_acquisition(f: _Families, window: str, channel: str, acquisition: ChannelAcquisition, cur: str) -> None:
    f.add("leadlag_spend_amount", acquisition.marketing_spend, window, channel, "marketing", cur)
    f.add("leadlag_spend_amount", acquisition.sales_spend, window, channel, "sales", cur)
    f.add("leadlag_new_customers", acquisition.new_customers, window, channel)
    f.add("leadlag_new_business_mrr", acquisition.new_business_mrr, window, channel, cur)
    f.add("leadlag_cost_per_lead", acquisition.cost_per_lead, window, channel, cur)
    f.add("leadlag_customer_acquisition_cost", acquisition.customer_acquisition_cost, window, channel, cur)
    f.add("leadlag_marketing_roi_ratio", acquisition.marketing_roi, window, channel)


def add_revenue_now(f: _Families, snapshot: Snapshot, cur: str) -> None:
    revenue = snapshot.revenue
    f.add("leadlag_mrr", revenue.mrr, cur)
    f.add("leadlag_arr", revenue.arr, cur)
    f.add("leadlag_paying_customers", revenue.paying_customers)
    f.add("leadlag_average_revenue_per_account", revenue.average_revenue_per_account, cur)
    for plan, mrr in capped_plans(revenue.mrr_by_plan).items():
        f.add("leadlag_plan_mrr", mrr, plan, cur)


def capped_plans(mrr_by_plan: Mapping[str, Decimal], limit: int = PLANS_EXPOSED) -> dict[str, Decimal]:
    """The `limit` plans with the most MRR by name, the rest summed as `other` (a bounded label set)."""
    if len(mrr_by_plan) <= limit:
        return dict(mrr_by_plan)
    ranked = sorted(mrr_by_plan.items(), key=lambda item: (-item[1], item[0]))
    kept = dict(ranked[:limit])
    rest = sum((mrr for _, mrr in ranked[limit:]), Decimal(0))
    kept["other"] = kept.get("other", Decimal(0)) + rest
    return kept


def add_month(f: _Families, month: str, metrics: MonthMetrics, cur: str) -> None:
    revenue = metrics.revenue
    f.add("leadlag_month_start_mrr", revenue.mrr_at_start, month, cur)
    f.add("leadlag_month_end_mrr", revenue.mrr_at_end, month, cur)
    f.add("leadlag_month_start_paying_customers", revenue.paying_customers_at_start, month)
    f.add("leadlag_month_end_paying_customers", revenue.paying_customers_at_end, month)
    movements = revenue.movements
    add_movements(
        f, "leadlag_month_mrr_movement_amount", "leadlag_month_mrr_movement_accounts", movements, (month,), cur
    )
    f.add("leadlag_month_net_new_mrr", revenue.movements.net_new_mrr, month, cur)
    f.add("leadlag_month_churned_customers", revenue.churned_customers, month)
    f.add("leadlag_month_customer_churn_ratio", revenue.customer_churn_rate, month)
    f.add("leadlag_month_gross_mrr_churn_ratio", revenue.gross_mrr_churn_rate, month)
    f.add("leadlag_month_net_mrr_churn_ratio", revenue.net_mrr_churn_rate, month)
    f.add("leadlag_month_net_revenue_retention_ratio", revenue.net_revenue_retention, month)
    f.add("leadlag_month_quick_ratio", revenue.quick_ratio, month)
    f.add("leadlag_month_average_revenue_per_account", revenue.average_revenue_per_account, month, cur)
    f.add("leadlag_month_lifetime_value", revenue.lifetime_value, month, cur)
    f.add("leadlag_month_trailing_customer_churn_ratio", revenue.trailing_customer_churn_rate, month)
    f.add("leadlag_month_lifetime_value_trailing_churn", revenue.lifetime_value_trailing_churn, month, cur)
    f.add("leadlag_month_revenue_growth_ratio", revenue.revenue_growth_rate, month)


def add_all_time(f: _Families, months: list[MonthMetrics], cur: str) -> None:
    """Counters over every calendar month since the first event (`stream.core.alltime`).

    The snapshot has no all-time traffic, so sessions have no counter here
    (`leadlag_events_in_total{topic}` counts site visits as they arrive).
    """
    total = all_time(months)
    if total is None:
        return
    for (channel, stage), entered in total.stage_entries.items():
        f.add("leadlag_contacts_entered_stage_total", entered, _label(channel), stage)
    for channel, count in total.new_leads.items():
        f.add("leadlag_leads_created_total", count, _label(channel))
    for channel, count in total.new_customers.items():
        f.add("leadlag_customers_acquired_total", count, _label(channel))
    for form_type, count in total.form_fills.items():
        f.add("leadlag_forms_filled_total", count, form_type)
    for channel, count in total.opportunities_won.items():
        f.add("leadlag_opportunities_closed_total", count, _label(channel), "won")
        f.add("leadlag_opportunities_closed_total", total.opportunities_lost[channel], _label(channel), "lost")
        f.add("leadlag_deal_amount_won_total", total.won_amount[channel], _label(channel), cur)
    for (channel, category), amount in total.spend.items():
        f.add("leadlag_spent_amount_total", amount, _label(channel), category, cur)
    for kind, amount in total.movement_amount.items():
        f.add("leadlag_mrr_moved_amount_total", amount, kind, cur)
        f.add("leadlag_mrr_movements_total", total.movement_accounts[kind], kind)


def _label(channel: str | None) -> str:
    return ALL if channel is None else channel


def add_runtime(f: _Families, runtime: RuntimeStats) -> None:
    for stage, target in runtime.monthly_targets.items():
        f.add("leadlag_stage_entries_target", target, "month", stage)
    if runtime.pipeline_target is not None:
        f.add("leadlag_weighted_pipeline_target_amount", runtime.pipeline_target, runtime.reporting_currency)
    for verdict in runtime.alerts:
        labels = verdict.labels
        f.add(
            "leadlag_alert_firing", int(verdict.firing), verdict.alert_name, *(labels.get(n, "") for n in ALERT_LABELS)
        )
    for reason, count in sorted(runtime.deadletters.items()):
        f.add("leadlag_deadletters_total", count, reason)
    for topic, count in sorted(runtime.messages_in.items()):
        f.add("leadlag_messages_in_total", count, topic)
    for topic, count in sorted(runtime.events_in.items()):
        f.add("leadlag_events_in_total", count, topic)
    f.add("leadlag_batches_folded_total", runtime.batches)
    f.add("leadlag_rebalances_total", runtime.rebalances)
    for (topic, partition), lag in sorted(runtime.consumer_lag.items()):
        f.add("leadlag_consumer_lag_messages", lag, topic, str(partition))
    f.add("leadlag_recovery_in_progress", int(runtime.recovering))
    f.add("leadlag_partitions_assigned", runtime.partitions_assigned)
    f.add("leadlag_snapshot_computation_seconds", runtime.snapshot_seconds)
    if runtime.started_at:
        f.add("leadlag_worker_start_time_seconds", runtime.started_at)
    f.add("leadlag_ready", int(is_ready(runtime)))
    f.add("leadlag_voice", int(runtime.voice))
    f.add("leadlag_snapshot_failures_total", runtime.snapshot_failures)
    f.add("leadlag_publish_failures_total", runtime.publish_failures)


def is_ready(runtime: RuntimeStats) -> bool:
    """Ready as `/readyz` says: not recovering, and no readiness condition missing."""
    return not runtime.recovering and not runtime.not_ready
