"""The read model builds the series views with each snapshot, and serves them until the next build."""

from __future__ import annotations

import orjson

from schemas.snapshot import InputCounts
from stream.app.readmodel import Facts, ReadModel
from stream.core.policy import Policy
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
