"""The codec gives back exactly what it was given: states that fold on as before, items equal to the originals."""

from __future__ import annotations

import dataclasses
from collections import deque
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum
from typing import Any
from unittest.mock import patch

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from schemas.channels import Channel
from schemas.events import (
    EVENT_ADAPTER,
    MAX_ENGAGED_SECONDS,
    MAX_PAGEVIEWS,
    Event,
    SiteVisit,
    Spend,
    SpendCategory,
    Stage,
    StageChange,
    Subscription,
)
from stream.codec import (
    ITEMS_FORMAT_VERSION,
    STATE_FORMAT_VERSION,
    CodecError,
    CorruptPayload,
    UnsupportedFormat,
    decode_items,
    decode_state,
    encode_items,
    encode_state,
    uncarried_fields,
)
from stream.core import revenue
from stream.core.acquisition import SpendRecord, SpendState
from stream.core.dedupe import RecentIds
from stream.core.funnel import ContactState, FillSource, FormRecord, StageRecord, apply_stage_change, apply_touch
from stream.core.ledger import DictStore, EntityState, Ledger, Shard, entity_delta
from stream.core.links import AccountLink, EntityKind, Item, Touch, VisitorLink
from stream.core.revenue import AccountBounds, AccountState, apply_account_link, apply_subscription
from stream.core.traffic import KeptSession, VisitorState
from tests.core.test_ledger import POLICY, snapshot_of
from tests.strategies import event_lists

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JAN_1_MS = 1_767_225_600_000
"""2026-01-01T00:00:00Z in epoch milliseconds."""


def assert_identical(original: Any, decoded: Any, where: str = "value") -> None:
    """Equal, and alike in every way `==` forgives: types, Decimal exponents, UTC offsets, dict order."""
    assert type(decoded) is type(original), f"{where}: {type(decoded).__name__} != {type(original).__name__}"
    if isinstance(original, BaseModel):
        assert list(decoded.__dict__) == list(original.__dict__), f"{where}: field order"
        for name, value in original.__dict__.items():
            assert_identical(value, decoded.__dict__[name], f"{where}.{name}")
    elif isinstance(original, Decimal):
        assert decoded.as_tuple() == original.as_tuple(), f"{where}: {decoded!r} != {original!r}"
    elif isinstance(original, datetime):
        assert (decoded, decoded.utcoffset()) == (original, original.utcoffset()), f"{where}: {decoded!r}"
    elif isinstance(original, Enum):
        assert decoded is original, f"{where}: {decoded!r} is not {original!r}"
    elif isinstance(original, dict):
        assert list(decoded) == list(original), f"{where}: keys"
        for key, value in original.items():
            assert_identical(value, decoded[key], f"{where}[{key!r}]")
    elif isinstance(original, (list, tuple)):
        assert len(decoded) == len(original), f"{where}: length"
        for index, (a, b) in enumerate(zip(original, decoded, strict=True)):
            assert_identical(a, b, f"{where}[{index}]")
    elif dataclasses.is_dataclass(original):
        assert_identical(dataclasses.astuple(original), dataclasses.astuple(decoded), where)  # type: ignore[arg-type]
    elif hasattr(original, "__slots__") and not isinstance(original, (str, int, float)):
        for name in original.__slots__:
            assert_identical(getattr(original, name), getattr(decoded, name), f"{where}.{name}")
    else:  # str, int, float, bool, None, set
        assert decoded == original, f"{where}: {decoded!r} != {original!r}"


def round_trip(kind: EntityKind, state: EntityState) -> EntityState:
    return decode_state(kind, encode_state(state))


def stores_of(ledger: Ledger) -> list[DictStore]:
    return [shard.store for shard in ledger.shards if isinstance(shard.store, DictStore)]


def links_emitted_folding(events: list[Event]) -> list[Item]:
    """Every link the reducers emit while folding the events into one shard."""
    shard = Shard(POLICY)
    links: list[Item] = []
    for event in events:
        try:
            pending: deque[Item] = deque([event])
            while pending:
                emitted = shard.fold(pending.popleft()).emitted
                links.extend(emitted)
                pending.extend(emitted)
        except ValueError:  # an unconvertible currency: the ledger's rejection, not ours
            continue
    return links


# -- entity states -----------------------------------------------------------------------


@PROPERTY
@given(events=event_lists(), shards=st.integers(1, 3))
def test_every_folded_state_survives_a_round_trip_record_for_record(events: list[Event], shards: int) -> None:
    ledger = Ledger(POLICY, shards=shards)
    ledger.fold_all(events)
    for store in stores_of(ledger):
        for kind, key, state in store.items():
            decoded = round_trip(kind, state)
            assert_identical(state, decoded, f"{kind} {key}")
            assert entity_delta(kind, key, decoded, POLICY) == entity_delta(kind, key, state, POLICY)


@PROPERTY
@given(events=event_lists(), cut=st.integers(0, 40), shards=st.integers(1, 3))
def test_decoded_states_keep_folding_as_if_they_had_never_left_memory(
    events: list[Event], cut: int, shards: int
) -> None:
    uninterrupted = Ledger(POLICY, shards=shards)
    uninterrupted.fold_all(events)

    resumed = Ledger(POLICY, shards=shards)
    resumed.fold_all(events[:cut])
    for store in stores_of(resumed):
        for kind, key, state in list(store.items()):
            store.put(kind, key, round_trip(kind, state))
    resumed.fold_all(events[cut:])

    assert snapshot_of(resumed) == snapshot_of(uninterrupted)
    for before, after in zip(stores_of(uninterrupted), stores_of(resumed), strict=True):
        assert_identical(before.states, after.states, "states")


def test_a_visitor_state_is_written_as_arrays_behind_version_and_kind() -> None:
    state = VisitorState()
    state.recent.remember("e1", JAN_1_MS, 7 * 86_400_000)
    state.last_visits = {"paid": JAN_1_MS}
    state.sessions = [KeptSession(JAN_1_MS, "e1", "s1", "paid", "spring")]
    state.contacts = ["c2", "c1"]
    state.months = {JAN_1_MS: ["paid"]}
    expected = (
        b'[2,"visitor",[1767225600000,0,["e1",1767225600000]],{"paid":1767225600000},'
        b'[[1767225600000,"e1","s1","paid","spring"]],["c2","c1"],[[1767225600000,["paid"]]]]'
    )
    assert encode_state(state) == expected
    assert_identical(state, decode_state("visitor", expected))


def test_a_visitor_state_written_before_months_were_kept_reads_with_none() -> None:
    older = b'[2,"visitor",[1767225600000,0,["e1",1767225600000]],{"paid":1767225600000},[],["c1"]]'

    state = decode_state("visitor", older)

    assert isinstance(state, VisitorState)
    assert (state.months, state.contacts) == ({}, ["c1"])


def test_money_keeps_every_digit_and_its_exponent() -> None:
    state = SpendState()
    state.spends[JAN_1_MS, "marketing", None] = Decimal("99.50")
    state.spends[JAN_1_MS, "sales", "launch"] = Decimal("0.1000000000000000055511151231257827")
    state.spends[JAN_1_MS + 60_000, "sales", None] = Decimal("1.2E+3")
    encoded = encode_state(state)
    assert b'"99.50"' in encoded
    decoded = decode_state("channel", encoded)
    assert isinstance(decoded, SpendState)
    assert [str(amount) for amount in decoded.spends.values()] == [
        "99.50",
        "0.1000000000000000055511151231257827",
        "1.2E+3",
    ]


def test_a_spend_state_is_its_event_ids_and_one_record_per_minute_category_and_campaign() -> None:
    state = SpendState()
    state.event_ids = {"s2", "s1"}
    state.spends[JAN_1_MS, "marketing", None] = Decimal("150.00")
    expected = b'[2,"channel",["s1","s2"],[[1767225600000,"marketing",null,"150.00"]]]'
    assert encode_state(state) == expected
    assert_identical(state, decode_state("channel", expected))
    assert SpendRecord(JAN_1_MS, "marketing", None, Decimal("150.00")) in state.to_wire()[1]


def test_an_account_comes_back_with_its_tail_frozen_summary_and_positions() -> None:
    """Every part of a bounded account survives: a small tail makes a few events freeze and compact."""
    events = [
        Subscription(
            event_id=f"e{n}",
            occurred_at=datetime(2026, 1 + n, 3, tzinfo=UTC),
            account_id="a1",
            subscription_id=f"s{n % 2}",
            status="cancelled" if n == 3 else "active",
            plan="pro" if n % 2 else None,
            amount=Decimal("99.50") * (n + 1),
            currency="USD",
            interval="month",
        )
        for n in range(6)
    ]
    bounds = AccountBounds(tail_min_events=1, tail_max_events=2, exact_moments=1, month_moments=2)
    state = AccountState()
    with patch.object(revenue, "ACCOUNT_BOUNDS", bounds):
        for event in events:
            apply_subscription(state, event, POLICY)
        apply_account_link(state, AccountLink("a1", "c1", JAN_1_MS, "paid", "spring"), POLICY)
    assert state.frozen_exact
    assert state.frozen_months
    assert state.tail
    decoded = round_trip("account", state)
    assert_identical(state, decoded, "account")
    assert entity_delta("account", "a1", decoded, POLICY) == entity_delta("account", "a1", state, POLICY)


def test_a_contact_comes_back_with_its_records_fill_sources_newest_time_recent_ids_and_last_account_link() -> None:
    state = ContactState()
    state.stage_changes["e1"] = StageRecord(JAN_1_MS, Stage.OPPORTUNITY, Decimal("5000.00"), "a1")
    state.stage_changes["e2"] = StageRecord(JAN_1_MS + 1, Stage.OPPORTUNITY, None, None)
    source = FillSource(2, JAN_1_MS - 60_000, "e9", "organic", None)
    state.form_fills["f1"] = FormRecord(JAN_1_MS, "demo_request", None, "spring", "v1", "s9", source)
    state.form_fills["f2"] = FormRecord(JAN_1_MS + 5, "newsletter", "email", None, None, None)
    state.touches["e9"] = Touch("c1", "v1", "e9", "s9", JAN_1_MS - 60_000, "organic", None)
    state.newest_ms = JAN_1_MS + 5
    state.recent = RecentIds.from_wire([JAN_1_MS - 1, 1, ["e0", JAN_1_MS - 1]])
    state.last_account_link = ("a1", JAN_1_MS - 60_000, "organic", None)
    decoded = round_trip("contact", state)
    assert_identical(state, decoded, "contact")
    assert isinstance(decoded, ContactState)
    assert decoded.form_fills["f1"].source == source
    assert decoded.last_account_link == ("a1", 1_767_225_540_000, "organic", None)


def test_a_contact_s_stored_state_stays_the_same_size_however_many_sessions_it_sees() -> None:
    state = ContactState()
    lead = {"event_id": "l1", "occurred_at": "2026-01-01T00:00:00Z", "contact_id": "c1", "to_stage": "lead"}
    apply_stage_change(state, StageChange.model_validate(lead | {"account_id": "a1"}), POLICY)
    sizes: dict[int, int] = {}
    for n in range(10_000):
        session = Touch("c1", "v1", f"sv-{n:05}", f"s-{n:05}", JAN_1_MS + n * 3_600_000, "paid", "spring")
        apply_touch(state, session, POLICY)
        if n + 1 in (100, 1_000, 10_000):
            sizes[n + 1] = len(encode_state(state))
    assert sizes[10_000] == sizes[1_000] == sizes[100] < 12_000  # bytes: the first touch and the latest 99


# -- items on the internal topic ---------------------------------------------------------


@PROPERTY
@given(events=event_lists())
def test_events_come_back_equal_to_the_validated_originals(events: list[Event]) -> None:
    decoded = decode_items(encode_items(events))
    assert decoded == events
    assert_identical(events, decoded, "events")


@PROPERTY
@given(events=event_lists())
def test_links_emitted_while_folding_come_back_equal(events: list[Event]) -> None:
    links = links_emitted_folding(events)
    decoded = decode_items(encode_items(links))
    assert decoded == links
    assert_identical(links, decoded, "links")


def test_a_batch_mixes_events_and_links_in_their_order() -> None:
    visit = EVENT_ADAPTER.validate_python(
        {
            "type": "site_visit",
            "event_id": "e1",
            "occurred_at": "2026-01-01T00:00:00Z",
            "session_id": "s1",
            "visitor_id": "v1",
            "pageviews": 2,
            "engaged_seconds": 4,
        }
    )
    items: list[Item] = [
        VisitorLink("v1", "c1"),
        visit,
        AccountLink("a1", "c1", None, "unknown", None),
        Touch("c1", "v1", "e1", "s1", JAN_1_MS, "direct", None),
    ]
    encoded = encode_items(items)
    assert orjson.loads(encoded)[:2] == [1, [1, "v1", "c1"]]
    assert decode_items(encoded) == items
    assert isinstance(decode_items(encoded)[1], SiteVisit)


def test_an_empty_batch_is_just_the_version() -> None:
    assert encode_items([]) == b"[1]"
    assert decode_items(b"[1]") == []


# Every field set, odd offsets, Decimal exponents, unicode: what `event_lists` leaves out.
texts = st.text(
    st.characters(
        exclude_categories=["Cs", "Cc", "Zl", "Zp"],
        exclude_characters="\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069",
    ),
    min_size=1,
    max_size=12,
).filter(lambda text: not text.isspace())
"""Ids and names as the contract allows them: printable, more than whitespace."""
optional_texts = st.one_of(st.none(), texts)
offsets = st.one_of(
    st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m))),
    st.integers(-50_000, 50_000).map(lambda s: timezone(timedelta(seconds=s))),  # only a Python datetime has these
    st.just(UTC),
)
moments = st.builds(
    lambda ms, tz: datetime(2026, 1, 1, tzinfo=UTC).astimezone(tz) + timedelta(microseconds=ms),
    st.integers(0, 10**13),
    offsets,
)
amounts = st.builds(lambda n, places: Decimal(n).scaleb(-places), st.integers(0, 10**13), st.integers(0, 6))
utms = st.one_of(
    st.none(), st.fixed_dictionaries(dict.fromkeys(("source", "medium", "campaign", "term", "content"), optional_texts))
)
common = {"event_id": texts, "occurred_at": moments, "source": optional_texts}
full_events = st.one_of(
    st.fixed_dictionaries(
        {
            **common,
            "type": st.just("site_visit"),
            "session_id": texts,
            "visitor_id": texts,
            "contact_id": optional_texts,
            "channel": st.one_of(st.none(), st.sampled_from(list(Channel))),
            "utm": utms,
            "referrer": optional_texts,
            "landing_page": optional_texts,
            "pageviews": st.integers(1, MAX_PAGEVIEWS),
            "engaged_seconds": st.floats(0, MAX_ENGAGED_SECONDS, allow_nan=False, allow_infinity=False),
            "pages": st.one_of(st.none(), st.lists(texts, max_size=3)),
        }
    ),
    st.fixed_dictionaries(
        {
            **common,
            "type": st.just("form_fill"),
            "form_id": texts,
            "form_type": st.sampled_from(["contact", "demo_request", "newsletter", "other"]),
            "contact_id": texts,
            "visitor_id": optional_texts,
            "session_id": optional_texts,
            "channel": st.one_of(st.none(), st.sampled_from(list(Channel))),
            "utm": utms,
        }
    ),
    st.fixed_dictionaries(
        {
            **common,
            "type": st.just("stage_change"),
            "contact_id": texts,
            "account_id": optional_texts,
            "to_stage": st.sampled_from(["lead", "mql", "opportunity", "lost"]),
            "from_stage": st.one_of(st.none(), st.sampled_from(["subscriber", "sql"])),
            "amount": st.one_of(st.none(), amounts),
            "currency": st.one_of(st.none(), st.just("EUR")),
            "reason": optional_texts,
        }
    ),
    st.fixed_dictionaries(
        {
            **common,
            "type": st.just("subscription"),
            "account_id": texts,
            "subscription_id": texts,
            "status": st.sampled_from(["trialing", "active", "past_due", "cancelled"]),
            "plan": optional_texts,
            "amount": amounts,
            "currency": st.just("USD"),
            "interval": st.sampled_from(["day", "week", "month", "quarter", "year"]),
            "interval_count": st.integers(1, 36),
            "quantity": st.integers(0, 10_000),
        }
    ),
    st.fixed_dictionaries(
        {
            **common,
            "type": st.just("spend"),
            "channel": st.sampled_from(list(Channel)),
            "campaign": optional_texts,
            "category": st.sampled_from(["marketing", "sales"]),
            "amount": amounts,
            "currency": st.just("GBP"),
        }
    ),
).map(EVENT_ADAPTER.validate_python)


@settings(max_examples=300, deadline=None)
@given(events=st.lists(full_events, max_size=5))
def test_every_field_of_every_event_type_comes_back_as_validation_left_it(events: list[Event]) -> None:
    """The faithfulness check behind skipping validation: equal to the original and to a fresh validation."""
    decoded = decode_items(encode_items(events))
    assert_identical(events, decoded, "events")
    for original, copy in zip(events, decoded, strict=True):
        assert isinstance(copy, BaseModel)
        assert EVENT_ADAPTER.validate_python(copy.model_dump()) == copy
        assert copy.model_dump_json() == original.model_dump_json()
        assert copy.occurred_ms == original.occurred_ms


def test_an_offset_with_seconds_survives_though_orjson_would_round_it_to_the_minute() -> None:
    at = datetime(2026, 1, 1, 9, 0, 30, tzinfo=timezone(timedelta(hours=1, minutes=30, seconds=15)))
    spend = Spend(
        event_id="e1",
        occurred_at=at,
        channel=Channel.PAID,
        category=SpendCategory.SALES,
        amount=Decimal(1),
        currency="USD",
    )
    (decoded,) = decode_items(encode_items([spend]))
    assert_identical(spend, decoded, "spend")
    assert isinstance(decoded, Spend)
    assert decoded.occurred_at.utcoffset() == timedelta(seconds=5415)


def test_every_event_field_is_either_plain_json_or_rebuilt_by_a_decoder() -> None:
    assert uncarried_fields() == []


def test_a_field_type_the_decoders_do_not_rebuild_is_named() -> None:
    class Refund(BaseModel):
        type: str = "refund"
        at: datetime
        amount: Decimal | None = None
        note: str | None = None

    assert uncarried_fields({"refund": Refund}, {"refund": frozenset({"at"})}) == [
        "Refund.amount (decimal.Decimal | None)"
    ]


# -- bad bytes -----------------------------------------------------------------------------


def test_a_state_of_another_format_version_is_refused_with_both_versions_named() -> None:
    payload = orjson.loads(encode_state(VisitorState()))
    payload[0] = STATE_FORMAT_VERSION + 1
    with pytest.raises(
        UnsupportedFormat, match=r"visitor state is in format version 3, but this leadlag reads version 2"
    ):
        decode_state("visitor", orjson.dumps(payload))


def test_a_batch_of_another_format_version_is_refused_with_both_versions_named() -> None:
    with pytest.raises(UnsupportedFormat, match=r"format version 0, but this leadlag reads version 1.*one release"):
        decode_items(orjson.dumps([ITEMS_FORMAT_VERSION - 1]))


def test_a_state_read_as_another_kind_is_refused() -> None:
    with pytest.raises(CorruptPayload, match=r"contact state: the payload holds a 'visitor' state"):
        decode_state("contact", encode_state(VisitorState()))


VISITOR = encode_state(VisitorState())
CHANGE = StageChange(
    event_id="e1",
    occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
    contact_id="c1",
    to_stage=Stage.LEAD,
)
BATCH = encode_items([CHANGE])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x01garbage", "not JSON"),
        (VISITOR[:-3], "not JSON"),
        (b'{"sessions": {}}', "expected a JSON array starting with a format version"),
        (b"[]", "expected a JSON array starting with a format version"),
        (b'["1", "visitor", {}, []]', "expected a JSON array starting with a format version"),
        (b'[2, "visitor", {"e1": [1, "s1"]}, []]', "not a leadlag entity state"),
        (b'[2, "visitor", {}]', "not a leadlag entity state"),
    ],
)
def test_corrupt_state_bytes_raise_a_codec_error_saying_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(CorruptPayload, match=message):
        decode_state("visitor", data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (BATCH[:-1], "not JSON"),
        (b"null", "expected a JSON array"),
        (BATCH.replace(b'"stage_change"', b'"refund"'), "item 0 is not a leadlag item"),
        (BATCH.replace(b'"lead"', b'"prospect"'), "item 0 is not a leadlag item"),
        (b"[1, [7, 1, 2]]", "item 0 is not a leadlag item"),
        (b"[1, [0, 1, 2]]", "item 0 is not a leadlag item"),
        (b"[1, [], 5]", "item 0 is not a leadlag item"),
    ],
)
def test_corrupt_batches_raise_a_codec_error_saying_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(CorruptPayload, match=message):
        decode_items(data)


def test_codec_errors_are_value_errors_so_callers_can_dead_letter_them() -> None:
    assert issubclass(UnsupportedFormat, CodecError)
    assert issubclass(CorruptPayload, CodecError)
    assert issubclass(CodecError, ValueError)
