"""Intake: one input message in, its events judged and placed, bad input turned into dead letters.

A message is one event or an envelope (a JSON array of events). Each event is
validated on its own (`schemas.parsing`); invalid ones, events in a currency
with no rate and events later than the grace period become dead letters with
the original bytes and a reason a person can act on; the valid ones come out
with the partition of their entity (`stream.app.placement`). Whether an event
is then folded at once or routed through `leadlag.entities` is the engine's
call (it knows which partitions this worker owns). Pure apart from logging:
nothing here talks to Kafka, and "now" comes from the caller.

A message that cannot be read as a whole (too large, not JSON, a repeated key)
is one dead letter, however many events it claims to hold. Warnings about dead
letters are rate-limited (`DeadLetterLog`): one message prints at most a few
lines, a flood of bad messages a few lines per interval and a count of the rest.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import orjson
from pydantic import BaseModel

from schemas.deadletter import DEFAULT_ORIGINAL_BYTES, DeadLetter
from schemas.events import Event
from schemas.parsing import InvalidEvent, parse_message, printable
from stream.app.placement import entity_partition
from stream.core.ledger import late_reason
from stream.core.links import Item, entity_of
from stream.core.policy import Policy, UnknownCurrency

log = logging.getLogger("leadlag.intake")

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
        ("future:", "future"),
        ("too old:", "too_old"),
        ("duplicate key", "duplicate_key"),
        ("unknown currency", "unknown_currency"),
        ("internal error", "internal_error"),
        ("too large", "too_large"),
    ):
        if reason.startswith(prefix):
            return kind
    return "invalid"


class DeadLetterLog:
    """Warning lines about dead letters: at most `per_message` for one message and `per_interval` every
    `interval_seconds`; what is left out is counted and said in one line (per message, and per interval)."""

    __slots__ = ("clock", "interval_seconds", "logged", "per_interval", "per_message", "started", "suppressed")

    def __init__(
        self,
        per_message: int = 3,
        per_interval: int = 20,
        interval_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_message = per_message
        self.per_interval = per_interval
        self.interval_seconds = interval_seconds
        self.clock = clock
        self.started = clock()
        self.logged = 0
        self.suppressed = 0

    def message(self, origin: Origin, letters: list[tuple[str, int | None]]) -> None:
        """Log the dead letters of one message: (reason, envelope index) each."""
        now = self.clock()
        if now - self.started >= self.interval_seconds:
            if self.suppressed:
                log.warning(
                    "%d more dead letters in the last %.0f s not logged (see leadlag_deadletters_total)",
                    self.suppressed,
                    now - self.started,
                )
            self.started, self.logged, self.suppressed = now, 0, 0
        place = f"topic {printable(origin.topic, 300)} partition {origin.partition} offset {origin.offset}"
        shown = 0
        for reason, index in letters:
            if shown >= self.per_message or self.logged >= self.per_interval:
                break
            event = "" if index is None else f", event {index} of the envelope"
            log.warning("dead letter: %s (%s%s)", printable(reason), place, event)
            shown += 1
            self.logged += 1
        rest = len(letters) - shown
        if rest and self.logged < self.per_interval:
            log.warning("%d more dead letters from the same message (%s)", rest, place)
            self.logged += 1
        elif rest:
            self.suppressed += rest


DEADLETTER_LOG = DeadLetterLog()
"""The process's dead-letter warnings, shared by every caller of `dead_letter`."""


def dead_letter(
    original: bytes,
    reason: str,
    origin: Origin,
    index: int | None,
    max_original_bytes: int = DEFAULT_ORIGINAL_BYTES,
    logged: bool = True,
) -> bytes:
    """The dead letter of `original` (a message, or one event of an envelope at `index`), as JSON that always fits
    a default broker; logged (rate-limited) unless `logged` is False (the caller then logs it with its message)."""
    letter = DeadLetter.of(
        original,
        reason,
        datetime.now(tz=UTC),
        max_original_bytes,
        topic=origin.topic,
        partition=origin.partition,
        offset=origin.offset,
        envelope_index=index,
    )
    if logged:
        DEADLETTER_LOG.message(origin, [(reason, index)])
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

    def judge(self, payload: bytes, origin: Origin, newest_ms: int | None, now_ms: int) -> Judged:
        """Every event of one message; `newest_ms` is the newest event time folded (for the grace period),
        `now_ms` the wall clock (no event may be dated further past it than the limits allow)."""
        limits = self.policy.limits
        parsed = parse_message(payload, now_ms=now_ms, limits=limits)
        judged = Judged(read=len(parsed))
        keep = limits.deadletter_max_bytes
        reasons: list[tuple[str, int | None]] = []
        # the whole message is one event unless it was a JSON array (an envelope) that could be read
        whole = ENVELOPE_START.match(payload) is None or (
            len(parsed) == 1 and isinstance(parsed[0], InvalidEvent) and parsed[0].index is None
        )
        partitions = self.partitions
        for index, item in enumerate(parsed):
            if isinstance(item, InvalidEvent):
                judged.invalid += 1
                original = payload if whole else orjson.dumps(item.raw)
                letter = dead_letter(original, item.reason, origin, item.index, keep, logged=False)
                judged.dead_letters.append((dead_letter_reason_kind(item.reason), letter))
                reasons.append((item.reason, item.index))
                continue
            reason = self.rejection(item, newest_ms)
            if reason is not None:
                judged.rejected += 1
                original = payload if whole else item_json(item)
                letter = dead_letter(original, reason, origin, None if whole else index, keep, logged=False)
                judged.dead_letters.append((dead_letter_reason_kind(reason), letter))
                reasons.append((reason, None if whole else index))
                continue
            kind, key = entity_of(item)
            judged.events.append((entity_partition(kind, key, partitions), item))
        if reasons:
            DEADLETTER_LOG.message(origin, reasons)
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
