"""`leadlag bench`: the worker's events/s and peak RSS next to a raw consumer's, per input shape."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from stream.cli.console import safe, stderr

if TYPE_CHECKING:
    from stream.bench import ShapeResult

ABSENT = "–"


def bench_command(
    events: Annotated[int, typer.Option(min=1, help="Events produced per input shape.")] = 1_000_000,
    envelope_size: Annotated[
        list[int] | None,
        typer.Option(min=1, max=10_000, help="Input shapes to measure, repeatable (default: 200 and 1)."),
    ] = None,
    broker: Annotated[
        str | None, typer.Option(help="Kafka to bench against (LEADLAG_BROKER); default: an embedded broker.")
    ] = None,
    partitions: Annotated[int | None, typer.Option(min=1, help="Partitions per topic (LEADLAG_PARTITIONS).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulated events.")] = 1,
    worker: Annotated[bool, typer.Option(help="Also measure the leadlag worker (not only the raw consumer).")] = True,
    workers: Annotated[
        list[int] | None,
        typer.Option(
            min=1,
            max=64,
            help="Worker processes folding together (one group), repeatable to compare: --workers 1 --workers 2.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON instead of a table.")] = False,
) -> None:
    """Produce simulated events, then time a raw consumer and the leadlag worker reading them to the end.

    Each input shape (and worker count) gets fresh topics; the worker runs as `leadlag worker` with the
    memory store, N of them in one group with --workers N. Reported: events/s of each (from first to last
    progress; with several workers, from when all hold partitions), the worker/raw ratio and peak RSS.
    """
    from stream.bench import DEFAULT_SHAPES, BenchError, run_bench
    from stream.settings import SettingsError, load_settings

    try:
        settings = load_settings(**({"broker": broker} if broker else {}))
    except SettingsError as exc:
        stderr.print(f"[red]error:[/] {safe(str(exc))}")
        raise typer.Exit(2) from None
    target = settings.broker or None
    stderr.print(
        f"bench: {events:,} events per shape against "
        + (target if target else "an embedded broker (in memory; gone when the bench ends)"),
        highlight=False,
    )
    with stderr.status("starting…") as status:

        def step(what: str) -> None:
            status.update(what)
            stderr.print(what, highlight=False)

        try:
            results = run_bench(
                target,
                events,
                envelope_size or DEFAULT_SHAPES,
                broker_kind=settings.broker_kind,
                seed=seed,
                partitions=partitions or settings.partitions,
                with_worker=worker,
                on_step=step,
                workers=workers or (1,),
            )
        except BenchError as exc:
            stderr.print(f"[red]error:[/] {safe(str(exc))}")
            raise typer.Exit(1) from None
    for result in results:
        if result.worker_error:
            stderr.print(f"[red]worker, envelopes of {result.envelope_size}:[/] {safe(str(result.worker_error))}")
    if as_json:
        print(json.dumps([result.as_json() for result in results], indent=2))
    else:
        console = Console()
        print_results(results, console if console.is_terminal else Console(width=130))
    if worker and any(result.worker is None for result in results):
        raise typer.Exit(1)


def _rate(value: float | None) -> str:
    return ABSENT if value is None else f"{value:,.0f}"


def _mib(value: int | None) -> str:
    return ABSENT if value is None else f"{value / 2**20:,.0f} MiB"


def _ms(seconds: float | None) -> str:
    return ABSENT if seconds is None else f"{seconds * 1000:,.0f} ms"


def print_results(results: list[ShapeResult], console: Console) -> None:
    """One row per input shape; peak RSS is each process's high-water mark (VmHWM); targets under the table."""
    from stream.bench import TARGET_RATIO, TARGET_SCALE_OUT, TARGET_WORKER_RSS_BYTES, scale_out

    table = Table(
        title="leadlag bench: events/s from first to last progress; ratio = worker / raw", title_justify="left"
    )
    columns = (
        "events/msg",
        "workers",
        "events",
        "raw ev/s",
        "raw RSS",
        "worker ev/s",
        "worker RSS",
        "snapshot",
        "ratio",
        "target",
    )
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True)
    for result in results:
        worker = result.worker
        target = TARGET_RATIO.get(result.envelope_size)
        table.add_row(
            f"{result.envelope_size:,}",
            f"{result.workers}",
            f"{result.events:,}",
            _rate(result.raw.events_per_second),
            _mib(result.raw.peak_rss_bytes),
            _rate(worker.events_per_second if worker else None),
            _mib(worker.peak_rss_bytes if worker else None),
            _ms(worker.snapshot_seconds if worker else None),
            ABSENT if result.ratio is None else f"{result.ratio:.2g}×",
            ABSENT if target is None else f"≥ {target:g}×",
        )
    console.print(table)
    console.print(
        f"worker peak RSS target: ≤ {_mib(TARGET_WORKER_RSS_BYTES)}; snapshot = the worker's last snapshot build "
        "(built on a timer, never on a request)",
        highlight=False,
    )
    for envelope_size, workers, factor in scale_out(results):
        target = TARGET_SCALE_OUT.get(workers)
        console.print(
            f"scale-out, {envelope_size:,} event{'s' if envelope_size > 1 else ''} per message: {workers} workers "
            f"fold {factor:.2f}× one worker's events/s" + (f" (target ≥ {target:g}×)" if target else ""),
            highlight=False,
        )
