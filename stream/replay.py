"""`leadlag replay`: the reducers over an NDJSON file, without Kafka.

The same parsing, the same ledger and the same snapshot as the worker, so a
backfill, a test and a what-if question all get the numbers the live system
would. Each line is one event or an envelope (a JSON array of events); a bad
line is reported with its line number and reason and never stops the run.
Lines are judged by the worker's limits (`Policy.limits`): a line longer than
the largest message is never read whole into memory (`bounded_lines`).
"""

from __future__ import annotations

import gc
import gzip
import io
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO

from schemas.events import Event
from schemas.parsing import DEFAULT_LIMITS, InputLimits, InvalidEvent, parse_message, printable
from stream.codec import decode_state, encode_state
from stream.core.ledger import EntityState, Ledger, Outcome, RejectedEvent
from stream.core.links import EntityKind
from stream.core.policy import Policy
from stream.state.packing import StatePacker

GZIP_MAGIC = b"\x1f\x8b"
BLANK = frozenset(b" \t\n\r\x0b\x0c")
"""The bytes `bytes.strip` removes: a line of only these is skipped."""
SKIP_CHUNK = 1024 * 1024
"""How much of an over-long line is read at a time while skipping it."""
MAX_BAD_KEPT = 1_000
"""Bad lines kept in `ReplayCounts.bad` (all are counted and passed to `on_bad`)."""


DECODED_STATES = 20_000
"""Entity states replay keeps decoded (the most recently used); the rest are kept as codec bytes."""


class EncodedStore:
    """Entity states as packed codec bytes, the most recently used decoded: a million entities in about 100 MB.

    A state in Python objects costs about 1 KB; its codec bytes about 230 B, packed about 70 B
    (`stream.state.packing`). Folding touches an entity a few times close together, so a small cache of decoded
    states saves nearly every decode.
    """

    __slots__ = ("decoded", "encoded", "packer")

    def __init__(self) -> None:
        self.encoded: dict[EntityKind, dict[str, bytes]] = {"visitor": {}, "contact": {}, "account": {}, "channel": {}}
        """One dict per kind, keyed by the entity's id alone (a million (kind, id) tuples would cost 56 MB)."""
        self.packer = StatePacker()
        self.decoded: dict[tuple[EntityKind, str], EntityState] = {}
        """Least recently used first."""

    def get(self, kind: EntityKind, key: str) -> EntityState | None:
        ref = (kind, key)
        state = self.decoded.pop(ref, None)
        if state is None:
            raw = self.encoded[kind].get(key)
            if raw is None:
                return None
            state = decode_state(kind, self.packer.unpack(raw))
        self.decoded[ref] = state
        return state

    def put(self, kind: EntityKind, key: str, state: EntityState) -> None:
        decoded = self.decoded
        decoded[(kind, key)] = state
        if len(decoded) > DECODED_STATES:
            encoded, pack = self.encoded, self.packer.pack
            for ref in list(decoded)[: DECODED_STATES // 4]:
                encoded[ref[0]][ref[1]] = pack(encode_state(decoded.pop(ref)))

    def items(self) -> Iterator[tuple[EntityKind, str, EntityState]]:
        for (kind, key), state in self.decoded.items():
            yield kind, key, state
        for kind, states in self.encoded.items():
            for key, raw in states.items():
                if (kind, key) not in self.decoded:
                    yield kind, key, decode_state(kind, self.packer.unpack(raw))


@dataclass(frozen=True, slots=True)
class BadInput:
    """A line (or one event of an envelope line) that was not counted, and why."""

    line: int
    index: int | None
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.index is None else f"line {self.line}, event {self.index}"
        return f"{where}: {self.reason}"


@dataclass(slots=True)
class ReplayCounts:
    lines: int = 0
    events: int = 0
    accepted: int = 0
    duplicates: int = 0
    invalid: int = 0
    rejected: int = 0
    after_as_of: int = 0
    bad: list[BadInput] = field(default_factory=list)
    """The first `MAX_BAD_KEPT` bad lines."""

    def record(self, bad: BadInput, on_bad: Callable[[BadInput], None] | None) -> None:
        if len(self.bad) < MAX_BAD_KEPT:
            self.bad.append(bad)
        if on_bad is not None:
            on_bad(bad)


@dataclass(frozen=True, slots=True)
class Input:
    """An opened input: its byte lines, its size on disk if known, and how far into it we are."""

    lines: IO[bytes]
    size: int | None
    position: Callable[[], int]


def open_input(path: str) -> Input:
    """Open a replay input: `-` is stdin; gzip is recognised by its magic bytes, whatever the name."""
    if path == "-":
        raw: IO[bytes] = sys.stdin.buffer
        size = None
    else:
        raw = open(Path(path), "rb")  # noqa: SIM115 - closed by the caller through Input.lines
        size = Path(path).stat().st_size
    head = raw.peek(2)[:2] if isinstance(raw, io.BufferedReader) else b""
    lines: IO[bytes] = raw
    if head == GZIP_MAGIC:
        lines = gzip.GzipFile(fileobj=raw)  # type: ignore[assignment]  # GzipFile is a binary stream

    def position() -> int:
        try:
            return raw.tell()
        except OSError:  # a pipe
            return 0

    return Input(lines, size, position)


def bounded_lines(stream: IO[bytes], limit: int) -> Iterator[bytes]:
    """The lines of `stream`; a line longer than `limit` bytes comes out as its first `limit + 1` bytes (enough to
    be judged too large) and the rest of it is skipped a chunk at a time, never held whole."""
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            while True:
                rest = stream.readline(SKIP_CHUNK)
                if not rest or rest.endswith(b"\n"):
                    break
        yield line


def read_events(
    lines: Iterable[bytes],
    counts: ReplayCounts,
    limits: InputLimits = DEFAULT_LIMITS,
    now_ms: int | None = None,
    on_bad: Callable[[BadInput], None] | None = None,
) -> Iterator[tuple[int, Event]]:
    """(line number, event) for every valid event; bad ones are counted in `counts` and passed to `on_bad`.

    Event time is bounded by `limits` around `now_ms` (default: the wall clock when reading starts).
    """
    now = int(time.time() * 1000) if now_ms is None else now_ms
    limit = limits.max_message_bytes
    for number, line in enumerate(lines, start=1):
        counts.lines = number
        if (not line or line[0] in BLANK) and not line.strip():  # the first byte nearly always settles it
            continue
        if len(line) > limit:
            line = line.rstrip(b"\r\n")  # the newline is not part of the message
        for item in parse_message(line, now_ms=now, limits=limits):
            counts.events += 1
            if isinstance(item, InvalidEvent):
                counts.invalid += 1
                counts.record(BadInput(number, item.index, item.reason), on_bad)
            else:
                yield number, item


BULK_GC_THRESHOLD = 200_000
"""Allocations between young collections while replaying (CPython's default is 700)."""


@contextmanager
def bulk_gc() -> Iterator[None]:
    """Collect garbage less often while folding: the entity states and totals a replay builds up survive every
    collection, and at the default rate the collector re-scanned them for about a sixth of the run. Young cycles are
    still collected; the previous thresholds come back afterwards."""
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], BULK_GC_THRESHOLD), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def replay(
    lines: Iterable[bytes],
    policy: Policy,
    as_of: datetime | None = None,
    shards: int = 1,
    on_bad: Callable[[BadInput], None] | None = None,
    now_ms: int | None = None,
) -> tuple[Ledger, ReplayCounts]:
    """Fold every valid event up to `as_of` (all, when None) into a fresh ledger; `on_bad` hears of each bad line
    as it is read. `now_ms` is the wall clock event time is bounded by (default: read when the replay starts)."""
    ledger = Ledger(policy, shards=shards, store=EncodedStore)
    counts = ReplayCounts()
    as_of_ms = None if as_of is None else int(as_of.timestamp() * 1000)
    with bulk_gc():
        _fold_lines(ledger, counts, lines, policy, as_of_ms, on_bad, now_ms)
    return ledger, counts


def _fold_lines(
    ledger: Ledger,
    counts: ReplayCounts,
    lines: Iterable[bytes],
    policy: Policy,
    as_of_ms: int | None,
    on_bad: Callable[[BadInput], None] | None,
    now_ms: int | None,
) -> None:
    for number, event in read_events(lines, counts, policy.limits, now_ms, on_bad):
        if as_of_ms is not None and event.occurred_ms > as_of_ms:
            counts.after_as_of += 1
            continue
        try:
            outcome = ledger.fold(event)
        except RejectedEvent as exc:
            counts.rejected += 1
            counts.record(BadInput(number, None, f"{event.type} {event.event_id}: {exc}"), on_bad)
        except Exception as exc:  # a reducer bug must not stop a replay either: the worker dead-letters it too
            counts.rejected += 1
            reason = f"{event.type} {event.event_id}: internal error: {type(exc).__name__}: {exc}"
            counts.record(BadInput(number, None, printable(reason)), on_bad)
        else:
            if outcome is Outcome.DUPLICATE:
                counts.duplicates += 1
            else:
                counts.accepted += 1
