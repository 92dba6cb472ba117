"""`leadlag replay`: the snapshot of an NDJSON file, folded through the metric reducers."""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Iterator
from enum import StrEnum
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from schemas.parsing import printable
from schemas.snapshot import InputCounts, Snapshot
from stream.cli.console import safe, stderr
from stream.cli.options import parse_instant
from stream.core.series import build_series
from stream.core.snapshot import build_snapshot
from stream.csvexport import months_csv
from stream.replay import BadInput, bounded_lines, open_input, replay
from stream.settings import SettingsError, load_settings


class OutputFormat(StrEnum):
    JSON = "json"
    TABLE = "table"
    CSV = "csv"


def replay_command(
    file: Annotated[
        str, typer.Argument(help="NDJSON events (one event or one JSON array per line); '-' for stdin; .gz accepted.")
    ],
    as_of: Annotated[
        str | None,
        typer.Option(
            help="Describe the world at this instant (RFC 3339); later events are left out. Default: the latest event."
        ),
    ] = None,
    output_format: Annotated[
        OutputFormat,
        typer.Option("--format", help="json: the full snapshot; table: a summary; csv: one row per month."),
    ] = OutputFormat.JSON,
    fx_rate: Annotated[
        list[str] | None,
        typer.Option(help="CUR=RATE, 1 CUR in reporting currency; repeatable. Overrides LEADLAG_FX_RATES."),
    ] = None,
    currency: Annotated[
        str | None, typer.Option(help="Reporting currency (LEADLAG_REPORTING_CURRENCY, default USD).")
    ] = None,
    grace_hours: Annotated[
        float | None, typer.Option(help="Count events later than this behind the newest as late (default: accept all).")
    ] = None,
    shards: Annotated[
        int, typer.Option(min=1, max=64, help="Fold across N partitions, as the worker would (same numbers).")
    ] = 1,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Do not list bad lines on stderr (they are still counted).")
    ] = False,
) -> None:
    """Fold events through the metric reducers without Kafka and print the snapshot.

    Bad lines are reported on stderr with their line number and reason, counted
    in the snapshot, and never stop the run.
    """
    overrides: dict[str, object] = {}
    if fx_rate:
        overrides["fx_rates"] = ",".join(fx_rate)
    if currency:
        overrides["reporting_currency"] = currency
    if grace_hours is not None:
        overrides["grace_hours"] = grace_hours
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        stderr.print(f"[red]error:[/] {safe(str(exc))}")
        raise typer.Exit(2) from None
    policy = settings.policy()
    as_of_moment = None if as_of is None else parse_instant(as_of, "--as-of")
    try:
        source = open_input(file)
    except OSError as exc:
        stderr.print(f"[red]error:[/] cannot read {safe(file)}: {safe(str(exc.strerror or exc))}")
        raise typer.Exit(2) from None

    def report(bad: BadInput) -> None:
        if not quiet:  # the reason quotes input: printed as plain, escaped text, never as markup
            stderr.print(Text.assemble(("skipped", "yellow"), " ", printable(str(bad))), highlight=False)

    started = time.perf_counter()
    progress = Progress(
        TextColumn("[bold]replay[/]"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=stderr,
        disable=not stderr.is_terminal or source.size is None or source.size < 5_000_000,
        transient=True,
    )
    with progress, source.lines:
        task = progress.add_task("replay", total=source.size)

        def lines() -> Iterator[bytes]:
            for number, line in enumerate(bounded_lines(source.lines, policy.limits.max_message_bytes)):
                if number % 10_000 == 0:
                    progress.update(task, completed=source.position())
                yield line

        now_ms = int(time.time() * 1000)  # the wall clock bounds event time (README, "Input events")
        ledger, counts = replay(lines(), policy, as_of_moment, shards=shards, on_bad=report, now_ms=now_ms)
    elapsed = time.perf_counter() - started
    # What the replay built lives until the process ends: out of the collector's sight, the first allocations of
    # the snapshot do not set off a full collection over every state (measured: 285 of 513 ms on 200,000 events).
    gc.freeze()
    as_of_ms = int(as_of_moment.timestamp() * 1000) if as_of_moment else ledger.watermark_ms
    snapshot_started = time.perf_counter()
    snapshot = build_snapshot(
        ledger.totals(),
        as_of_ms,
        ledger.earliest_ms,
        policy,
        InputCounts(
            events=counts.events,
            accepted=counts.accepted,
            duplicates=counts.duplicates,
            invalid=counts.invalid,
            rejected=counts.rejected,
            after_as_of=counts.after_as_of,
        ),
    )
    snapshot_ms = (time.perf_counter() - snapshot_started) * 1000
    if output_format is OutputFormat.JSON:
        sys.stdout.buffer.write(snapshot_json(snapshot) + b"\n")
    elif output_format is OutputFormat.CSV:
        series = build_series(ledger.totals(), as_of_ms, ledger.earliest_ms, policy)
        sys.stdout.buffer.write(months_csv(snapshot, series).encode())
    else:
        from stream.cli.tables import print_snapshot

        console = Console()
        if not console.is_terminal:
            console = Console(width=130)  # a file or a pipe: do not squeeze the tables to 80 columns
        print_snapshot(snapshot, console)
    rate = counts.events / elapsed if elapsed > 0 else 0.0
    stderr.print(
        f"replayed {counts.events:,} events from {counts.lines:,} lines in {elapsed:.1f} s ({rate:,.0f} events/s): "
        f"{counts.accepted:,} counted, {counts.duplicates:,} duplicates, {counts.invalid:,} invalid, "
        f"{counts.rejected:,} rejected",
        highlight=False,
    )
    stderr.print(f"final snapshot built in {snapshot_ms:,.1f} ms", highlight=False)


def snapshot_json(snapshot: Snapshot) -> bytes:
    """The snapshot as indented JSON, with absent rates left out rather than null."""
    return orjson.dumps(snapshot.model_dump(mode="json", exclude_none=True), option=orjson.OPT_INDENT_2)
