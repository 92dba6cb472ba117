"""Attribution read models: channel credit of a window's conversions, by every model side by side."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ConversionAttribution(BaseModel):
    """One kind of conversion (lead, opportunity or customer) in a window."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    conversions: int = Field(description="Conversions whose moment falls in the window.")
    credits: dict[str, dict[str, float]] = Field(
        description=(
            "Model (first_touch, last_touch, linear, u_shaped, w_shaped, full_path, time_decay) -> "
            "channel -> credit; each model's credits sum to `conversions`. "
            "`unknown` holds conversions with no touchpoint."
        )
    )


class AttributionWindow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    by_conversion: dict[str, ConversionAttribution] = Field(
        description="Keyed by conversion: lead, opportunity, customer."
    )
