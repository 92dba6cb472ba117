"""The read model: the snapshot every view, `/metrics` and the snapshot topic read, built on a timer.

A snapshot is computed from the totals (`stream.core.snapshot.build_snapshot`)
by `ReadModel.refresh`, which a timer calls about once a second; a scrape or a
request never builds one, it reads the last one built. A build runs only when
the totals may have changed since the last one (or the clock is the wall
clock), and never more often than `BUILD_SHARE` of the event loop's time
allows: a build that took 40 ms waits at least 0.4 s for the next. The JSON of
`/api/snapshot` is serialized once per build, and every other snapshot view the
first time it is asked for after a build. The worker runs the build in a thread
(`refresh_in_thread`) holding its step lock and its replicas' lock: nothing
folds or follows meanwhile, but the
event loop goes on answering scrapes and requests from the last snapshot, so a
build longer than Prometheus' scrape timeout does not make the worker look
down. A build that raises changes nothing
but a counter: the last good snapshot is served on, and each distinct error is
logged once (docs/architecture.md, "Outputs").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from schemas.snapshot import InputCounts, Snapshot
from schemas.snapshot.series import Series
from stream import views
from stream.core.policy import Policy
from stream.core.series import build_series
from stream.core.snapshot import build_snapshot
from stream.core.totals import Readable
from stream.metrics import RuntimeStats

log = logging.getLogger("leadlag.readmodel")

REFRESH_SECONDS = 1.0
"""How often the timer asks for a build."""
BUILD_SHARE = 0.1
"""At most this share of the event loop's time goes to building snapshots."""
DISTINCT_ERRORS_LOGGED = 100
"""Distinct build errors remembered (each logged once); past that, every failure is logged."""
ERROR_TEXT_LIMIT = 500
UNCACHED_ROUTES = frozenset({"status", "alerts"})
"""Views that read the worker's live runtime too: answered afresh each time (they are cheap)."""


@dataclass(frozen=True, slots=True)
class Facts:
    """What a snapshot is built from: the totals, the as-of and first event instants, the input counts."""

    totals: Readable
    as_of_ms: int | None
    earliest_ms: int | None
    input: InputCounts


@dataclass(frozen=True, slots=True)
class _Due:
    """A build to run: the version it answers, when it started, and its facts (or why they could not be read)."""

    version: int
    started: float
    facts: Facts | Exception


@dataclass(frozen=True, slots=True)
class _Built:
    """What a build produced."""

    snapshot: Snapshot
    series: Series
    responses: dict[str, tuple[int, bytes]]


class ReadModel:
    """The last snapshot built, its JSON, and the views answered from it."""

    __slots__ = (
        "_errors_logged",
        "_facts",
        "_last_version",
        "_responses",
        "_version",
        "build_seconds",
        "built_at",
        "built_ok_at",
        "failures",
        "policy",
        "series",
        "snapshot",
    )

    def __init__(self, policy: Policy, version: Callable[[], int | None], facts: Callable[[], Facts]) -> None:
        """`version()` moves whenever the totals may have changed, and is None while there is nothing
        consistent to show (the worker is recovering); `facts()` gathers what a build needs."""
        self.policy = policy
        self._version = version
        self._facts = facts
        self._last_version: int | None = None
        self.snapshot: Snapshot | None = None
        self.series: Series | None = None
        """The hourly, daily and monthly series behind the page, built with the snapshot."""
        self.built_at = 0.0
        self.built_ok_at = 0.0
        self.build_seconds = 0.0
        self._responses: dict[str, tuple[int, bytes]] = {}
        self.failures = 0
        """Builds that raised since the worker started (`leadlag_snapshot_failures_total`)."""
        self._errors_logged: set[str] = set()

    def refresh(self, *, always: bool = False) -> bool:
        """Build a new snapshot if one is due and the facts changed (`always`: even if not); True if built."""
        due = self._due(always)
        return due is not None and self._built(due, self._build(due.facts))

    async def refresh_in_thread(self, *, always: bool = False) -> bool:
        """`refresh`, the build itself run in a thread so that the event loop answers scrapes and requests
        meanwhile. The caller keeps the totals still until it returns (the worker holds its two locks)."""
        due = self._due(always)
        return due is not None and self._built(due, await asyncio.to_thread(self._build, due.facts))

    def _due(self, always: bool) -> _Due | None:
        now = time.monotonic()
        if now - self.built_at < self.build_seconds / BUILD_SHARE:
            return None
        version = self._version()
        if version is None:
            self.clear()
            return None
        if version == self._last_version and not always and self.snapshot is not None:
            return None
        started = time.perf_counter()
        try:
            return _Due(version, started, self._facts())
        except Exception as exc:  # as a failed build: counted, logged once, the last good snapshot kept
            return _Due(version, started, exc)

    def _build(self, facts: Facts | Exception) -> _Built | Exception:
        """The snapshot, its series and their JSON; or what stopped them. Reads the totals, changes nothing."""
        if isinstance(facts, Exception):
            return facts
        try:
            snapshot = build_snapshot(facts.totals, facts.as_of_ms, facts.earliest_ms, self.policy, facts.input)
            series = build_series(facts.totals, facts.as_of_ms, facts.earliest_ms, self.policy)
            responses = {
                "api/snapshot": views.snapshot_view(snapshot, None),
                **views.series_responses(snapshot, series),
            }
        except Exception as exc:  # whatever the state holds, the worker keeps serving the last good snapshot
            return exc
        return _Built(snapshot, series, responses)

    def _built(self, due: _Due, outcome: _Built | Exception) -> bool:
        self.build_seconds = time.perf_counter() - due.started
        self.built_at = time.monotonic()
        if isinstance(outcome, Exception):
            self._failed(outcome)
            return False
        self._responses = outcome.responses
        self.snapshot, self.series = outcome.snapshot, outcome.series
        self._last_version = due.version
        self.built_ok_at = self.built_at
        return True

    def _failed(self, exc: Exception) -> None:
        """Count a failed build; log it the first time this error is seen (not once a second)."""
        self.failures += 1
        error = f"{type(exc).__name__}: {exc}"[:ERROR_TEXT_LIMIT]
        if error in self._errors_logged:
            return
        if len(self._errors_logged) < DISTINCT_ERRORS_LOGGED:
            self._errors_logged.add(error)
        log.error(
            "the snapshot could not be built (%s); serving the last good one (built %s); "
            "counted in leadlag_snapshot_failures_total, logged once per distinct error",
            error,
            "never" if self.snapshot is None else f"{time.monotonic() - self.built_ok_at:.0f} s ago",
            exc_info=exc,
        )

    def clear(self) -> None:
        """Forget the snapshot (its totals no longer describe what the worker owns)."""
        self.snapshot = None
        self.series = None
        self._responses = {}
        self._last_version = None

    def current(self) -> Snapshot | None:
        return self.snapshot

    def respond(self, path: str, runtime: RuntimeStats) -> tuple[int, bytes]:
        """The status and JSON body of the view at `path`, from the last snapshot built."""
        parts = [part for part in path.split("?", 1)[0].split("/") if part]
        route = "/".join(parts)
        if len(parts) < 2 or parts[1] in UNCACHED_ROUTES:
            return views.view(path, self.current, runtime)
        cached = self._responses.get(route)
        if cached is not None:
            return cached
        snapshot = self.snapshot
        response = views.view(path, snapshot, runtime)
        if response[0] == 200 and snapshot is not None and snapshot is self.snapshot:
            self._responses[route] = response
        return response
