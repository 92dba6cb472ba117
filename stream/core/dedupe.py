"""Duplicates within a horizon: the event ids an entity has folded recently, and no others.

Remembering every event id forever makes state grow with events. Like
Segment (24 h) and Mixpanel, leadlag deduplicates within a window instead: an
entity remembers the ids of its events whose event time lies within
`Policy.dedupe_horizon_ms` (default 7 days) of the newest event it has
folded. A duplicate arriving later than that cannot be told from a new event
and is counted again; docs/architecture.md ("Duplicates") says so for users.
The at-least-once replay of a crashed worker's tail is always well inside
the horizon.

Bound: the ids of one entity's events in one horizon (pruned, amortised,
whenever the table doubles since its last pruning).
"""

from __future__ import annotations

from collections.abc import Iterable

MIN_PRUNE_SIZE = 16
"""Ids are pruned once there are more than this and twice as many as after the last pruning."""


class RecentIds:
    """The ids (with event times) of an entity's events within the dedupe horizon of its newest event."""

    __slots__ = ("ids", "newest_ms", "pruned_size")

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        """event_id -> event time (ms)."""
        self.newest_ms: int | None = None
        self.pruned_size = 0

    def __contains__(self, event_id: str) -> bool:
        return event_id in self.ids

    def __len__(self) -> int:
        return len(self.ids)

    def seen(self, event_id: str, horizon_ms: int) -> bool:
        """True when `event_id` was folded and lies within the horizon: the same answer whenever it is asked."""
        ts = self.ids.get(event_id)
        return ts is not None and (self.newest_ms is None or ts >= self.newest_ms - horizon_ms)

    def remember(self, event_id: str, ts_ms: int, horizon_ms: int) -> None:
        """Record a folded event; forget ids older than the horizon once the table has doubled."""
        newest = self.newest_ms
        if newest is None or ts_ms > newest:
            self.newest_ms = newest = ts_ms
        if ts_ms < newest - horizon_ms:
            return  # already outside the horizon: remembering it would only be pruned again
        self.ids[event_id] = ts_ms
        if len(self.ids) > max(MIN_PRUNE_SIZE, 2 * self.pruned_size):
            self.prune(horizon_ms)

    def prune(self, horizon_ms: int) -> None:
        if self.newest_ms is not None:
            cutoff = self.newest_ms - horizon_ms
            self.ids = {event_id: ts for event_id, ts in self.ids.items() if ts >= cutoff}
        self.pruned_size = len(self.ids)

    def to_wire(self) -> list[object]:
        """[newest_ms, pruned_size, [event_id, ts_ms, event_id, ts_ms, ...]]: flat, for the state codec."""
        flat: list[object] = []
        for event_id, ts in self.ids.items():
            flat.append(event_id)
            flat.append(ts)
        return [self.newest_ms, self.pruned_size, flat]

    @classmethod
    def from_wire(cls, wire: Iterable[object]) -> RecentIds:
        newest, pruned_size, flat = wire
        recent = cls()
        recent.newest_ms = newest  # type: ignore[assignment]
        items = list(flat)  # type: ignore[call-overload]
        recent.ids = dict(zip(items[0::2], items[1::2], strict=True))
        recent.pruned_size = pruned_size  # type: ignore[assignment]
        return recent
