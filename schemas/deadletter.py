"""The dead letter: input leadlag could not count, with the reason (topic `leadlag.deadletter`).

A dead letter always fits a default Kafka broker's message size (1 MB): it
keeps at most `max_original_bytes` of the original (the rest is cut, and its
length recorded), a reason of at most `MAX_REASON_CHARS`, and the original as
text only when that still fits (`DEADLETTER_MESSAGE_LIMIT`). Its key names
the input message and the event's position in it (`deadletter_key`), so a
dead letter sent again after a crash is recognised as the same one.
"""

from __future__ import annotations

import base64
from datetime import datetime

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

DEADLETTER_MESSAGE_LIMIT = 1_000_000
"""Bytes of a whole dead letter at most: under Kafka's default `message.max.bytes` (1,048,588) with room to spare."""
MAX_ORIGINAL_BYTES = 700_000
"""The largest `max_original_bytes` allowed: its base64 (933,336 bytes), a cut reason and the other fields fit."""
DEFAULT_ORIGINAL_BYTES = 512 * 1024
MAX_REASON_CHARS = 2_000
"""A longer reason is cut (even escaped, it stays a few KB)."""


def deadletter_key(topic: str, partition: int, offset: int, index: int | None = None) -> str:
    """`topic/partition/offset`, and `/index` for one event of an envelope: the same input gives the same key."""
    return f"{topic}/{partition}/{offset}" if index is None else f"{topic}/{partition}/{offset}/{index}"


class DeadLetter(BaseModel):
    """One bad message, or one bad event of an envelope, with where it came from and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str | None = Field(
        default=None,
        description="topic/partition/offset[/index] of the input, also the message key: a dead letter sent again "
        "after a crash has the same key.",
    )
    reason: str = Field(description="Human-readable: what is wrong and, where possible, how to fix it.")
    received_at: AwareDatetime
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    file: str | None = Field(default=None, description="Replay input, instead of topic/partition/offset.")
    line: int | None = None
    envelope_index: int | None = Field(default=None, description="Position of the bad event inside an envelope.")
    original_length: int = Field(default=0, description="Bytes of the original message (or event).")
    truncated: bool = Field(
        default=False, description="The original was longer than LEADLAG_DEADLETTER_MAX_BYTES: only its start is kept."
    )
    original_base64: str = Field(description="The original bytes (their start when truncated), base64.")
    original_text: str | None = Field(
        default=None, description="The same bytes as UTF-8, when they are, and when the dead letter still fits."
    )

    @classmethod
    def of(
        cls,
        original: bytes,
        reason: str,
        received_at: datetime,
        max_original_bytes: int = DEFAULT_ORIGINAL_BYTES,
        **origin: str | int | None,
    ) -> DeadLetter:
        """The dead letter of `original`, cut to fit (see the module docstring)."""
        kept = original[: min(max_original_bytes, MAX_ORIGINAL_BYTES)]
        truncated = len(kept) < len(original)
        text = _utf8(kept, truncated)
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[: MAX_REASON_CHARS - 1] + "…"
        topic, partition, offset = origin.get("topic"), origin.get("partition"), origin.get("offset")
        index = origin.get("envelope_index")
        key = (
            deadletter_key(topic, partition, offset, index if isinstance(index, int) else None)
            if isinstance(topic, str) and isinstance(partition, int) and isinstance(offset, int)
            else None
        )
        letter = cls(
            key=key,
            reason=reason,
            received_at=received_at,
            original_length=len(original),
            truncated=truncated,
            original_base64=base64.b64encode(kept).decode("ascii"),
            original_text=text,
            **origin,
        )
        # escaping can make the text up to 6x its bytes: keep it only when the whole letter still fits
        estimate = 4 * len(kept) // 3 + 6 * (len(text or "") + len(reason)) + 2_000
        if (
            text is not None
            and estimate > DEADLETTER_MESSAGE_LIMIT
            and len(letter.model_dump_json().encode()) > DEADLETTER_MESSAGE_LIMIT
        ):
            letter = letter.model_copy(update={"original_text": None})
        return letter


def _utf8(kept: bytes, truncated: bool) -> str | None:
    """`kept` as text when it is UTF-8 (a cut may split the last character: up to 3 bytes are dropped then)."""
    for end in range(len(kept), max(len(kept) - 4, -1) if truncated else len(kept) - 1, -1):
        try:
            return kept[:end].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


def deadletter_key_of(letter: bytes) -> bytes | None:
    """The message key of a dead letter's JSON (its `key`), or None when it has none."""
    try:
        key = orjson.loads(letter).get("key")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return key.encode() if isinstance(key, str) else None
