"""Records on `leadlag.entities` are held to the event contract: a stranger who can write there cannot inject
state (stream/codec.py `validated_items`, used by the engine for every routed record)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from schemas.events import EVENT_ADAPTER, SiteVisit
from stream.codec import CodecError, InvalidItem, decode_items, encode_items
from stream.core.links import AccountLink, Item, Touch, VisitorLink

JAN_1_MS = 1_767_225_600_000
VISIT = EVENT_ADAPTER.validate_python(
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
ITEMS: list[Item] = [
    VisitorLink("v1", "c1"),
    VISIT,
    AccountLink("a1", "c1", None, "unknown", None),
    Touch("c1", "v1", "e1", "s1", JAN_1_MS, "direct", "spring"),
]


def tampered(index: int, position: int, value: Any) -> bytes:
    """The batch of ITEMS with one field of one item replaced, as a stranger would write it."""
    rows = orjson.loads(encode_items(ITEMS))
    rows[1 + index][position] = value
    return orjson.dumps(rows)


def test_what_leadlag_wrote_passes_and_comes_back_equal() -> None:
    decoded = decode_items(encode_items(ITEMS), validate=True)
    assert decoded == ITEMS
    assert isinstance(decoded[1], SiteVisit)


VISIT_FIELDS = list(SiteVisit.model_fields)


@pytest.mark.parametrize(
    ("index", "position", "value", "named"),
    [
        (1, VISIT_FIELDS.index("pageviews"), "5", "SiteVisit"),
        (1, VISIT_FIELDS.index("pageviews"), 0, "SiteVisit"),
        (1, VISIT_FIELDS.index("engaged_seconds"), -1, "SiteVisit"),
        (1, VISIT_FIELDS.index("visitor_id"), "", "SiteVisit"),
        (1, VISIT_FIELDS.index("visitor_id"), "v" * 10_000, "SiteVisit"),
        (0, 1, 42, "VisitorLink"),
        (0, 2, "", "VisitorLink"),
        (2, 3, 10**18, "AccountLink"),
        (2, 4, "<script>", "AccountLink"),
        (3, 5, -1, "Touch"),
        (3, 5, True, "Touch"),
        (3, 7, "c" * 201, "Touch"),
    ],
)
def test_a_routed_item_that_breaks_the_contract_is_refused_naming_it(
    index: int, position: int, value: Any, named: str
) -> None:
    raw = tampered(index, position, value)
    decode_items(raw)  # the fast path alone would have let it through
    with pytest.raises(InvalidItem, match=f"item {index} \\({named}\\) breaks the contract"):
        decode_items(raw, validate=True)


def test_a_refused_item_is_a_codec_error_so_the_engine_dead_letters_it_and_never_folds_it() -> None:
    assert issubclass(InvalidItem, CodecError)


def test_the_reason_never_quotes_the_injected_value() -> None:
    with pytest.raises(InvalidItem) as raised:
        decode_items(tampered(1, VISIT_FIELDS.index("pageviews"), "secret-payload"), validate=True)
    assert "secret-payload" not in str(raised.value)
