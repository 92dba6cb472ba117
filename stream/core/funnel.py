"""Funnel (leading to lagging): a contact's way from subscriber to customer, and who earned it.

The contact is the entity. Its state keeps what its facts need, with a fixed
upper bound whatever the number of its events (each field of `ContactState`
says its bound): its stage changes and form fills (the earliest of each, up to
a cap), and those sessions (`Touch`) of the visitors known to be it that can
still matter — the first one, and the ones that can earn attribution credit,
up to `Policy.max_touches`.

Everything the contact contributes to the totals is a function of that state
(`contact_facts`), in three parts with separate inputs; a fold recomputes only
the parts whose inputs it changed and moves the totals by the difference:

- form-fill facts, one per fill, labelled by the fill's own channel or by the
  session that supplied it (kept with the fill);
- timeline facts (entries, exits, staleness, occupancy, durations, pipeline,
  wins), labelled by the contact's first-touch channel and campaign: moved
  when a stage change arrives or the first touchpoint's label changes;
- attribution facts, per conversion, from the touchpoints in its lookback
  window: moved when a touchpoint enters or leaves the window or a milestone
  moves.

So a session later than every conversion that neither becomes the first touch
nor supplies a form fill's channel changes no fact, and costs microseconds; a
late stage change, or a late session that changes the contact's first-touch
channel, still moves its facts to where they belong, whatever the arrival order.

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

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from functools import lru_cache
from itertools import islice, pairwise, takewhile
from typing import NamedTuple, Protocol, TypeVar

from schemas.channels import NO_CAMPAIGN, UNKNOWN_CHANNEL
from schemas.events import EXIT_STAGES, FUNNEL_STAGES, FormFill, Stage, StageChange
from schemas.snapshot.funnel import ChannelFunnel, CohortProgress, FunnelWindow, LeadCohort, StageDuration, StageFlow
from stream.core.attribution import (
    ATTRIBUTION_CREDIT,
    AttributionModel,
    AttributionTouch,
    Conversion,
    Milestones,
    attribution_credits,
)
from stream.core.dedupe import RecentIds
from stream.core.links import AccountLink, Link, Step, Touch, VisitorLink
from stream.core.policy import Policy
from stream.core.rates import ratio, whole
from stream.core.totals import BEGINNING_MS, Delta, FactKey, Facts, MoneyFacts, Readable
from stream.core.windows import DAY_MS, MINUTE_MS, Span, floor_minute, month_label, month_start

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
"""Count, labels (stage, le, channel); one stint length, non-cumulative, when the contact leaves the stage."""
TIME_IN_STAGE_SECONDS = "time_in_stage_seconds"
"""Count (seconds), labels (stage, channel); the observations' sum."""
COHORT_REACHED = "cohort_reached"
"""Count, labels (cohort_month, stage, channel); +1 at the reach time of lead and each later stage."""
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

CAMPAIGN_FAMILIES = (STAGE_ENTRIES, FORM_FILLS, STAGE_EXITS, BECAME_STALE, STAGE_DROP_OFFS)
"""The families whose third label is a campaign."""
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
_NO_FLOW = StageFlow(entries=0, exits=0, became_stale=0, drop_offs=0, in_stage=0)
_NO_DURATIONS = StageDuration(count=0, buckets=dict.fromkeys(BUCKET_LABELS, 0))
"""What a stage with nothing in the window reads (models are frozen: one instance serves every such stage)."""
_FUNNEL_STAGE_VALUES = tuple(stage.value for stage in FUNNEL_STAGES)
_CONVERTING_STAGE_VALUES = tuple(stage.value for stage in CONVERTING_STAGES)
"""Stage names as the totals' labels spell them (an enum's `.value` costs a descriptor call per read)."""

STAGE_CHANGES_KEPT = 100
"""At most this many stage changes per contact count: the earliest by (ts_ms, event_id).

A CRM that moves one contact more often than this is looping, not selling;
counting only the earliest keeps the figures already published stable (a
later change past the cap moves nothing) and is the same whatever the order
of arrival. A change earlier than the kept ones still enters, and the latest
kept one leaves.
"""
FORM_FILLS_KEPT = 100
"""At most this many form fills per contact count (as fills and as touchpoints): the earliest, as above."""

V = TypeVar("V", float, Decimal)
LEAD_INDEX, OPPORTUNITY_INDEX, CUSTOMER_INDEX = (
    STAGE_INDEX[Stage.LEAD],
    STAGE_INDEX[Stage.OPPORTUNITY],
    STAGE_INDEX[Stage.CUSTOMER],
)


class StageRecord(NamedTuple):
    """One stage change as the contact keeps it (the amount already in the reporting currency)."""

    ts_ms: int
    to_stage: Stage
    amount: Decimal | None
    account_id: str | None


SAME_SESSION = 2
"""`FillSource.rank` of a session with the fill's own session_id: it outranks the visitor's latest session."""
VISITOR_LATEST = 1
"""`FillSource.rank` of the fill's visitor's latest session at or before the fill."""


class FillSource(NamedTuple):
    """The session that supplies the channel of a form fill that names none."""

    rank: int
    """`SAME_SESSION` or `VISITOR_LATEST`."""
    ts_ms: int
    touch_id: str
    channel: str
    campaign: str | None


class FormRecord(NamedTuple):
    ts_ms: int
    form_type: str
    channel: str | None
    """The fill's own channel (given, or derived from its utm); None when it names none."""
    campaign: str | None
    visitor_id: str | None
    session_id: str | None
    source: FillSource | None = None
    """Without a channel of its own: the best session seen so far (see `form_fill_source`), or None."""


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
    """What one contact's facts need, with a fixed upper bound whatever the number of its events.

    The records are kept in (ts_ms, id) order, so the timeline and the first
    touch are read without sorting. At the defaults a contact keeps at most 100
    stage changes, 100 form fills and 100 touches.
    """

    __slots__ = ("form_fills", "last_account_link", "newest_ms", "recent", "stage_changes", "touches")

    def __init__(self) -> None:
        self.stage_changes: dict[str, StageRecord] = {}
        """event_id -> the change, in (ts_ms, event_id) order. Bound: `STAGE_CHANGES_KEPT` (100), the earliest."""
        self.form_fills: dict[str, FormRecord] = {}
        """event_id -> the fill, in (ts_ms, event_id) order. Bound: `FORM_FILLS_KEPT` (100), the earliest."""
        self.touches: dict[str, Touch] = {}
        """session_event_id -> the session, in (ts_ms, session_event_id) order.

        Bound: `Policy.max_touches` (default 100), the first touch always among
        them, since it labels every fact with the contact's first-touch channel.
        Past the cap the touch dropped is the oldest one outside the lookback
        window (`Policy.attribution_lookback_ms`, default 90 days) of every
        conversion the contact has reached — it earns no credit now — or, when
        every touch is inside one, the oldest. With a grace period
        (`Policy.grace_ms`, no event older than that behind the newest is
        accepted) a touch that can never earn credit again is dropped at once:
        one older than the lookback plus the grace before the contact's newest
        event and outside every reached conversion's window. Without one, any
        late stage change may still move a conversion back to any touch, so
        only the cap applies. Below the cap what is kept depends only on the
        set of events seen, not on their order (with a grace period, as long
        as nothing later than it is accepted: the ledger's lateness rule).
        """
        self.newest_ms: int | None = None
        """The newest event time the contact has seen (its sessions included): the lookback counts back from it."""
        self.recent = RecentIds()
        """Ids of stage changes and form fills seen but not kept (past a cap), within `Policy.dedupe_horizon_ms`
        (7 days), so their duplicates are still known. Bound: one horizon of such ids; empty below the caps."""
        self.last_account_link: tuple[str, int | None, str, str | None] | None = None
        """(account_id, first_touch_ms, channel, campaign) of the last AccountLink emitted."""


class _Timed(Protocol):
    @property
    def ts_ms(self) -> int: ...


R = TypeVar("R", bound=_Timed)


def _insert_in_order(records: dict[str, R], record_id: str, record: R) -> dict[str, R]:
    """`records` with `record` added in (ts_ms, id) order: appended in place (the common case) or a new dict."""
    if records:
        last_id = next(reversed(records))
        if (record.ts_ms, record_id) < (records[last_id].ts_ms, last_id):
            items = list(records.items())
            position = bisect_left(items, (record.ts_ms, record_id), key=lambda item: (item[1].ts_ms, item[0]))
            items.insert(position, (record_id, record))
            return dict(items)
    records[record_id] = record
    return records


def _past_cap(records: dict[str, R], cap: int, ts_ms: int, record_id: str) -> bool:
    """True when the records are full and a new one would come after every kept one: it is not kept."""
    if len(records) < cap:
        return False
    last_id = next(reversed(records))
    return (ts_ms, record_id) > (records[last_id].ts_ms, last_id)


# -- touchpoints -------------------------------------------------------------------------


def form_fill_source(fill: FormRecord) -> tuple[str, str | None] | None:
    """The (channel, campaign) a form fill is credited to, or None when no session can supply one.

    Its own channel if it names one; else its session's (the earliest touch
    with the same session_id); else the latest session of its visitor at or
    before the fill. Like attribution, a session older than the lookback
    before the fill supplies nothing. A campaign the fill lacks comes from the
    session that supplied the channel.
    """
    if fill.channel is not None:
        return fill.channel, fill.campaign
    source = fill.source
    if source is None:
        return None
    return source.channel, fill.campaign or source.campaign


def _source_from(fill: FormRecord, touch: Touch, lookback_ms: int) -> FillSource | None:
    """What `touch` could supply to a fill without a channel of its own (None: nothing)."""
    if touch.ts_ms < fill.ts_ms - lookback_ms:
        return None
    if fill.session_id and touch.session_id == fill.session_id:
        rank = SAME_SESSION
    elif fill.visitor_id and touch.visitor_id == fill.visitor_id and touch.ts_ms <= fill.ts_ms:
        rank = VISITOR_LATEST
    else:
        return None
    return FillSource(rank, touch.ts_ms, touch.session_event_id, touch.channel, touch.campaign)


def _improves(candidate: FillSource, current: FillSource | None) -> bool:
    """The better source: same session over the visitor's latest; the earliest same-session touch; the latest."""
    if current is None:
        return True
    if candidate.rank != current.rank:
        return candidate.rank > current.rank
    if candidate.rank == SAME_SESSION:
        return (candidate.ts_ms, candidate.touch_id) < (current.ts_ms, current.touch_id)
    return (candidate.ts_ms, candidate.touch_id) > (current.ts_ms, current.touch_id)


def first_touchpoint(state: ContactState) -> Touchpoint | None:
    """The contact's earliest touchpoint (session or credited form fill), by (ts_ms, id)."""
    first = None
    if state.touches:
        touch = next(iter(state.touches.values()))
        first = Touchpoint(touch.ts_ms, touch.session_event_id, touch.channel, touch.campaign)
    for event_id, fill in state.form_fills.items():
        source = form_fill_source(fill)
        if source is not None:
            if first is None or (fill.ts_ms, event_id) < (first.ts_ms, first.touch_id):
                first = Touchpoint(fill.ts_ms, event_id, *source)
            break
    return first


def _label(first: Touchpoint | None) -> tuple[str, str]:
    """The (channel, campaign) labels of the contact's timeline facts: its first touchpoint's, or unknown."""
    if first is None:
        return UNKNOWN_CHANNEL, NO_CAMPAIGN
    return first.channel, first.campaign or NO_CAMPAIGN


def touchpoints(state: ContactState) -> list[Touchpoint]:
    """The contact's kept sessions and credited form fills, in (ts_ms, id) order."""
    points = [Touchpoint(t.ts_ms, t.session_event_id, t.channel, t.campaign) for t in state.touches.values()]
    for event_id, fill in state.form_fills.items():
        source = form_fill_source(fill)
        if source is not None:
            points.append(Touchpoint(fill.ts_ms, event_id, *source))
    points.sort(key=lambda point: (point.ts_ms, point.touch_id))
    return points


def _window_points(state: ContactState, start_ms: int, end_ms: int) -> list[AttributionTouch]:
    """(ts_ms, channel) of the touchpoints in [start_ms, end_ms], in (ts_ms, id) order."""
    points: list[tuple[int, str, str]] = []
    for touch in state.touches.values():
        ts = touch.ts_ms
        if ts > end_ms:
            break
        if ts >= start_ms:
            points.append((ts, touch.session_event_id, touch.channel))
    for event_id, fill in state.form_fills.items():
        ts = fill.ts_ms
        if ts > end_ms:
            break
        if ts >= start_ms and (source := form_fill_source(fill)) is not None:
            points.append((ts, event_id, source[0]))
    points.sort()
    return [(ts, channel) for ts, _, channel in points]


# -- the stage timeline ------------------------------------------------------------------


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


def milestones_of(timeline: Iterable[StageRecord]) -> Milestones:
    """The lead, opportunity and customer moments (reach times) of a timeline in time order."""
    lead = opportunity = None
    for record in timeline:
        if record.to_stage in EXIT_STAGES:
            continue
        index = STAGE_INDEX[record.to_stage]
        if lead is None and index >= LEAD_INDEX:
            lead = record.ts_ms
        if opportunity is None and index >= OPPORTUNITY_INDEX:
            opportunity = record.ts_ms
        if index >= CUSTOMER_INDEX:
            return Milestones(lead, opportunity, record.ts_ms)
    return Milestones(lead, opportunity, None)


Window = tuple[int, int]
"""[start_ms, end_ms] of a conversion's lookback window, both inclusive."""


def _windows(milestones: Milestones, lookback_ms: int) -> dict[Conversion, Window]:
    windows: dict[Conversion, Window] = {}
    for conversion in Conversion:
        moment = milestones.moment(conversion)
        if moment is not None:
            windows[conversion] = (moment - lookback_ms, moment)
    return windows


def _in_any(ts_ms: int, windows: dict[Conversion, Window]) -> bool:
    return any(start <= ts_ms <= end for start, end in windows.values())


def _touch_time(touch: Touch) -> int:
    return touch.ts_ms


def _merged(windows: dict[Conversion, Window]) -> list[Window]:
    """The windows as disjoint intervals in time order."""
    merged: list[Window] = []
    for start, end in sorted(windows.values()):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _outside_windows(
    touches: Iterable[tuple[str, Touch]], windows: dict[Conversion, Window]
) -> Iterator[tuple[str, bool]]:
    """For (id, touch) in time order: the id, and whether the touch lies outside every window (in one pass)."""
    spans = _merged(windows)
    current, count = 0, len(spans)
    for touch_id, touch in touches:
        ts = touch.ts_ms
        while current < count and spans[current][1] < ts:
            current += 1
        yield touch_id, current == count or ts < spans[current][0]


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


def _fill_fact(fill: FormRecord) -> FactKey:
    """The key of the one fact a form fill contributes: +1 at its time, by the channel it is credited to."""
    channel, campaign = form_fill_source(fill) or (UNKNOWN_CHANNEL, fill.campaign)
    return FORM_FILLS, (fill.form_type, channel, campaign or NO_CAMPAIGN), fill.ts_ms


@lru_cache(maxsize=1024)
def _label_of_month(month_ms: int) -> str:
    """`month_label` of a month's start, remembered: every fold of a contact's timeline names its cohort."""
    return month_label(month_ms)


def timeline_facts(
    timeline: list[StageRecord], channel: str, campaign: str, policy: Policy
) -> tuple[Facts, MoneyFacts]:
    """What a stage timeline (in time order) contributes, labelled by the contact's first-touch channel."""
    facts: Facts = {}
    money: MoneyFacts = {}
    reached = reach_times(timeline)
    lead_ms = reached.get(Stage.LEAD)
    for stage, ts in reached.items():
        _add(facts, STAGE_ENTRIES, (stage.value, channel, campaign), ts, 1)
    if lead_ms is not None:
        cohort = _label_of_month(month_start(lead_ms))
        for stage in COHORT_STAGES:
            if stage in reached:
                _add(facts, COHORT_REACHED, (cohort, stage.value, channel), reached[stage], 1)
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
            _observe(facts, TIME_IN_STAGE_BUCKET, TIME_IN_STAGE_SECONDS, stage.value, end, end - start, channel)
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
    return facts, money


_CREDIT_LABELS: dict[tuple[AttributionModel, Conversion], tuple[str, str]] = {
    (model, conversion): (model.value, conversion.value) for model in AttributionModel for conversion in Conversion
}


def _credit_inputs(milestones: Milestones, conversion: Conversion) -> tuple[int | None, ...]:
    """What of the milestones a conversion's credits depend on: its moment, and the milestones up to it."""
    moment = milestones.moment(conversion)
    if moment is None:
        return ()
    at_or_before = (milestones.lead_ms, milestones.opportunity_ms, milestones.customer_ms)
    return (moment, *(ms if ms is not None and ms <= moment else None for ms in at_or_before))


def conversion_facts(state: ContactState, conversion: Conversion, milestones: Milestones, policy: Policy) -> Facts:
    """The attribution credits of one conversion, by every model, from the touchpoints in its lookback window."""
    moment = milestones.moment(conversion)
    if moment is None:
        return {}
    lookback = policy.attribution_lookback_ms
    points = _window_points(state, moment - lookback, moment)
    facts: Facts = {}
    for model, credits in attribution_credits(points, conversion, milestones, lookback).items():
        model_label, conversion_label = _CREDIT_LABELS[model, conversion]
        for channel, credit in credits.items():
            facts[(ATTRIBUTION_CREDIT, (model_label, conversion_label, channel), moment)] = credit
    return facts


def contact_facts(state: ContactState, policy: Policy) -> tuple[Facts, MoneyFacts]:
    """Everything the contact contributes to the totals, from its state alone: what its folds have emitted."""
    facts: Facts = {}
    for fill in state.form_fills.values():
        key = _fill_fact(fill)
        facts[key] = facts.get(key, 0) + 1
    timeline = list(state.stage_changes.values())
    counts, money = timeline_facts(timeline, *_label(first_touchpoint(state)), policy)
    facts.update(counts)  # the parts write disjoint families
    milestones = milestones_of(timeline)
    for conversion in Conversion:
        facts.update(conversion_facts(state, conversion, milestones, policy))
    return _without_zeros(facts), _without_zeros(money)


def _without_zeros(facts: dict[FactKey, V]) -> dict[FactKey, V]:
    return {key: value for key, value in facts.items() if value != 0}


def _move(into: dict[FactKey, V], old: Mapping[FactKey, V], new: Mapping[FactKey, V]) -> None:
    """Add `new - old` to `into`."""
    for key, value in new.items():
        into[key] = into.get(key, value * 0) + value
    for key, value in old.items():
        into[key] = into.get(key, value * 0) - value


# -- write side ----------------------------------------------------------------------------


class _Change:
    """The facts one fold moves, built part by part."""

    __slots__ = ("counts", "money")

    def __init__(self) -> None:
        self.counts: Facts = {}
        self.money: MoneyFacts = {}

    def relabel(self, state: ContactState, before: Touchpoint | None, policy: Policy) -> None:
        """Move the timeline facts when the first touchpoint's label changed since `before`."""
        old_label, new_label = _label(before), _label(first_touchpoint(state))
        if old_label == new_label:
            return
        timeline = list(state.stage_changes.values())
        old_counts, old_money = timeline_facts(timeline, *old_label, policy)
        new_counts, new_money = timeline_facts(timeline, *new_label, policy)
        _move(self.counts, old_counts, new_counts)
        _move(self.money, old_money, new_money)

    def delta(self) -> Delta:
        return Delta(counts=_without_zeros(self.counts), money=_without_zeros(self.money))


def _advance(state: ContactState, ts_ms: int) -> None:
    if state.newest_ms is None or ts_ms > state.newest_ms:
        state.newest_ms = ts_ms


def _drop_touches(state: ContactState, windows: dict[Conversion, Window], policy: Policy) -> None:
    """Drop the touches that can never earn credit again (only with a grace period: see `ContactState.touches`)."""
    grace = policy.grace_ms
    if grace is None or state.newest_ms is None:
        return
    threshold = state.newest_ms - policy.attribution_lookback_ms - grace
    older = takewhile(lambda item: item[1].ts_ms < threshold, islice(state.touches.items(), 1, None))
    expired = [touch_id for touch_id, outside in _outside_windows(older, windows) if outside]
    for touch_id in expired:
        del state.touches[touch_id]


def _touch_to_evict(state: ContactState, windows: dict[Conversion, Window]) -> str:
    """The oldest touch outside every conversion window, else the oldest; never the first."""
    touches = list(state.touches.values())
    assert len(touches) > 1, "Policy.max_touches must be at least 1: the first touch is always kept"
    index, count = 1, len(touches)
    for start, end in _merged(windows):
        if index == count or touches[index].ts_ms < start:
            break
        if touches[index].ts_ms <= end:
            index = bisect_right(touches, end, lo=index, key=_touch_time)
    return touches[index if index < count else 1].session_event_id


ACCOUNT_SEPARATOR = "\x1f"
"""Joins the accounts of `ContactState.last_account_link` (ids are printable: it never occurs in one)."""


def _current_account_links(state: ContactState, contact_id: str) -> list[AccountLink]:
    """A link to every account the contact's stage changes name, with its first touch.

    Every named account, not only the latest: which account a contact named last can depend on arrival
    order, and an account that was told of the contact must stay told whatever the order.
    """
    accounts = sorted({r.account_id for r in state.stage_changes.values() if r.account_id is not None})
    first = first_touchpoint(state)
    if first is None:
        return [AccountLink(account, contact_id, None, UNKNOWN_CHANNEL, None) for account in accounts]
    return [AccountLink(account, contact_id, first.ts_ms, first.channel, first.campaign) for account in accounts]


def _account_link(state: ContactState, contact_id: str) -> list[Link]:
    """AccountLinks when the contact's accounts or first touch differ from what was last sent."""
    links = _current_account_links(state, contact_id)
    if not links:
        return []
    link = links[0]
    current = (
        ACCOUNT_SEPARATOR.join(one.account_id for one in links),
        link.first_touch_ms,
        link.channel,
        link.campaign,
    )
    if current == state.last_account_link:
        return []
    state.last_account_link = current
    return list(links)


def _links_again(state: ContactState, contact_id: str) -> list[Link]:
    """The AccountLinks the contact's state implies, sent again for a duplicate (links are idempotent)."""
    return list(_current_account_links(state, contact_id))


def apply_stage_change(state: ContactState, event: StageChange, policy: Policy) -> Step:
    """Add a stage change to the contact's timeline; move its facts; tell its account.

    The timeline facts are recomputed (a late change can move every later
    stint); a conversion's credits only when its moment, or a milestone up to
    it, moved. Past `STAGE_CHANGES_KEPT` a change later than every kept one is
    not counted. A duplicate changes nothing and sends the contact's
    AccountLink again.
    """
    event_id = event.event_id
    if event_id in state.stage_changes or state.recent.seen(event_id, policy.dedupe_horizon_ms):
        return Step(duplicate=True, emitted=_links_again(state, event.contact_id))
    amount = None if event.amount is None else policy.to_reporting(event.amount, event.currency)
    ts = event.occurred_ms
    _advance(state, ts)
    old_timeline = list(state.stage_changes.values())
    old_milestones = milestones_of(old_timeline)
    if _past_cap(state.stage_changes, STAGE_CHANGES_KEPT, ts, event_id):
        state.recent.remember(event_id, ts, policy.dedupe_horizon_ms)
        _drop_touches(state, _windows(old_milestones, policy.attribution_lookback_ms), policy)
        return Step(emitted=_account_link(state, event.contact_id))
    record = StageRecord(ts, event.to_stage, amount, event.account_id)
    state.stage_changes = _insert_in_order(state.stage_changes, event_id, record)
    if len(state.stage_changes) > STAGE_CHANGES_KEPT:
        displaced_id, displaced = state.stage_changes.popitem()
        state.recent.remember(displaced_id, displaced.ts_ms, policy.dedupe_horizon_ms)
    new_timeline = list(state.stage_changes.values())
    new_milestones = milestones_of(new_timeline)

    change = _Change()
    label = _label(first_touchpoint(state))
    old_counts, old_money = timeline_facts(old_timeline, *label, policy)
    new_counts, new_money = timeline_facts(new_timeline, *label, policy)
    _move(change.counts, old_counts, new_counts)
    _move(change.money, old_money, new_money)
    for conversion in Conversion:
        if _credit_inputs(old_milestones, conversion) != _credit_inputs(new_milestones, conversion):
            before = conversion_facts(state, conversion, old_milestones, policy)
            _move(change.counts, before, conversion_facts(state, conversion, new_milestones, policy))
    _drop_touches(state, _windows(new_milestones, policy.attribution_lookback_ms), policy)
    return Step(change.delta(), _account_link(state, event.contact_id))


def apply_form_fill(state: ContactState, event: FormFill, policy: Policy) -> Step:
    """Count a form fill; ask its visitor for its sessions; move the facts its touchpoint changes.

    Past `FORM_FILLS_KEPT` a fill later than every kept one is not counted
    (its visitor is still asked). A duplicate changes nothing and sends the
    fill's VisitorLink and the contact's AccountLink again.
    """
    event_id, contact_id = event.event_id, event.contact_id
    visitor_link: list[Link] = [] if event.visitor_id is None else [VisitorLink(event.visitor_id, contact_id)]
    if event_id in state.form_fills or state.recent.seen(event_id, policy.dedupe_horizon_ms):
        return Step(duplicate=True, emitted=[*visitor_link, *_links_again(state, contact_id)])
    ts = event.occurred_ms
    lookback = policy.attribution_lookback_ms
    _advance(state, ts)
    milestones = milestones_of(state.stage_changes.values())
    windows = _windows(milestones, lookback)
    if _past_cap(state.form_fills, FORM_FILLS_KEPT, ts, event_id):
        state.recent.remember(event_id, ts, policy.dedupe_horizon_ms)
        _drop_touches(state, windows, policy)
        return Step(emitted=[*visitor_link, *_account_link(state, contact_id)])
    record = FormRecord(
        ts,
        event.form_type.value,
        None if event.channel is None else event.channel.value,
        event.campaign,
        event.visitor_id,
        event.session_id,
    )
    if record.channel is None:
        source = None
        for touch in state.touches.values():
            candidate = _source_from(record, touch, lookback)
            if candidate is not None and _improves(candidate, source):
                source = candidate
        record = record._replace(source=source)

    # the touchpoints this fold adds or removes: the fill, and the latest kept fill it displaces
    moved = [record]
    if len(state.form_fills) >= FORM_FILLS_KEPT:
        moved.append(state.form_fills[next(reversed(state.form_fills))])
    old_credits = {
        conversion: conversion_facts(state, conversion, milestones, policy)
        for conversion, (start, end) in windows.items()
        if any(start <= fill.ts_ms <= end and form_fill_source(fill) is not None for fill in moved)
    }
    first = first_touchpoint(state)
    change = _Change()
    state.form_fills = _insert_in_order(state.form_fills, event_id, record)
    _move(change.counts, {}, {_fill_fact(record): 1})
    if len(state.form_fills) > FORM_FILLS_KEPT:
        displaced_id, displaced = state.form_fills.popitem()
        state.recent.remember(displaced_id, displaced.ts_ms, policy.dedupe_horizon_ms)
        _move(change.counts, {_fill_fact(displaced): 1}, {})
    _drop_touches(state, windows, policy)
    for conversion, before in old_credits.items():
        _move(change.counts, before, conversion_facts(state, conversion, milestones, policy))
    change.relabel(state, first, policy)
    return Step(change.delta(), [*visitor_link, *_account_link(state, contact_id)])


def apply_touch(state: ContactState, touch: Touch, policy: Policy) -> Step:
    """Add one of the contact's sessions; move only the facts it changes.

    A session earlier than the first touchpoint relabels the timeline facts;
    one that supplies a form fill's channel moves that fill; one inside a
    conversion's lookback window moves that conversion's credits. Past
    `Policy.max_touches` one touch is dropped (see `ContactState.touches`). A
    duplicate changes nothing and sends the contact's AccountLink again.
    """
    touch_id = touch.session_event_id
    if touch_id in state.touches:
        return Step(duplicate=True, emitted=_links_again(state, touch.contact_id))
    lookback = policy.attribution_lookback_ms
    milestones = milestones_of(state.stage_changes.values())
    windows = _windows(milestones, lookback)
    first = first_touchpoint(state)
    change = _Change()

    sourced: list[tuple[str, FormRecord]] = []
    for event_id, fill in state.form_fills.items():
        if fill.channel is None:
            candidate = _source_from(fill, touch, lookback)
            if candidate is not None and _improves(candidate, fill.source):
                sourced.append((event_id, fill._replace(source=candidate)))
    moved = [touch.ts_ms, *(fill.ts_ms for _, fill in sourced)]
    old_credits = {
        conversion: conversion_facts(state, conversion, milestones, policy)
        for conversion, (start, end) in windows.items()
        if any(start <= ts <= end for ts in moved)
    }
    for event_id, fill in sourced:
        _move(change.counts, {_fill_fact(state.form_fills[event_id]): 1}, {_fill_fact(fill): 1})
        state.form_fills[event_id] = fill
    state.touches = _insert_in_order(state.touches, touch_id, touch)
    _advance(state, touch.ts_ms)
    while len(state.touches) > policy.max_touches:
        evicted_id = _touch_to_evict(state, windows)
        evicted_ts = state.touches[evicted_id].ts_ms
        for conversion, (start, end) in windows.items():
            if conversion not in old_credits and start <= evicted_ts <= end:
                old_credits[conversion] = conversion_facts(state, conversion, milestones, policy)
        del state.touches[evicted_id]
    _drop_touches(state, windows, policy)
    for conversion, before in old_credits.items():
        _move(change.counts, before, conversion_facts(state, conversion, milestones, policy))
    change.relabel(state, first, policy)
    return Step(change.delta(), _account_link(state, touch.contact_id))


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


def _channel_funnel(totals: Readable, span: Span, as_of: Span, channel: str | None) -> ChannelFunnel:
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
        stage: _NO_FLOW
        if not (stage in entries or stage in exits or stage in stale or stage in drop_offs or stage in in_stage)
        else StageFlow(
            entries=whole(entries.get(stage, 0)),
            exits=whole(exits.get(stage, 0)),
            became_stale=whole(stale.get(stage, 0)),
            drop_offs=whole(drop_offs.get(stage, 0)),
            drop_off_rate=drop_off_rate(whole(drop_offs.get(stage, 0)), whole(entries.get(stage, 0))),
            in_stage=whole(in_stage.get(stage, 0)),
        )
        for stage in _FUNNEL_STAGE_VALUES
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
        time_in_stage=stage_durations(totals, span, TIME_IN_STAGE_BUCKET, TIME_IN_STAGE_SECONDS, channel),
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
    totals: Readable, span: Span, bucket_family: str, seconds_family: str, channel: str | None = None
) -> dict[str, StageDuration]:
    """Histograms (cumulative, like Prometheus) of the durations observed in the window, by stage.

    With `channel`, only the contacts of that first-touch channel.
    """
    durations: dict[str, StageDuration] = {}
    stages = _CONVERTING_STAGE_VALUES if bucket_family == TIME_TO_STAGE_BUCKET else _FUNNEL_STAGE_VALUES
    # one read per family: (stage[, channel]) -> sums by bucket, and -> seconds
    per_stage = totals.count_groups(bucket_family, span, (0,) if channel is None else (0, 2), 1)
    seconds_per_stage = totals.count_groups(seconds_family, span, (0,) if channel is None else (0, 1))
    for stage in stages:
        group = stage if channel is None else (stage, channel)
        per_bucket = per_stage.get(group)
        if not per_bucket:  # most stages of most channels in a short window: nothing observed
            durations[stage] = _NO_DURATIONS
            continue
        cumulative: dict[str, int] = {}
        running = 0
        for label in BUCKET_LABELS:
            running += whole(per_bucket.get(label, 0))
            cumulative[label] = running
        seconds = seconds_per_stage.get(group, 0)
        durations[stage] = StageDuration(
            count=running, mean_seconds=seconds / running if running else None, buckets=cumulative
        )
    return durations


def funnel_window(totals: Readable, span: Span, policy: Policy) -> FunnelWindow:
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
    )


def cohort_conversion(reached: int, size: int) -> float | None:
    """Cohort conversion lead→T = of the contacts whose lead moment falls in cohort month M,
    the share that have reached T so far (it changes as they move)."""
    return ratio(reached, size)


def lead_cohorts(totals: Readable, as_of_ms: int) -> dict[str, LeadCohort]:
    """Every lead cohort (calendar month of the lead moment) as of an instant, oldest first."""
    known = Span(BEGINNING_MS, as_of_end(as_of_ms))
    cohorts: dict[str, LeadCohort] = {}
    labels = list(totals.labels_of(COHORT_REACHED))
    for month in sorted({label[0] for label in labels}):
        overall = _cohort_progress(totals.total_by(COHORT_REACHED, known, 1, {0: month}))
        if overall is None:
            continue
        by_channel = {
            channel: progress
            for channel in sorted({label[2] for label in labels if label[0] == month})
            if (progress := _cohort_progress(totals.total_by(COHORT_REACHED, known, 1, {0: month, 2: channel})))
        }
        cohorts[month] = LeadCohort(cohort_month=month, by_channel=by_channel, **dict(overall))
    return cohorts


def _cohort_progress(per_stage: dict[str, float]) -> CohortProgress | None:
    size = whole(per_stage.get(Stage.LEAD.value, 0))
    if not size:
        return None
    reached = {stage.value: whole(per_stage.get(stage.value, 0)) for stage in CONVERTING_STAGES}
    return CohortProgress(
        size=size,
        reached=reached,
        conversion={stage: cohort_conversion(count, size) for stage, count in reached.items()},
    )
