"""The poison corpus (`tests/poison.py`) through the parser and the intake: one dead letter each, of the
expected kind, that fits a default broker and names where its input came from."""

from __future__ import annotations

import base64
import logging
import time

import pytest

from schemas.deadletter import DEADLETTER_MESSAGE_LIMIT, DeadLetter
from schemas.parsing import InvalidEvent, parse_message
from stream.app import intake as intake_module
from stream.app.intake import DeadLetterLog, Intake, Origin
from stream.core.policy import Policy
from tests.poison import CORPUS, GOOD, Poison, js

NOW_MS = int(time.time() * 1000)


@pytest.mark.parametrize("poison", CORPUS, ids=[poison.name for poison in CORPUS])
def test_each_poison_message_is_one_dead_letter_of_its_kind_that_fits_a_default_broker(
    poison: Poison, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake_module, "DEADLETTER_LOG", DeadLetterLog())
    policy = Policy()
    origin = Origin(poison.topic, 2, 41)
    with caplog.at_level(logging.WARNING, logger="leadlag.intake"):
        judged = Intake(policy, partitions=4).judge(poison.raw, origin, None, NOW_MS)
    assert judged.events == []
    assert (judged.invalid, judged.rejected) == ((1, 0) if poison.counted == "invalid" else (0, 1))
    [(kind, letter)] = judged.dead_letters
    assert kind == poison.kind
    assert len(letter) <= DEADLETTER_MESSAGE_LIMIT
    body = DeadLetter.model_validate_json(letter)
    assert (body.topic, body.partition, body.offset) == (poison.topic, 2, 41)
    where = f"{poison.topic}/2/41"
    assert body.key == (where if body.envelope_index is None else f"{where}/{body.envelope_index}")
    if body.envelope_index is None:  # the message itself is kept, cut to the limit
        kept = base64.b64decode(body.original_base64)
        assert body.original_length == len(poison.raw)
        assert kept == poison.raw[: policy.limits.deadletter_max_bytes]
        assert body.truncated == (len(poison.raw) > policy.limits.deadletter_max_bytes)
    [record] = caplog.records
    assert record.getMessage().startswith("dead letter: ")
    assert "\n" not in record.getMessage()
    assert "\x1b" not in record.getMessage()


@pytest.mark.parametrize("poison", CORPUS, ids=[poison.name for poison in CORPUS])
def test_the_parser_gives_each_poison_message_one_reason(poison: Poison) -> None:
    items = parse_message(poison.raw, now_ms=NOW_MS)
    assert len(items) == 1
    if poison.counted == "invalid":
        assert isinstance(items[0], InvalidEvent)


def test_the_corpus_covers_every_reason_kind_of_bad_input() -> None:
    kinds = {poison.kind for poison in CORPUS}
    assert kinds >= {
        "not_json",
        "not_object",
        "empty_envelope",
        "invalid",
        "future",
        "too_old",
        "duplicate_key",
        "too_large",
        "unknown_currency",
    }


def test_the_good_events_are_all_counted() -> None:
    intake = Intake(Policy(), partitions=4)
    for n, event in enumerate(GOOD):
        judged = intake.judge(js(event), Origin("site.visits", 0, n), None, NOW_MS)
        assert len(judged.events) == 1, judged.dead_letters


def test_an_envelope_of_many_bad_events_logs_a_few_lines_and_a_count(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake_module, "DEADLETTER_LOG", DeadLetterLog())
    payload = js([{"type": "page_view"}] * 5_000)
    with caplog.at_level(logging.WARNING, logger="leadlag.intake"):
        judged = Intake(Policy(), partitions=4).judge(payload, Origin("site.visits", 0, 9), None, NOW_MS)
    assert len(judged.dead_letters) == 5_000
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 4
    assert lines[-1] == "4997 more dead letters from the same message (topic site.visits partition 0 offset 9)"


def test_a_flood_of_bad_messages_logs_a_few_lines_per_interval_then_how_many_were_left_out(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [0.0]
    monkeypatch.setattr(intake_module, "DEADLETTER_LOG", DeadLetterLog(per_interval=5, clock=lambda: clock[0]))
    intake = Intake(Policy(), partitions=4)
    with caplog.at_level(logging.WARNING, logger="leadlag.intake"):
        for offset in range(1_000):
            intake.judge(b"{not json", Origin("site.visits", 0, offset), None, NOW_MS)
        assert len(caplog.records) == 5
        clock[0] = 11.0
        intake.judge(b"{not json", Origin("site.visits", 0, 1_000), None, NOW_MS)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 7
    assert lines[5] == "995 more dead letters in the last 11 s not logged (see leadlag_deadletters_total)"
    assert lines[6].startswith("dead letter: not JSON")
