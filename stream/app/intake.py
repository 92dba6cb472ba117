"""Intake: one input message in, its events judged and placed, bad input turned into dead letters.

A message is one event or an envelope (a JSON array of events). Each event is
validated on its own (`schemas.parsing`); invalid ones, events in a currency
with no rate and events later than the grace period become dead letters with
the original bytes and a reason a person can act on; the valid ones come out
with the partition of their entity (`stream.app.placement`). Whether an event
is then folded at once or routed through `leadlag.entities` is the engine's
call (it knows which partitions this worker owns). Pure apart from logging:
nothing here talks to Kafka.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import orjson
from pydantic import BaseModel

from schemas.deadletter import DeadLetter
from schemas.events import Event
from schemas.parsing import InvalidEvent, parse_message
from stream.app.placement import entity_partition
from stream.core.ledger import late_reason
from stream.core.links import Item, entity_of
from stream.core.policy import Policy, UnknownCurrency

log = logging.getLogger("leadlag.intake")

DEADLETTER_TEXT_LIMIT = 64 * 1024
"""Original bytes are always kept as base64; the UTF-8 copy only for messages up to this size."""
ENVELOPE_START = re.compile(rb"\s*\[")
"""A message that opens a JSON array is an envelope (matched in place: a message can be megabytes)."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a message was read: what a dead letter names."""

    topic: str
    partition: int
    offset: int


@dataclass(slots=True)
class Judged:
    """One message's outcome: valid events with their entity's partition, dead letters, counts."""

    events: list[tuple[int, Event]] = field(default_factory=list)
    dead_letters: list[tuple[str, bytes]] = field(default_factory=list)
    """(reason kind, the dead letter's JSON)."""
    read: int = 0
    """Events the message held (an envelope counts each)."""
    invalid: int = 0
    rejected: int = 0


def dead_letter_reason_kind(reason: str) -> str:
    """A bounded label for the dead-letter counter, from the human-readable reason."""
    for prefix, kind in (
        ("not JSON", "not_json"),
        ("not a JSON object", "not_object"),
        ("empty envelope", "empty_envelope"),
        ("late:", "late"),
        ("unknown currency", "unknown_currency"),
        ("internal error", "internal_error"),
        ("too large", "too_large"),
    ):
        if reason.startswith(prefix):
            return kind
    return "invalid"


def dead_letter(original: bytes, reason: str, origin: Origin, index: int | None) -> bytes:
    """The dead letter of `original` (a message, or one event of an envelope at `index`), as JSON; logged."""
    letter = DeadLetter.of(
        original,
        reason,
        datetime.now(tz=UTC),
        topic=origin.topic,
        partition=origin.partition,
        offset=origin.offset,
        envelope_index=index,
    )
    if letter.original_text is not None and len(original) > DEADLETTER_TEXT_LIMIT:
        letter = letter.model_copy(update={"original_text": None})
    log.warning(
        "dead letter: %s (topic %s partition %s offset %s%s)",
        reason,
        origin.topic,
        origin.partition,
        origin.offset,
        "" if index is None else f", event {index} of the envelope",
    )
    return letter.model_dump_json().encode()


def item_json(item: Item) -> bytes:
    """An item as JSON bytes, for the dead letter of an event judged after parsing."""
    if isinstance(item, BaseModel):
        return item.model_dump_json().encode()
    return orjson.dumps(item, default=str)


class Intake:
    """Judges input messages against the policy; `partitions` is the partition count of every leadlag topic."""

    __slots__ = ("convertible", "partitions", "policy")

    def __init__(self, policy: Policy, partitions: int) -> None:
        self.policy = policy
        self.partitions = partitions
        self.convertible: set[str] = set()
        """Currencies the policy has a rate for, as found so far."""

    def judge(self, payload: bytes, origin: Origin, newest_ms: int | None) -> Judged:
        """Every event of one message; `newest_ms` is the newest event time folded (for the grace period)."""
        parsed = parse_message(payload)
        judged = Judged(read=len(parsed))
        # the whole message is one event unless it was a JSON array (an envelope) that could be read
        whole = ENVELOPE_START.match(payload) is None or (
            len(parsed) == 1 and isinstance(parsed[0], InvalidEvent) and parsed[0].index is None
        )
        partitions = self.partitions
        for index, item in enumerate(parsed):
            if isinstance(item, InvalidEvent):
                judged.invalid += 1
                original = payload if whole else orjson.dumps(item.raw)
                judged.dead_letters.append(
                    (dead_letter_reason_kind(item.reason), dead_letter(original, item.reason, origin, item.index))
                )
                continue
            reason = self.rejection(item, newest_ms)
            if reason is not None:
                judged.rejected += 1
                original = payload if whole else item_json(item)
                letter = dead_letter(original, reason, origin, None if whole else index)
                judged.dead_letters.append((dead_letter_reason_kind(reason), letter))
                continue
            kind, key = entity_of(item)
            judged.events.append((entity_partition(kind, key, partitions), item))
        return judged

    def rejection(self, item: Event, newest_ms: int | None) -> str | None:
        """Why valid JSON cannot be counted: a currency with no rate, or older than the newest event seen
        (`newest_ms`) by more than the grace period; None when it can."""
        currency = item.__dict__.get("currency")  # not getattr: a missing pydantic attribute is slow to miss
        if currency is not None and currency not in self.convertible:
            try:
                self.policy.to_reporting(Decimal(0), currency)
            except UnknownCurrency as exc:
                return str(exc)
            self.convertible.add(currency)
        if newest_ms is None:
            return None
        return late_reason(item, newest_ms, self.policy)
