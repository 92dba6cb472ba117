"""`leadlag simulate`: a believable company's events, as NDJSON."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer

from stream.cli.console import stderr


def simulate_command(
    out: Annotated[Path | None, typer.Option(help="Write NDJSON here; default stdout.")] = None,
    events: Annotated[int, typer.Option(min=1, help="How many events to generate.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Same seed, same events.")] = 1,
    incident: Annotated[bool, typer.Option(help="Script 'traffic up, conversion down' near the end.")] = False,
    envelope_size: Annotated[int, typer.Option(min=1, max=10_000, help="Events per line (a JSON array when > 1).")] = 1,
) -> None:
    """Generate a believable B2B SaaS company's events as NDJSON (for replay, tests and demos)."""
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
