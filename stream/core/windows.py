"""Event-time windows: rolling (1 h, 24 h, 7 d, 30 d) and calendar (day, month, UTC).

All hot state keeps time as integer epoch milliseconds. Windows are aligned to
whole minutes: "the last 1 h as of 10:17:30" is [09:18:00, 10:18:00), so the
event at the as-of instant is inside, and every figure can be checked by hand
from the events' minutes. Calendar windows run from the start of the UTC day
or month to the same end.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS


class Window(StrEnum):
    LAST_1H = "1h"
    LAST_24H = "24h"
    LAST_7D = "7d"
    LAST_30D = "30d"
    DAY = "day"
    MONTH = "month"


ROLLING_MS: dict[Window, int] = {
    Window.LAST_1H: HOUR_MS,
    Window.LAST_24H: DAY_MS,
    Window.LAST_7D: 7 * DAY_MS,
    Window.LAST_30D: 30 * DAY_MS,
}


@dataclass(frozen=True, slots=True)
class Span:
    """A half-open event-time interval [start_ms, end_ms)."""

    start_ms: int
    end_ms: int

    def contains(self, ts_ms: int) -> bool:
        return self.start_ms <= ts_ms < self.end_ms

    def shifted(self, delta_ms: int) -> Span:
        return Span(self.start_ms + delta_ms, self.end_ms + delta_ms)

    @property
    def length_ms(self) -> int:
        return self.end_ms - self.start_ms


def floor_minute(ts_ms: int) -> int:
    return ts_ms - ts_ms % MINUTE_MS


def floor_hour(ts_ms: int) -> int:
    return ts_ms - ts_ms % HOUR_MS


def ceil_hour(ts_ms: int) -> int:
    return -(-ts_ms // HOUR_MS) * HOUR_MS


def floor_day(ts_ms: int) -> int:
    return ts_ms - ts_ms % DAY_MS


def to_datetime(ts_ms: int) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC)


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def month_start(ts_ms: int) -> int:
    """Start of the UTC calendar month holding `ts_ms` (cached per day: it sits on the hot path)."""
    return _month_start_of_day(ts_ms - ts_ms % DAY_MS)


@lru_cache(maxsize=8192)
def _month_start_of_day(day_ms: int) -> int:
    moment = to_datetime(day_ms)
    return to_ms(datetime(moment.year, moment.month, 1, tzinfo=UTC))


def next_month_start(ts_ms: int) -> int:
    moment = to_datetime(month_start(ts_ms))
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return to_ms(datetime(year, month, 1, tzinfo=UTC))


def previous_month_start(ts_ms: int) -> int:
    return month_start(month_start(ts_ms) - 1)


def month_label(ts_ms: int) -> str:
    """`2026-11` for any instant in November 2026 (UTC)."""
    return to_datetime(ts_ms).strftime("%Y-%m")


def month_span(label: str) -> Span:
    """The calendar month named `YYYY-MM`."""
    year, month = (int(part) for part in label.split("-"))
    start = to_ms(datetime(year, month, 1, tzinfo=UTC))
    return Span(start, next_month_start(start))


def window_span(window: Window, as_of_ms: int) -> Span:
    """The span a window covers as of an instant (minute-aligned, end exclusive)."""
    end = floor_minute(as_of_ms) + MINUTE_MS
    if window in ROLLING_MS:
        return Span(end - ROLLING_MS[window], end)
    if window is Window.DAY:
        return Span(floor_day(as_of_ms), end)
    return Span(month_start(as_of_ms), end)


def months_between(first_ms: int, last_ms: int) -> list[str]:
    """Labels of every calendar month from the one holding `first_ms` to the one holding `last_ms`."""
    labels: list[str] = []
    cursor = month_start(first_ms)
    while cursor <= last_ms:
        labels.append(month_label(cursor))
        cursor = next_month_start(cursor)
    return labels
