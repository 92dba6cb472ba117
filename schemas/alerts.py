"""The alerts other than divergence, as the worker judges them and publishes them on `leadlag.alerts`.

Each has an equivalent Prometheus alerting rule of the same name (deploy/prometheus/rules), so an
Alertmanager user and a consumer of the topic are told the same thing. Divergence has its own,
richer verdict (`schemas.snapshot.divergence`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.snapshot.divergence import DivergenceAlert

CheckName = Literal[
    "LeadDropOffSpike",
    "StageConversionBelowTrailing",
    "PipelineCoverageLow",
    "MrrChurnSpike",
    "ConsumerLagHigh",
    "DeadLettersArriving",
]


class CheckVerdict(BaseModel):
    """One scope of one alert at one evaluation: whether it fires, and the figures it compared."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alert_name: CheckName
    scope: Literal["overall", "channel", "worker"]
    labels: dict[str, str] = Field(
        description="What the scope is, with the Prometheus rule's label names: channel, stage, from_stage, "
        "to_stage, topic or reason."
    )
    firing: bool
    value: float | None = Field(default=None, description="The figure judged (a ratio, an amount, a count).")
    limit: float | None = Field(default=None, description="What it was compared with, once computed.")
    figures: dict[str, float | None] = Field(description="Every input of the decision, by name.")
    reason: str = Field(description="Why it fires, or why it does not.")

    @property
    def key(self) -> str:
        """The scope's identity across evaluations, e.g. `LeadDropOffSpike:channel=paid,stage=mql`."""
        labels = ",".join(f"{name}={value}" for name, value in sorted(self.labels.items()))
        return f"{self.alert_name}:{labels}" if labels else self.alert_name


class CheckAlert(BaseModel):
    """An event on `leadlag.alerts`: a scope of one of these alerts started or stopped firing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alert_id: str = Field(description="Stable for the same transition, so a re-published alert is recognisable.")
    alert_name: CheckName
    state: Literal["firing", "resolved"]
    key: str
    at: AwareDatetime = Field(description="Event time for the data alerts; wall time for the worker's own.")
    verdict: CheckVerdict


AlertEvent = Annotated[DivergenceAlert | CheckAlert, Field(discriminator="alert_name")]
"""Any message on `leadlag.alerts`, told apart by `alert_name`."""
