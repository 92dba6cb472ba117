"""`leadlag simulate`: a believable company's events, as NDJSON or produced into Kafka (fast or live)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.table import Table

from stream.cli.console import safe, stderr
from stream.cli.options import parse_instant

if TYPE_CHECKING:
    from rich.status import Status

    from stream.produce import LivePlan, ProduceStats
    from stream.settings import Settings

NDJSON_EVENTS = 100_000
"""Events of an NDJSON or as-fast-as-possible run when `--events` is not given."""
LIVE_INCIDENT_AFTER_MINUTES = 2.0
"""`--live --incident` without `--incident-after-minutes`: soon enough for a demo user to watch it fire."""
LOG_EVERY_SECONDS = 10.0


def simulate_command(
    out: Annotated[Path | None, typer.Option(help="Write NDJSON here; default stdout.")] = None,
    events: Annotated[
        int | None,
        typer.Option(min=1, help=f"How many events (default {NDJSON_EVENTS:,}; a live run goes on until Ctrl-C)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Same seed, same events.")] = 1,
    incident: Annotated[
        bool,
        typer.Option(
            help="Script 'traffic up, conversion down': near the end, or in a live run after --incident-after-minutes."
        ),
    ] = False,
    envelope_size: Annotated[
        int | None,
        typer.Option(
            min=1, max=10_000, help="Events per line or message (a JSON array when > 1); default 1, Kafka 200."
        ),
    ] = None,
    broker: Annotated[
        str | None,
        typer.Option(help="Produce to this Kafka (LEADLAG_BROKER) instead of writing NDJSON, e.g. localhost:9092."),
    ] = None,
    topic_prefix: Annotated[str | None, typer.Option(help="Prefix of the input topics (LEADLAG_TOPIC_PREFIX).")] = None,
    live: Annotated[
        bool, typer.Option(help="Kafka: produce in simulated real time at --speed (after a backfill), not at once.")
    ] = False,
    speed: Annotated[
        float,
        typer.Option("--speed", "--rate-speed", min=0.001, help="Live: simulated seconds per wall second."),
    ] = 60.0,
    backfill_hours: Annotated[
        float, typer.Option(min=0, help="Live: hours of history produced at once before the live part.")
    ] = 48.0,
    incident_after_minutes: Annotated[
        float | None,
        typer.Option(
            min=0,
            help=f"Live: wall minutes into the live part when the incident starts (implies --incident; "
            f"default {LIVE_INCIDENT_AFTER_MINUTES:g} with --incident).",
        ),
    ] = None,
    incident_minutes: Annotated[float, typer.Option(min=0.1, help="Live: wall minutes the incident lasts.")] = 30.0,
    visits_per_day: Annotated[int, typer.Option(min=1, help="Live: weekday sessions of the simulated site.")] = 5000,
    start: Annotated[
        str | None,
        typer.Option(
            metavar="<ISO 8601>",
            help="Live: the event time (RFC 3339) the live part starts at, e.g. 2026-01-07T00:00:00Z; default now. "
            "Pin it to replay the same weekdays every run: the site is quieter at weekends.",
        ),
    ] = None,
) -> None:
    """Generate a believable B2B SaaS company's events: NDJSON (for replay, tests and demos) or into Kafka.

    With --broker (or LEADLAG_BROKER) the events go to the five input topics: as fast as possible, or with
    --live at --speed simulated seconds per second, with an optional 'traffic up, conversion down' incident.
    SASL/SSL settings come from LEADLAG_SECURITY_PROTOCOL and friends. Ctrl-C stops cleanly with a summary.
    """
    if broker is None and out is None:
        from stream.settings import load_settings

        with contextlib.suppress(Exception):
            broker = load_settings().broker or None
    if broker is None or out is not None:
        _write_ndjson(out, events or NDJSON_EVENTS, seed, incident, envelope_size or 1)
        return
    settings = _kafka_settings(broker, topic_prefix)
    size = envelope_size or 200
    if live:
        after = incident_after_minutes
        if after is None and incident:
            after = LIVE_INCIDENT_AFTER_MINUTES
        begins = datetime.now(UTC) if start is None else parse_instant(start, "--start")
        _produce_live(
            settings, events, seed, size, speed, backfill_hours, after, incident_minutes, visits_per_day, begins
        )
    else:
        _produce_fast(settings, events or NDJSON_EVENTS, seed, incident, size)


def _write_ndjson(out: Path | None, events: int, seed: int, incident: bool, envelope_size: int) -> None:
    from stream.simulation import generate_count

    target = open(out, "wb") if out else sys.stdout.buffer  # noqa: SIM115 - closed below
    written = 0
    try:
        batch: list[dict[str, object]] = []
        for event in generate_count(events, seed, incident=incident):
            if envelope_size == 1:
                target.write(orjson.dumps(event) + b"\n")
            else:
                batch.append(event)
                if len(batch) == envelope_size:
                    target.write(orjson.dumps(batch) + b"\n")
                    batch = []
            written += 1
        if batch:
            target.write(orjson.dumps(batch) + b"\n")
    finally:
        if out:
            target.close()
    if out:
        stderr.print(f"wrote {written:,} events to {out}", highlight=False)


def _kafka_settings(broker: str, topic_prefix: str | None) -> Settings:
    from stream.settings import SettingsError, load_settings

    overrides: dict[str, object] = {"broker": broker}
    if topic_prefix is not None:
        overrides["topic_prefix"] = topic_prefix
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        stderr.print(f"[red]error:[/] {safe(str(exc))}")
        raise typer.Exit(2) from None


async def _until_interrupted(run: asyncio.Future[ProduceStats], stop: asyncio.Event) -> ProduceStats:
    """Ctrl-C or SIGTERM sets `stop`; the run then flushes what it sent and returns its counts."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        return await run
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _produce_fast(settings: Settings, events: int, seed: int, incident: bool, envelope_size: int) -> None:
    from stream.produce import produce_count

    async def main() -> ProduceStats:
        stop = asyncio.Event()
        with stderr.status(f"producing {events:,} events to {settings.broker}…") as status:
            progress = _reporter(
                lambda stats: (
                    f"produced {stats.total_events:,} / {events:,} events ({stats.events_per_second:,.0f} events/s)"
                ),
                status,
            )

            run = asyncio.ensure_future(
                produce_count(
                    settings,
                    events,
                    seed=seed,
                    incident=incident,
                    envelope_size=envelope_size,
                    stop=stop,
                    on_progress=progress,
                )
            )
            return await _until_interrupted(run, stop)

    _print_summary(_run(main), settings)


def _produce_live(
    settings: Settings,
    events: int | None,
    seed: int,
    envelope_size: int,
    speed: float,
    backfill_hours: float,
    incident_after_minutes: float | None,
    incident_minutes: float,
    visits_per_day: int,
    start: datetime,
) -> None:
    from stream.produce import live_plan, produce_live

    plan = live_plan(
        start,
        speed=speed,
        backfill_hours=backfill_hours,
        incident_after_minutes=incident_after_minutes,
        incident_minutes=incident_minutes,
        visits_per_day=visits_per_day,
    )
    stderr.print(
        f"live: {backfill_hours:g} h of backfill, then {speed:g} simulated seconds per second to {settings.broker}"
        + (
            f"; incident (traffic ×{plan.scenario.incident_traffic_factor:g}, conversion "
            f"×{plan.scenario.incident_conversion_factor:g}) from minute {incident_after_minutes:g} "
            f"for {incident_minutes:g} minutes"
            if incident_after_minutes is not None
            else ""
        )
        + ". Ctrl-C stops.",
        highlight=False,
    )

    async def main() -> ProduceStats:
        stop = asyncio.Event()
        with stderr.status("backfilling…") as status:
            progress = _reporter(lambda stats: _live_line(stats, plan), status)

            run = asyncio.ensure_future(
                produce_live(
                    settings,
                    plan,
                    seed=seed,
                    envelope_size=envelope_size,
                    max_events=events,
                    stop=stop,
                    on_progress=progress,
                )
            )
            return await _until_interrupted(run, stop)

    _print_summary(_run(main), settings)


def _reporter(line: Callable[[ProduceStats], str], status: Status) -> Callable[[ProduceStats], None]:
    """Progress on the spinner in a terminal; in a log (not a terminal), one line every `LOG_EVERY_SECONDS`."""
    if stderr.is_terminal:
        return lambda stats: status.update(line(stats))
    next_line = time.monotonic() + LOG_EVERY_SECONDS

    def log(stats: ProduceStats) -> None:
        nonlocal next_line
        if time.monotonic() >= next_line:
            stderr.print(line(stats), highlight=False)
            next_line = time.monotonic() + LOG_EVERY_SECONDS

    return log


def _live_line(stats: ProduceStats, plan: LivePlan) -> str:
    """One status line: phase, event time, counts and rate, and where the incident stands."""
    from stream.core.windows import to_datetime

    if stats.event_time_ms is None:
        return f"backfill: {stats.total_events:,} events ({stats.events_per_second:,.0f} events/s)"
    live_events = stats.total_events - stats.backfill_events
    live_seconds = max(1e-9, plan.clock.elapsed_at(stats.event_time_ms))
    line = (
        f"live: event time {to_datetime(stats.event_time_ms):%Y-%m-%d %H:%M} UTC · {stats.total_events:,} events "
        f"({stats.backfill_events:,} backfill) · {live_events / live_seconds:,.1f} events/s"
    )
    if plan.incident_ms is not None:
        begins, ends = plan.incident_ms
        if stats.event_time_ms < begins:
            line += f" · incident in {(plan.clock.elapsed_at(begins) - live_seconds) / 60:.1f} min"
        elif stats.event_time_ms < ends:
            line += f" · [bold red]incident on[/] for {(plan.clock.elapsed_at(ends) - live_seconds) / 60:.1f} min more"
        else:
            line += " · incident over"
    return line


def _run(main: Callable[[], Coroutine[Any, Any, ProduceStats]]) -> ProduceStats:
    from stream.app.admin import TopicCreationFailed, TopicMismatch
    from stream.produce import ProduceError

    started = time.monotonic()
    try:
        return asyncio.run(main())
    except (ProduceError, TopicMismatch, TopicCreationFailed) as exc:
        stderr.print(f"[red]error:[/] {safe(str(exc))}")
        raise typer.Exit(1) from None
    except Exception as exc:  # the broker is unreachable, refuses the credentials, …
        if type(exc).__module__.startswith("aiokafka"):
            stderr.print(
                f"[red]error:[/] Kafka: {type(exc).__name__}: {exc} (after {time.monotonic() - started:.0f} s); "
                "check LEADLAG_BROKER and the LEADLAG_SECURITY_* settings"
            )
            raise typer.Exit(1) from None
        raise


def _print_summary(stats: ProduceStats, settings: Settings) -> None:
    table = Table(title="produced" + (" (stopped)" if stats.stopped else ""), title_justify="left")
    table.add_column("topic")
    table.add_column("events", justify="right")
    table.add_column("messages", justify="right")
    for topic in sorted(stats.events):
        table.add_row(topic, f"{stats.events[topic]:,}", f"{stats.messages[topic]:,}")
    table.add_row("all", f"{stats.total_events:,}", f"{stats.total_messages:,}", style="bold")
    stderr.print(table)
    stderr.print(
        f"{stats.total_events:,} events in {stats.elapsed_seconds:,.1f} s "
        f"({stats.events_per_second:,.0f} events/s) to {settings.broker}",
        highlight=False,
    )
