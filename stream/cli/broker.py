"""`leadlag broker`: the embedded Kafka-protocol broker in the foreground, for a worker and producers to share."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Annotated

import typer
from rich.markup import escape

from stream.cli.console import safe, stderr

WATCH_SECONDS = 1.0
"""How often the command checks that the broker process is still alive while it waits for Ctrl-C."""


def broker_command(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on, on 127.0.0.1 only.")] = 9092,
) -> None:
    """Run the embedded broker (Tansu) on 127.0.0.1 until Ctrl-C or SIGTERM.

    It keeps every topic in memory: stopping it loses them all. Point a worker at it with
    LEADLAG_BROKER=kafka://127.0.0.1:PORT and LEADLAG_BROKER_KIND=embedded (which turns on the
    workarounds for this broker's differences from Apache Kafka).
    """
    from stream.broker import BrokerError, EmbeddedBroker

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    broker = EmbeddedBroker(port)
    try:
        try:
            broker.start()
        except BrokerError as exc:
            stderr.print(f"[red]error:[/] {safe(str(exc))}", highlight=False)
            raise typer.Exit(1) from None
        stderr.print(
            f"embedded broker listening on {broker.bootstrap} (Kafka protocol, loopback only)\n"
            "it keeps everything in memory: stopping it loses every topic (a worker started again on its old "
            "data directory rebuilds it from the new, empty broker)\n"
            f"workers: LEADLAG_BROKER={broker.url} LEADLAG_BROKER_KIND=embedded\n"
            "stop with Ctrl-C",
            highlight=False,
        )
        while not stop.wait(WATCH_SECONDS):
            if not broker.running:
                stderr.print(f"[red]error:[/] the embedded broker exited unexpectedly\n{escape(broker.log_tail())}")
                raise typer.Exit(1)
        stderr.print("stopping the embedded broker…")
    finally:
        broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    stderr.print("stopped")
