"""Specifies stream/app/outputs.py: sends retried then stopped clearly, and messages that always fit."""

from __future__ import annotations

import asyncio
import base64
import json
from decimal import Decimal

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from schemas.snapshot import Snapshot
from stream.app.outputs import OutputUnavailable, fit, send_with_retry, shrunk_dead_letter, split_to_fit
from tests.test_metrics import small_company_snapshot

LIMIT = 1_000_000


class FailingSender:
    """A send that fails `failures` times, then succeeds; remembers how long each wait was."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or KafkaTimeoutError("no broker answered")
        self.calls = 0
        self.waits: list[float] = []

    async def send(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "acknowledged"

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)


def test_a_send_that_fails_a_few_times_is_retried_with_doubling_waits_and_then_succeeds() -> None:
    sender = FailingSender(failures=3)
    result = asyncio.run(send_with_retry(sender.send, "3 dead letters", 6, sleep=sender.sleep))
    assert result == "acknowledged"
    assert sender.calls == 4
    assert sender.waits == [0.5, 1.0, 2.0]


def test_a_send_that_keeps_failing_stops_after_the_last_try_with_a_message_saying_what_happens_next() -> None:
    sender = FailingSender(failures=100)
    with pytest.raises(OutputUnavailable) as raised:
        asyncio.run(send_with_retry(sender.send, "3 dead letters", 4, sleep=sender.sleep))
    assert sender.calls == 4
    assert sender.waits == [0.5, 1.0, 2.0]
    message = str(raised.value)
    assert "could not send 3 dead letters: 4 tries" in message
    assert "KafkaTimeoutError" in message
    assert "read again when the worker restarts" in message  # nothing lost: the input is not committed
    assert isinstance(raised.value.__cause__, KafkaTimeoutError)


def test_a_message_too_large_is_not_retried_the_caller_must_shrink_it() -> None:
    sender = FailingSender(failures=1, error=MessageSizeTooLargeError("too large"))
    with pytest.raises(MessageSizeTooLargeError):
        asyncio.run(send_with_retry(sender.send, "a dead letter", 6, sleep=sender.sleep))
    assert sender.calls == 1
    assert sender.waits == []


def test_a_dead_letter_refused_as_too_large_keeps_its_reason_and_origin_without_the_original() -> None:
    original = b"x" * 3_000_000
    letter = orjson.dumps(
        {
            "reason": "not JSON: unexpected character",
            "received_at": "2026-03-02T10:00:00Z",
            "topic": "site.visits",
            "partition": 2,
            "offset": 41,
            "original_base64": base64.b64encode(original).decode(),
            "original_text": original.decode(),
        }
    )
    shrunk = json.loads(shrunk_dead_letter(letter, "MessageSizeTooLargeError"))
    assert len(orjson.dumps(shrunk)) < 1000
    assert (shrunk["topic"], shrunk["partition"], shrunk["offset"]) == ("site.visits", 2, 41)
    assert shrunk["reason"].startswith("not JSON: unexpected character (original of 3000000 bytes left out")
    assert shrunk["original_base64"] == ""
    assert shrunk["original_text"] is None


def test_routed_items_are_cut_into_messages_below_the_size_however_large_each_item() -> None:
    items = [("x" * 1000, n) for n in range(3000)]

    def encode(batch: list[tuple[str, int]]) -> bytes:
        return orjson.dumps(batch)

    messages = list(split_to_fit(items, encode, 100_000))
    assert all(len(message) <= 100_000 for message in messages)
    assert [tuple(item) for message in messages for item in orjson.loads(message)] == items
    assert list(split_to_fit(items[:1], encode, 10)) == [encode(items[:1])]  # one item alone: as it is


def plan_name(n: int) -> str:
    return f"{n:04d}" + "\N{GRINNING FACE}" * 196


def many_long_plans(snapshot: Snapshot, plans: int) -> Snapshot:
    """The worst case of names: plans at the schema's cap of 200 characters of 4 bytes each in UTF-8, as many
    as LEADLAG_MAX_LABEL_VALUES (500) per partition allows on 4 partitions: about 1.6 MB of names."""
    names = {plan_name(n): Decimal(n + 1) for n in range(plans)}
    revenue = snapshot.revenue.model_copy(update={"mrr_by_plan": names})
    return snapshot.model_copy(update={"revenue": revenue})


def test_revenue_with_the_most_plans_the_caps_allow_fits_a_message_summing_the_smallest_as_other() -> None:
    snapshot = many_long_plans(small_company_snapshot(), 500 * 4)
    body = snapshot.revenue.model_dump(mode="json")
    assert len(orjson.dumps(body)) > LIMIT  # without the cap it would not fit Kafka's default limit
    fitted = fit(body, LIMIT)
    assert fitted is not None
    value, folded = fitted
    assert len(value) <= LIMIT
    published = json.loads(value)["mrr_by_plan"]
    assert folded == 2000 - (len(published) - 1)
    assert sum(published.values()) == pytest.approx(sum(range(1, 2001)))  # nothing lost: summed as other
    kept = [name for name in published if name != "other"]
    assert min(published[name] for name in kept) >= max(n + 1 for n in range(2000) if plan_name(n) not in published)


def test_a_window_with_long_campaign_names_keeps_channels_and_sums_the_smallest_campaigns() -> None:
    window = small_company_snapshot().windows["24h"].model_dump(mode="json", exclude_none=True)
    window["traffic"]["sessions_by_campaign"] = {f"{n:04d}" + "é" * 196: n + 1 for n in range(1000)}
    channels = dict(window["traffic"]["by_channel"])
    fitted = fit(window, 200_000)
    assert fitted is not None
    value, folded = fitted
    published = json.loads(value)
    assert len(value) <= 200_000
    assert folded > 0
    assert published["traffic"]["by_channel"] == channels  # bounded maps are never capped
    assert sum(published["traffic"]["sessions_by_campaign"].values()) == sum(range(1, 1001))


def test_a_body_that_fits_is_sent_unchanged() -> None:
    body = small_company_snapshot().revenue.model_dump(mode="json")
    assert fit(body, LIMIT) == (orjson.dumps(body), 0)


def test_a_body_with_nothing_to_cap_that_cannot_fit_is_refused_not_sent() -> None:
    assert fit({"reason": "x" * 5000}, 1000) is None
