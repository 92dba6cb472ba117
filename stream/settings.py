"""Settings from the environment (prefix `LEADLAG_`), validated once at start-up.

A bad value stops the program with a message that names the variable and
says how to fix it (`SettingsError`), instead of a traceback later.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.deadletter import DEFAULT_ORIGINAL_BYTES, MAX_ORIGINAL_BYTES
from schemas.events import Stage, Timestamp
from schemas.parsing import EARLIEST_EVENT_TIME, InputLimits
from stream.core.policy import (
    DEFAULT_STAGE_PROBABILITY,
    DEFAULT_STALENESS_DAYS,
    AlertPolicy,
    DivergencePolicy,
    Policy,
)
from stream.core.windows import DAY_MS, HOUR_MS

ENV_PREFIX = "LEADLAG_"


class SettingsError(ValueError):
    """A setting has a value leadlag cannot use; the message names it and the fix."""


def _parse_pairs(raw: str, setting: str, example: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{item!r} is not KEY=VALUE; write e.g. {ENV_PREFIX}{setting.upper()}='{example}'")
        pairs[key.strip()] = value.strip()
    return pairs


def _decimal(value: str, what: str) -> Decimal:
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{what}: {value!r} is not a number") from None
    if not number.is_finite() or number < 0:
        raise ValueError(f"{what}: {value!r} must be a finite number ≥ 0")
    return number


class Settings(BaseSettings):
    """Everything a user can set; each field is `LEADLAG_<NAME>` in the environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    reporting_currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"
    fx_rates: Annotated[dict[str, Decimal], NoDecode] = Field(
        default_factory=dict,
        description="Comma-separated CUR=RATE, 1 CUR = RATE reporting units, e.g. 'EUR=1.08,GBP=1.27'.",
    )
    staleness_days: Annotated[dict[Stage, int], NoDecode] = Field(
        default_factory=lambda: dict(DEFAULT_STALENESS_DAYS),
        description="Days a contact may sit in a stage before it counts as dropped off, e.g. 'lead=30,opportunity=90'.",
    )
    stage_probability: Annotated[dict[Stage, Decimal], NoDecode] = Field(
        default_factory=lambda: dict(DEFAULT_STAGE_PROBABILITY),
        description="Win probability per open stage for the weighted pipeline, e.g. 'sql=0.1,opportunity=0.3'.",
    )
    grace_hours: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="Events older than the newest seen minus this are late (dead letter)."
    )
    campaign_top_n: Annotated[int, Field(ge=1, le=1000)] = 20
    dedupe_horizon_days: Annotated[float, Field(gt=0, le=366)] = Field(
        default=7,
        description="An entity remembers the event ids of this many days (event time) before its newest event; "
        "a duplicate arriving later than that is counted again (docs/architecture.md, Duplicates).",
    )
    attribution_lookback_days: Annotated[float, Field(gt=0, le=730)] = Field(
        default=90, description="Touches older than this before a conversion earn it no credit and are not kept."
    )
    max_label_values: Annotated[int, Field(ge=10, le=100_000)] = Field(
        default=500,
        description="Distinct campaign (or plan) names kept per metric and partition; later ones count as 'other'.",
    )
    snapshot_months: Annotated[int, Field(ge=1, le=240)] = Field(
        default=24, description="The snapshot and its views list at most this many calendar months, the latest."
    )
    max_touches: Annotated[int, Field(ge=2, le=10_000)] = Field(
        default=100, description="At most this many touches kept per contact for attribution (the first always)."
    )
    divergence_window_hours: Annotated[float, Field(gt=0)] = 24
    divergence_baseline: Literal["previous", "week_ago"] = "previous"
    divergence_sessions_rise: Annotated[float, Field(gt=0)] = 0.20
    divergence_conversion_fall: Annotated[float, Field(gt=0, lt=1)] = 0.20
    divergence_p_value: Annotated[float, Field(gt=0, lt=1)] = 0.05
    divergence_min_sessions: Annotated[int, Field(ge=1)] = 200
    divergence_min_leads: Annotated[int, Field(ge=0)] = 10
    monthly_targets: Annotated[dict[Stage, int], NoDecode] = Field(
        default_factory=dict,
        description="Stage entries to reach each calendar month (OKRs), drawn against actuals on the funnel "
        "dashboard, e.g. 'lead=400,mql=150,sql=60,opportunity=30,customer=12'.",
    )
    pipeline_target: Annotated[Decimal, Field(gt=0)] | None = Field(
        default=None,
        description="Weighted open pipeline to keep, in the reporting currency; PipelineCoverageLow fires below it.",
    )
    alert_for_seconds: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=lambda: {name: ms // 1000 for name, ms in AlertPolicy().hold_ms.items()},
        description="How long an alert's condition must hold before the worker fires it (the rules' `for:`), "
        "e.g. 'ConsumerLagHigh=600,DeadLettersArriving=0'.",
    )

    # -- input limits (README, "Input events") -----------------------------------------
    min_event_time: Timestamp = Field(
        default=EARLIEST_EVENT_TIME,
        description="Events dated before this instant (RFC 3339) are dead letters with a 'too old:' reason.",
    )
    max_future_hours: Annotated[float, Field(ge=0, le=87_600)] = Field(
        default=24,
        description="Events dated more than this many hours after the wall clock are dead letters ('future:'); "
        "a live simulation running faster than real time needs more.",
    )
    max_message_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = Field(
        default=1024 * 1024, description="A larger input message is one dead letter ('too large')."
    )
    max_envelope_events: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=10_000, description="An envelope of more events is one dead letter ('too large')."
    )
    deadletter_max_bytes: Annotated[int, Field(ge=1024, le=MAX_ORIGINAL_BYTES)] = Field(
        default=DEFAULT_ORIGINAL_BYTES,
        description="Bytes of the original a dead letter keeps (the rest is cut, its length recorded), so every "
        "dead letter fits a broker's default 1 MB message limit.",
    )

    # -- Kafka and the worker ---------------------------------------------------------
    broker: str = Field(
        default="",
        description=(
            "Kafka bootstrap servers, e.g. 'kafka://broker-1:9092;kafka://broker-2:9092' or 'host:9092'. "
            "Empty: commands that can (demo, bench) start the embedded broker."
        ),
    )
    broker_kind: Literal["kafka", "embedded"] = Field(
        default="kafka",
        description="'embedded' turns on the workarounds for the embedded Tansu broker; set by leadlag itself.",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$")
    partitions: Annotated[int, Field(ge=1, le=1024)] = 4
    replication_factor: Annotated[int, Field(ge=1, le=16)] = 1
    app_id: str = Field(default="leadlag", pattern=r"^[A-Za-z0-9._-]+$")
    store: Literal["rocksdb", "memory"] = "rocksdb"
    data_dir: Path = Path("leadlag-data")
    web_host: str = "127.0.0.1"
    web_port: Annotated[int, Field(ge=1, le=65535)] = 6066
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    snapshot_interval_seconds: Annotated[float, Field(gt=0)] = 10.0
    clock: Literal["event", "wall"] = Field(
        default="event",
        description="'event': windows end at the newest event time seen; 'wall': at the current time.",
    )

    # -- HTTP and outputs --------------------------------------------------------------
    api_token: SecretStr | None = Field(
        default=None,
        description="When set, the JSON views and /metrics require 'Authorization: Bearer <token>' "
        "(/healthz and /readyz stay open for probes). Off by default: the worker binds loopback.",
    )
    output_message_bytes: Annotated[int, Field(ge=64 * 1024, le=4 * 1024 * 1024)] = Field(
        default=1_000_000,
        description="The largest snapshot or alert message the worker publishes; a larger one is split by key "
        "or capped. The default fits Kafka's default message.max.bytes (1 MiB).",
    )
    send_attempts: Annotated[int, Field(ge=1, le=100)] = Field(
        default=6,
        description="Tries of an output send (dead letters, routed items, snapshots) before the worker stops "
        "with a clear message; the waits between tries double from 0.5 s.",
    )

    @field_validator("min_event_time")
    @classmethod
    def _after_1970(cls, value: datetime) -> datetime:
        if value.timestamp() < 0:
            raise ValueError("must be 1970-01-01T00:00:00Z or later")
        return value

    @field_validator("fx_rates", mode="before")
    @classmethod
    def _fx_rates(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        rates: dict[str, Decimal] = {}
        for code, rate in _parse_pairs(value, "fx_rates", "EUR=1.08,GBP=1.27").items():
            if len(code) != 3 or not code.isalpha() or not code.isupper():
                raise ValueError(f"{code!r} is not an ISO 4217 code like EUR")
            rates[code] = _decimal(rate, code)
        return rates

    @field_validator("staleness_days", "stage_probability", mode="before")
    @classmethod
    def _stage_pairs(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            return value
        defaults = DEFAULT_STALENESS_DAYS if info.field_name == "staleness_days" else DEFAULT_STAGE_PROBABILITY
        example = "lead=30,opportunity=90" if info.field_name == "staleness_days" else "opportunity=0.3"
        # a stage not named keeps its default
        merged: dict[str, object] = {str(stage): default for stage, default in defaults.items()}
        merged.update(_parse_pairs(value, str(info.field_name), example))
        return merged

    @field_validator("monthly_targets", mode="before")
    @classmethod
    def _targets(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        return _parse_pairs(value, "monthly_targets", "lead=400,customer=12")

    @field_validator("alert_for_seconds", mode="before")
    @classmethod
    def _alert_for(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        holds = {name: ms // 1000 for name, ms in AlertPolicy().hold_ms.items()}
        for name, seconds in _parse_pairs(value, "alert_for_seconds", "DeadLettersArriving=300").items():
            if name not in holds:
                raise ValueError(f"{name!r} is not an alert; use one of {', '.join(sorted(holds))}")
            if not seconds.isdigit():
                raise ValueError(f"{name}: {seconds!r} is not a whole number of seconds")
            holds[name] = int(seconds)
        return holds

    def policy(self) -> Policy:
        return Policy(
            reporting_currency=self.reporting_currency,
            fx_rates=dict(self.fx_rates),
            staleness_days=dict(self.staleness_days),
            stage_probability=dict(self.stage_probability),
            grace_ms=None if self.grace_hours is None else int(self.grace_hours * HOUR_MS),
            campaign_top_n=self.campaign_top_n,
            dedupe_horizon_ms=int(self.dedupe_horizon_days * DAY_MS),
            attribution_lookback_ms=int(self.attribution_lookback_days * DAY_MS),
            max_touches=self.max_touches,
            snapshot_months=self.snapshot_months,
            max_label_values=self.max_label_values,
            divergence=DivergencePolicy(
                window_ms=int(self.divergence_window_hours * HOUR_MS),
                baseline=self.divergence_baseline,
                sessions_rise=self.divergence_sessions_rise,
                conversion_fall=self.divergence_conversion_fall,
                p_value=self.divergence_p_value,
                min_sessions=self.divergence_min_sessions,
                min_leads=self.divergence_min_leads,
            ),
            alerts=AlertPolicy(
                pipeline_target=self.pipeline_target,
                hold_ms={name: seconds * 1000 for name, seconds in self.alert_for_seconds.items()},
            ),
            limits=InputLimits(
                earliest_ms=int(self.min_event_time.timestamp() * 1000),
                max_future_ms=int(self.max_future_hours * HOUR_MS),
                max_message_bytes=self.max_message_bytes,
                max_envelope_events=self.max_envelope_events,
                deadletter_max_bytes=self.deadletter_max_bytes,
            ),
        )


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment plus explicit overrides (CLI options); raises `SettingsError`."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            name = str(error["loc"][0]) if error["loc"] else "settings"
            problems.append(f"{ENV_PREFIX}{name.upper()}: {error['msg']} (got {error.get('input')!r})")
        raise SettingsError("invalid setting: " + "; ".join(problems)) from None
