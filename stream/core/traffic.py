"""Traffic (leading): sessions, unique visitors, engagement, and visit→lead conversion.

The visitor is the entity. A session's facts are its own (its channel,
campaign, pageviews, engaged time), so a visit adds to the totals once and
the visitor does not keep it. What the visitor keeps is bounded, whatever the
number of its sessions (docs/architecture.md, "Entity state"):

- the ids of its sessions within the dedupe horizon (`stream.core.dedupe`);
- its last visit per channel, from which *unique visitors* are counted
  exactly: a visitor counts in a trailing window when its last visit falls
  inside it, so the totals keep a histogram of last-visit times (+1 at the new
  last visit, −1 at the one it replaces) instead of a set of ids per bucket;
- the sessions a contact will need when the visitor is identified: its first
  session and its latest `VISITOR_SESSIONS_KEPT`; later sessions reach known
  contacts as they happen (so a contact identified after more sessions than
  that receives these, and which ones can depend on arrival order);
- the contacts it is known to be (at most `MAX_CONTACTS_PER_VISITOR`);
- the calendar months it visited in, with the channels of each (the latest
  `Policy.snapshot_months` months, as many as the snapshot lists): the first
  session of a month, and the first in each channel, count the visitor once
  among that month's unique visitors (`MONTH_VISITORS`), exact for every month
  listed. A session in a month older than all of those kept, once that many are
  kept, is not counted there (no listed month holds it).

When a visitor becomes known as a contact — a session carrying `contact_id`,
or a form fill naming the visitor — its kept sessions are sent to the contact
as `Touch` links, and every later session follows; a duplicate session sends
its touch again (links are idempotent at the contact), which is what repairs
links a crashed worker never sent.
"""

from __future__ import annotations

from bisect import insort
from typing import NamedTuple

from schemas.channels import NO_CAMPAIGN
from schemas.events import SiteVisit, Stage
from schemas.snapshot.traffic import ChannelTraffic, TrafficWindow
from stream.core.dedupe import RecentIds
from stream.core.links import Link, Step, Touch, VisitorLink
from stream.core.policy import Policy
from stream.core.rates import ratio
from stream.core.totals import Delta, FactKey, Readable
from stream.core.windows import Span, month_start

SESSIONS = "sessions"
ENGAGED_SESSIONS = "engaged_sessions"
ENGAGED_SECONDS = "engaged_seconds"
PAGEVIEWS = "pageviews"
PRICING_SESSIONS = "pricing_sessions"
SESSION_FAMILIES = (SESSIONS, ENGAGED_SESSIONS, ENGAGED_SECONDS, PAGEVIEWS, PRICING_SESSIONS)
"""Labels (channel, campaign)."""
LAST_VISITS = "last_visits"
"""Count, labels (channel,): one per visitor at its last visit in that channel (unique visitors per channel)."""
LAST_VISITS_ALL = "last_visits_all"
"""Count, labels (): one per visitor at its last visit in any channel (unique visitors overall)."""
MONTH_VISITORS = "month_visitors"
"""Count, labels (channel,): one per visitor and channel it visited in, at the start of each month."""
MONTH_VISITORS_ALL = "month_visitors_all"
"""Count, labels (): one per visitor active in a month, at the start of the month."""
STAGE_ENTRIES = "stage_entries"
"""Written by the funnel (labels stage, channel, campaign); leads are its `lead` entries."""

ENGAGED_MIN_PAGEVIEWS = 2
ENGAGED_MIN_SECONDS = 10.0
VISITOR_SESSIONS_KEPT = 10
"""Besides its first session, a visitor keeps its latest this many for the contact it may later be
identified as; a visitor identified after more sessions passes on these."""
MAX_CONTACTS_PER_VISITOR = 8
"""A shared browser can be several contacts; past this many, further contacts get none of its sessions."""
DEFAULT_POLICY = Policy()


class KeptSession(NamedTuple):
    """A session the visitor keeps for its contacts' touchpoints, ordered by (ts_ms, event_id)."""

    ts_ms: int
    event_id: str
    session_id: str
    channel: str
    campaign: str | None


class VisitorState:
    """One visitor: recent session ids, last visit per channel, kept sessions and known contacts (all bounded)."""

    __slots__ = ("contacts", "last_visits", "months", "recent", "sessions")

    def __init__(self) -> None:
        self.recent = RecentIds()
        """Session event ids within the dedupe horizon."""
        self.last_visits: dict[str, int] = {}
        """channel -> time of the visitor's last session in it (at most one per channel)."""
        self.sessions: list[KeptSession] = []
        """The first session and the latest `VISITOR_SESSIONS_KEPT`, in (time, event id) order."""
        self.contacts: list[str] = []
        """Contacts the visitor is known to be, in the order learnt (at most `MAX_CONTACTS_PER_VISITOR`)."""
        self.months: dict[int, list[str]] = {}
        """Start of each calendar month it visited in (the latest `Policy.snapshot_months`) -> its channels."""

    def touches_for(self, contact_id: str, visitor_id: str) -> list[Touch]:
        return [
            Touch(contact_id, visitor_id, s.event_id, s.session_id, s.ts_ms, s.channel, s.campaign)
            for s in self.sessions
        ]


def is_engaged(pageviews: int, engaged_seconds: float) -> bool:
    """Engaged session = pageviews ≥ 2 or engaged_seconds ≥ 10 (GA4's definition)."""
    return pageviews >= ENGAGED_MIN_PAGEVIEWS or engaged_seconds >= ENGAGED_MIN_SECONDS


def add_session_facts(delta: Delta, visit: SiteVisit, ts_ms: int, channel: str) -> None:
    """What one session contributes: its counts by channel and campaign (written out: once per session)."""
    labels = (channel, visit.campaign or NO_CAMPAIGN)
    counts = delta.counts
    get = counts.get
    pageviews, seconds = visit.pageviews, visit.engaged_seconds
    key = (SESSIONS, labels, ts_ms)
    counts[key] = get(key, 0) + 1
    if pageviews:
        key = (PAGEVIEWS, labels, ts_ms)
        counts[key] = get(key, 0) + pageviews
    if seconds:
        key = (ENGAGED_SECONDS, labels, ts_ms)
        counts[key] = get(key, 0) + seconds
    if is_engaged(pageviews, seconds):
        key = (ENGAGED_SESSIONS, labels, ts_ms)
        counts[key] = get(key, 0) + 1
    if visit.viewed_pricing:
        key = (PRICING_SESSIONS, labels, ts_ms)
        counts[key] = get(key, 0) + 1


def _move_last_visit(delta: Delta, family: str, labels: tuple[str, ...], old_ms: int | None, new_ms: int) -> None:
    counts = delta.counts  # `Delta.count`, inline: twice per session
    key = (family, labels, new_ms)
    counts[key] = counts.get(key, 0) + 1
    if old_ms is not None:
        key = (family, labels, old_ms)
        counts[key] = counts.get(key, 0) - 1


def visitor_delta(visitor_id: str, state: VisitorState) -> Delta:
    """What a visitor's *state* still contributes: its last visits (its sessions' counts live in the totals)."""
    del visitor_id
    delta = Delta()
    for channel, ts in state.last_visits.items():
        delta.count(LAST_VISITS, (channel,), ts)
    if state.last_visits:
        delta.count(LAST_VISITS_ALL, (), max(state.last_visits.values()))
    for month, channels in state.months.items():
        delta.count(MONTH_VISITORS_ALL, (), month)
        for channel in channels:
            delta.count(MONTH_VISITORS, (channel,), month)
    return delta


def _count_month(state: VisitorState, delta: Delta, ts_ms: int, channel: str, kept: int) -> None:
    """Count the visitor among its month's unique visitors, overall and in `channel`, the first time only."""
    month = month_start(ts_ms)
    months = state.months
    channels = months.get(month)
    if channels is None:
        if len(months) >= kept and month < min(months):
            return  # older than every month kept: no month the snapshot lists holds it
        channels = months[month] = []
        overall: FactKey = (MONTH_VISITORS_ALL, (), month)
        delta.counts[overall] = delta.counts.get(overall, 0) + 1
        if len(months) > kept:
            del months[min(months)]
    if channel not in channels:
        channels.append(channel)
        by_channel: FactKey = (MONTH_VISITORS, (channel,), month)
        delta.counts[by_channel] = delta.counts.get(by_channel, 0) + 1


def _keep(state: VisitorState, session: KeptSession) -> bool:
    """Add a session to the kept ones; trim to the first plus the latest `VISITOR_SESSIONS_KEPT`. True if kept.

    By count, not by age: what a contact linked later receives must not depend on when the link arrives
    (the contact applies the attribution lookback itself, relative to its conversions).
    """
    sessions = state.sessions
    insort(sessions, session)
    if len(sessions) > VISITOR_SESSIONS_KEPT + 1:
        del sessions[1]
    return session in sessions


def apply_site_visit(state: VisitorState, visit: SiteVisit, policy: Policy = DEFAULT_POLICY) -> Step:
    """Count a session; move the visitor's last visits; link it to its contact if the session names one."""
    ts = visit.occurred_ms
    channel = visit.resolved_channel.value
    campaign = visit.campaign
    visitor_id, event_id, session_id = visit.visitor_id, visit.event_id, visit.session_id
    contacts = state.contacts
    horizon = policy.dedupe_horizon_ms
    if state.recent.seen(event_id, horizon):
        # links are idempotent at the contact: send this session's touches again
        return Step(
            duplicate=True,
            emitted=[Touch(contact, visitor_id, event_id, session_id, ts, channel, campaign) for contact in contacts],
        )
    state.recent.remember(event_id, ts, horizon)
    delta = Delta()
    add_session_facts(delta, visit, ts, channel)
    last_visits = state.last_visits
    previous = last_visits.get(channel)
    if previous is None or ts > previous:
        overall = max(last_visits.values()) if last_visits else None
        _move_last_visit(delta, LAST_VISITS, (channel,), previous, ts)
        last_visits[channel] = ts
        if overall is None or ts > overall:
            _move_last_visit(delta, LAST_VISITS_ALL, (), overall, ts)
    _count_month(state, delta, ts, channel, policy.snapshot_months)
    session = KeptSession(ts, event_id, session_id, channel, campaign)
    _keep(state, session)

    # contacts known before this visit get this session; a contact first named now gets the kept ones
    emitted: list[Link] = (
        [Touch(contact, visitor_id, event_id, session_id, ts, channel, campaign) for contact in contacts]
        if contacts
        else []
    )
    contact_id = visit.contact_id
    if contact_id is not None and contact_id not in contacts and len(contacts) < MAX_CONTACTS_PER_VISITOR:
        contacts.append(contact_id)
        emitted.extend(state.touches_for(contact_id, visitor_id))
        if session not in state.sessions:  # too old to keep, but this contact named it: it is its touch
            emitted.append(Touch(contact_id, visitor_id, event_id, session_id, ts, channel, campaign))
    return Step(delta, emitted)


def apply_visitor_link(state: VisitorState, link: VisitorLink, policy: Policy = DEFAULT_POLICY) -> Step:
    """The visitor is known to be a contact: send it the kept sessions (later ones follow as they happen).

    A repeated link sends them again: links are idempotent at the contact, and
    a repeat is how a worker that crashed before sending them repairs them.
    """
    del policy
    if link.contact_id not in state.contacts:
        if len(state.contacts) >= MAX_CONTACTS_PER_VISITOR:
            return Step()
        state.contacts.append(link.contact_id)
    return Step(emitted=list(state.touches_for(link.contact_id, link.visitor_id)))


def _channel_traffic(
    totals: Readable, span: Span, match: dict[int, str], leads: float, visitors: int
) -> ChannelTraffic:
    sessions = totals.total(SESSIONS, span, match)
    engaged = totals.total(ENGAGED_SESSIONS, span, match)
    engagement_rate = ratio(engaged, sessions)
    return ChannelTraffic(
        sessions=int(sessions),
        unique_visitors=visitors,
        engaged_sessions=int(engaged),
        engagement_rate=engagement_rate,
        bounce_rate=None if engagement_rate is None else 1 - engagement_rate,
        average_engaged_seconds=ratio(totals.total(ENGAGED_SECONDS, span, match), sessions),
        pageviews_per_session=ratio(totals.total(PAGEVIEWS, span, match), sessions),
        pricing_page_sessions=int(totals.total(PRICING_SESSIONS, span, match)),
        new_leads=int(leads),
        visit_to_lead_rate=ratio(leads, sessions),
    )


def top_campaigns(by_campaign: dict[str, float], top_n: int) -> dict[str, int]:
    """The `top_n` campaigns by sessions, the rest summed as `other` (bounded labels)."""
    ranked = sorted(by_campaign.items(), key=lambda item: (-item[1], item[0]))
    capped = {name: int(value) for name, value in ranked[:top_n]}
    rest = sum(value for _, value in ranked[top_n:])
    if rest:
        capped["other"] = capped.get("other", 0) + int(rest)
    return capped


def traffic_window(totals: Readable, span: Span, campaign_top_n: int = 20) -> TrafficWindow:
    """Traffic of one window, overall and by channel.

    - sessions = count of site visits; unique visitors = distinct visitor_id, exact for every window
      that ends at the newest event (all of the snapshot's): the visitors whose last visit lies in it;
    - engagement rate = engaged / sessions, bounce rate = 1 − engagement rate;
    - average engaged time = mean engaged_seconds per session;
    - visit→lead conversion = new leads / sessions, same window and channel, where a
      lead's channel is its contact's first-touch channel.
    """
    leads_by_channel = totals.total_by(STAGE_ENTRIES, span, 1, {0: Stage.LEAD.value})
    visitors_by_channel = totals.total_by(LAST_VISITS, span, 0)
    channels = sorted({*totals.total_by(SESSIONS, span, 0), *leads_by_channel})
    overall = _channel_traffic(
        totals, span, {}, sum(leads_by_channel.values()), round(totals.total(LAST_VISITS_ALL, span))
    )
    return TrafficWindow(
        **overall.model_dump(),
        by_channel={
            channel: _channel_traffic(
                totals, span, {0: channel}, leads_by_channel.get(channel, 0), round(visitors_by_channel.get(channel, 0))
            )
            for channel in channels
        },
        sessions_by_campaign=top_campaigns(totals.total_by(SESSIONS, span, 1), campaign_top_n),
    )
