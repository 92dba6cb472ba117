"""A seeded, believable B2B SaaS company, as the events it would send (README, "Input events").

`generate` walks the scenario day by day: sessions at business-hours-shaped
times from a channel mix, some of them becoming form fills, contacts moving
down the funnel with drop-offs, trials and sales-won deals becoming
subscriptions that renew, expand, contract, fall past due, churn and come
back; daily marketing spend per channel and monthly sales spend. Everything
that happens later (a stage change in ten days, a renewal next month) waits
in a queue ordered by event time, so the output is in event-time order.

The one idea: it is a pure function of (scenario, seed) — one private
`random.Random(seed)`, ids from counters — so the same call gives the same
events, byte for byte, and the events before any instant do not depend on
how many days are asked for. It builds plain JSON-ready dicts (money as
decimal strings, times as RFC 3339 `Z` strings), never pydantic models,
because it has to outrun the reducers it feeds.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from random import Random

from schemas.channels import Channel
from schemas.events import FormType, Stage
from stream.core.windows import DAY_MS, HOUR_MS, MINUTE_MS, to_datetime, to_ms

JsonEvent = dict[str, object]

SOURCE = "leadlag-simulate"
"""The `source` field of every generated event."""

DEFAULT_CHANNEL_MIX: dict[Channel, float] = {
    Channel.ORGANIC: 0.34,
    Channel.PAID: 0.22,
    Channel.DIRECT: 0.18,
    Channel.REFERRAL: 0.08,
    Channel.SOCIAL: 0.07,
    Channel.EMAIL: 0.06,
    Channel.EVENT: 0.03,
    Channel.OTHER: 0.02,
}

DEFAULT_FORM_MIX: dict[FormType, float] = {
    FormType.CONTACT: 0.12,
    FormType.DEMO_REQUEST: 0.20,
    FormType.TRIAL_SIGNUP: 0.18,
    FormType.NEWSLETTER: 0.18,
    FormType.CONTENT_DOWNLOAD: 0.20,
    FormType.WEBINAR_REGISTRATION: 0.08,
    FormType.EVENT_REGISTRATION: 0.04,
}

DEFAULT_PROGRESSION: dict[Stage, float] = {
    Stage.LEAD: 0.45,
    Stage.MQL: 0.50,
    Stage.SQL: 0.60,
    Stage.OPPORTUNITY: 0.30,
}
"""Chance a contact in the stage moves on to the next one (for an opportunity: the win rate)."""

DEFAULT_EXIT: dict[Stage, float] = {
    Stage.LEAD: 0.40,
    Stage.MQL: 0.55,
    Stage.SQL: 0.70,
    Stage.OPPORTUNITY: 0.90,
}
"""Of the contacts that do not move on, the share that exit (disqualified, or lost for an
opportunity); the rest stay put and go stale."""

DEFAULT_STAGE_DAYS: dict[Stage, float] = {
    Stage.LEAD: 3.0,
    Stage.MQL: 5.0,
    Stage.SQL: 7.0,
    Stage.OPPORTUNITY: 21.0,
}
"""Mean days in the stage before the next step (exponentially distributed)."""

DEFAULT_DAILY_SPEND: dict[Channel, float] = {
    Channel.PAID: 1800.0,
    Channel.ORGANIC: 250.0,
    Channel.SOCIAL: 350.0,
    Channel.EVENT: 500.0,
    Channel.EMAIL: 60.0,
    Channel.REFERRAL: 120.0,
    Channel.OTHER: 40.0,
}
"""Marketing spend per channel per day in USD (direct traffic costs nothing)."""

HOUR_WEIGHTS = (
    1.0, 0.8, 0.7, 0.7, 0.8, 1.0, 1.5, 2.5, 4.0, 5.5, 6.0, 6.0,
    5.5, 5.8, 6.0, 5.8, 5.2, 4.2, 3.2, 2.6, 2.2, 1.8, 1.5, 1.2,
)  # fmt: skip
"""Relative sessions per UTC hour: a business-hours day."""

PLANS: tuple[tuple[str, int], ...] = (("starter", 15), ("growth", 39), ("business", 79))
"""(plan, monthly price per seat); an annual plan costs ten months per seat per year."""

SALES_SPEND_CHANNEL = Channel.OTHER
"""Spend events need a channel; sales spend is not any marketing channel's, so it goes under `other`."""


@dataclass(frozen=True)
class Scenario:
    """What the simulated company looks like; every rate is per session, per contact or per month."""

    start: datetime = datetime(2026, 1, 5, tzinfo=UTC)
    days: int = 28
    visits_per_day: int = 2000
    """Sessions on a weekday; weekends get `weekend_factor` of it."""
    weekend_factor: float = 0.45
    channel_mix: Mapping[Channel, float] = field(default_factory=lambda: dict(DEFAULT_CHANNEL_MIX))
    explicit_channel_share: float = 0.5
    """Sessions that name their channel; the rest leave it to the GA4-like derivation from utm/referrer."""
    returning_share: float = 0.3
    engagement_rate: float = 0.55
    """Engaged sessions (≥ 2 pageviews or ≥ 10 s); only engaged sessions fill forms."""
    pricing_page_share: float = 0.25
    """Of engaged sessions, those that view a `/pricing` page."""
    form_fill_rate: float = 0.025
    """Form fills per session (overall)."""
    form_mix: Mapping[FormType, float] = field(default_factory=lambda: dict(DEFAULT_FORM_MIX))
    demo_straight_to_mql: float = 0.5
    """Demo requests the CRM creates directly as `mql` (still one new lead)."""
    progression: Mapping[Stage, float] = field(default_factory=lambda: dict(DEFAULT_PROGRESSION))
    exit_share: Mapping[Stage, float] = field(default_factory=lambda: dict(DEFAULT_EXIT))
    stage_days: Mapping[Stage, float] = field(default_factory=lambda: dict(DEFAULT_STAGE_DAYS))
    trial_days: int = 14
    trial_conversion: float = 0.25
    annual_share: float = 0.3
    monthly_churn: float = 0.025
    monthly_past_due: float = 0.03
    past_due_recovery: float = 0.7
    monthly_upgrade: float = 0.05
    monthly_downgrade: float = 0.015
    reactivation: float = 0.15
    """Of churned accounts, those that subscribe again within three months."""
    existing_customers: int = 120
    """Accounts already paying at `start` (subscribed over the year before), so churn and
    expansion have a base from the first day; their billing state comes first in the output."""
    eur_share: float = 0.1
    """Accounts billed in EUR (the policy then needs an EUR rate)."""
    daily_spend: Mapping[Channel, float] = field(default_factory=lambda: dict(DEFAULT_DAILY_SPEND))
    monthly_sales_spend: float = 90_000.0
    incident_start: datetime | None = None
    incident_hours: float = 6.0
    incident_traffic_factor: float = 1.6
    incident_conversion_factor: float = 0.4
    """Multiplies the form-fill (so the lead) rate of sessions inside the incident."""


def generate(scenario: Scenario, seed: int) -> Iterator[JsonEvent]:
    """The scenario's events in event-time order, each valid for `schemas.events.EVENT_ADAPTER`."""
    return _Company(scenario, seed).events(to_ms(scenario.start) + scenario.days * DAY_MS)


def expected_events_per_day(scenario: Scenario) -> float:
    """About how many events an average day of the scenario yields (sessions dominate).

    Measured: forms, stage changes and billing add about 8.5 % to the sessions.
    """
    spend = len(scenario.daily_spend) + (len(_PAID_CAMPAIGN_SPLIT) - 1) * (Channel.PAID in scenario.daily_spend)
    return _average_sessions_per_day(scenario) * 1.085 + spend


def _average_sessions_per_day(scenario: Scenario) -> float:
    return scenario.visits_per_day * (5 + 2 * scenario.weekend_factor) / 7


COUNT_RUN_END = datetime(2026, 3, 5, 15, tzinfo=UTC)
"""Where a `generate_count` run without a scenario roughly ends: a Thursday afternoon, so its
last day and the day before are both working days."""


def generate_count(
    n: int, seed: int, scenario: Scenario | None = None, *, incident: bool = False
) -> Iterator[JsonEvent]:
    """Exactly `n` events: the first `n` of an open-ended run of the scenario.

    Without a scenario, the company is sized so that `n` events span about two
    months (≥ 200 weekday sessions a day) ending near `COUNT_RUN_END`:
    1,000,000 events is a site with ~18,000 sessions a weekday.
    `incident=True` scripts "traffic up, conversion down" over about the
    last 25 hours of the run.
    """
    if scenario is None:
        sized = Scenario(visits_per_day=max(200, round(n / 60 / 1.085 / ((5 + 2 * 0.45) / 7))))
        span = timedelta(days=n / expected_events_per_day(sized))
        start = (COUNT_RUN_END - span).replace(minute=0, second=0, microsecond=0)
        scenario = replace(sized, start=start)
    if incident and scenario.incident_start is None:
        scenario = _with_closing_incident(scenario, n, seed)
    return itertools.islice(_Company(scenario, seed).events(None), n)


def _with_closing_incident(scenario: Scenario, n: int, seed: int) -> Scenario:
    """The scenario with an incident from 40 hours before its `n`-th event (without one) onwards.

    Found by generating the run once without the incident (so `--incident`
    costs a second pass). The incident's extra traffic brings the `n`-th event
    forward: 40 hours of ordinary traffic take about 25 hours at 1.6×, so the
    last day of the run lies inside the incident and the day before mostly not.
    """
    last = deque(itertools.islice(_Company(scenario, seed).events(None), n), maxlen=1)
    end_ms = to_ms(datetime.fromisoformat(str(last[0]["occurred_at"]))) if last else to_ms(scenario.start)
    start_ms = max(to_ms(scenario.start), end_ms - 40 * HOUR_MS)
    incident_start = start_ms - start_ms % HOUR_MS
    return replace(scenario, incident_start=to_datetime(incident_start), incident_hours=72.0)


# -- the company -------------------------------------------------------------------------------

_SEARCH_REFERRERS = (
    "https://www.google.com/",
    "https://www.google.com/",
    "https://www.bing.com/",
    "https://duckduckgo.com/",
)
_REFERRAL_SITES = (
    "https://www.g2.com/products/leadlag/reviews",
    "https://www.capterra.com/p/leadlag/",
    "https://news.ycombinator.com/item",
    "https://partner-blog.example.org/revenue-ops",
)
_LANDING_PAGES = (
    "/",
    "/",
    "/product",
    "/blog/leading-indicators",
    "/blog/saas-metrics",
    "/pricing",
    "/customers",
)
_PAGES = ("/product", "/integrations", "/customers", "/blog/saas-metrics", "/docs", "/about", "/security")
_FORM_IDS: dict[FormType, str] = {
    FormType.CONTACT: "contact-us",
    FormType.DEMO_REQUEST: "book-a-demo",
    FormType.TRIAL_SIGNUP: "start-trial",
    FormType.NEWSLETTER: "newsletter-footer",
    FormType.CONTENT_DOWNLOAD: "ebook-saas-benchmarks",
    FormType.WEBINAR_REGISTRATION: "webinar-funnel-metrics",
    FormType.EVENT_REGISTRATION: "saas-summit-meetup",
    FormType.OTHER: "other",
}
_DISQUALIFY_REASONS = ("no budget", "student", "competitor", "wrong fit", "no response")
_LOST_REASONS = ("price", "chose competitor", "no decision", "timing")

_CLOCK_MINUTES = tuple(f"{minute // 60:02d}:{minute % 60:02d}:" for minute in range(24 * 60))
"""`HH:MM:` of every minute of a day, so formatting a timestamp is one lookup and one f-string."""

Source = tuple[dict[str, str] | None, str | None]
"""(utm, referrer) of a session."""

_SOURCES: dict[Channel, tuple[Source, ...]] = {
    Channel.ORGANIC: tuple((None, ref) for ref in _SEARCH_REFERRERS),
    Channel.PAID: (
        ({"source": "google", "medium": "cpc", "campaign": "brand-search"}, "https://www.google.com/"),
        ({"source": "google", "medium": "cpc", "campaign": "competitor-search"}, "https://www.google.com/"),
        ({"source": "linkedin", "medium": "paid_social", "campaign": "abm-q1"}, "https://www.linkedin.com/"),
        ({"source": "google", "medium": "display", "campaign": "retargeting"}, None),
    ),
    Channel.DIRECT: ((None, None),),
    Channel.REFERRAL: tuple((None, ref) for ref in _REFERRAL_SITES),
    Channel.SOCIAL: (
        (None, "https://www.linkedin.com/feed/"),
        ({"source": "linkedin", "medium": "social", "campaign": "thought-leadership"}, None),
        (None, "https://t.co/x"),
    ),
    Channel.EMAIL: (
        ({"source": "newsletter", "medium": "email", "campaign": "monthly-newsletter"}, None),
        ({"source": "hubspot", "medium": "email", "campaign": "product-update"}, None),
    ),
    Channel.EVENT: (
        ({"source": "saas-summit", "medium": "event", "campaign": "saas-summit-2026"}, None),
        ({"source": "zoom", "medium": "webinar", "campaign": "webinar-series"}, None),
    ),
    Channel.OTHER: (({"source": "podcast", "medium": "audio", "campaign": "founders-podcast"}, None),),
}
"""How each channel's sessions arrive; each one derives back to its channel (GA4-like rules)."""

_PAID_CAMPAIGN_SPLIT = (
    ("brand-search", 0.3),
    ("competitor-search", 0.25),
    ("abm-q1", 0.3),
    ("retargeting", 0.15),
)


class _Account:
    """One paying (or trialing) account's subscription as billing knows it."""

    __slots__ = (
        "account_id",
        "contact_id",
        "currency",
        "interval",
        "plan",
        "seats",
        "status",
        "subscription_id",
    )

    def __init__(self, account_id: str, contact_id: str, currency: str) -> None:
        self.account_id = account_id
        self.contact_id = contact_id
        self.currency = currency
        self.subscription_id = ""
        self.plan = 0
        self.seats = 1
        self.interval = "month"
        self.status = "trialing"

    def seat_price(self) -> int:
        monthly = PLANS[self.plan][1]
        return monthly * 10 if self.interval == "year" else monthly

    def annual_value(self) -> int:
        return self.seat_price() * self.seats * (1 if self.interval == "year" else 12)


class _Company:
    __slots__ = (
        "accounts_made",
        "contacts_made",
        "day_prefix",
        "events_made",
        "incident",
        "queue",
        "queued",
        "rng",
        "scenario",
        "seed",
        "sessions_made",
        "subscribers",
        "subscriptions_made",
        "visitor_contacts",
    )

    def __init__(self, scenario: Scenario, seed: int) -> None:
        self.scenario = scenario
        self.seed = seed
        self.rng = Random(seed)
        self.queue: list[tuple[int, int, JsonEvent | None, Callable[[int], None] | None]] = []
        self.events_made = itertools.count(1)
        self.queued = itertools.count(1)
        self.sessions_made = itertools.count(1)
        self.contacts_made = itertools.count(1)
        self.accounts_made = itertools.count(1)
        self.subscriptions_made = itertools.count(1)
        self.visitor_contacts: list[str | None] = []
        """Index = visitor number − 1; the contact a returning visitor is known as."""
        self.subscribers: set[str] = set()
        """Newsletter contacts not yet leads."""
        self.day_prefix: dict[int, str] = {}
        start = scenario.incident_start
        self.incident: tuple[int, int] | None = (
            None if start is None else (to_ms(start), to_ms(start + timedelta(hours=scenario.incident_hours)))
        )

    # -- plumbing ------------------------------------------------------------------------------
    def iso(self, ts_ms: int) -> str:
        day = ts_ms - ts_ms % DAY_MS
        prefix = self.day_prefix.get(day)
        if prefix is None:
            prefix = self.day_prefix[day] = to_datetime(day).strftime("%Y-%m-%dT")
        minute, rest = divmod(ts_ms - day, MINUTE_MS)
        return f"{prefix}{_CLOCK_MINUTES[minute]}{rest // 1000:02d}.{rest % 1000:03d}Z"

    def event(self, kind: str, ts_ms: int) -> JsonEvent:
        return {
            "event_id": f"sim{self.seed}-{next(self.events_made)}",
            "type": kind,
            "occurred_at": self.iso(ts_ms),
            "source": SOURCE,
        }

    def at(self, ts_ms: int, event: JsonEvent) -> None:
        heapq.heappush(self.queue, (ts_ms, next(self.queued), event, None))

    def later(self, ts_ms: int, task: Callable[[int], None]) -> None:
        heapq.heappush(self.queue, (ts_ms, next(self.queued), None, task))

    def due(self, until_ms: int) -> Iterator[JsonEvent]:
        """Queued events before `until_ms`, running the tasks that come due on the way."""
        queue = self.queue
        while queue and queue[0][0] < until_ms:
            ts, _, event, task = heapq.heappop(queue)
            if event is not None:
                yield event
            elif task is not None:
                task(ts)

    # -- the days --------------------------------------------------------------------------------
    def events(self, end_ms: int | None) -> Iterator[JsonEvent]:
        scenario = self.scenario
        rng = self.rng
        channels = list(scenario.channel_mix)
        channel_cum = list(itertools.accumulate(scenario.channel_mix[c] for c in channels))
        day_ms = to_ms(scenario.start)
        self.existing_customers(day_ms)
        first_day = True
        while end_ms is None or day_ms < end_ms:
            day_end = day_ms + DAY_MS if end_ms is None else min(day_ms + DAY_MS, end_ms)
            yield from self.due(day_ms)
            yield from self.spend(day_ms, first_day)
            first_day = False
            hour_weights = self.hour_weights(day_ms)
            weekend = to_datetime(day_ms).weekday() >= 5
            expected = scenario.visits_per_day * (scenario.weekend_factor if weekend else 1.0)
            expected *= sum(hour_weights) / sum(HOUR_WEIGHTS) * rng.uniform(0.92, 1.08)
            count = int(expected) + (rng.random() < expected % 1)
            hours = rng.choices(range(24), weights=hour_weights, k=count)
            times = sorted(day_ms + hour * HOUR_MS + int(rng.random() * HOUR_MS) for hour in hours)
            picked = rng.choices(channels, cum_weights=channel_cum, k=count)
            queue = self.queue
            for ts, channel in zip(times, picked, strict=True):
                if ts >= day_end:
                    break
                if queue and queue[0][0] <= ts:
                    yield from self.due(ts + 1)
                yield self.session(ts, channel)
            yield from self.due(day_end)
            day_ms += DAY_MS

    def hour_weights(self, day_ms: int) -> list[float]:
        """The day's hour weights, raised by the traffic factor for the part of each hour in the incident."""
        if self.incident is None:
            return list(HOUR_WEIGHTS)
        start, end = self.incident
        factor = self.scenario.incident_traffic_factor
        weights = []
        for hour, weight in enumerate(HOUR_WEIGHTS):
            lo = day_ms + hour * HOUR_MS
            overlap = max(0, min(end, lo + HOUR_MS) - max(start, lo)) / HOUR_MS
            weights.append(weight * (1 + (factor - 1) * overlap))
        return weights

    def in_incident(self, ts_ms: int) -> bool:
        return self.incident is not None and self.incident[0] <= ts_ms < self.incident[1]

    # -- traffic ---------------------------------------------------------------------------------
    def session(self, ts: int, channel: Channel) -> JsonEvent:
        scenario = self.scenario
        random = self.rng.random
        contacts = self.visitor_contacts
        if contacts and random() < scenario.returning_share:
            number = len(contacts) - int(random() * min(len(contacts), 20_000))
            contact_id = contacts[number - 1]
        else:
            contacts.append(None)
            number = len(contacts)
            contact_id = None
        visitor_id = f"v{self.seed}-{number}"
        session_id = f"s{self.seed}-{next(self.sessions_made)}"
        sources = _SOURCES[channel]
        utm, referrer = sources[int(random() * len(sources))]
        landing = _LANDING_PAGES[int(random() * len(_LANDING_PAGES))]
        event: JsonEvent = {
            "event_id": f"sim{self.seed}-{next(self.events_made)}",
            "type": "site_visit",
            "occurred_at": self.iso(ts),
            "source": SOURCE,
            "session_id": session_id,
            "visitor_id": visitor_id,
            "landing_page": landing,
        }
        if contact_id is not None:
            event["contact_id"] = contact_id
        if random() < scenario.explicit_channel_share:
            event["channel"] = channel.value
        if utm is not None:
            event["utm"] = dict(utm)
        if referrer is not None:
            event["referrer"] = referrer
        engaged = random() < scenario.engagement_rate
        if engaged:
            pageviews = 2 + int(-2.0 * math.log(1.0 - random()))
            seconds = round(10 + -120.0 * math.log(1.0 - random()), 1)
            pages = [landing, *(_PAGES[int(random() * len(_PAGES))] for _ in range(min(pageviews, 8) - 1))]
            if random() < scenario.pricing_page_share:
                pages[-1] = "/pricing"
            event["pages"] = pages
        else:
            pageviews, seconds = 1, round(random() * 9.9, 1)
        event["pageviews"] = pageviews
        event["engaged_seconds"] = seconds
        if engaged:
            rate = scenario.form_fill_rate / scenario.engagement_rate
            if self.in_incident(ts):
                rate *= scenario.incident_conversion_factor
            if random() < rate:
                self.form_fill(ts + int(seconds * 1000), number, visitor_id, session_id, contact_id, utm)
        return event

    # -- the funnel ------------------------------------------------------------------------------
    def form_fill(
        self,
        ts: int,
        visitor_number: int,
        visitor_id: str,
        session_id: str,
        contact_id: str | None,
        utm: dict[str, str] | None,
    ) -> None:
        rng = self.rng
        scenario = self.scenario
        known = contact_id is not None
        form_types = list(scenario.form_mix)
        if known:
            # a known contact comes back for content, a webinar or, now and then, a demo
            form_type = rng.choice((FormType.CONTENT_DOWNLOAD, FormType.WEBINAR_REGISTRATION, FormType.DEMO_REQUEST))
        else:
            form_type = rng.choices(form_types, weights=[scenario.form_mix[f] for f in form_types])[0]
            contact_id = f"c{self.seed}-{next(self.contacts_made)}"
            self.visitor_contacts[visitor_number - 1] = contact_id
        assert contact_id is not None
        event = self.event("form_fill", ts)
        event["form_id"] = _FORM_IDS[form_type]
        event["form_type"] = form_type.value
        event["contact_id"] = contact_id
        event["visitor_id"] = visitor_id
        event["session_id"] = session_id
        if utm is not None and rng.random() < 0.3:
            event["utm"] = dict(utm)
        self.at(ts, event)
        if known:
            if contact_id in self.subscribers and form_type is not FormType.NEWSLETTER:
                # a newsletter subscriber who downloads, registers or asks for a demo becomes a lead
                self.subscribers.discard(contact_id)
                synced = ts + self.crm_delay()
                self.stage_change(synced, contact_id, Stage.LEAD)
                self.plan_next_step(synced, contact_id, Stage.LEAD, None)
            return
        synced = ts + self.crm_delay()
        if form_type is FormType.NEWSLETTER:
            self.stage_change(synced, contact_id, Stage.SUBSCRIBER)
            self.subscribers.add(contact_id)
        elif form_type is FormType.TRIAL_SIGNUP:
            self.stage_change(synced, contact_id, Stage.LEAD)
            self.start_trial(synced + MINUTE_MS, contact_id)
        elif form_type is FormType.DEMO_REQUEST and rng.random() < scenario.demo_straight_to_mql:
            self.stage_change(synced, contact_id, Stage.MQL)
            self.plan_next_step(synced, contact_id, Stage.MQL, None)
        else:
            self.stage_change(synced, contact_id, Stage.LEAD)
            self.plan_next_step(synced, contact_id, Stage.LEAD, None)

    def crm_delay(self) -> int:
        """The CRM syncs a form's contact within a few minutes."""
        return 30_000 + int(self.rng.random() * 270_000)

    def stage_change(
        self,
        ts: int,
        contact_id: str,
        stage: Stage,
        account: _Account | None = None,
        amount: int | None = None,
        reason: str | None = None,
    ) -> None:
        event = self.event("stage_change", ts)
        event["contact_id"] = contact_id
        event["to_stage"] = stage.value
        if account is not None:
            event["account_id"] = account.account_id
            if amount is not None:
                event["amount"] = f"{amount}.00"
                event["currency"] = account.currency
        if reason is not None:
            event["reason"] = reason
        self.at(ts, event)

    def plan_next_step(self, ts: int, contact_id: str, stage: Stage, account: _Account | None) -> None:
        """Schedule what happens to a contact in `stage`: the next stage, an exit, or nothing (stale)."""
        rng = self.rng
        scenario = self.scenario
        advance = scenario.progression.get(stage, 0.0)
        roll = rng.random()
        when = ts + int(rng.expovariate(1 / scenario.stage_days.get(stage, 7.0)) * DAY_MS) + MINUTE_MS
        if roll < advance:
            self.later(when, lambda now: self.advance(now, contact_id, stage, account))
        elif roll < advance + (1 - advance) * scenario.exit_share.get(stage, 0.0):
            if stage is Stage.OPPORTUNITY:
                self.stage_change(when, contact_id, Stage.LOST, account, reason=rng.choice(_LOST_REASONS))
            else:
                self.stage_change(when, contact_id, Stage.DISQUALIFIED, account, reason=rng.choice(_DISQUALIFY_REASONS))

    def advance(self, ts: int, contact_id: str, stage: Stage, account: _Account | None) -> None:
        if stage is Stage.LEAD:
            self.stage_change(ts, contact_id, Stage.MQL)
            self.plan_next_step(ts, contact_id, Stage.MQL, None)
        elif stage is Stage.MQL:
            account = self.new_account(contact_id)
            self.stage_change(ts, contact_id, Stage.SQL, account)
            self.plan_next_step(ts, contact_id, Stage.SQL, account)
        elif stage is Stage.SQL:
            account = account or self.new_account(contact_id)
            self.choose_plan(account)
            self.stage_change(ts, contact_id, Stage.OPPORTUNITY, account, account.annual_value())
            self.plan_next_step(ts, contact_id, Stage.OPPORTUNITY, account)
        elif stage is Stage.OPPORTUNITY and account is not None:
            self.stage_change(ts, contact_id, Stage.CUSTOMER, account, account.annual_value())
            account.subscription_id = self.new_subscription_id()
            account.status = "active"
            self.bill(ts + MINUTE_MS, account)
            self.plan_renewal(ts + MINUTE_MS, account)

    # -- billing ---------------------------------------------------------------------------------
    def new_account(self, contact_id: str) -> _Account:
        currency = "EUR" if self.rng.random() < self.scenario.eur_share else "USD"
        return _Account(f"a{self.seed}-{next(self.accounts_made)}", contact_id, currency)

    def new_subscription_id(self) -> str:
        return f"sub{self.seed}-{next(self.subscriptions_made)}"

    def choose_plan(self, account: _Account) -> None:
        rng = self.rng
        account.plan = rng.choices((0, 1, 2), weights=(0.5, 0.35, 0.15))[0]
        account.seats = max(1, min(200, int(rng.lognormvariate(1.6, 0.8))))
        account.interval = "year" if rng.random() < self.scenario.annual_share else "month"

    def bill(self, ts: int, account: _Account) -> None:
        """Billing sends the subscription's full current state after every change."""
        event = self.event("subscription", ts)
        event["account_id"] = account.account_id
        event["subscription_id"] = account.subscription_id
        event["status"] = account.status
        event["plan"] = f"{PLANS[account.plan][0]}-{'annual' if account.interval == 'year' else 'monthly'}"
        event["amount"] = f"{account.seat_price()}.00"
        event["currency"] = account.currency
        event["interval"] = account.interval
        event["interval_count"] = 1
        event["quantity"] = account.seats
        self.at(ts, event)

    def start_trial(self, ts: int, contact_id: str) -> None:
        account = self.new_account(contact_id)
        self.choose_plan(account)
        account.interval = "month"
        account.subscription_id = self.new_subscription_id()
        account.status = "trialing"
        self.bill(ts, account)
        self.later(ts + self.scenario.trial_days * DAY_MS, lambda now: self.end_trial(now, account))

    def end_trial(self, ts: int, account: _Account) -> None:
        rng = self.rng
        if rng.random() < self.scenario.trial_conversion:
            account.status = "active"
            self.bill(ts, account)
            self.stage_change(
                ts + self.crm_delay(), account.contact_id, Stage.CUSTOMER, account, account.annual_value()
            )
            self.plan_renewal(ts, account)
        else:
            account.status = "cancelled"
            self.bill(ts, account)
            if rng.random() < 0.5:
                self.stage_change(ts + self.crm_delay(), account.contact_id, Stage.DISQUALIFIED, reason="trial expired")

    def plan_renewal(self, ts: int, account: _Account) -> None:
        self.later(ts + 30 * DAY_MS, lambda now: self.renew(now, account))

    def renew(self, ts: int, account: _Account) -> None:
        """A month of an account's life: churn, payment trouble, expansion, contraction or nothing."""
        rng = self.rng
        scenario = self.scenario
        roll = rng.random()
        churn = scenario.monthly_churn
        past_due = churn + scenario.monthly_past_due
        upgrade = past_due + scenario.monthly_upgrade
        downgrade = upgrade + scenario.monthly_downgrade
        if roll < churn:
            self.cancel(ts, account)
            return
        if roll < past_due:
            account.status = "past_due"
            self.bill(ts, account)
            self.later(ts + int(rng.uniform(3, 12) * DAY_MS), lambda now: self.settle(now, account))
            return
        if roll < upgrade:
            if account.plan < len(PLANS) - 1 and rng.random() < 0.3:
                account.plan += 1
            else:
                account.seats += 1 + int(rng.random() * max(1, account.seats // 3))
            self.bill(ts, account)
        elif roll < downgrade:
            if account.seats > 1:
                account.seats -= 1 + int(rng.random() * max(1, account.seats // 4 - 1))
                account.seats = max(1, account.seats)
            elif account.plan > 0:
                account.plan -= 1
            self.bill(ts, account)
        self.plan_renewal(ts, account)

    def settle(self, ts: int, account: _Account) -> None:
        if self.rng.random() < self.scenario.past_due_recovery:
            account.status = "active"
            self.bill(ts, account)
            self.plan_renewal(ts, account)
        else:
            self.cancel(ts, account)

    def cancel(self, ts: int, account: _Account) -> None:
        rng = self.rng
        account.status = "cancelled"
        self.bill(ts, account)
        if rng.random() < self.scenario.reactivation:
            self.later(ts + int(rng.uniform(20, 90) * DAY_MS), lambda now: self.reactivate(now, account))

    def reactivate(self, ts: int, account: _Account) -> None:
        """The account subscribes again: a new subscription, the same account (a reactivation)."""
        account.subscription_id = self.new_subscription_id()
        account.status = "active"
        account.interval = "month"
        self.bill(ts, account)
        self.plan_renewal(ts, account)

    def existing_customers(self, start_ms: int) -> None:
        """The paying base at the start: each account's current subscription, dated when it began."""
        rng = self.rng
        began = sorted(start_ms - int(rng.uniform(1, 365) * DAY_MS) for _ in range(self.scenario.existing_customers))
        for ts in began:
            account = self.new_account(f"c{self.seed}-{next(self.contacts_made)}")
            self.choose_plan(account)
            account.subscription_id = self.new_subscription_id()
            account.status = "active"
            self.bill(ts, account)
            first_renewal = start_ms + int(rng.random() * 30 * DAY_MS)
            self.later(first_renewal, functools.partial(self.renew, account=account))

    # -- spend -----------------------------------------------------------------------------------
    def spend(self, day_ms: int, first_day: bool) -> Iterator[JsonEvent]:
        """Marketing spend per channel (paid: per campaign) for the day; sales spend on each month's 1st."""
        rng = self.rng
        scenario = self.scenario
        for channel, daily in scenario.daily_spend.items():
            split = _PAID_CAMPAIGN_SPLIT if channel is Channel.PAID else ((None, 1.0),)
            for campaign, share in split:
                event = self.event("spend", day_ms)
                event["channel"] = channel.value
                if campaign is not None:
                    event["campaign"] = campaign
                event["category"] = "marketing"
                event["amount"] = f"{daily * share * rng.uniform(0.85, 1.15):.2f}"
                event["currency"] = "USD"
                yield event
        if first_day or to_datetime(day_ms).day == 1:
            event = self.event("spend", day_ms)
            event["channel"] = SALES_SPEND_CHANNEL.value
            event["category"] = "sales"
            event["amount"] = f"{scenario.monthly_sales_spend:.2f}"
            event["currency"] = "USD"
            yield event
