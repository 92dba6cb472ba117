"""Traffic (leading): sessions, unique visitors, engagement, and visit→lead conversion.

The visitor is the entity: its state is the set of its sessions and the
contacts it is known to be. Session facts are append-only (a session's
channel is its own), so a visit adds to the totals directly. When a visitor
becomes known as a contact — a session carrying `contact_id`, or a form fill
naming the visitor — every session it had, and every one it has later, is
sent to the contact as a `Touch`, which is what attribution and the lead's
first-touch channel are built from.
"""

from __future__ import annotations

from typing import NamedTuple

from schemas.channels import NO_CAMPAIGN
from schemas.events import SiteVisit, Stage
from schemas.snapshot.traffic import ChannelTraffic, TrafficWindow
from stream.core.links import Step, Touch, VisitorLink
from stream.core.rates import ratio
from stream.core.totals import Delta, Totals
from stream.core.windows import Span

SESSIONS = "sessions"
ENGAGED_SESSIONS = "engaged_sessions"
ENGAGED_SECONDS = "engaged_seconds"
PAGEVIEWS = "pageviews"
PRICING_SESSIONS = "pricing_sessions"
VISITORS = "visitors"
"""Distinct family; labels (channel,)."""
STAGE_ENTRIES = "stage_entries"
"""Written by the funnel (labels stage, channel, campaign); leads are its `lead` entries."""

ENGAGED_MIN_PAGEVIEWS = 2
ENGAGED_MIN_SECONDS = 10.0


class Session(NamedTuple):
    """One session as its visitor keeps it: enough to recompute every fact it contributes."""

    ts_ms: int
    session_id: str
    channel: str
    campaign: str | None
    pageviews: int
    engaged_seconds: float
    viewed_pricing: bool


class VisitorState:
    """One visitor's sessions (by event_id) and the contacts it is known to be."""

    __slots__ = ("contacts", "sessions")

    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}
        """event_id -> the session."""
        self.contacts: set[str] = set()

    def touches_for(self, contact_id: str, visitor_id: str) -> list[Touch]:
        return [
            Touch(contact_id, visitor_id, event_id, s.session_id, s.ts_ms, s.channel, s.campaign)
            for event_id, s in self.sessions.items()
        ]


def is_engaged(pageviews: int, engaged_seconds: float) -> bool:
    """Engaged session = pageviews ≥ 2 or engaged_seconds ≥ 10 (GA4's definition, DESIGN §4)."""
    return pageviews >= ENGAGED_MIN_PAGEVIEWS or engaged_seconds >= ENGAGED_MIN_SECONDS


def add_session_facts(delta: Delta, visitor_id: str, session: Session) -> None:
    """What one session contributes: its counts by channel and campaign, and its visitor."""
    ts = session.ts_ms
    labels = (session.channel, session.campaign or NO_CAMPAIGN)
    delta.count(SESSIONS, labels, ts)
    delta.count(PAGEVIEWS, labels, ts, session.pageviews)
    delta.count(ENGAGED_SECONDS, labels, ts, session.engaged_seconds)
    if is_engaged(session.pageviews, session.engaged_seconds):
        delta.count(ENGAGED_SESSIONS, labels, ts)
    if session.viewed_pricing:
        delta.count(PRICING_SESSIONS, labels, ts)
    delta.members.append((VISITORS, (session.channel,), ts, visitor_id))


def visitor_delta(visitor_id: str, state: VisitorState) -> Delta:
    """Everything a visitor contributes (for rebuilding totals from stored states)."""
    delta = Delta()
    for session in state.sessions.values():
        add_session_facts(delta, visitor_id, session)
    return delta


def apply_site_visit(state: VisitorState, visit: SiteVisit) -> Step:
    """Count a session; link the visitor to its contact if the session names one."""
    if visit.event_id in state.sessions:
        return Step(duplicate=True)
    ts = visit.occurred_ms
    channel = visit.resolved_channel.value
    campaign = visit.campaign
    session = Session(
        ts, visit.session_id, channel, campaign, visit.pageviews, visit.engaged_seconds, visit.viewed_pricing
    )
    state.sessions[visit.event_id] = session
    delta = Delta()
    add_session_facts(delta, visit.visitor_id, session)

    # contacts known before this visit get this session; a contact first named now gets all of them
    emitted = [
        Touch(contact_id, visit.visitor_id, visit.event_id, visit.session_id, ts, channel, campaign)
        for contact_id in sorted(state.contacts)
    ]
    if visit.contact_id is not None and visit.contact_id not in state.contacts:
        state.contacts.add(visit.contact_id)
        emitted.extend(state.touches_for(visit.contact_id, visit.visitor_id))
    return Step(delta, list(emitted))


def apply_visitor_link(state: VisitorState, link: VisitorLink) -> Step:
    """The visitor is known to be a contact: send it every session so far (later ones follow)."""
    if link.contact_id in state.contacts:
        return Step()
    state.contacts.add(link.contact_id)
    return Step(emitted=list(state.touches_for(link.contact_id, link.visitor_id)))


def _channel_traffic(totals: Totals, span: Span, match: dict[int, str], leads: float, visitors: int) -> ChannelTraffic:
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
    """The `top_n` campaigns by sessions, the rest summed as `other` (bounded labels, DESIGN §5)."""
    ranked = sorted(by_campaign.items(), key=lambda item: (-item[1], item[0]))
    capped = {name: int(value) for name, value in ranked[:top_n]}
    rest = sum(value for _, value in ranked[top_n:])
    if rest:
        capped["other"] = capped.get("other", 0) + int(rest)
    return capped


def traffic_window(totals: Totals, span: Span, campaign_top_n: int = 20) -> TrafficWindow:
    """Traffic of one window, overall and by channel.

    - sessions = count of site visits; unique visitors = distinct visitor_id (exact);
    - engagement rate = engaged / sessions, bounce rate = 1 − engagement rate;
    - average engaged time = mean engaged_seconds per session;
    - visit→lead conversion = new leads / sessions, same window and channel, where a
      lead's channel is its contact's first-touch channel.
    """
    leads_by_channel = totals.total_by(STAGE_ENTRIES, span, 1, {0: Stage.LEAD.value})
    visitors_by_channel = totals.distinct_count_by(VISITORS, span, 0)
    channels = sorted({*totals.total_by(SESSIONS, span, 0), *leads_by_channel})
    overall = _channel_traffic(totals, span, {}, sum(leads_by_channel.values()), totals.distinct_count(VISITORS, span))
    return TrafficWindow(
        **overall.model_dump(),
        by_channel={
            channel: _channel_traffic(
                totals, span, {0: channel}, leads_by_channel.get(channel, 0), visitors_by_channel.get(channel, 0)
            )
            for channel in channels
        },
        sessions_by_campaign=top_campaigns(totals.total_by(SESSIONS, span, 1), campaign_top_n),
    )
