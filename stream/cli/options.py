"""Parsing of option values shared by several commands."""

from __future__ import annotations

from datetime import UTC, datetime

import typer


def parse_instant(value: str, option: str) -> datetime:
    """An RFC 3339 instant (`Z` or an offset required), in UTC; a usage error naming the example otherwise."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an RFC 3339 timestamp, e.g. 2026-11-23T09:00:00Z", param_hint=option
        ) from None
    if moment.tzinfo is None:
        raise typer.BadParameter(f"{value!r} has no UTC offset; add Z or +HH:MM", param_hint=option)
    return moment.astimezone(UTC)
