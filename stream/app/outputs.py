"""What the worker sends to Kafka, made safe to send: retried with backoff, and never larger than allowed.

Two ideas (docs/architecture.md, "Outputs"):

- `send_with_retry` tries a send a fixed number of times, the wait doubling
  between tries, then raises `OutputUnavailable`, whose message says what was
  not sent and what happens next. The engine sends a step's outputs before it
  commits the step's input, so a send that finally fails loses nothing: the
  worker stops (a supervisor restarts it) and the input is read again. An
  error that a retry cannot fix (a message over the producer's size limit) is
  raised at once, for the caller to shrink the message.
- `fit` makes a snapshot or alert body fit `limit` bytes: when it is larger,
  the largest map keyed by free-text names (plans, campaigns) keeps its
  largest entries and sums the rest as `other`, as `/metrics` does with plans;
  sums are preserved. Names are capped at 200 characters and
  `LEADLAG_MAX_LABEL_VALUES` per family and partition, so 500 plans × 4
  partitions of 200 escaped characters (up to 6 bytes each) can reach ~2.5 MB:
  over Kafka's default limit, hence the cap.

`split_to_fit` cuts a batch of routed items into messages below a size, and
`shrunk_dead_letter` drops the original bytes from a dead letter the broker
refused as too large (its origin still names where to find them).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import orjson
from aiokafka.errors import MessageSizeTooLargeError, RecordTooLargeError

log = logging.getLogger("leadlag.outputs")

T = TypeVar("T")
ItemT = TypeVar("ItemT")

FIRST_WAIT_SECONDS = 0.5
"""The wait after the first failed try; it doubles after each further one."""
MAX_WAIT_SECONDS = 30.0
OTHER = "other"
"""The entry that sums the names a capped map leaves out."""
UNRETRIABLE: tuple[type[BaseException], ...] = (MessageSizeTooLargeError, RecordTooLargeError)
"""Errors a retry cannot fix: the message itself must change."""
NAME_MAPS = frozenset({"mrr_by_plan", "sessions_by_campaign", "by_campaign"})
"""Maps keyed by names from the input; `_names_free_text` also takes any `*_by_plan` or `*_by_campaign`."""
RECOMPUTED = {"cost_per_lead": ("marketing_spend", "new_leads")}
"""Ratios of an `other` entry recomputed from its summed fields (numerator, denominator)."""


class OutputUnavailable(RuntimeError):
    """An output could not be sent after every try; the message says what and what happens next."""


async def send_with_retry(
    send: Callable[[], Awaitable[T]],
    what: str,
    attempts: int,
    *,
    first_wait: float = FIRST_WAIT_SECONDS,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """The result of `send()`, tried up to `attempts` times with doubling waits; `OutputUnavailable` after.

    Errors in `UNRETRIABLE` and cancellation pass through at once. Logs name the error, never the message.
    """
    wait = first_wait
    started = time.monotonic()
    for attempt in range(1, attempts + 1):
        try:
            return await send()
        except UNRETRIABLE:
            raise
        except Exception as exc:
            if attempt == attempts:
                raise OutputUnavailable(
                    f"could not send {what}: {attempts} tries over {time.monotonic() - started:.0f} s failed, "
                    f"the last with {type(exc).__name__}: {exc}. The input behind it is not committed: "
                    "it is read again when the worker restarts, once the broker accepts writes"
                ) from exc
            log.warning(
                "sending %s failed (%s: %s); try %d of %d in %.1f s",
                what,
                type(exc).__name__,
                exc,
                attempt + 1,
                attempts,
                wait,
            )
            await sleep(wait)
            wait = min(wait * 2, MAX_WAIT_SECONDS)
    raise AssertionError("unreachable: attempts >= 1")


def fit(body: dict[str, Any], limit: int) -> tuple[bytes, int] | None:
    """`body` as JSON of at most `limit` bytes, and how many names were folded into `other`; None if it
    cannot fit even with every name map capped (it is then not published)."""
    raw = orjson.dumps(body)
    folded = 0
    while len(raw) > limit:
        found = _largest_name_map(body)
        if found is None:
            return None
        parent, key = found
        mapping: dict[str, Any] = parent[key]
        keep = max(1, (len(mapping) - 1) // 2)
        parent[key], dropped = _capped(mapping, keep)
        folded += dropped
        raw = orjson.dumps(body)
    return raw, folded


def _largest_name_map(body: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """The (parent, key) of the largest map of names to numbers (or to objects of numbers) that can shrink."""
    best: tuple[int, dict[str, Any], str] | None = None
    stack: list[dict[str, Any]] = [body]
    while stack:
        node = stack.pop()
        for key, value in node.items():
            if not isinstance(value, dict):
                continue
            if _names_free_text(key) and _cappable(value):
                size = len(orjson.dumps(value))
                if best is None or size > best[0]:
                    best = (size, node, key)
            else:
                stack.append(value)
    return None if best is None else (best[1], best[2])


def _names_free_text(key: str) -> bool:
    """Maps keyed by names from the input (plans, campaigns); channels, stages and months are never capped."""
    return key in NAME_MAPS or key.endswith(("_by_plan", "_by_campaign"))


def _cappable(mapping: dict[str, Any]) -> bool:
    """A map with more than `other` and one name, whose values are all numbers or all objects of numbers."""
    names = [name for name in mapping if name != OTHER]
    if len(names) < 2:
        return False
    values = list(mapping.values())
    if all(_number(v) for v in values):
        return True
    return all(isinstance(v, dict) and all(_number(x) or x is None for x in v.values()) for v in values)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _weight(value: Any) -> float:
    if _number(value):
        return float(value)
    return float(sum(x for x in value.values() if _number(x)))


def _capped(mapping: dict[str, Any], keep: int) -> tuple[dict[str, Any], int]:
    """The `keep` largest names, and `other` summing the rest (and the former `other`); how many were folded."""
    names = sorted((name for name in mapping if name != OTHER), key=lambda n: (-_weight(mapping[n]), n))
    kept, rest = names[:keep], names[keep:]
    capped = {name: mapping[name] for name in kept}
    folded = [mapping[name] for name in rest]
    if OTHER in mapping:
        folded.append(mapping[OTHER])
    capped[OTHER] = _summed(folded)
    return capped, len(rest)


def _summed(values: list[Any]) -> Any:
    if all(_number(v) for v in values):
        total = sum(values)
        return round(total, 6) if isinstance(total, float) else total
    fields: dict[str, float] = {}
    for value in values:
        for name, x in value.items():
            if _number(x) and name not in RECOMPUTED:
                fields[name] = fields.get(name, 0) + x
    summed: dict[str, Any] = {name: round(x, 6) if isinstance(x, float) else x for name, x in fields.items()}
    for ratio, (numerator, denominator) in RECOMPUTED.items():
        if summed.get(denominator) and numerator in summed and any(ratio in v for v in values):
            summed[ratio] = round(summed[numerator] / summed[denominator], 6)
    return summed


def split_to_fit(items: Sequence[ItemT], encode: Callable[[Sequence[ItemT]], bytes], max_bytes: int) -> Iterator[bytes]:
    """`items` encoded as messages of at most `max_bytes`, halving a batch that is larger; an item larger
    than that on its own is one message (it came in a message of the same broker, so it fits there)."""
    raw = encode(items)
    if len(raw) <= max_bytes or len(items) == 1:
        yield raw
        return
    middle = len(items) // 2
    yield from split_to_fit(items[:middle], encode, max_bytes)
    yield from split_to_fit(items[middle:], encode, max_bytes)


def shrunk_dead_letter(letter: bytes, why: str) -> bytes:
    """A dead letter the broker refused as too large, without its original bytes (their length kept in
    the reason, with the topic, partition and offset to find them): it then always fits."""
    body = orjson.loads(letter)
    encoded = str(body.get("original_base64") or "")
    original = body.get("original_length") or len(encoded) * 3 // 4 - encoded[-2:].count("=")
    body["original_base64"] = ""
    body["original_text"] = None
    if "truncated" in body:
        body["truncated"] = True
    body["reason"] = f"{body.get('reason', '')} (original of {original} bytes left out: {why})"[:4096]
    return orjson.dumps(body)
