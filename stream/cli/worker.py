"""`leadlag worker`: the live stream processor against a Kafka cluster."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer

from stream.cli.console import safe, stderr
from stream.settings import Settings, SettingsError, load_settings


def load_worker_settings(**overrides: object) -> Settings:
    """Settings for a worker, or exit 2 with a message naming the setting to fix."""
    try:
        settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        stderr.print(f"[red]error:[/] {safe(str(exc))}")
        raise typer.Exit(2) from None
    if not settings.broker:
        stderr.print(
            "[red]error:[/] LEADLAG_BROKER is not set: point it at your Kafka (e.g. kafka://localhost:9092), "
            "or run `leadlag demo` to start an embedded broker with a worker and a simulator."
        )
        raise typer.Exit(2)
    return settings


def prepare_topics(settings: Settings) -> None:
    """Create the topics leadlag needs with the configured partitions; refuse a mismatch clearly."""
    from stream.app.admin import TopicMismatch, ensure_topics, leadlag_topics

    try:
        asyncio.run(ensure_topics(settings.broker, leadlag_topics(settings), settings=settings))
    except TopicMismatch as exc:
        stderr.print(f"[red]error:[/] {safe(str(exc))}")
        raise typer.Exit(2) from None


def worker_command(
    broker: Annotated[str | None, typer.Option(help="Kafka bootstrap servers (LEADLAG_BROKER).")] = None,
    web_port: Annotated[
        int | None, typer.Option(help="Port of /metrics and the JSON views (LEADLAG_WEB_PORT).")
    ] = None,
    partitions: Annotated[
        int | None, typer.Option(help="Partitions of every leadlag topic (LEADLAG_PARTITIONS).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the stream processor: read the five input topics, keep the metric tables, serve /metrics and /api.

    Settings come from LEADLAG_* variables (see the README). Stop with Ctrl-C or SIGTERM; a worker restarted
    on the same data directory (or on another machine) resumes from its tables' changelogs.
    """
    import faust

    from stream.app.worker import LeadlagWorker, redacted_broker_url

    settings = load_worker_settings(broker=broker, web_port=web_port, partitions=partitions)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    prepare_topics(settings)
    worker = LeadlagWorker(settings)
    stderr.print(
        f"leadlag worker: broker {redacted_broker_url(settings.broker)}, {settings.partitions} partitions, "
        f"store {settings.store}; "
        f"metrics on http://{settings.web_host}:{settings.web_port}/metrics, "
        f"views on http://{settings.web_host}:{settings.web_port}/api/snapshot",
        highlight=False,
    )
    faust.Worker(worker.app, loglevel=log_level.upper(), quiet=True, redirect_stdouts=False).execute_from_commandline()
