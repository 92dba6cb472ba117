"""The choices a metric depends on (README, "Configuration"), and money conversion.

A plain frozen dataclass, so reducers stay free of settings machinery; the
shell (CLI, worker) builds one from its validated settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

from schemas.events import Stage
from schemas.parsing import InputLimits
from stream.core.windows import DAY_MS, MINUTE_MS


class UnknownCurrency(ValueError):
    """An amount in a currency with no configured rate: bad input, not a crash."""

    def __init__(self, currency: str, reporting: str) -> None:
        super().__init__(
            f"unknown currency {currency!r}: no rate to {reporting}; "
            f"add it to LEADLAG_FX_RATES (e.g. '{currency}=1.08', meaning 1 {currency} = 1.08 {reporting})"
        )
        self.currency = currency


DEFAULT_STALENESS_DAYS: dict[Stage, int] = {
    Stage.LEAD: 30,
    Stage.MQL: 30,
    Stage.SQL: 30,
    Stage.OPPORTUNITY: 90,
}

DEFAULT_STAGE_PROBABILITY: dict[Stage, Decimal] = {
    Stage.SQL: Decimal("0.1"),
    Stage.OPPORTUNITY: Decimal("0.3"),
}


@dataclass(frozen=True, slots=True)
class DivergencePolicy:
    """When "traffic up, conversion down" is an alert (README, "The snapshot")."""

    window_ms: int = DAY_MS
    baseline: str = "previous"
    """`previous`: the same length just before; `week_ago`: the same window 7 days earlier."""
    sessions_rise: float = 0.20
    conversion_fall: float = 0.20
    p_value: float = 0.05
    min_sessions: int = 200
    """Minimum sessions in each of the two windows."""
    min_leads: int = 10
    """Minimum leads in the baseline window (the fall must be measurable)."""


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """The thresholds of the alerts besides divergence; each matches its Prometheus rule's constant."""

    drop_off_factor: Fraction = Fraction(3, 2)
    """LeadDropOffSpike: the 24h drop-off ratio above 1.5x the 7d one ..."""
    drop_off_rise: Fraction = Fraction(1, 10)
    """... and at least 10 points above it ..."""
    drop_off_min_entries: int = 20
    """... with at least 20 contacts entering the stage in the 24h."""
    conversion_factor: Fraction = Fraction(3, 4)
    """StageConversionBelowTrailing: the 24h period conversion below 75 % of the 7d one ..."""
    conversion_min_entries: int = 20
    """... with at least 20 entries into the from-stage in the 24h."""
    churn_ceiling: Fraction = Fraction(5, 100)
    """MrrChurnSpike: this month's gross MRR churn so far above 5 % ..."""
    churn_factor: Fraction = Fraction(3, 2)
    """... or above 1.5x the mean of the exposed months ..."""
    churn_floor: Fraction = Fraction(2, 100)
    """... and above 2 %, so a tiny base does not page."""
    churn_months: int = 12
    """The months the mean covers (this one included), as many as /metrics exposes."""
    pipeline_target: Decimal | None = None
    """PipelineCoverageLow: weighted open pipeline below this (reporting currency); None: not judged."""
    max_consumer_lag: int = 10_000
    """ConsumerLagHigh: messages behind the end of an input topic, all partitions."""
    dead_letter_window_ms: int = 15 * MINUTE_MS
    """DeadLettersArriving: any dead letter of a reason within this long."""
    hold_ms: dict[str, int] = field(
        default_factory=lambda: {
            "LeadDropOffSpike": 30 * MINUTE_MS,
            "StageConversionBelowTrailing": 60 * MINUTE_MS,
            "PipelineCoverageLow": 6 * 60 * MINUTE_MS,
            "MrrChurnSpike": 60 * MINUTE_MS,
            "ConsumerLagHigh": 10 * MINUTE_MS,
            "DeadLettersArriving": 5 * MINUTE_MS,
        }
    )
    """How long (wall time) a condition must hold before it fires: the rules' `for:`."""


@dataclass(frozen=True, slots=True)
class Policy:
    reporting_currency: str = "USD"
    fx_rates: dict[str, Decimal] = field(default_factory=dict)
    """1 unit of the key currency = value units of the reporting currency."""
    staleness_days: dict[Stage, int] = field(default_factory=lambda: dict(DEFAULT_STALENESS_DAYS))
    stage_probability: dict[Stage, Decimal] = field(default_factory=lambda: dict(DEFAULT_STAGE_PROBABILITY))
    grace_ms: int | None = None
    """Events older than the newest seen minus this are late (dead letter); None accepts any."""
    campaign_top_n: int = 20
    dedupe_horizon_ms: int = 7 * DAY_MS
    """Event ids are remembered this long (event time) after an entity's newest event (stream.core.dedupe)."""
    attribution_lookback_ms: int = 90 * DAY_MS
    """Touches older than this before a conversion neither earn credit nor are kept for it."""
    max_label_values: int = 500
    """Distinct campaign (or plan) names per metric family and partition; later ones are counted as `other`."""
    snapshot_months: int = 24
    """The snapshot lists at most this many calendar months (the latest); older ones stay in the totals."""
    max_touches: int = 100
    """At most this many touches kept per contact (the first touch always among them)."""
    divergence: DivergencePolicy = field(default_factory=DivergencePolicy)
    alerts: AlertPolicy = field(default_factory=AlertPolicy)
    limits: InputLimits = field(default_factory=InputLimits)
    """What input is accepted at all: event time, message size, envelope length (README, "Input events")."""

    def to_reporting(self, amount: Decimal, currency: str | None) -> Decimal:
        """`amount` in the reporting currency; raises `UnknownCurrency` when no rate is set."""
        if currency is None or currency == self.reporting_currency:
            return amount
        rate = self.fx_rates.get(currency)
        if rate is None:
            raise UnknownCurrency(currency, self.reporting_currency)
        return amount * rate

    def staleness_ms(self, stage: Stage) -> int | None:
        days = self.staleness_days.get(stage)
        return None if days is None else days * DAY_MS
