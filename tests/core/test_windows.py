"""Event-time windows: minute-aligned rolling windows and UTC calendar periods."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stream.core.windows import Span, Window, month_span, months_between, to_ms, window_span


def at(text: str) -> int:
    return to_ms(datetime.fromisoformat(text).astimezone(UTC))


@pytest.mark.parametrize(
    ("window", "start", "end"),
    [
        (Window.LAST_1H, "2026-11-23T09:18:00Z", "2026-11-23T10:18:00Z"),
        (Window.LAST_24H, "2026-11-22T10:18:00Z", "2026-11-23T10:18:00Z"),
        (Window.LAST_7D, "2026-11-16T10:18:00Z", "2026-11-23T10:18:00Z"),
        (Window.LAST_30D, "2026-10-24T10:18:00Z", "2026-11-23T10:18:00Z"),
        (Window.DAY, "2026-11-23T00:00:00Z", "2026-11-23T10:18:00Z"),
        (Window.MONTH, "2026-11-01T00:00:00Z", "2026-11-23T10:18:00Z"),
    ],
)
def test_windows_as_of_10_17_30_end_with_the_as_of_minute(window: Window, start: str, end: str) -> None:
    assert window_span(window, at("2026-11-23T10:17:30Z")) == Span(at(start), at(end))


def test_calendar_windows_follow_utc_not_the_events_offset() -> None:
    as_of = at("2026-12-01T00:30:00+01:00")  # still 30 November in UTC
    assert window_span(Window.MONTH, as_of).start_ms == at("2026-11-01T00:00:00Z")


def test_month_span_covers_the_whole_calendar_month() -> None:
    assert month_span("2024-02") == Span(at("2024-02-01T00:00:00Z"), at("2024-03-01T00:00:00Z"))
    assert month_span("2026-12") == Span(at("2026-12-01T00:00:00Z"), at("2027-01-01T00:00:00Z"))


def test_months_between_lists_every_month_including_both_ends() -> None:
    assert months_between(at("2026-11-20T00:00:00Z"), at("2027-01-02T00:00:00Z")) == [
        "2026-11",
        "2026-12",
        "2027-01",
    ]
