"""The read model builds the series views with each snapshot, and serves them until the next build."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson

from schemas.snapshot import InputCounts
from stream.app.readmodel import Facts, ReadModel
from stream.core.policy import Policy
from stream.core.totals import Labels, Readable
from stream.core.windows import Span
from stream.metrics import RuntimeStats
from tests.core.test_series import AS_OF, T0, folded
from tests.core.test_series import EVENTS as SERIES_EVENTS

COUNTS = InputCounts(events=0, accepted=0, duplicates=0, invalid=0, rejected=0)


def test_series_views_are_built_with_the_snapshot_and_not_per_request() -> None:
    totals = folded(SERIES_EVENTS)
    builds = []

    def facts() -> Facts:
        builds.append(1)
        return Facts(totals, AS_OF, AS_OF - 25 * 3_600_000, COUNTS)

    model = ReadModel(Policy(), lambda: 1, facts)
    runtime = RuntimeStats()
    assert model.respond("/api/series/hourly", runtime)[0] == 503
    assert model.refresh()
    status, body = model.respond("/api/series/hourly", runtime)
    hourly = orjson.loads(body)
    assert status == 200
    assert hourly["step"] == "hour"
    assert sum(hourly["overall"]["sessions"]) == 6
    assert hourly["as_of"] == "2026-12-01T10:42:00Z"
    assert hourly["reporting_currency"] == "USD"
    daily = orjson.loads(model.respond("/api/series/daily/", runtime)[1])
    assert daily["overall"]["sessions"] == [4, 2]
    assert daily["times"][0] == "2026-11-30T00:00:00Z"
    months = orjson.loads(model.respond("/api/series/months", runtime)[1])["months"]
    assert months["2026-11"]["traffic"]["sessions"] == 4
    assert months["2026-11"]["traffic"]["unique_visitors"] == 3
    assert months["2026-12"]["traffic"]["unique_visitors"] == 2
    assert months["2026-12"]["revenue"]["month"] == "2026-12"
    assert "funnel" in months["2026-12"]
    assert model.respond("/api/series/weekly", runtime)[0] == 404
    status, csv_body = model.respond("/api/months.csv", runtime)
    assert status == 200
    assert csv_body.decode().startswith("month,currency,sessions,unique_visitors,")
    assert csv_body.decode().count("\r\n") == 3
    assert builds == [1]
    assert model.series is not None
    assert model.series.as_of is not None
    assert T0 in model.series.hourly.times


class SlowTotals(Readable):
    """The folded totals, each read taking a while: a build long enough to watch the event loop during it."""

    def __init__(self, inner: Readable, seconds: float) -> None:
        super().__init__()
        self.inner, self.seconds = inner, seconds

    def _rows(
        self, kind: str, family: str, span: Span, match: Mapping[int, str] | None
    ) -> Iterable[tuple[Labels, Any]]:
        time.sleep(self.seconds)
        return self.inner._rows(kind, family, span, match)

    def labels_of(self, family: str) -> Iterator[Labels]:
        return self.inner.labels_of(family)


async def test_a_build_in_a_thread_leaves_the_event_loop_free_and_serves_the_same_views() -> None:
    totals = folded(SERIES_EVENTS)
    slow = SlowTotals(totals, 0.002)
    threaded = ReadModel(Policy(), lambda: 1, lambda: Facts(slow, AS_OF, AS_OF - 25 * 3_600_000, COUNTS))
    inline = ReadModel(Policy(), lambda: 1, lambda: Facts(totals, AS_OF, AS_OF - 25 * 3_600_000, COUNTS))
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)
    started = time.perf_counter()
    assert await threaded.refresh_in_thread()
    took = time.perf_counter() - started
    ticker.cancel()
    assert took > 0.5  # long enough that a build on the loop would have stopped the ticker
    gaps = [later - earlier for earlier, later in itertools.pairwise(ticks)]
    assert len(ticks) > took / 0.05
    assert max(gaps) < 0.25
    assert inline.refresh()
    runtime = RuntimeStats()
    for path in ("/api/snapshot", "/api/series/hourly", "/api/series/months"):
        assert threaded.respond(path, runtime) == inline.respond(path, runtime)


async def test_a_failed_build_in_a_thread_keeps_the_last_good_snapshot() -> None:
    totals = folded(SERIES_EVENTS)
    broken = [False]

    def facts() -> Facts:
        if broken[0]:
            raise RuntimeError("a replica went away")
        return Facts(totals, AS_OF, AS_OF - 25 * 3_600_000, COUNTS)

    version = [1]
    model = ReadModel(Policy(), lambda: version[0], facts)
    assert await model.refresh_in_thread()
    good = model.current()
    broken[0], version[0], model.built_at = True, 2, 0.0
    assert await model.refresh_in_thread() is False
    assert model.failures == 1
    assert model.current() is good
