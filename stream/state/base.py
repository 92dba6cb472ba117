"""The store interface: one partition's entity states as bytes, and the changelog offset they reach.

A `PartitionStore` is a local copy of a prefix of one changelog partition:
`offset` is the changelog offset up to which (exclusive) it has applied the
records, and `write` applies a batch of records and moves the offset in one
atomic step. Backends (`stream.state.memory`, `stream.state.rocksdb`) only
keep bytes; decoding, caching and folding belong to the worker.

Keys: an entity is `kind:id` (`visitor:v-1`, `contact:c-9`); a partition's
meta records start with `_` (an entity kind never does).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

from stream.core.links import EntityKind

ENTITY_KINDS: frozenset[str] = frozenset({"visitor", "contact", "account", "channel"})
META_PREFIX = b"_"
MARKS_PREFIX = b"_marks:"
"""A partition's earliest and newest event time folded: `[earliest_ms, newest_ms]`."""
COUNTS_PREFIX = b"_counts:"
"""A partition's input counts (events, accepted, duplicates, invalid, rejected)."""
BUCKET_PREFIX = b"_bucket:"
"""One hour or month bucket of a series of the partition's totals (`stream.state.buckets`)."""


def compact(data: bytes) -> bytes:
    """`data` in a bytes object of its own size.

    orjson (3.13) returns bytes backed by a 4 KiB buffer however short the JSON: kept by
    the hundred thousand (states and buckets waiting for a flush, the memory store) they
    cost 4 KiB each, 20 times their size, and their page faults dominate the flush time.
    """
    return memoryview(data).tobytes()


def entity_key(kind: EntityKind, key: str) -> bytes:
    """The store and changelog key of an entity."""
    return f"{kind}:{key}".encode()


def parse_entity_key(raw: bytes) -> tuple[EntityKind, str] | None:
    """`(kind, id)` of an entity key; None for a meta key or one this release does not know."""
    if raw.startswith(META_PREFIX):
        return None
    kind, _, key = raw.decode().partition(":")
    if kind not in ENTITY_KINDS:
        return None
    return kind, key  # type: ignore[return-value]


def marks_key(partition: int) -> bytes:
    return MARKS_PREFIX + str(partition).encode()


def counts_key(partition: int) -> bytes:
    return COUNTS_PREFIX + str(partition).encode()


class PartitionStore(Protocol):
    """A local copy of one changelog partition up to `offset` (exclusive)."""

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int:
        """The changelog offset this copy has applied every record below (0 when it is empty)."""

    @property
    def complete(self) -> bool:
        """Whether it holds every record below `offset`: a memory store sheds its totals' buckets once
        they are loaded (the live totals are their copy), and must then be read again from 0 to catch up."""

    def get(self, key: bytes) -> bytes | None: ...

    def items(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Every key starting with `prefix` and its value (all of them by default)."""

    def write(self, entries: Mapping[bytes, bytes | None], offset: int) -> None:
        """Apply `entries` (None deletes) and set `offset`, atomically: a crash keeps all of it or none."""

    def clear(self) -> None:
        """Forget everything (offset 0, no origin): the changelog this copy came from is gone."""

    @property
    def origin(self) -> str | None:
        """The broker cluster whose changelog this copy was built from (None: not recorded yet). Local only,
        never in the changelog: it tells a restarted embedded broker (an empty one) from the one it came from."""

    def set_origin(self, origin: str) -> None:
        """Record the cluster this copy is built from from now on."""

    def totals_loaded(self) -> None:
        """The worker loaded the partition's totals from this copy: it may shed their bucket records."""

    def close(self) -> None: ...


class StateBackend(Protocol):
    """Opens the store of a partition; `durable` says whether a copy outlives the process."""

    durable: bool

    def open(self, partition: int) -> PartitionStore: ...
