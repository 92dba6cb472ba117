"""Messages one entity's reducer sends to another entity's.

Each entity's state lives in exactly one partition (visitor, contact, account,
spend channel), yet some metrics join them: a contact's touchpoints are its
visitors' sessions, an account's acquisition channel is its contacts' first
touch. Rather than read across partitions, a reducer emits a link addressed
to the other entity; the replay loop folds it at once, the worker sends it
through a repartition topic keyed by the target. Every link is idempotent and
order-free at its target (a set union, or a value that only improves), so the
joined state ends the same whatever the order of arrival.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from schemas.events import Event, FormFill, SiteVisit, Spend, StageChange, Subscription
from stream.core.totals import Delta
from stream.core.windows import to_datetime


@dataclass(frozen=True, slots=True)
class Touch:
    """One session of a visitor known to be this contact (visitor -> contact)."""

    contact_id: str
    visitor_id: str
    session_event_id: str
    session_id: str
    ts_ms: int
    channel: str
    campaign: str | None


@dataclass(frozen=True, slots=True)
class VisitorLink:
    """A visitor was identified as a contact, by a form fill or a session's contact_id (contact -> visitor)."""

    visitor_id: str
    contact_id: str


@dataclass(frozen=True, slots=True)
class AccountLink:
    """A contact belongs to an account, with the contact's first touch so far (contact -> account).

    The contact re-sends it whenever its first touch becomes earlier; the
    account keeps, per contact, the earliest it has been told.
    """

    account_id: str
    contact_id: str
    first_touch_ms: int | None
    channel: str
    campaign: str | None


Link = Touch | VisitorLink | AccountLink
Item = Event | Link
EntityKind = Literal["visitor", "contact", "account", "channel"]


def entity_of(item: Item) -> tuple[EntityKind, str]:
    """The entity whose state an item folds into: the partition key of its topic."""
    if isinstance(item, SiteVisit):
        return "visitor", item.visitor_id
    if isinstance(item, (FormFill, StageChange)):
        return "contact", item.contact_id
    if isinstance(item, Subscription):
        return "account", item.account_id
    if isinstance(item, Spend):  # one channel's spend of one UTC day: bounded state (stream.core.acquisition)
        return "channel", f"{item.channel.value}/{to_datetime(item.occurred_ms).date()}"
    if isinstance(item, Touch):
        return "contact", item.contact_id
    if isinstance(item, VisitorLink):
        return "visitor", item.visitor_id
    return "account", item.account_id


@dataclass(slots=True)
class Step:
    """The outcome of folding one item into its entity's state."""

    delta: Delta = field(default_factory=Delta)
    emitted: list[Link] = field(default_factory=list)
    duplicate: bool = False
    """True when the item's event_id was already folded: nothing changed."""
