"""Bytes for what the worker keeps and sends: entity states (table values) and routed items (internal topic).

Both run on every event, so both are compact orjson arrays read back by hand
rather than by pydantic: an event was validated once, at intake, and the
internal topic only carries what leadlag itself wrote. Decoding rebuilds each
model as validation left it (every field, in declaration order, with its own
type: Decimal with its exponent, enum members, aware datetimes with their
offset), so a decoded event is `==` to the original and skips a second
validation (measured: decode 2.6 µs an event against 3.0-3.3 µs for pydantic's
fastest path, encode 1.2 µs against 2.4 µs, half the bytes). The tests hold the
decoders to that, and `uncarried_fields` stops the import when a model gains a
field whose type JSON would not give back unchanged. Every payload starts with
its format version, so bytes written by another release are refused with a
clear error instead of being misread.

Layouts (states version 2, items version 1), one JSON array each, records as arrays of their fields, money as strings:

- state: ``[2, kind, ...]`` — visitor ``recent ids, {channel: last visit ms}, [KeptSession], [contact_id],
  [[month start ms, [channel]]]``;
  contact ``{event_id: StageRecord}, {event_id: FormRecord with its FillSource}, [Touch as a link row],
  last_account_link, newest_ms, recent ids``;
  account ``AccountState.to_wire()`` (contacts, current subscriptions, head, tail, frozen summary:
  see `stream.core.revenue`); channel ``[event_id], [SpendRecord]`` (one channel's spend of one day).
- items: ``[1, item, ...]`` — an event as its fields in model order (it starts with its
  event_id, a string, and holds its `type`); a link as ``[tag, field, ...]``, the tag an int.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from enum import Enum
from operator import attrgetter
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import orjson
from pydantic import BaseModel, ValidationError

from schemas.channels import UNKNOWN_CHANNEL, Channel
from schemas.events import (
    BillingInterval,
    FormFill,
    FormType,
    SiteVisit,
    Spend,
    SpendCategory,
    Stage,
    StageChange,
    Subscription,
    SubscriptionStatus,
    Utm,
)
from stream.core.acquisition import SpendRecord, SpendState
from stream.core.dedupe import RecentIds
from stream.core.funnel import ContactState, FillSource, FormRecord, StageRecord
from stream.core.ledger import EntityState
from stream.core.links import AccountLink, EntityKind, Item, Touch, VisitorLink
from stream.core.revenue import AccountState, ContactTouch, SubscriptionChange
from stream.core.traffic import KeptSession, VisitorState
from stream.state.base import compact

STATE_FORMAT_VERSION = 2
"""Bump when the state layout changes: stored states of another version are refused, not misread."""
ITEMS_FORMAT_VERSION = 1
"""Bump when the internal topic's layout changes."""


class CodecError(ValueError):
    """Bytes that cannot be read back as an entity state or a batch of items."""


class UnsupportedFormat(CodecError):
    """The bytes were written in another format version, by a different leadlag release."""


class CorruptPayload(CodecError):
    """The bytes are not a payload this codec wrote (not JSON, wrong shape, wrong kind)."""


_STATE_REMEDY = "Run that release, or rebuild the tables under a new LEADLAG_APP_ID by replaying the input topics."
_ITEMS_REMEDY = "Run one release per consumer group: stop the workers of the other release first."

M = TypeVar("M", bound=BaseModel)
_new = object.__new__
_set = object.__setattr__
_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS
"""Dataclasses (links) through `_default`, as arrays rather than objects."""


def _trusted(cls: type[M], values: dict[str, Any]) -> M:
    """A model from values that already passed its validation: `model_construct` without the per-field loop.

    Valid only when `values` holds every field, in declaration order, with its validated type.
    """
    model = _new(cls)
    _set(model, "__dict__", values)
    _set(model, "__pydantic_fields_set__", set(values))
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    return model


def _members(enum: type[Enum]) -> dict[Any, Any]:
    """value -> member: a dict lookup is ~8x faster than calling the enum class."""
    return {member.value: member for member in enum}


_CHANNELS = _members(Channel)
_FORM_TYPES = _members(FormType)
_STAGES = _members(Stage)
_STATUSES = _members(SubscriptionStatus)
_INTERVALS = _members(BillingInterval)
_CATEGORIES = _members(SpendCategory)
_from_iso = datetime.fromisoformat


# -- events and links on the internal topic ---------------------------------------------

EventModel = SiteVisit | FormFill | StageChange | Subscription | Spend
EVENT_CLASSES: dict[str, type[EventModel]] = {
    "site_visit": SiteVisit,
    "form_fill": FormFill,
    "stage_change": StageChange,
    "subscription": Subscription,
    "spend": Spend,
}
EVENT_FIELDS: dict[str, tuple[str, ...]] = {tag: tuple(cls.model_fields) for tag, cls in EVENT_CLASSES.items()}
"""Wire order of each event's fields: the model's own, so decoding builds `__dict__` as validation does."""
(_TYPE_INDEX,) = {fields.index("type") for fields in EVENT_FIELDS.values()}
"""Where an event row holds its `type` (the same for every event: the common fields come first)."""
UTM_FIELDS: tuple[str, ...] = tuple(Utm.model_fields)

LINK_CLASSES: dict[str, type[Touch | VisitorLink | AccountLink]] = {
    "touch": Touch,
    "visitor_link": VisitorLink,
    "account_link": AccountLink,
}
LINK_FIELDS: dict[str, tuple[str, ...]] = {
    tag: tuple(field.name for field in dataclasses.fields(cls)) for tag, cls in LINK_CLASSES.items()
}
LINK_TAGS: tuple[str, ...] = tuple(LINK_CLASSES)
"""A link row starts with its tag's index here (an int); an event row with its event_id (a string)."""

_CONVERTED_FIELDS: dict[str, frozenset[str]] = {
    "site_visit": frozenset({"occurred_at", "channel", "utm"}),
    "form_fill": frozenset({"occurred_at", "form_type", "channel", "utm"}),
    "stage_change": frozenset({"occurred_at", "to_stage", "from_stage", "amount"}),
    "subscription": frozenset({"occurred_at", "status", "amount", "interval"}),
    "spend": frozenset({"occurred_at", "channel", "category", "amount"}),
}
"""The fields each decoder below rebuilds from their JSON form; every other field is a str, int,
float, bool, None or list[str], which JSON gives back as the same type and value."""
_PLAIN_TYPES: frozenset[Any] = frozenset({str, int, float, bool, type(None), list[str]})


def uncarried_fields(
    classes: dict[str, type[BaseModel]] | None = None, converted: dict[str, frozenset[str]] | None = None
) -> list[str]:
    """Event fields that are neither rebuilt by a decoder below nor plain JSON: must stay empty.

    This is what makes skipping validation safe: a field added to a model
    without teaching the codec about it stops the import, not production.
    """
    classes = classes if classes is not None else dict(EVENT_CLASSES)
    converted = converted if converted is not None else _CONVERTED_FIELDS
    problems: list[str] = []
    for tag, cls in classes.items():
        for name, field in cls.model_fields.items():
            if name in converted.get(tag, ()) or name == "type":
                continue
            annotation = field.annotation
            union = get_origin(annotation) in (Union, UnionType)
            for option in get_args(annotation) if union else (annotation,):
                inner = get_args(option)[0] if get_origin(option) is Annotated else option
                if get_origin(inner) is not Literal and inner not in _PLAIN_TYPES:
                    problems.append(f"{cls.__name__}.{name} ({annotation!r})")
                    break
    return problems


if _uncarried := uncarried_fields():
    raise TypeError(f"stream.codec cannot carry {', '.join(_uncarried)}: teach its decoders the type")


def _event_row(fields: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """An event's row: its field values, left for orjson to write (datetimes in C, as RFC 3339).

    orjson writes a UTC offset to the minute, as RFC 3339 does; an offset with
    seconds (only a Python-made datetime can have one) is written by `isoformat`.
    """
    values = attrgetter(*fields)
    at = fields.index("occurred_at")

    def row(event: Any) -> tuple[Any, ...]:
        offset = event.occurred_at.utcoffset()
        if offset.seconds % 60 or offset.microseconds:
            exact = values(event)
            return (*exact[:at], event.occurred_at.isoformat(), *exact[at + 1 :])
        return values(event)

    return row


def _link_row(tag: str) -> Callable[[Any], tuple[Any, ...]]:
    index = LINK_TAGS.index(tag)
    values = attrgetter(*LINK_FIELDS[tag])
    return lambda link: (index, *values(link))


_ENCODE: dict[type, Callable[[Any], Any]] = {
    Decimal: str,
    Utm: attrgetter(*UTM_FIELDS),
    **{cls: _event_row(EVENT_FIELDS[tag]) for tag, cls in EVENT_CLASSES.items()},
    **{cls: _link_row(tag) for tag, cls in LINK_CLASSES.items()},
    KeptSession: tuple,
    StageRecord: tuple,
    FormRecord: lambda fill: (*fill[:6], None if fill.source is None else tuple(fill.source)),
    SubscriptionChange: tuple,
    ContactTouch: tuple,
    SpendRecord: tuple,
}


def _default(obj: Any) -> Any:
    """orjson's hook for every type it does not write itself."""
    encode = _ENCODE.get(type(obj))
    if encode is None:
        raise TypeError(f"stream.codec cannot encode {type(obj).__name__}")
    return encode(obj)


def encode_items(items: Sequence[Item]) -> bytes:
    """One internal-topic message: the items, in order, behind the format version."""
    return orjson.dumps([ITEMS_FORMAT_VERSION, *items], default=_default, option=_OPTIONS)


def _fields(tag: str, values: list[Any]) -> dict[str, Any]:
    """The event row as the model's `__dict__`: every field, in declaration order."""
    return dict(zip(EVENT_FIELDS[tag], values, strict=True))


def _utm(values: list[Any] | None) -> Utm | None:
    return None if values is None else _trusted(Utm, dict(zip(UTM_FIELDS, values, strict=True)))


def _channel(value: str | None) -> Channel | None:
    return None if value is None else _CHANNELS[value]


def _site_visit(values: list[Any]) -> SiteVisit:
    fields = _fields("site_visit", values)
    fields["occurred_at"] = _from_iso(fields["occurred_at"])
    fields["channel"] = _channel(fields["channel"])
    fields["utm"] = _utm(fields["utm"])
    return _trusted(SiteVisit, fields)


def _form_fill(values: list[Any]) -> FormFill:
    fields = _fields("form_fill", values)
    fields["occurred_at"] = _from_iso(fields["occurred_at"])
    fields["form_type"] = _FORM_TYPES[fields["form_type"]]
    fields["channel"] = _channel(fields["channel"])
    fields["utm"] = _utm(fields["utm"])
    return _trusted(FormFill, fields)


def _stage_change(values: list[Any]) -> StageChange:
    fields = _fields("stage_change", values)
    fields["occurred_at"] = _from_iso(fields["occurred_at"])
    fields["to_stage"] = _STAGES[fields["to_stage"]]
    if fields["from_stage"] is not None:
        fields["from_stage"] = _STAGES[fields["from_stage"]]
    if fields["amount"] is not None:
        fields["amount"] = Decimal(fields["amount"])
    return _trusted(StageChange, fields)


def _subscription(values: list[Any]) -> Subscription:
    fields = _fields("subscription", values)
    fields["occurred_at"] = _from_iso(fields["occurred_at"])
    fields["status"] = _STATUSES[fields["status"]]
    fields["amount"] = Decimal(fields["amount"])
    fields["interval"] = _INTERVALS[fields["interval"]]
    return _trusted(Subscription, fields)


def _spend(values: list[Any]) -> Spend:
    fields = _fields("spend", values)
    fields["occurred_at"] = _from_iso(fields["occurred_at"])
    fields["channel"] = _CHANNELS[fields["channel"]]
    fields["category"] = _CATEGORIES[fields["category"]]
    fields["amount"] = Decimal(fields["amount"])
    return _trusted(Spend, fields)


def _touch(values: list[Any]) -> Touch:
    _, contact_id, visitor_id, session_event_id, session_id, ts_ms, channel, campaign = values
    return Touch(contact_id, visitor_id, session_event_id, session_id, ts_ms, channel, campaign)


def _visitor_link(values: list[Any]) -> VisitorLink:
    _, visitor_id, contact_id = values
    return VisitorLink(visitor_id, contact_id)


def _account_link(values: list[Any]) -> AccountLink:
    _, account_id, contact_id, first_touch_ms, channel, campaign = values
    return AccountLink(account_id, contact_id, first_touch_ms, channel, campaign)


_DECODE_EVENT: dict[str, Callable[[list[Any]], Item]] = {
    "site_visit": _site_visit,
    "form_fill": _form_fill,
    "stage_change": _stage_change,
    "subscription": _subscription,
    "spend": _spend,
}
_DECODE_LINK: dict[str, Callable[[list[Any]], Item]] = {
    "touch": _touch,
    "visitor_link": _visitor_link,
    "account_link": _account_link,
}
_LINK_DECODERS: dict[int, Callable[[list[Any]], Item]] = {LINK_TAGS.index(tag): _DECODE_LINK[tag] for tag in LINK_TAGS}


def decode_items(data: bytes, *, validate: bool = False) -> list[Item]:
    """The items of one internal-topic message, equal to those encoded; `CodecError` if it is not one.

    `validate`: hold each item to the event contract (`validated_items`), for a topic anyone with write
    access could write to; `InvalidItem` names the first that breaks it.
    """
    if validate:
        return validated_items(decode_items(data))
    payload = _payload(data, "internal-topic message", ITEMS_FORMAT_VERSION, _ITEMS_REMEDY)
    events, links, type_index = _DECODE_EVENT, _LINK_DECODERS, _TYPE_INDEX
    index = 0
    try:
        items: list[Item] = []
        for index, values in enumerate(payload[1:]):  # noqa: B007 (reported on failure)
            first = values[0]
            if first.__class__ is int:
                items.append(links[first](values))
            else:
                items.append(events[values[type_index]](values))
        return items
    except (KeyError, IndexError, TypeError, ValueError, ArithmeticError) as exc:
        raise CorruptPayload(
            f"internal-topic message: item {index} is not a leadlag item ({type(exc).__name__}: {exc})"
        ) from exc


class InvalidItem(CorruptPayload):
    """A routed item that decodes but breaks the event contract or a link's shape: leadlag did not write it."""


TS_MS_RANGE = (0, 4_102_444_800_000)
"""Instants a link may carry: 1970 up to 2100 (a datetime outside would break the read side)."""
ID_LENGTH = (1, 256)
NAME_LENGTH = 200
_CHANNEL_VALUES = frozenset({*_CHANNELS, UNKNOWN_CHANNEL})


def validated_items(items: list[Item]) -> list[Item]:
    """The items as the contract validates them: each event through its pydantic model again, in strict mode
    (the model's output is what is folded, so a decoded value of the wrong type never reaches a reducer), each
    link field by field (type, id length, known channel, capped campaign, plausible instant); `InvalidItem`
    otherwise.
    """
    checked: list[Item] = []
    for index, item in enumerate(items):
        try:
            if isinstance(item, BaseModel):
                checked.append(EVENT_CLASSES[item.__dict__["type"]].model_validate(item.__dict__, strict=True))
            else:
                _check_link(item)
                checked.append(item)
        except (ValidationError, ValueError, KeyError, TypeError) as exc:
            what = type(item).__name__
            detail = exc.errors(include_url=False, include_input=False)[:3] if isinstance(exc, ValidationError) else exc
            raise InvalidItem(f"internal-topic message: item {index} ({what}) breaks the contract: {detail}") from exc
    return checked


def _check_link(link: Item) -> None:
    for field in dataclasses.fields(link):  # type: ignore[arg-type]
        value = getattr(link, field.name)
        if field.name.endswith("_id"):
            if type(value) is not str or not ID_LENGTH[0] <= len(value) <= ID_LENGTH[1]:
                raise ValueError(f"{field.name}: not an id of 1-256 characters")
        elif field.name.endswith("_ms"):
            if value is None and field.name == "first_touch_ms":
                continue
            if type(value) is not int or not TS_MS_RANGE[0] <= value < TS_MS_RANGE[1]:
                raise ValueError(f"{field.name}: not an instant in epoch milliseconds")
        elif field.name == "channel":
            if value not in _CHANNEL_VALUES:
                raise ValueError("channel: not a known channel")
        elif field.name == "campaign":
            if value is not None and (type(value) is not str or len(value) > NAME_LENGTH):
                raise ValueError("campaign: not a name of at most 200 characters")
        else:
            raise ValueError(f"{field.name}: a field the codec does not know how to check")


# -- entity states (table values) -------------------------------------------------------


def encode_state(state: EntityState) -> bytes:
    """One table value: the state's records behind the format version and its kind."""
    if isinstance(state, VisitorState):
        months = [[month, channels] for month, channels in state.months.items()]
        body: list[Any] = ["visitor", state.recent.to_wire(), state.last_visits, state.sessions, state.contacts, months]
    elif isinstance(state, ContactState):
        body = [
            "contact",
            state.stage_changes,
            state.form_fills,
            list(state.touches.values()),
            state.last_account_link,
            state.newest_ms,
            state.recent.to_wire(),
        ]
    elif isinstance(state, AccountState):
        body = ["account", *state.to_wire()]
    else:
        body = ["channel", *state.to_wire()]
    # exact size: states are kept as bytes by the hundred thousand (see stream.state.base.compact)
    return compact(orjson.dumps([STATE_FORMAT_VERSION, *body], default=_default, option=_OPTIONS))


def _visitor(body: list[Any]) -> VisitorState:
    recent, last_visits, sessions, contacts, *months = body  # states written before months were kept have none
    state = VisitorState()
    state.recent = RecentIds.from_wire(recent)
    state.last_visits = dict(last_visits)
    state.sessions = [KeptSession._make(values) for values in sessions]
    state.contacts = list(contacts)
    state.months = {int(month): list(channels) for month, channels in months[0]} if months else {}
    return state


def _money(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _contact(body: list[Any]) -> ContactState:
    stage_changes, form_fills, touches, last_account_link, newest_ms, recent = body
    state = ContactState()
    state.stage_changes = {
        event_id: StageRecord(ts_ms, _STAGES[to_stage], _money(amount), account_id)
        for event_id, (ts_ms, to_stage, amount, account_id) in stage_changes.items()
    }
    state.form_fills = {
        event_id: FormRecord(
            ts_ms,
            form_type,
            channel,
            campaign,
            visitor_id,
            session_id,
            None if source is None else FillSource._make(source),
        )
        for event_id, (ts_ms, form_type, channel, campaign, visitor_id, session_id, source) in form_fills.items()
    }
    state.touches = {}
    for values in touches:
        touch = _touch(values)
        state.touches[touch.session_event_id] = touch
    if last_account_link is not None:
        account_id, first_touch_ms, channel, campaign = last_account_link
        state.last_account_link = (account_id, first_touch_ms, channel, campaign)
    state.newest_ms = newest_ms
    state.recent = RecentIds.from_wire(recent)
    return state


def _account(body: list[Any]) -> AccountState:
    return AccountState.from_wire(body)


def _spend_state(body: list[Any]) -> SpendState:
    return SpendState.from_wire(body)


_DECODE_STATE: dict[str, Callable[[list[Any]], EntityState]] = {
    "visitor": _visitor,
    "contact": _contact,
    "account": _account,
    "channel": _spend_state,
}


def decode_state(kind: EntityKind, data: bytes) -> EntityState:
    """The state `encode_state` wrote, with equal records; `CodecError` if the bytes are not one of `kind`."""
    payload = _payload(data, f"{kind} state", STATE_FORMAT_VERSION, _STATE_REMEDY)
    found = payload[1] if len(payload) > 1 else None
    if found != kind:
        raise CorruptPayload(f"{kind} state: the payload holds a {found!r} state, not a {kind!r} one")
    try:
        return _DECODE_STATE[kind](payload[2:])
    except (KeyError, IndexError, TypeError, ValueError, ArithmeticError) as exc:
        raise CorruptPayload(f"{kind} state: not a leadlag entity state ({type(exc).__name__}: {exc})") from exc


def _payload(data: bytes, what: str, version: int, remedy: str) -> list[Any]:
    """The decoded JSON array, once its format version is checked."""
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CorruptPayload(f"{what}: not JSON ({exc}); the bytes were not written by leadlag's codec") from exc
    if not isinstance(payload, list) or not payload or type(payload[0]) is not int:
        raise CorruptPayload(f"{what}: not a leadlag payload (expected a JSON array starting with a format version)")
    if payload[0] != version:
        raise UnsupportedFormat(
            f"{what} is in format version {payload[0]}, but this leadlag reads version {version}: "
            f"it was written by another leadlag release. {remedy}"
        )
    return payload
