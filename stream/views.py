"""The HTTP JSON views: pure functions from (path, snapshot, runtime) to a status code and a JSON body.

The worker wraps `view` in Faust web pages; `/metrics` reads the same
`Snapshot`, so both show the same numbers by construction (money rounded to
cents the same way). Bodies are dumped like `leadlag replay` prints the
snapshot: JSON mode, absent rates left out. An unknown window, month or route
answers 404 with the valid choices, so a typo fixes itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel

from schemas.snapshot import Snapshot
from schemas.snapshot.series import Series
from stream.csvexport import months_csv
from stream.metrics import RuntimeStats, is_ready

JsonObject = dict[str, Any]
Response = tuple[int, bytes]

ROUTES: tuple[str, ...] = (
    "/api/snapshot",
    "/api/status",
    "/api/windows",
    "/api/windows/{window}",
    "/api/months",
    "/api/months/{month}",
    "/api/revenue",
    "/api/divergence",
    "/api/alerts",
    "/api/cohorts",
    "/api/series/hourly",
    "/api/series/daily",
    "/api/series/months",
)


def view(path: str, snapshot: Snapshot | Callable[[], Snapshot | None] | None, runtime: RuntimeStats) -> Response:
    """The status code and JSON body of the view at `path` (a query string or trailing slash is ignored).

    `snapshot` may be a function that computes it: `/api/status` (which probes and benchmarks poll often)
    is then answered from `runtime` alone when it carries the input counts, without building one.
    """
    read = snapshot if callable(snapshot) else lambda: snapshot
    parts = [part for part in path.split("?", 1)[0].split("/") if part]
    if parts[:1] != ["api"]:
        return not_found(f"no view at {path!r}")
    route = parts[1:]
    if route == ["status"]:
        status = status_body(None if runtime.input is not None else read(), runtime)
        return (200 if status["ready"] else 503), dumps(status)
    if route == ["alerts"]:
        return ok(alerts_body(read(), runtime))
    if route in ([], ["routes"]):
        return ok({"routes": list(ROUTES)})
    handler = _SNAPSHOT_ROUTES.get(route[0]) if route else None
    if handler is None or len(route) > 2:
        return not_found(f"no view at {path!r}")
    current = read()
    if current is None:
        return 503, dumps({"error": "no snapshot yet: the worker is starting; try again in a few seconds"})
    return handler(current, route[1] if len(route) == 2 else None)


def ok(body: JsonObject) -> Response:
    return 200, dumps(body)


def not_found(error: str, **valid: list[str]) -> Response:
    """A 404 that says what exists: the valid values of the missing part, or every route."""
    return 404, dumps({"error": error, **(valid or {"routes": list(ROUTES)})})


def dumps(body: JsonObject) -> bytes:
    return orjson.dumps(body)


def dumped(model: BaseModel) -> JsonObject:
    """A model as `leadlag replay` prints it: JSON types, absent rates left out."""
    return model.model_dump(mode="json", exclude_none=True)


def header(snapshot: Snapshot) -> JsonObject:
    """The fields every view starts with, so a body read on its own says when and in what currency."""
    return snapshot.model_dump(mode="json", include={"as_of", "reporting_currency"})


def snapshot_view(snapshot: Snapshot, part: str | None) -> Response:
    if part is not None:
        return not_found(f"no view at '/api/snapshot/{part}'")
    return ok(dumped(snapshot))


def windows_view(snapshot: Snapshot, window: str | None) -> Response:
    if window is None:
        return ok({**header(snapshot), "windows": list(snapshot.windows)})
    metrics = snapshot.windows.get(window)
    if metrics is None:
        return not_found(f"unknown window {window!r}", windows=list(snapshot.windows))
    return ok({**header(snapshot), "window": window, **dumped(metrics)})


def months_view(snapshot: Snapshot, month: str | None) -> Response:
    if month is None:
        return ok({**header(snapshot), "months": {name: dumped(metrics) for name, metrics in snapshot.months.items()}})
    metrics = snapshot.months.get(month)
    if metrics is None:
        hint = "" if snapshot.months else "; there are none yet (no events)"
        return not_found(f"unknown month {month!r} (write YYYY-MM){hint}", months=list(snapshot.months))
    return ok({**header(snapshot), "month": month, **dumped(metrics)})


def revenue_view(snapshot: Snapshot, part: str | None) -> Response:
    """Revenue now, and each calendar month's MRR, movements, churn and LTV (the ChartMogul overview)."""
    if part is not None:
        return not_found(f"no view at '/api/revenue/{part}'")
    months = {name: dumped(metrics.revenue) for name, metrics in snapshot.months.items()}
    return ok({**header(snapshot), "now": dumped(snapshot.revenue), "months": months})


def divergence_view(snapshot: Snapshot, part: str | None) -> Response:
    if part is not None:
        return not_found(f"no view at '/api/divergence/{part}'")
    firing = [verdict.key for verdict in snapshot.divergence if verdict.firing]
    verdicts = [dumped(verdict) for verdict in snapshot.divergence]
    return ok({**header(snapshot), "firing": firing, "verdicts": verdicts})


def alerts_body(snapshot: Snapshot | None, runtime: RuntimeStats) -> JsonObject:
    """Every alert's verdicts as the worker judges them now: divergence, then the others (held for `for:`).

    `firing` lists the keys that fire, as they appear on `leadlag.alerts`. Served without a snapshot
    too, since the worker's own alerts (lag, dead letters) matter most while it starts.
    """
    divergence = [] if snapshot is None else snapshot.divergence
    firing = [v.key for v in divergence if v.firing] + [v.key for v in runtime.alerts if v.firing]
    return {
        **(header(snapshot) if snapshot is not None else {"as_of": None, "reporting_currency": None}),
        "firing": firing,
        "divergence": [dumped(verdict) for verdict in divergence],
        "checks": [{"key": verdict.key, **dumped(verdict)} for verdict in runtime.alerts],
    }


def cohorts_view(snapshot: Snapshot, part: str | None) -> Response:
    if part is not None:
        return not_found(f"no view at '/api/cohorts/{part}'")
    return ok({**header(snapshot), "cohorts": {name: dumped(c) for name, c in snapshot.lead_cohorts.items()}})


SERIES_PARTS = ("hourly", "daily", "months")


def series_responses(snapshot: Snapshot, series: Series) -> dict[str, Response]:
    """The bodies of `/api/series/*`, built with the snapshot (the read model keeps them until the next build).

    `months` puts each month's traffic next to the snapshot's revenue, funnel and acquisition of that month.
    """
    where = header(snapshot)
    months = {
        name: {"traffic": dumped(traffic), **(dumped(snapshot.months[name]) if name in snapshot.months else {})}
        for name, traffic in series.months.items()
    }
    return {
        "api/series/hourly": ok({**where, **dumped(series.hourly)}),
        "api/series/daily": ok({**where, **dumped(series.daily)}),
        "api/series/months": ok({**where, "months": months}),
        "api/months.csv": (200, months_csv(snapshot, series).encode()),
    }


def series_view(snapshot: Snapshot, part: str | None) -> Response:
    """Only reached when the read model has not built the series yet (they are built with each snapshot)."""
    del snapshot
    if part is None:
        return ok({"series": [f"/api/series/{name}" for name in SERIES_PARTS]})
    if part not in SERIES_PARTS:
        return not_found(f"unknown series {part!r}", series=list(SERIES_PARTS))
    return 503, dumps({"error": "no series yet: the worker is starting; try again in a few seconds"})


def months_csv_view(snapshot: Snapshot, part: str | None) -> Response:
    """`/api/months.csv` before the read model built it (it is built with each snapshot)."""
    if part is not None:
        return not_found(f"no view at '/api/months.csv/{part}'")
    return series_view(snapshot, "months")


_SNAPSHOT_ROUTES: dict[str, Callable[[Snapshot, str | None], Response]] = {
    "snapshot": snapshot_view,
    "windows": windows_view,
    "months": months_view,
    "revenue": revenue_view,
    "divergence": divergence_view,
    "cohorts": cohorts_view,
    "series": series_view,
    "months.csv": months_csv_view,
}


def status_body(snapshot: Snapshot | None, runtime: RuntimeStats) -> JsonObject:
    """Input counts, the worker's runtime statistics and the as-of instant: what a benchmark or a probe polls.

    The counts and as-of come from `runtime` when it carries them (the worker's live counters), else from
    `snapshot`. `ready` is false while there are none, while the worker recovers its tables, or while any
    readiness condition does not hold (`not_ready` lists them, as `/readyz` does); the view then answers 503.
    """
    if runtime.input is not None:
        as_of = None if runtime.as_of is None else runtime.as_of.isoformat().replace("+00:00", "Z")
        where = {"as_of": as_of, "reporting_currency": runtime.reporting_currency}
        counts: JsonObject | None = dumped(runtime.input)
    elif snapshot is not None:
        where, counts = header(snapshot), dumped(snapshot.input)
    else:
        where, counts = {"as_of": None, "reporting_currency": None}, None
    missing = [] if runtime.not_ready is None else [{"condition": c, "reason": r} for c, r in runtime.not_ready]
    if runtime.recovering and not any(m["condition"] == "recovery" for m in missing):
        missing.append({"condition": "recovery", "reason": "the worker is recovering its tables"})
    if counts is None and not missing:
        missing.append({"condition": "snapshot", "reason": "no input counts or snapshot yet"})
    return {
        "ready": counts is not None and is_ready(runtime),
        "not_ready": missing,
        **where,
        "input": counts,
        "runtime": runtime_body(runtime),
    }


def runtime_body(runtime: RuntimeStats) -> JsonObject:
    lag: dict[str, dict[str, int]] = {}
    for (topic, partition), behind in sorted(runtime.consumer_lag.items()):
        lag.setdefault(topic, {})[str(partition)] = behind
    return {
        "deadletters": sorted_counts(runtime.deadletters),
        "messages_in": sorted_counts(runtime.messages_in),
        "events_in": sorted_counts(runtime.events_in),
        "batches_folded": runtime.batches,
        "consumer_lag": lag,
        "rebalances": runtime.rebalances,
        "recovering": runtime.recovering,
        "partitions_assigned": runtime.partitions_assigned,
        "partitions": list(runtime.partitions),
        "voice": runtime.voice,
        "snapshot_seconds": runtime.snapshot_seconds,
        "snapshot_failures": runtime.snapshot_failures,
        "publish_failures": runtime.publish_failures,
        "started_at": (
            datetime.fromtimestamp(runtime.started_at, tz=UTC).isoformat().replace("+00:00", "Z")
            if runtime.started_at
            else None
        ),
    }


def sorted_counts(counts: Mapping[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items()))
