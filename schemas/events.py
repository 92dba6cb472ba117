"""The input contract (README, "Input events"; schema_version 1): one pydantic model per event type.

`Event` is the discriminated union on `type`; `parse_event` / `parse_events`
validate raw JSON bytes the way every entry point (replay, the worker) does,
so a message is judged the same wherever it arrives. Unknown extra fields are
ignored, so producers can add fields before the contract names them.

Every value is bounded here, so no event that passes can break a reducer or a
snapshot: numbers are finite, capped and of their JSON type (no `true` or `"1"`
for an integer, no epoch number or numeric string for a timestamp), ids are
printable, free text is capped. The bounds that depend on a setting or on the
wall clock (event time, message size, events per envelope) are judged by
`schemas.parsing`; README, "Input events", lists them all.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any, Generic, Literal, Self, TypeVar, overload

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from schemas.channels import Channel, derive_channel

SCHEMA_VERSION = 1


RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})?")
"""The shape of an RFC 3339 timestamp (the offset is optional here only so that its absence gets its own reason)."""


def _rfc3339_only(value: Any) -> Any:
    """Refuse epoch numbers and numeric strings, which pydantic would otherwise read as datetimes."""
    if isinstance(value, datetime) or (isinstance(value, str) and RFC3339.fullmatch(value)):
        return value
    raise ValueError("must be an RFC 3339 timestamp string with an offset, e.g. 2026-11-23T09:00:00Z")


DECIMAL_TEXT = re.compile(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
"""A decimal amount written as a string: digits, an optional fraction and exponent, nothing else."""
MAX_AMOUNT_TEXT = 40


def _plain_amount(value: Any) -> Any:
    """Refuse what Python's Decimal would read but a person would not write: `"1_000"`, `" 10 "`, `true`."""
    if isinstance(value, bool) or (
        isinstance(value, str) and (len(value) > MAX_AMOUNT_TEXT or not DECIMAL_TEXT.fullmatch(value))
    ):
        raise ValueError('must be a decimal number, as a JSON number or a string like "49.99"')
    return value


def _integer_only(value: Any) -> Any:
    """Refuse `true`, `1.0` and `"1"` where the contract says an integer."""
    if type(value) is not int:
        raise ValueError("must be a JSON integer")
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339_only)]
"""RFC 3339 with an offset; a timestamp without one is bad input (README, "Input events")."""

MAX_AMOUNT_DIGITS = 20
Money = Annotated[
    Decimal,
    BeforeValidator(_plain_amount),
    Field(ge=0, allow_inf_nan=False, max_digits=MAX_AMOUNT_DIGITS, decimal_places=6),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": f"^{DECIMAL_TEXT.pattern}$", "maxLength": MAX_AMOUNT_TEXT},
            ],
            "description": "A decimal ≥ 0 of at most 20 digits, 6 after the point: a JSON number, or a string "
            'of digits like "49.99" (no sign, spaces, underscores or thousands separators).',
        },
        mode="validation",
    ),
]
"""At most 20 digits, 6 of them after the point (below 10^20): a billion such amounts times the largest quantity
sum to ~1e35, a finite float, so no ratio of money can overflow."""
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. USD")]

UNPRINTABLE_CHARS = r"\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
"""Control characters (C0, DEL, C1: ANSI escapes start with one), line and paragraph separators, and bidi
overrides: characters that can rewrite or forge what a terminal or a log shows."""
ID_PATTERN = f"^[^{UNPRINTABLE_CHARS}]*[^\\s{UNPRINTABLE_CHARS}][^{UNPRINTABLE_CHARS}]*$"
"""An id: printable, and more than whitespace."""
LABEL_PATTERN = f"^[^{UNPRINTABLE_CHARS}]*$"
"""A name that becomes a label: printable (it may be empty)."""
MAX_EVENT_ID_CHARS = 128
MAX_ID_CHARS = 256
MAX_LABEL_CHARS = 200
MAX_TEXT_CHARS = 2048
EventId = Annotated[str, Field(min_length=1, max_length=MAX_EVENT_ID_CHARS, pattern=ID_PATTERN)]
EntityId = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN)]
Label = Annotated[str, Field(max_length=MAX_LABEL_CHARS, pattern=LABEL_PATTERN)]
"""A name that can become a metric label or a snapshot key (campaign, plan, utm values, source): capped, so one
event cannot make a snapshot or an output message huge."""
Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
"""Free text kept or forwarded as it came (a referrer, a path, a reason): capped like a URL."""
MAX_PAGES = 200
"""Paths listed per session (`pages`), each a `Text`."""
MAX_PAGEVIEWS = 100_000
"""Pageviews of one session."""
MAX_ENGAGED_SECONDS = 86_400.0
"""Engaged time of one session: at most a day (GA4 ends a session at midnight and after 30 idle minutes)."""
MAX_QUANTITY = 1_000_000
"""Units (seats) of one subscription."""
MAX_INTERVAL_COUNT = 10_000
"""Billing intervals between two charges (Stripe allows at most three years' worth)."""


class EventType(StrEnum):
    SITE_VISIT = "site_visit"
    FORM_FILL = "form_fill"
    STAGE_CHANGE = "stage_change"
    SUBSCRIPTION = "subscription"
    SPEND = "spend"


class FormType(StrEnum):
    CONTACT = "contact"
    DEMO_REQUEST = "demo_request"
    TRIAL_SIGNUP = "trial_signup"
    NEWSLETTER = "newsletter"
    CONTENT_DOWNLOAD = "content_download"
    WEBINAR_REGISTRATION = "webinar_registration"
    EVENT_REGISTRATION = "event_registration"
    OTHER = "other"


class Stage(StrEnum):
    SUBSCRIBER = "subscriber"
    LEAD = "lead"
    MQL = "mql"
    SQL = "sql"
    OPPORTUNITY = "opportunity"
    CUSTOMER = "customer"
    DISQUALIFIED = "disqualified"
    LOST = "lost"


FUNNEL_STAGES: tuple[Stage, ...] = (
    Stage.SUBSCRIBER,
    Stage.LEAD,
    Stage.MQL,
    Stage.SQL,
    Stage.OPPORTUNITY,
    Stage.CUSTOMER,
)
"""The ordered stages; `disqualified` and `lost` are exits, not steps."""

EXIT_STAGES = frozenset({Stage.DISQUALIFIED, Stage.LOST})


class SubscriptionStatus(StrEnum):
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    CANCELLED = "cancelled"


class BillingInterval(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"


class SpendCategory(StrEnum):
    MARKETING = "marketing"
    SALES = "sales"


class Utm(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    source: Label | None = None
    medium: Label | None = None
    campaign: Label | None = None
    term: Label | None = None
    content: Label | None = None


T = TypeVar("T")


class derived(Generic[T]):  # a decorator, named like `property`
    """A property computed on first use and kept in the instance's `__dict__` under its own name: like
    `functools.cached_property` without its lock (which costs more than the values it guards). Being a non-data
    descriptor, it is consulted only until the value is there: every later read is a plain attribute lookup,
    in C (a read through `__get__` cost about 5 % of a worker's time). Not a field: no schema, dump, equality
    or hash sees it (`dict(event)` does, once it is computed)."""

    def __init__(self, func: Callable[[Any], T]) -> None:
        self.func = func
        self.key = func.__name__
        self.__doc__ = func.__doc__

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...

    @overload
    def __get__(self, instance: object, owner: type[Any] | None = None) -> T: ...

    def __get__(self, instance: object, owner: type[Any] | None = None) -> T | Self:
        if instance is None:
            return self
        value = instance.__dict__[self.key] = self.func(instance)
        return value


def _has_values(utm: Utm) -> bool:
    """Any utm parameter set to a non-empty value (its fields are all flat strings: no dump needed)."""
    return any(utm.__dict__.values())


_derived_channel = lru_cache(maxsize=1024)(derive_channel)
"""`derive_channel` remembered for the most recent utm and referrer values (few, and parsing a URL is not free)."""


class EventBase(BaseModel):
    """Fields every event carries."""

    model_config = ConfigDict(frozen=True, extra="ignore", use_enum_values=False, ignored_types=(derived,))

    event_id: EventId
    occurred_at: Timestamp
    source: Label | None = None
    schema_version: Annotated[Literal[1], BeforeValidator(_integer_only)] = 1

    @derived
    def occurred_ms(self) -> int:
        """Event time as integer epoch milliseconds, the unit of all hot state.

        Cached: every step of a fold asks for it, and `timestamp()` of a parsed datetime costs microseconds.
        """
        return int(self.occurred_at.timestamp() * 1000)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy; values cached from the fields (`DERIVED`) are dropped when fields change, so none goes stale."""
        copied = super().model_copy(update=update, deep=deep)
        if update:
            for name in DERIVED:
                copied.__dict__.pop(name, None)
        return copied


class SiteVisit(EventBase):
    """One web session (topic `site.visits`, key `visitor_id`)."""

    type: Literal["site_visit"] = "site_visit"
    session_id: EntityId
    visitor_id: EntityId
    contact_id: EntityId | None = None
    channel: Channel | None = Field(
        default=None,
        description="When absent, derived from utm and referrer like GA4's default channel grouping.",
    )
    utm: Utm | None = None
    referrer: Text | None = None
    landing_page: Text | None = None
    pageviews: Annotated[int, Field(strict=True, ge=1, le=MAX_PAGEVIEWS)]
    engaged_seconds: Annotated[float, Field(strict=True, ge=0, le=MAX_ENGAGED_SECONDS, allow_inf_nan=False)]
    pages: Annotated[list[str], Field(max_length=MAX_PAGES)] | None = None

    @field_validator("pages")
    @classmethod
    def _page_paths_are_capped(cls, pages: list[str] | None) -> list[str] | None:
        if pages and max(map(len, pages)) > MAX_TEXT_CHARS:
            raise ValueError(f"a path in pages is longer than {MAX_TEXT_CHARS} characters")
        return pages

    @model_validator(mode="after")
    def derive_missing_channel(self) -> SiteVisit:
        if self.channel is None:
            utm = self.utm
            if utm is None:
                channel = _derived_channel(None, None, False, self.referrer)
            else:
                channel = _derived_channel(utm.source, utm.medium, _has_values(utm), self.referrer)
            object.__setattr__(self, "channel", channel)
        return self

    @property
    def resolved_channel(self) -> Channel:
        """The session's channel; always set after validation."""
        return self.channel or Channel.DIRECT

    @property
    def campaign(self) -> str | None:
        return self.utm.campaign if self.utm else None

    @derived
    def viewed_pricing(self) -> bool:
        """A path starting `/pricing` among the session's pages (or its landing page); cached (see `DERIVED`)."""
        landing = self.landing_page
        if landing and landing.startswith("/pricing"):
            return True
        return any(path.startswith("/pricing") for path in self.pages or ())


DERIVED = ("occurred_ms", "viewed_pricing")
"""Properties cached in an event's `__dict__` on first use (`derived`: not fields, so no schema, dump or equality)."""


class FormFill(EventBase):
    """A form submission (topic `form.fills`, key `contact_id`)."""

    type: Literal["form_fill"] = "form_fill"
    form_id: EntityId
    form_type: FormType
    contact_id: EntityId
    visitor_id: EntityId | None = None
    session_id: EntityId | None = None
    channel: Channel | None = Field(
        default=None,
        description="When absent: derived from utm if given, else the visitor's last session supplies it.",
    )
    utm: Utm | None = None

    @model_validator(mode="after")
    def derive_channel_from_utm(self) -> FormFill:
        if self.channel is None and self.utm is not None and _has_values(self.utm):
            object.__setattr__(self, "channel", derive_channel(self.utm.source, self.utm.medium, True, None))
        return self

    @property
    def campaign(self) -> str | None:
        return self.utm.campaign if self.utm else None


class StageChange(EventBase):
    """A CRM lifecycle stage change (topic `crm.stage_changes`, key `contact_id`)."""

    type: Literal["stage_change"] = "stage_change"
    contact_id: EntityId
    account_id: EntityId | None = None
    to_stage: Stage
    from_stage: Stage | None = None
    amount: Money | None = None
    currency: CurrencyCode | None = None
    reason: Text | None = None


class Subscription(EventBase):
    """Full current state of one subscription after a change (topic `billing.subscriptions`, key `account_id`)."""

    type: Literal["subscription"] = "subscription"
    account_id: EntityId
    subscription_id: EntityId
    status: SubscriptionStatus
    plan: Label | None = None
    amount: Money
    currency: CurrencyCode
    interval: BillingInterval
    interval_count: Annotated[int, Field(strict=True, ge=1, le=MAX_INTERVAL_COUNT)] = 1
    quantity: Annotated[int, Field(strict=True, ge=0, le=MAX_QUANTITY)] = 1


class Spend(EventBase):
    """Marketing or sales spend (topic `marketing.spend`, key `channel`)."""

    type: Literal["spend"] = "spend"
    channel: Channel
    campaign: Label | None = None
    category: SpendCategory
    amount: Money
    currency: CurrencyCode


Event = Annotated[
    SiteVisit | FormFill | StageChange | Subscription | Spend,
    Field(discriminator="type"),
]
"""Any input event, chosen by its `type`."""

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)

TOPIC_OF_TYPE: dict[EventType, str] = {
    EventType.SITE_VISIT: "site.visits",
    EventType.FORM_FILL: "form.fills",
    EventType.STAGE_CHANGE: "crm.stage_changes",
    EventType.SUBSCRIPTION: "billing.subscriptions",
    EventType.SPEND: "marketing.spend",
}
