"""Dead letters always fit a default broker (1 MB), say what they cut, and are keyed by where their input was."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime

import orjson
import pytest

from schemas.deadletter import (
    DEADLETTER_MESSAGE_LIMIT,
    DEFAULT_ORIGINAL_BYTES,
    MAX_ORIGINAL_BYTES,
    DeadLetter,
    deadletter_key,
    deadletter_key_of,
)
from stream.app.intake import Origin, dead_letter, dead_letter_reason_kind

AT = datetime(2026, 11, 23, 9, tzinfo=UTC)
MB = 1024 * 1024


def letter_of(original: bytes, reason: str = "not JSON", keep: int = DEFAULT_ORIGINAL_BYTES, **origin: object) -> bytes:
    return DeadLetter.of(original, reason, AT, keep, **origin).model_dump_json().encode()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "original",
    [
        os.urandom(5 * MB),  # not UTF-8: base64 only
        b"\x01" * (5 * MB),  # UTF-8, and every byte escaped as \u0001 in JSON
        b'"' * (5 * MB),
        "é".encode() * (3 * MB),
        b"\\" * (700 * 1024),
        b"a" * 200_000,
    ],
    ids=["random", "control", "quotes", "two-byte", "backslashes", "ascii"],
)
@pytest.mark.parametrize("keep", [1024, DEFAULT_ORIGINAL_BYTES, MAX_ORIGINAL_BYTES])
def test_a_dead_letter_fits_a_default_broker_whatever_the_input(original: bytes, keep: int) -> None:
    reason = "unknown event type '\x1b[31m" + "\n" * 10_000
    letter = letter_of(original, reason, keep, topic="site.visits", partition=3, offset=12, envelope_index=7)
    assert len(letter) <= DEADLETTER_MESSAGE_LIMIT
    body = DeadLetter.model_validate_json(letter)
    assert body.original_length == len(original)
    assert body.truncated == (len(original) > keep)
    assert base64.b64decode(body.original_base64) == original[:keep]
    assert len(body.reason) <= 2_000
    if body.original_text is not None:
        assert original[:keep].decode().startswith(body.original_text)


def test_the_text_is_kept_when_it_fits_and_a_cut_character_is_dropped() -> None:
    body = DeadLetter.of("ab€".encode(), "r", AT, 4)  # € is three bytes: the cut splits it
    assert body.truncated
    assert body.original_text == "ab"
    assert base64.b64decode(body.original_base64) == "ab€".encode()[:4]
    whole = DeadLetter.of(b'{"a": 1}', "r", AT)
    assert (whole.original_text, whole.truncated, whole.original_length) == ('{"a": 1}', False, 8)


def test_the_key_names_the_input_message_and_the_position_in_its_envelope() -> None:
    assert deadletter_key("site.visits", 3, 12) == "site.visits/3/12"
    assert deadletter_key("site.visits", 3, 12, 0) == "site.visits/3/12/0"
    letter = dead_letter(b"{", "not JSON", Origin("form.fills", 1, 99), 4, logged=False)
    assert orjson.loads(letter)["key"] == "form.fills/1/99/4"
    assert deadletter_key_of(letter) == b"form.fills/1/99/4"
    again = dead_letter(b"{", "not JSON", Origin("form.fills", 1, 99), 4, logged=False)
    assert deadletter_key_of(again) == deadletter_key_of(letter), "the same input read again: the same key"
    assert deadletter_key_of(letter_of(b"x", file="events.ndjson", line=3)) is None
    assert deadletter_key_of(b"not json") is None


def test_a_dead_letter_made_by_the_intake_keeps_at_most_the_limit() -> None:
    letter = dead_letter(b"x" * (3 * MB), "too large", Origin("site.visits", 0, 1), None, 64 * 1024, logged=False)
    body = DeadLetter.model_validate_json(letter)
    assert (body.original_length, body.truncated) == (3 * MB, True)
    assert len(base64.b64decode(body.original_base64)) == 64 * 1024


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("future: occurred_at 2062-03-01T00:00:00Z is more than 24 h after the wall clock", "future"),
        ("too old: occurred_at 1000-02-01T00:00:00Z is before 2000-01-01T00:00:00Z", "too_old"),
        ("too large: message over 1,048,576 bytes (LEADLAG_MAX_MESSAGE_BYTES)", "too_large"),
        ("too large: envelope of 10,001 events, over 10,000 (LEADLAG_MAX_ENVELOPE_EVENTS)", "too_large"),
        ("duplicate key 'type' in an object: each name may appear once", "duplicate_key"),
        ("late: occurred_at ...", "late"),
        ("pageviews: Input should be less than or equal to 100000", "invalid"),
    ],
)
def test_each_reason_has_a_bounded_kind(reason: str, kind: str) -> None:
    assert dead_letter_reason_kind(reason) == kind
