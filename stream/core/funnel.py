"""Funnel (leading to lagging): a contact's way from subscriber to customer, and who earned it.

The contact is the entity. Its state is the *set* of what it has seen — stage
changes, form fills and the sessions (`Touch`) of the visitors known to be it —
and everything it contributes to the totals is recomputed from that set: the
timeline is walked in (ts_ms, event_id) order, and each fold applies the
difference between the facts before and after (`Delta.between`). So a late
stage change, or a late session that changes the contact's first-touch channel,
moves its facts to where they belong, whatever the arrival order.

Two readings of the timeline:

- *reach*: the moment a contact reached stage S is the earliest change to S or
  any later stage, so a skip passes through the skipped stages at that moment
  and re-entering a stage never counts again (entries, cohorts, time to convert
  and attribution use it);
- *stints*: the stage the contact sits in. It moves only forward (a change to a
  stage not above the current one is ignored); an exit (`disqualified`, `lost`)
  ends the stint it is in; a funnel stage change after an exit re-opens the
  contact in the stage that change names. Occupancy, time in stage,
  staleness, pipeline and won/lost deals use it. A stint that ends the instant
  it starts (a skipped stage, two changes in the same millisecond) was passed
  through, not sat in.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from itertools import pairwise
from typing import NamedTuple, TypeVar

from schemas.channels import NO_CAMPAIGN, UNKNOWN_CHANNEL
from schemas.events import EXIT_STAGES, FUNNEL_STAGES, FormFill, Stage, StageChange
from schemas.snapshot.funnel import ChannelFunnel, FunnelWindow, LeadCohort, StageDuration, StageFlow
from stream.core.attribution import (
    ATTRIBUTION_CREDIT,
    AttributionTouch,
    Conversion,
    Milestones,
    attribution_credits,
)
from stream.core.links import AccountLink, Link, Step, Touch, VisitorLink
from stream.core.policy import Policy
from stream.core.rates import ratio, whole
from stream.core.totals import BEGINNING_MS, Delta, FactKey, Facts, MoneyFacts, Totals
from stream.core.windows import DAY_MS, MINUTE_MS, Span, floor_minute, month_label

STAGE_ENTRIES = "stage_entries"
"""Count, labels (stage, channel, campaign); +1 at the reach time of each stage reached."""
FORM_FILLS = "form_fills"
"""Count, labels (form_type, channel, campaign); +1 at the fill's time, by the fill's own channel."""
STAGE_EXITS = "stage_exits"
"""Count, labels (stage, channel, campaign); +1 at the first exit from the stage, once per contact."""
BECAME_STALE = "became_stale"
"""Count, labels (stage, channel, campaign); +1 at entry + staleness limit if still there, once a contact."""
STAGE_DROP_OFFS = "stage_drop_offs"
"""Count, labels (stage, channel, campaign); +1 at the first exit or staleness in the stage (once)."""
IN_STAGE = "in_stage"
"""Count, labels (stage, channel); +1 when a stint starts, -1 when it ends: occupancy at any as-of."""
TIME_TO_STAGE_BUCKET = "time_to_stage_bucket"
"""Count, labels (stage, le); one lead-moment-to-reach observation, non-cumulative, at the reach time."""
TIME_TO_STAGE_SECONDS = "time_to_stage_seconds"
"""Count (seconds), labels (stage,); the observations' sum."""
TIME_IN_STAGE_BUCKET = "time_in_stage_bucket"
"""Count, labels (stage, le); one stint length, non-cumulative, when the contact leaves the stage."""
TIME_IN_STAGE_SECONDS = "time_in_stage_seconds"
"""Count (seconds), labels (stage,); the observations' sum."""
COHORT_REACHED = "cohort_reached"
"""Count, labels (cohort_month, stage); +1 at the reach time of lead and each later stage."""
OPPORTUNITIES_CLOSED = "opportunities_closed"
"""Count, labels (outcome "won" | "lost", channel); +1 at the close."""
WON_AMOUNT = "won_amount"
"""Money, labels (channel,); the deal value at the win."""
SALES_CYCLE_SECONDS = "sales_cycle_seconds"
"""Count (seconds), labels (channel,); lead moment to the win, at the win."""
OPEN_OPPORTUNITIES = "open_opportunities"
"""Count, labels (channel,); +1 when an opportunity stint starts, -1 when it closes."""
PIPELINE_AMOUNT = "pipeline_amount"
"""Money, labels (channel,); the open opportunity's deal value, as signed changes."""
WEIGHTED_PIPELINE = "weighted_pipeline"
"""Money, labels (channel,); deal value × the stage's probability while in it, as signed changes."""

WON = "won"
LOST = "lost"
DURATION_BOUNDS_SECONDS: tuple[int, ...] = (
    3600,
    21600,
    86400,
    259200,
    604800,
    1209600,
    2592000,
    5184000,
    7776000,
)
"""Histogram upper bounds (1 h, 6 h, 1 d, 3 d, 7 d, 14 d, 30 d, 60 d, 90 d), then `+Inf`."""
BUCKET_LABELS: tuple[str, ...] = (*(str(bound) for bound in DURATION_BOUNDS_SECONDS), "+Inf")
MONEY_PLACES = Decimal("0.000001")

STAGE_INDEX: dict[Stage, int] = {stage: index for index, stage in enumerate(FUNNEL_STAGES)}
CONVERTING_STAGES: tuple[Stage, ...] = FUNNEL_STAGES[STAGE_INDEX[Stage.LEAD] + 1 :]
"""The stages a lead converts to: mql, sql, opportunity, customer."""
COHORT_STAGES: tuple[Stage, ...] = FUNNEL_STAGES[STAGE_INDEX[Stage.LEAD] :]

V = TypeVar("V", float, Decimal)


class StageRecord(NamedTuple):
    """One stage change as the contact keeps it (the amount already in the reporting currency)."""

    ts_ms: int
    to_stage: Stage
    amount: Decimal | None
    account_id: str | None


class FormRecord(NamedTuple):
    ts_ms: int
    form_type: str
    channel: str | None
    """The fill's own channel (given, or derived from its utm); None when it names none."""
    campaign: str | None
    visitor_id: str | None
    session_id: str | None


class Touchpoint(NamedTuple):
    ts_ms: int
    touch_id: str
    """The session's event_id or the form fill's event_id: the tie-breaker at equal times."""
    channel: str
    campaign: str | None


class Stint(NamedTuple):
    """A stretch of time the contact sat in one funnel stage."""

    stage: Stage
    start_ms: int
    end_ms: int | None
    ended_by: Stage | None
    """The stage change that ended it: a higher funnel stage, an exit stage, or None while it lasts."""


class ContactState:
    """One contact's stage changes and form fills (by event_id), its sessions, and its last account link."""

    __slots__ = ("form_fills", "last_account_link", "stage_changes", "touches")

    def __init__(self) -> None:
        self.stage_changes: dict[str, StageRecord] = {}
        self.form_fills: dict[str, FormRecord] = {}
        self.touches: dict[str, Touch] = {}
        """session_event_id -> the session."""
        self.last_account_link: tuple[str, int | None, str, str | None] | None = None
        """(account_id, first_touch_ms, channel, campaign) of the last AccountLink emitted."""


# -- touchpoints -------------------------------------------------------------------------


def form_fill_source(state: ContactState, fill: FormRecord) -> tuple[str, str | None] | None:
    """The (channel, campaign) a form fill is credited to, or None when no session can supply one.

    Its own channel if it names one; else its session's (same session_id); else
    the latest session of its visitor at or before the fill. A campaign the fill
    lacks comes from the session that supplied the channel.
    """
    if fill.channel is not None:
        return fill.channel, fill.campaign
    same_session = [t for t in state.touches.values() if fill.session_id and t.session_id == fill.session_id]
    if same_session:
        touch = min(same_session, key=lambda t: (t.ts_ms, t.session_event_id))
        return touch.channel, fill.campaign or touch.campaign
    earlier = [
        t
        for t in state.touches.values()
        if fill.visitor_id and t.visitor_id == fill.visitor_id and t.ts_ms <= fill.ts_ms
    ]
    if earlier:
        touch = max(earlier, key=lambda t: (t.ts_ms, t.session_event_id))
        return touch.channel, fill.campaign or touch.campaign
    return None


def touchpoints(state: ContactState) -> list[Touchpoint]:
    """The contact's sessions and credited form fills, in (ts_ms, id) order."""
    points = [Touchpoint(t.ts_ms, t.session_event_id, t.channel, t.campaign) for t in state.touches.values()]
    for event_id, fill in state.form_fills.items():
        source = form_fill_source(state, fill)
        if source is not None:
            points.append(Touchpoint(fill.ts_ms, event_id, *source))
    points.sort(key=lambda point: (point.ts_ms, point.touch_id))
    return points


# -- the stage timeline ------------------------------------------------------------------


def _timeline(state: ContactState) -> list[StageRecord]:
    """The stage changes in (ts_ms, event_id) order."""
    ordered = sorted(state.stage_changes.items(), key=lambda item: (item[1].ts_ms, item[0]))
    return [record for _, record in ordered]


def reach_times(timeline: Iterable[StageRecord]) -> dict[Stage, int]:
    """When the contact reached each funnel stage: the earliest change to it or to any later stage.

    A skip passes through the skipped stages at the same moment; re-entry
    never counts twice. The lead moment is the reach time of `lead`, so a
    contact created straight as `mql` is one new lead.
    """
    reached: dict[Stage, int] = {}
    for record in timeline:
        if record.to_stage in EXIT_STAGES:
            continue
        for stage in FUNNEL_STAGES[: STAGE_INDEX[record.to_stage] + 1]:
            if stage not in reached or record.ts_ms < reached[stage]:
                reached[stage] = record.ts_ms
    return reached


def stage_stints(timeline: Iterable[StageRecord]) -> list[Stint]:
    """The stints of a timeline in (ts_ms, event_id) order; zero-length (passed-through) ones included.

    Only forward moves count; an exit ends the current stint, from the stage
    the contact sits in; an exit with no open stint changes nothing; a funnel
    change after an exit re-opens the contact in the stage it names.
    """
    stints: list[Stint] = []
    current: Stint | None = None
    for record in timeline:
        stage = record.to_stage
        if stage in EXIT_STAGES:
            if current is not None:
                stints.append(current._replace(end_ms=record.ts_ms, ended_by=stage))
                current = None
            continue
        if current is None:
            current = Stint(stage, record.ts_ms, None, None)
        elif STAGE_INDEX[stage] > STAGE_INDEX[current.stage]:
            stints.append(current._replace(end_ms=record.ts_ms, ended_by=stage))
            current = Stint(stage, record.ts_ms, None, None)
    if current is not None:
        stints.append(current)
    return stints


def deal_value_at(amounts: list[tuple[int, Decimal]], ts_ms: int, inclusive: bool = True) -> Decimal:
    """Deal value at an instant: the latest amount given on a stage change at (or before) it, else 0."""
    value = Decimal(0)
    for ts, amount in amounts:
        if ts < ts_ms or (inclusive and ts == ts_ms):
            value = amount
    return value


def account_of(timeline: Iterable[StageRecord]) -> str | None:
    """The account named by the latest stage change (by time) that names one."""
    account = None
    for record in timeline:
        if record.account_id is not None:
            account = record.account_id
    return account


# -- facts -------------------------------------------------------------------------------


def _add(facts: dict[FactKey, V], family: str, labels: tuple[str, ...], ts_ms: int, value: V) -> None:
    key = (family, labels, ts_ms)
    facts[key] = facts.get(key, value * 0) + value


def _observe(
    facts: Facts, bucket_family: str, seconds_family: str, stage: str, ts_ms: int, ms: int, *labels: str
) -> None:
    """One observation of a duration histogram: labels (stage, bucket, *labels) and (stage, *labels)."""
    seconds = ms / 1000
    label = next(
        (lab for bound, lab in zip(DURATION_BOUNDS_SECONDS, BUCKET_LABELS, strict=False) if seconds <= bound),
        BUCKET_LABELS[-1],
    )
    _add(facts, bucket_family, (stage, label, *labels), ts_ms, 1)
    _add(facts, seconds_family, (stage, *labels), ts_ms, seconds)


def _hold_money(
    money: MoneyFacts,
    family: str,
    labels: tuple[str, ...],
    stint: Stint,
    amounts: list[tuple[int, Decimal]],
    factor: Decimal,
) -> None:
    """Write `deal value × factor` as signed changes over a stint, following amount changes within it."""
    end = stint.end_ms
    points = sorted({stint.start_ms, *(ts for ts, _ in amounts if ts > stint.start_ms and (end is None or ts < end))})
    held = Decimal(0)
    for point in points:
        value = deal_value_at(amounts, point) * factor
        _add(money, family, labels, point, value - held)
        held = value
    if end is not None:
        _add(money, family, labels, end, -held)


def contact_facts(state: ContactState, policy: Policy) -> tuple[Facts, MoneyFacts]:
    """Everything the contact contributes to the totals, from the set of what it has seen."""
    facts: Facts = {}
    money: MoneyFacts = {}
    points = touchpoints(state)
    channel = points[0].channel if points else UNKNOWN_CHANNEL
    campaign = (points[0].campaign if points else None) or NO_CAMPAIGN

    for fill in state.form_fills.values():
        fill_channel, fill_campaign = form_fill_source(state, fill) or (UNKNOWN_CHANNEL, fill.campaign)
        _add(facts, FORM_FILLS, (fill.form_type, fill_channel, fill_campaign or NO_CAMPAIGN), fill.ts_ms, 1)

    timeline = _timeline(state)
    reached = reach_times(timeline)
    lead_ms = reached.get(Stage.LEAD)
    for stage, ts in reached.items():
        _add(facts, STAGE_ENTRIES, (stage.value, channel, campaign), ts, 1)
    if lead_ms is not None:
        cohort = month_label(lead_ms)
        for stage in COHORT_STAGES:
            if stage in reached:
                _add(facts, COHORT_REACHED, (cohort, stage.value), reached[stage], 1)
        for stage in CONVERTING_STAGES:
            if stage in reached:
                ts = reached[stage]
                _observe(facts, TIME_TO_STAGE_BUCKET, TIME_TO_STAGE_SECONDS, stage.value, ts, ts - lead_ms, channel)

    amounts = [(record.ts_ms, record.amount) for record in timeline if record.amount is not None]
    first_exit: dict[Stage, int] = {}
    first_stale: dict[Stage, int] = {}
    for stint in stage_stints(timeline):
        stage, start, end = stint.stage, stint.start_ms, stint.end_ms
        if stint.ended_by in EXIT_STAGES and end is not None:
            first_exit.setdefault(stage, end)
            if stage is Stage.OPPORTUNITY:
                _add(facts, OPPORTUNITIES_CLOSED, (LOST, channel), end, 1)
        if stage is Stage.CUSTOMER:
            _add(facts, OPPORTUNITIES_CLOSED, (WON, channel), start, 1)
            _add(money, WON_AMOUNT, (channel,), start, deal_value_at(amounts, start))
            _add(
                facts,
                SALES_CYCLE_SECONDS,
                (channel,),
                start,
                (start - (start if lead_ms is None else lead_ms)) / 1000,
            )
        if end == start:
            continue  # passed through, not sat in
        limit = policy.staleness_ms(stage)
        if limit is not None and (end is None or end > start + limit):
            first_stale.setdefault(stage, start + limit)
        _add(facts, IN_STAGE, (stage.value, channel), start, 1)
        if end is not None:
            _add(facts, IN_STAGE, (stage.value, channel), end, -1)
            _observe(facts, TIME_IN_STAGE_BUCKET, TIME_IN_STAGE_SECONDS, stage.value, end, end - start)
        if stage is Stage.OPPORTUNITY:
            _add(facts, OPEN_OPPORTUNITIES, (channel,), start, 1)
            if end is not None:
                _add(facts, OPEN_OPPORTUNITIES, (channel,), end, -1)
            _hold_money(money, PIPELINE_AMOUNT, (channel,), stint, amounts, Decimal(1))
        probability = policy.stage_probability.get(stage)
        if probability:
            _hold_money(money, WEIGHTED_PIPELINE, (channel,), stint, amounts, probability)
    for stage, ts in first_exit.items():
        _add(facts, STAGE_EXITS, (stage.value, channel, campaign), ts, 1)
    for stage, ts in first_stale.items():
        _add(facts, BECAME_STALE, (stage.value, channel, campaign), ts, 1)
    for stage in {*first_exit, *first_stale}:
        dropped = min(ts for ts in (first_exit.get(stage), first_stale.get(stage)) if ts is not None)
        _add(facts, STAGE_DROP_OFFS, (stage.value, channel, campaign), dropped, 1)

    milestones = Milestones(lead_ms, reached.get(Stage.OPPORTUNITY), reached.get(Stage.CUSTOMER))
    attribution_touches: list[AttributionTouch] = [(point.ts_ms, point.channel) for point in points]
    for conversion in Conversion:
        moment = milestones.moment(conversion)
        if moment is None:
            continue
        for model, credits in attribution_credits(attribution_touches, conversion, milestones).items():
            for credit_channel, credit in credits.items():
                _add(facts, ATTRIBUTION_CREDIT, (model.value, conversion.value, credit_channel), moment, credit)
    return _without_zeros(facts), _without_zeros(money)


def _without_zeros(facts: dict[FactKey, V]) -> dict[FactKey, V]:
    return {key: value for key, value in facts.items() if value != 0}


# -- write side ----------------------------------------------------------------------------


def _account_link(state: ContactState, contact_id: str) -> list[Link]:
    """An AccountLink when the contact's account or first touch differs from what was last sent."""
    account = account_of(_timeline(state))
    if account is None:
        return []
    points = touchpoints(state)
    first = points[0] if points else None
    current = (
        account,
        first.ts_ms if first else None,
        first.channel if first else UNKNOWN_CHANNEL,
        first.campaign if first else None,
    )
    if current == state.last_account_link:
        return []
    state.last_account_link = current
    return [AccountLink(account, contact_id, current[1], current[2], current[3])]


def apply_stage_change(state: ContactState, event: StageChange, policy: Policy) -> Step:
    """Add a stage change to the contact's timeline; move its facts; tell its account."""
    if event.event_id in state.stage_changes:
        return Step(duplicate=True)
    amount = None if event.amount is None else policy.to_reporting(event.amount, event.currency)
    old_counts, old_money = contact_facts(state, policy)
    state.stage_changes[event.event_id] = StageRecord(event.occurred_ms, event.to_stage, amount, event.account_id)
    new_counts, new_money = contact_facts(state, policy)
    return Step(Delta.between(old_counts, new_counts, old_money, new_money), _account_link(state, event.contact_id))


def apply_form_fill(state: ContactState, event: FormFill, policy: Policy) -> Step:
    """Count a form fill; ask its visitor for its sessions; move the facts if the touchpoints changed."""
    if event.event_id in state.form_fills:
        return Step(duplicate=True)
    old_counts, old_money = contact_facts(state, policy)
    state.form_fills[event.event_id] = FormRecord(
        event.occurred_ms,
        event.form_type.value,
        None if event.channel is None else event.channel.value,
        event.campaign,
        event.visitor_id,
        event.session_id,
    )
    new_counts, new_money = contact_facts(state, policy)
    emitted: list[Link] = []
    if event.visitor_id is not None:
        emitted.append(VisitorLink(event.visitor_id, event.contact_id))
    emitted.extend(_account_link(state, event.contact_id))
    return Step(Delta.between(old_counts, new_counts, old_money, new_money), emitted)


def apply_touch(state: ContactState, touch: Touch, policy: Policy) -> Step:
    """Add one of the contact's sessions; a touch earlier than the first relabels all its facts."""
    if touch.session_event_id in state.touches:
        return Step(duplicate=True)
    old_counts, old_money = contact_facts(state, policy)
    state.touches[touch.session_event_id] = touch
    new_counts, new_money = contact_facts(state, policy)
    return Step(Delta.between(old_counts, new_counts, old_money, new_money), _account_link(state, touch.contact_id))


# -- read side -------------------------------------------------------------------------


def as_of_end(as_of_ms: int) -> int:
    """End (exclusive) of everything known as of an instant: the end of its minute, like `window_span`."""
    return floor_minute(as_of_ms) + MINUTE_MS


def drop_off_rate(drop_offs: int, entries: int) -> float | None:
    """Lead drop-off at stage S = contacts that exited (`disqualified`/`lost`) from S, plus contacts
    sitting in S longer than its staleness limit, over contacts that entered S (same window).

    A contact that went stale and then exited counts once, at the earlier of the two.
    """
    return ratio(drop_offs, entries)


def period_conversion(entries: dict[str, float]) -> dict[str, float | None]:
    """Period conversion S→T = entries into T / entries into S, same window.

    For each consecutive pair of stages, and lead→customer.
    """
    pairs = [*pairwise(FUNNEL_STAGES), (Stage.LEAD, Stage.CUSTOMER)]
    return {
        f"{source.value}_to_{target.value}": ratio(entries.get(target.value, 0), entries.get(source.value, 0))
        for source, target in pairs
    }


def win_rate(won: int, lost: int) -> float | None:
    """Win rate = customers / (customers + lost) among closed opportunities."""
    return ratio(won, won + lost)


def sales_velocity(
    open_opportunities: int, won_amount: Decimal, won: int, lost: int, sales_cycle_seconds: float
) -> Decimal | None:
    """Sales velocity = open opportunities × average deal value × win rate / average sales cycle days.

    Money per day; the sales cycle runs from the lead moment to the win. Absent
    without a won deal or when the average cycle is zero.
    """
    if not won or sales_cycle_seconds <= 0:
        return None
    average_deal = won_amount / won
    rate = Decimal(won) / Decimal(won + lost)
    average_cycle_days = Decimal(repr(sales_cycle_seconds)) / won / (DAY_MS // 1000)
    return (open_opportunities * average_deal * rate / average_cycle_days).quantize(MONEY_PLACES)


def _channel_funnel(totals: Totals, span: Span, as_of: Span, channel: str | None) -> ChannelFunnel:
    by_channel = {} if channel is None else {1: channel}
    by_channel_only = {} if channel is None else {0: channel}

    def per_stage(family: str, within: Span) -> dict[str, float]:
        return totals.total_by(family, within, 0, by_channel)

    entries = per_stage(STAGE_ENTRIES, span)
    exits = per_stage(STAGE_EXITS, span)
    stale = per_stage(BECAME_STALE, span)
    drop_offs = per_stage(STAGE_DROP_OFFS, span)
    in_stage = per_stage(IN_STAGE, as_of)
    stages = {
        stage.value: StageFlow(
            entries=whole(entries.get(stage.value, 0)),
            exits=whole(exits.get(stage.value, 0)),
            became_stale=whole(stale.get(stage.value, 0)),
            drop_offs=whole(drop_offs.get(stage.value, 0)),
            drop_off_rate=drop_off_rate(whole(drop_offs.get(stage.value, 0)), whole(entries.get(stage.value, 0))),
            in_stage=whole(in_stage.get(stage.value, 0)),
        )
        for stage in FUNNEL_STAGES
    }
    closed = totals.total_by(OPPORTUNITIES_CLOSED, span, 0, by_channel)
    won, lost = whole(closed.get(WON, 0)), whole(closed.get(LOST, 0))
    won_amount = totals.money_total(WON_AMOUNT, span, by_channel_only)
    cycle_seconds = totals.total(SALES_CYCLE_SECONDS, span, by_channel_only)
    open_opportunities = whole(totals.total(OPEN_OPPORTUNITIES, as_of, by_channel_only))
    return ChannelFunnel(
        stages=stages,
        period_conversion=period_conversion(entries),
        form_fills=whole(totals.total(FORM_FILLS, span, by_channel)),
        opportunities_won=won,
        opportunities_lost=lost,
        win_rate=win_rate(won, lost),
        open_opportunities=open_opportunities,
        pipeline_amount=totals.money_total(PIPELINE_AMOUNT, as_of, by_channel_only),
        weighted_pipeline=totals.money_total(WEIGHTED_PIPELINE, as_of, by_channel_only),
        time_to_stage=stage_durations(totals, span, TIME_TO_STAGE_BUCKET, TIME_TO_STAGE_SECONDS, channel),
        won_amount=won_amount,
        average_deal_value=(won_amount / won).quantize(MONEY_PLACES) if won else None,
        average_sales_cycle_days=cycle_seconds / won / (DAY_MS / 1000) if won else None,
        sales_velocity=sales_velocity(open_opportunities, won_amount, won, lost, cycle_seconds),
    )


def _is_empty(funnel: ChannelFunnel) -> bool:
    return not (
        funnel.form_fills
        or funnel.opportunities_won
        or funnel.opportunities_lost
        or funnel.open_opportunities
        or funnel.pipeline_amount
        or funnel.weighted_pipeline
        or any(flow.entries or flow.exits or flow.became_stale or flow.in_stage for flow in funnel.stages.values())
    )


def stage_durations(
    totals: Totals, span: Span, bucket_family: str, seconds_family: str, channel: str | None = None
) -> dict[str, StageDuration]:
    """Histograms (cumulative, like Prometheus) of the durations observed in the window, by stage.

    With `channel`, only the contacts of that first-touch channel (time to stage carries one).
    """
    durations: dict[str, StageDuration] = {}
    stages = CONVERTING_STAGES if bucket_family == TIME_TO_STAGE_BUCKET else FUNNEL_STAGES
    of_bucket = {} if channel is None else {2: channel}
    of_seconds = {} if channel is None else {1: channel}
    for stage in stages:
        per_bucket = totals.total_by(bucket_family, span, 1, {0: stage.value, **of_bucket})
        cumulative: dict[str, int] = {}
        running = 0
        for label in BUCKET_LABELS:
            running += whole(per_bucket.get(label, 0))
            cumulative[label] = running
        seconds = totals.total(seconds_family, span, {0: stage.value, **of_seconds})
        durations[stage.value] = StageDuration(
            count=running, mean_seconds=seconds / running if running else None, buckets=cumulative
        )
    return durations


def funnel_window(totals: Totals, span: Span, policy: Policy) -> FunnelWindow:
    """The funnel of one window, overall and by the contacts' first-touch channel.

    Flows (entries, exits, drop-offs, form fills, wins) are those whose moment
    falls in the window; current-state figures (contacts in stage, open
    opportunities, pipeline, weighted pipeline = Σ deal value × stage
    probability) are read as of the window's end. Staleness limits and stage
    probabilities are already in the facts, so `policy` is not consulted here.
    """
    del policy
    as_of = Span(BEGINNING_MS, span.end_ms)
    channels: set[str] = set()
    for family, index in ((STAGE_ENTRIES, 1), (FORM_FILLS, 1), (IN_STAGE, 1), (OPPORTUNITIES_CLOSED, 1)):
        channels.update(labels[index] for labels in totals.labels_of(family))
    for family in (OPEN_OPPORTUNITIES, PIPELINE_AMOUNT, WEIGHTED_PIPELINE):
        channels.update(labels[0] for labels in totals.labels_of(family))
    by_channel = {channel: _channel_funnel(totals, span, as_of, channel) for channel in sorted(channels)}
    overall = _channel_funnel(totals, span, as_of, None)
    return FunnelWindow(
        **dict(overall),
        by_channel={channel: funnel for channel, funnel in by_channel.items() if not _is_empty(funnel)},
        form_fills_by_type={
            form_type: whole(value) for form_type, value in sorted(totals.total_by(FORM_FILLS, span, 0).items())
        },
        time_in_stage=stage_durations(totals, span, TIME_IN_STAGE_BUCKET, TIME_IN_STAGE_SECONDS),
    )


def cohort_conversion(reached: int, size: int) -> float | None:
    """Cohort conversion lead→T = of the contacts whose lead moment falls in cohort month M,
    the share that have reached T so far (it changes as they move)."""
    return ratio(reached, size)


def lead_cohorts(totals: Totals, as_of_ms: int) -> dict[str, LeadCohort]:
    """Every lead cohort (calendar month of the lead moment) as of an instant, oldest first."""
    known = Span(BEGINNING_MS, as_of_end(as_of_ms))
    cohorts: dict[str, LeadCohort] = {}
    for month in sorted({labels[0] for labels in totals.labels_of(COHORT_REACHED)}):
        per_stage = totals.total_by(COHORT_REACHED, known, 1, {0: month})
        size = whole(per_stage.get(Stage.LEAD.value, 0))
        if not size:
            continue
        reached = {stage.value: whole(per_stage.get(stage.value, 0)) for stage in CONVERTING_STAGES}
        cohorts[month] = LeadCohort(
            cohort_month=month,
            size=size,
            reached=reached,
            conversion={stage: cohort_conversion(count, size) for stage, count in reached.items()},
        )
    return cohorts
