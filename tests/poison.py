"""A poison corpus: input that once broke leadlag (issue 10, items 1-7) and more, with what must happen to it.

Each `Poison` is one raw message (what a producer could put on a topic, or one
line of a replay file: none holds a newline byte, none is blank) and the
dead-letter reason kind it must get (`stream.app.intake.dead_letter_reason_kind`).
Every entry must become exactly one dead letter (one bad line in `leadlag
replay`), never a crash, and must leave every count, the clock and the state as
if it had not been sent. `GOOD` are valid events to send around them: the figures
of a run with the corpus must equal those of the good events alone.

Used by `tests/schemas/test_poison.py` (the parser and the intake),
`tests/test_replay_poison.py` (`leadlag replay`) and the live worker's tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson


@dataclass(frozen=True, slots=True)
class Poison:
    name: str
    raw: bytes
    """The message, as a producer sends it."""
    kind: str
    """The dead-letter reason kind it must get (label of `leadlag_deadletters_total`)."""
    counted: Literal["invalid", "rejected"] = "invalid"
    """Which input count it lands in: `invalid` (cannot be read) or `rejected` (read, cannot be counted)."""
    topic: str = "site.visits"
    """The input topic it is meant for (without a prefix)."""

    def __repr__(self) -> str:  # the raw bytes can be megabytes
        return f"Poison({self.name!r}, {len(self.raw):,} bytes, {self.kind})"


def visit(**fields: Any) -> dict[str, Any]:
    """A valid site visit, changed by `fields` (a field set to `...` is left out)."""
    event = {
        "event_id": "poison-visit",
        "type": "site_visit",
        "occurred_at": "2026-11-23T09:30:00Z",
        "session_id": "poison-session",
        "visitor_id": "poison-visitor",
        "channel": "paid",
        "pageviews": 2,
        "engaged_seconds": 30,
    } | fields
    return {key: value for key, value in event.items() if value is not ...}


def subscription(**fields: Any) -> dict[str, Any]:
    return {
        "event_id": "poison-sub",
        "type": "subscription",
        "occurred_at": "2026-11-23T09:30:00Z",
        "account_id": "poison-account",
        "subscription_id": "poison-subscription",
        "status": "active",
        "plan": "pro",
        "amount": "49.00",
        "currency": "USD",
        "interval": "month",
    } | fields


def stage_change(**fields: Any) -> dict[str, Any]:
    return {
        "event_id": "poison-stage",
        "type": "stage_change",
        "occurred_at": "2026-11-23T09:30:00Z",
        "contact_id": "poison-contact",
        "to_stage": "lost",
    } | fields


def spend(**fields: Any) -> dict[str, Any]:
    return {
        "event_id": "poison-spend",
        "type": "spend",
        "occurred_at": "2026-11-23T09:30:00Z",
        "channel": "paid",
        "category": "marketing",
        "amount": "100",
        "currency": "USD",
    } | fields


def js(value: Any) -> bytes:
    return orjson.dumps(value)


def _in_days(days: float) -> str:
    """An instant `days` from the wall clock when this module was imported, RFC 3339."""
    return (datetime.now(UTC) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


KB = 1024
MB = 1024 * 1024
# messages whose text is built by hand: a repeated key, or a key with space before its colon
_VISIT_TEXT = js(visit())[1:-1]

CORPUS: list[Poison] = [
    # 1. one event that stopped the worker for good
    Poison("year 9999", js(visit(occurred_at="9999-12-31T23:59:59Z")), "future"),
    Poison("year 10000 once in UTC", js(visit(occurred_at="9999-12-31T23:59:59-01:00")), "future"),
    Poison("year 1", js(visit(occurred_at="0001-01-01T00:00:00Z")), "too_old"),
    Poison("year 0 once in UTC", js(visit(occurred_at="0001-01-01T00:00:00+01:00")), "too_old"),
    Poison("engaged_seconds 1e308", js(visit(engaged_seconds=1e308)), "invalid"),
    Poison("engaged_seconds over a day", js(visit(engaged_seconds=86_401)), "invalid"),
    # 2. a future-dated event that poisoned the clock
    Poison("dated 2062", js(visit(occurred_at="2062-03-01T00:00:00Z")), "future"),
    Poison("two days past the wall clock", js(visit(occurred_at=_in_days(2))), "future"),
    # 3. a span that made the snapshot cost unbounded
    Poison("dated 1000-02", js(visit(occurred_at="1000-02-01T00:00:00Z")), "too_old"),
    Poison("just before 2000", js(visit(occurred_at="1999-12-31T23:59:59Z")), "too_old"),
    # 4. oversized fields and messages
    Poison(
        "campaign of 100 KB", js(visit(utm={"source": "g", "medium": "cpc", "campaign": "c" * 100 * KB})), "invalid"
    ),
    Poison("plan of 100 KB", js(subscription(plan="p" * 100 * KB)), "invalid", topic="billing.subscriptions"),
    Poison("reason of 100 KB", js(stage_change(reason="r" * 100 * KB)), "invalid", topic="crm.stage_changes"),
    Poison("referrer of 100 KB", js(visit(referrer="https://x.test/" + "r" * 100 * KB)), "invalid"),
    Poison("a page path of 100 KB", js(visit(pages=["/" + "p" * 100 * KB])), "invalid"),
    Poison("1,000 pages", js(visit(pages=["/p"] * 1000)), "invalid"),
    Poison("source of 100 KB", js(visit(source="s" * 100 * KB)), "invalid"),
    Poison("spend campaign of 100 KB", js(spend(campaign="c" * 100 * KB)), "invalid", topic="marketing.spend"),
    Poison("invalid message of 3.15 MB", js(visit(referrer="r" * (3 * MB + 150 * KB))), "too_large"),
    Poison("a 700 KB unknown type (quoted, cut)", js(visit(type="t" * 700 * KB)), "invalid"),
    # 5. amplification: one message, one dead letter
    Poison("3 MB envelope of {}", b"[" + b",".join([b"{}"] * (MB + 1)) + b"]", "too_large"),
    Poison("envelope of 10,001 {}", b"[" + b",".join([b"{}"] * 10_001) + b"]", "too_large"),
    Poison("envelope of 10,001 nulls", b"[" + b",".join([b"null"] * 10_001) + b"]", "too_large"),
    # 6. accepted but wrong
    Poison('occurred_at "0"', js(visit(occurred_at="0")), "invalid"),
    Poison('occurred_at "1763888400"', js(visit(occurred_at="1763888400")), "invalid"),
    Poison("occurred_at an epoch number", js(visit(occurred_at=1763888400)), "invalid"),
    Poison("occurred_at without offset", js(visit(occurred_at="2026-11-23T09:30:00")), "invalid"),
    Poison("event_id only spaces", js(visit(event_id="   ")), "invalid"),
    Poison("visitor_id a tab", js(visit(visitor_id="\t")), "invalid"),
    Poison("visitor_id a NUL", js(visit(visitor_id="v\u0000")), "invalid"),
    Poison("event_id with a DEL", js(visit(event_id="e\u007f")), "invalid"),
    Poison("contact_id with a C1 CSI", js(visit(contact_id="c\u009b31m")), "invalid"),
    Poison("session_id with a bidi override", js(visit(session_id="s\u202egnp.exe")), "invalid"),
    Poison("account_id with a line separator", js(subscription(account_id="a\u2028b")), "invalid"),
    Poison("campaign with an ANSI escape", js(visit(utm={"campaign": "\u001b[2J"})), "invalid"),
    Poison("pageviews 2^63", js(visit(pageviews=2**63)), "invalid"),
    Poison("pageviews 10^30", b'{"type":"site_visit","pageviews":1000000000000000000000000000000}', "invalid"),
    Poison("pageviews true", js(visit(pageviews=True)), "invalid"),
    Poison('pageviews "1"', js(visit(pageviews="1")), "invalid"),
    Poison("pageviews 1.0", js(visit(pageviews=1.0)), "invalid"),
    Poison("pageviews 100,001", js(visit(pageviews=100_001)), "invalid"),
    Poison('engaged_seconds "30"', js(visit(engaged_seconds="30")), "invalid"),
    Poison("engaged_seconds true", js(visit(engaged_seconds=True)), "invalid"),
    Poison("schema_version true", js(visit(schema_version=True)), "invalid"),
    Poison("quantity 10^18", js(subscription(quantity=10**18)), "invalid", topic="billing.subscriptions"),
    Poison("quantity true", js(subscription(quantity=True)), "invalid", topic="billing.subscriptions"),
    Poison("interval_count 10^9", js(subscription(interval_count=10**9)), "invalid", topic="billing.subscriptions"),
    Poison('amount "1_000"', js(subscription(amount="1_000")), "invalid", topic="billing.subscriptions"),
    Poison('amount " 10 "', js(subscription(amount=" 10 ")), "invalid", topic="billing.subscriptions"),
    Poison("amount true", js(subscription(amount=True)), "invalid", topic="billing.subscriptions"),
    Poison('amount "0x10"', js(subscription(amount="0x10")), "invalid", topic="billing.subscriptions"),
    Poison('amount "Infinity"', js(subscription(amount="Infinity")), "invalid", topic="billing.subscriptions"),
    Poison('amount "1e400"', js(subscription(amount="1e400")), "invalid", topic="billing.subscriptions"),
    Poison("amount 1e21", js(subscription(amount=1e21)), "invalid", topic="billing.subscriptions"),
    Poison("amount -1", js(spend(amount=-1)), "invalid", topic="marketing.spend"),
    Poison("type given twice", b'{"type":"form_fill",' + _VISIT_TEXT + b"}", "duplicate_key"),
    Poison("event_id given twice", b"{" + _VISIT_TEXT + b',"event_id":"other"}', "duplicate_key"),
    Poison("a key twice, spaced", b'{"pageviews" : 1, ' + _VISIT_TEXT + b"}", "duplicate_key"),
    Poison(
        "utm.campaign given twice",
        b"{" + _VISIT_TEXT + b',"utm":{"campaign":"a","campaign":"b"}}',
        "duplicate_key",
    ),
    # 7. terminal injection
    Poison('type "[/bold]"', js(visit(type="[/bold]")), "invalid"),
    Poison("type with markup and an emoji code", js(visit(type="[red]:fire:[/red]")), "invalid"),
    Poison(
        "event_id with ANSI and a newline", js(visit(event_id="\u001b[31mx\u001b[0m\nskipped line 1: ok")), "invalid"
    ),
    Poison("a carriage return in event_id", js(visit(event_id="ok\rskipped line 1")), "invalid"),
    # more: not events at all
    Poison("not JSON", b"{not json", "not_json"),
    Poison("NaN", b'{"type":"site_visit","engaged_seconds":NaN}', "not_json"),
    Poison("a number beyond a double", b'{"type":"site_visit","engaged_seconds":1e400}', "not_json"),
    Poison("invalid UTF-8", b'{"event_id":"\xff\xfe"}', "not_json"),
    Poison("a lone surrogate", b'{"event_id":"\\ud800"}', "not_json"),
    Poison("a byte order mark", b"\xef\xbb\xbf" + js(visit()), "not_json"),
    Poison("nested 100,000 deep", b"[" * 100_000 + b"]" * 100_000, "not_json"),
    Poison(
        "an extra field nested 1,018 deep (past Python's recursion limit, within orjson's)",
        b"{" + _VISIT_TEXT + b',"x":' + b'{"a":' * 1018 + b"1" + b"}" * 1019,
        "invalid",
    ),
    Poison("control bytes", b"\x1b[2J\x00\x07", "not_json"),
    Poison("null", b"null", "not_object"),
    Poison("a number", b"42", "not_object"),
    Poison("a string", b'"site_visit"', "not_object"),
    Poison("an empty envelope", b"[]", "empty_envelope"),
    Poison("an envelope of one bad event", js([visit(type="page_view")]), "invalid"),
    Poison("no type", js(visit(type=...)), "invalid"),
    Poison(
        "a currency with no rate",
        js(subscription(currency="JPY")),
        "unknown_currency",
        "rejected",
        "billing.subscriptions",
    ),
    Poison(
        "a currency with no rate, markup in the event_id",
        js(subscription(event_id="[/bold][red]", currency="JPY")),
        "unknown_currency",
        "rejected",
        "billing.subscriptions",
    ),
]
"""Every input of issue 10's items 1-7, and more; each must become exactly one dead letter of its `kind`."""

GOOD: list[dict[str, Any]] = (
    [
        visit(event_id=f"good-visit-{n}", session_id=f"good-session-{n}", visitor_id=f"good-visitor-{n % 7}")
        | {"occurred_at": f"2026-11-23T09:{n % 60:02d}:00Z", "channel": ("paid", "organic", "email")[n % 3]}
        for n in range(len(CORPUS))
    ]
    + [
        stage_change(event_id=f"good-lead-{n}", contact_id=f"good-contact-{n}", to_stage="lead")
        | {"occurred_at": f"2026-11-23T09:{n:02d}:30Z"}
        for n in range(6)
    ]
    + [
        subscription(event_id="good-sub", account_id="good-account", subscription_id="good-subscription"),
        spend(event_id="good-spend"),
    ]
)
"""Valid events to send around the poison (all within every default bound), at least one per poison."""


def good_lines() -> list[bytes]:
    """`GOOD` as NDJSON lines (without their newlines)."""
    return [js(event) for event in GOOD]


def interleaved() -> tuple[list[bytes], dict[int, Poison]]:
    """Every good event once, each poison message right after one of them: the lines (without newlines), and
    each poison by its line number (from 1)."""
    lines: list[bytes] = []
    poisoned: dict[int, Poison] = {}
    for n, good in enumerate(good_lines()):
        lines.append(good)
        if n < len(CORPUS):
            lines.append(CORPUS[n].raw)
            poisoned[len(lines)] = CORPUS[n]
    return lines, poisoned
