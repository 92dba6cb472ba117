"""The "traffic up, conversion down" verdicts and the alert events they cause (stream/core/divergence.py).

A verdict is computed for every scope (overall and each channel) at each
evaluation; an alert is published on `leadlag.alerts` only when a scope's
verdict changes from not firing to firing, or back.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

ALERT_NAME: Final = "TrafficUpConversionDown"


class DivergenceVerdict(BaseModel):
    """One scope's comparison of a window with its baseline, and whether it is an alert."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scope: Literal["overall", "channel"]
    channel: str | None = None
    """The channel for scope `channel`; None for `overall`."""
    window_start: AwareDatetime
    window_end: AwareDatetime
    """Exclusive."""
    baseline_start: AwareDatetime
    baseline_end: AwareDatetime
    """Exclusive."""
    sessions_now: int
    sessions_baseline: int
    leads_now: int
    leads_baseline: int
    conversion_now: float | None = None
    """Visit→lead conversion in the window; absent when it had no sessions."""
    conversion_baseline: float | None = None
    sessions_change: float | None = None
    """Relative: 0.25 means sessions rose by 25 %; absent when the baseline had no sessions."""
    conversion_change: float | None = None
    """Relative: -0.4 means conversion fell by 40 %; absent when either conversion is absent or zero."""
    z: float | None = None
    p_value: float | None = None
    """One-sided (conversion fell); absent when the test is undefined."""
    firing: bool
    reason: str
    """Why it fires, or every condition that keeps it from firing."""

    @property
    def key(self) -> str:
        """The scope's identity across evaluations: `overall` or `channel:<name>`."""
        return "overall" if self.scope == "overall" else f"channel:{self.channel}"


class DivergenceAlert(BaseModel):
    """An event on `leadlag.alerts`: a scope's verdict started or stopped firing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alert_id: str
    """Stable for the same transition, so a re-published alert is recognisably the same."""
    alert_name: Literal["TrafficUpConversionDown"] = "TrafficUpConversionDown"
    state: Literal["firing", "resolved"]
    key: str
    at: AwareDatetime
    verdict: DivergenceVerdict
    """The numbers that caused the transition."""
