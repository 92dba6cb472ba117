"""The dead letter: input leadlag could not count, kept whole with the reason (topic `leadlag.deadletter`)."""

from __future__ import annotations

import base64
from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class DeadLetter(BaseModel):
    """One bad message, or one bad event of an envelope, with where it came from and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reason: str = Field(description="Human-readable: what is wrong and, where possible, how to fix it.")
    received_at: AwareDatetime
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    file: str | None = Field(default=None, description="Replay input, instead of topic/partition/offset.")
    line: int | None = None
    envelope_index: int | None = Field(default=None, description="Position of the bad event inside an envelope.")
    original_base64: str = Field(description="The original message bytes, base64.")
    original_text: str | None = Field(default=None, description="The original bytes as UTF-8, when they are.")

    @classmethod
    def of(cls, original: bytes, reason: str, received_at: datetime, **origin: str | int | None) -> DeadLetter:
        try:
            text: str | None = original.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        return cls(
            reason=reason,
            received_at=received_at,
            original_base64=base64.b64encode(original).decode("ascii"),
            original_text=text,
            **origin,
        )
