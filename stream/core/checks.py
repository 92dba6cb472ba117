"""The alerts besides divergence: pure judgements of a snapshot, or of the worker's own counters.

Each mirrors a Prometheus alerting rule of the same name, constant for constant, so the worker's
events on `leadlag.alerts` and Alertmanager say the same thing; the rule's `for:` is `hold`.
Every scope gets a verdict at every evaluation (firing or not), so a scope that fired can always
be seen to resolve. Ratios are compared as exact fractions of the counts behind them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from fractions import Fraction
from statistics import fmean
from typing import Literal, Protocol, TypeVar

from schemas.alerts import CheckAlert, CheckName, CheckVerdict
from schemas.snapshot import Snapshot
from schemas.snapshot.funnel import ChannelFunnel
from stream.core.policy import AlertPolicy

TRAILING_WINDOW = "7d"
"""The drop-off and conversion alerts compare the last 24h with the last 7 days."""
PIPELINE_WINDOW = "30d"
"""The open pipeline is as of every window's end; the rules read it from this one."""


class Verdict(Protocol):
    @property
    def key(self) -> str: ...
    @property
    def firing(self) -> bool: ...


V = TypeVar("V", bound=Verdict)


def state_changes(
    previous: Mapping[str, bool], verdicts: Iterable[V]
) -> Iterator[tuple[V, Literal["firing", "resolved"]]]:
    """The verdicts whose scope changed state since `previous` (key -> firing; unseen counts as not firing)."""
    for verdict in verdicts:
        if verdict.firing != previous.get(verdict.key, False):
            yield verdict, "firing" if verdict.firing else "resolved"


def check_transitions(previous: Mapping[str, bool], verdicts: Iterable[CheckVerdict], at: datetime) -> list[CheckAlert]:
    """One alert event per scope that started or stopped firing, stamped `at`."""
    return [
        CheckAlert(
            alert_id=f"{verdict.key}:{state}:{at.isoformat()}",
            alert_name=verdict.alert_name,
            state=state,
            key=verdict.key,
            at=at,
            verdict=verdict,
        )
        for verdict, state in state_changes(previous, verdicts)
    ]


def hold(
    verdicts: Sequence[CheckVerdict], since: Mapping[str, int], now_ms: int, policy: AlertPolicy
) -> tuple[list[CheckVerdict], dict[str, int]]:
    """Verdicts that fire only once their condition has held for the alert's hold time (the rules' `for:`).

    `since` maps a key to when its condition was first seen true (wall ms); the returned map is the
    next `since`. A condition that lapses starts over.
    """
    held: list[CheckVerdict] = []
    next_since: dict[str, int] = {}
    for verdict in verdicts:
        if not verdict.firing:
            held.append(verdict)
            continue
        first = next_since[verdict.key] = since.get(verdict.key, now_ms)
        needed = policy.hold_ms.get(verdict.alert_name, 0)
        if now_ms - first >= needed:
            held.append(verdict)
        else:
            reason = f"pending {(now_ms - first) / 1000:.0f} s of {needed / 1000:.0f} s: {verdict.reason}"
            held.append(verdict.model_copy(update={"firing": False, "reason": reason}))
    return held, next_since


# -- data alerts: a read of the snapshot -----------------------------------------------------------------------


def data_checks(snapshot: Snapshot, policy: AlertPolicy) -> list[CheckVerdict]:
    """Every data alert's verdicts (empty before the first event)."""
    if snapshot.as_of is None:
        return []
    return [
        *drop_off_checks(snapshot, policy),
        *conversion_checks(snapshot, policy),
        *churn_checks(snapshot, policy),
        *pipeline_checks(snapshot, policy),
    ]


def drop_off_checks(snapshot: Snapshot, policy: AlertPolicy) -> list[CheckVerdict]:
    """LeadDropOffSpike, by channel and stage: the last 24h lose far more contacts than the last 7 days.

    Fires when the 24h drop-off ratio is above `drop_off_factor` x the 7d one, at least
    `drop_off_rise` above it, with at least `drop_off_min_entries` entries in the 24h.
    """
    now, trailing = snapshot.windows["24h"].funnel, snapshot.windows[TRAILING_WINDOW].funnel
    verdicts = []
    for channel in sorted({*now.by_channel, *trailing.by_channel}):
        recent = now.by_channel.get(channel)
        past = trailing.by_channel.get(channel)
        for stage in _stages(recent, past):
            entries = recent.stages[stage].entries if recent and stage in recent.stages else 0
            drops = recent.stages[stage].drop_offs if recent and stage in recent.stages else 0
            entries_7d = past.stages[stage].entries if past and stage in past.stages else 0
            drops_7d = past.stages[stage].drop_offs if past and stage in past.stages else 0
            rate = Fraction(drops, entries) if entries else None
            rate_7d = Fraction(drops_7d, entries_7d) if entries_7d else None
            failed = []
            if entries < policy.drop_off_min_entries:
                failed.append(f"{entries} entries in 24h < {policy.drop_off_min_entries}")
            if rate is None or rate_7d is None:
                failed.append("no drop-off ratio to compare")
            else:
                if not rate > policy.drop_off_factor * rate_7d:
                    failed.append(f"{_pct(rate)} not above {float(policy.drop_off_factor):g}x {_pct(rate_7d)} (7d)")
                if rate - rate_7d < policy.drop_off_rise:
                    failed.append(f"{_pct(rate)} less than {_pct(policy.drop_off_rise)} above {_pct(rate_7d)} (7d)")
            verdicts.append(
                _verdict(
                    "LeadDropOffSpike",
                    "channel",
                    {"channel": channel, "stage": stage},
                    failed,
                    f"{_pct(rate)} of {entries} entries dropped off in 24h vs {_pct(rate_7d)} over 7d",
                    value=rate,
                    limit=None if rate_7d is None else policy.drop_off_factor * rate_7d,
                    figures={"entries_24h": entries, "drop_offs_24h": drops, "entries_7d": entries_7d,
                             "drop_offs_7d": drops_7d},
                )
            )  # fmt: skip
    return verdicts


def conversion_checks(snapshot: Snapshot, policy: AlertPolicy) -> list[CheckVerdict]:
    """StageConversionBelowTrailing, overall: a stage pair's 24h period conversion below its 7d level.

    Fires when entries(to) / entries(from) over the 24h is below `conversion_factor` x the same
    over 7 days, with at least `conversion_min_entries` entries into the from-stage in the 24h.
    """
    now, trailing = snapshot.windows["24h"].funnel, snapshot.windows[TRAILING_WINDOW].funnel
    verdicts = []
    for pair in now.period_conversion:
        from_stage, to_stage = pair.split("_to_", 1)
        entered, reached = _entries(now, from_stage), _entries(now, to_stage)
        entered_7d, reached_7d = _entries(trailing, from_stage), _entries(trailing, to_stage)
        rate = Fraction(reached, entered) if entered else None
        rate_7d = Fraction(reached_7d, entered_7d) if entered_7d else None
        failed = []
        if entered < policy.conversion_min_entries:
            failed.append(f"{entered} entries into {from_stage} in 24h < {policy.conversion_min_entries}")
        if rate is None or rate_7d is None:
            failed.append("no conversion to compare")
        elif not rate < policy.conversion_factor * rate_7d:
            failed.append(f"{_pct(rate)} not below {float(policy.conversion_factor):g}x {_pct(rate_7d)} (7d)")
        verdicts.append(
            _verdict(
                "StageConversionBelowTrailing",
                "overall",
                {"from_stage": from_stage, "to_stage": to_stage},
                failed,
                f"{from_stage} -> {to_stage} {_pct(rate)} in 24h vs {_pct(rate_7d)} over 7d",
                value=rate,
                limit=None if rate_7d is None else policy.conversion_factor * rate_7d,
                figures={"entries_from_24h": entered, "entries_to_24h": reached, "entries_from_7d": entered_7d,
                         "entries_to_7d": reached_7d},
            )
        )  # fmt: skip
    return verdicts


def churn_checks(snapshot: Snapshot, policy: AlertPolicy) -> list[CheckVerdict]:
    """MrrChurnSpike: this month's gross MRR churn so far is high, absolutely or against the monthly mean.

    Month to date = (churn + contraction) this calendar month / MRR at its start (MRR now minus the
    month's net new MRR). Fires above `churn_ceiling`, or above both `churn_factor` x the mean
    gross MRR churn of the last `churn_months` months (this one included) and `churn_floor`.
    """
    movements = snapshot.windows["month"].revenue.movements
    start = Fraction(snapshot.revenue.mrr - movements.net_new_mrr)
    lost = Fraction(movements.churned_mrr + movements.contraction_mrr)
    rate = lost / start if start > 0 else None
    monthly = [
        m.revenue.gross_mrr_churn_rate
        for m in list(snapshot.months.values())[-policy.churn_months :]
        if m.revenue.gross_mrr_churn_rate is not None
    ]
    mean = Fraction(fmean(monthly)) if monthly else None
    failed = []
    if rate is None:
        failed.append("no MRR at the start of the month")
    elif not rate > policy.churn_ceiling and not (
        mean is not None and rate > policy.churn_factor * mean and rate > policy.churn_floor
    ):
        failed.append(
            f"{_pct(rate)} not above {_pct(policy.churn_ceiling)}, nor above both "
            f"{float(policy.churn_factor):g}x the monthly mean {_pct(mean)} and {_pct(policy.churn_floor)}"
        )
    return [
        _verdict(
            "MrrChurnSpike",
            "overall",
            {},
            failed,
            f"gross MRR churn this month {_pct(rate)} vs a monthly mean of {_pct(mean)}",
            value=rate,
            limit=_churn_limit(mean, policy),
            figures={"churned_mrr": float(movements.churned_mrr), "contraction_mrr": float(movements.contraction_mrr),
                     "mrr_at_start": float(start), "monthly_mean": None if mean is None else float(mean)},
        )
    ]  # fmt: skip


def _churn_limit(mean: Fraction | None, policy: AlertPolicy) -> Fraction:
    """The churn rate above which the alert fires: the ceiling, or lower when the monthly mean allows."""
    if mean is None:
        return policy.churn_ceiling
    return min(policy.churn_ceiling, max(policy.churn_floor, policy.churn_factor * mean))


def pipeline_checks(snapshot: Snapshot, policy: AlertPolicy) -> list[CheckVerdict]:
    """PipelineCoverageLow: weighted open pipeline below the target (`LEADLAG_PIPELINE_TARGET`); none without one."""
    if policy.pipeline_target is None:
        return []
    weighted = Fraction(snapshot.windows[PIPELINE_WINDOW].funnel.weighted_pipeline)
    target = Fraction(policy.pipeline_target)
    failed = [] if weighted < target else [f"{float(weighted):,.2f} is at or above the target {float(target):,.2f}"]
    return [
        _verdict(
            "PipelineCoverageLow",
            "overall",
            {},
            failed,
            f"weighted pipeline {float(weighted):,.2f} below the target {float(target):,.2f}"
            f" {snapshot.reporting_currency}",
            value=weighted,
            limit=target,
            figures={"weighted_pipeline": float(weighted), "target": float(target)},
        )
    ]  # fmt: skip


# -- worker alerts: the worker's own counters ---------------------------------------------------------------


def worker_checks(
    lag: Mapping[tuple[str, int], int],
    recent_dead_letters: Mapping[str, int],
    topics: Iterable[str],
    reasons: Iterable[str],
    policy: AlertPolicy,
) -> list[CheckVerdict]:
    """ConsumerLagHigh per input topic (all partitions) and DeadLettersArriving per reason.

    `topics` and `reasons` are every scope to judge (so each can resolve); `recent_dead_letters` is
    the increase of each reason's count over the alert's window (`recent_increase`).
    """
    verdicts = []
    for topic in sorted(topics):
        behind = sum(n for (name, _), n in lag.items() if name == topic)
        failed = [] if behind > policy.max_consumer_lag else [f"{behind} messages behind ≤ {policy.max_consumer_lag}"]
        verdicts.append(
            _verdict(
                "ConsumerLagHigh",
                "worker",
                {"topic": topic},
                failed,
                f"{behind} messages behind the end of {topic}",
                value=behind,
                limit=policy.max_consumer_lag,
                figures={"messages_behind": behind},
            )
        )
    minutes = policy.dead_letter_window_ms / 60_000
    for reason in sorted(reasons):
        count = recent_dead_letters.get(reason, 0)
        verdicts.append(
            _verdict(
                "DeadLettersArriving",
                "worker",
                {"reason": reason},
                [] if count > 0 else [f"none in the last {minutes:g} minutes"],
                f"{count} dead letters ({reason}) in the last {minutes:g} minutes",
                value=count,
                limit=0,
                figures={"dead_letters": count},
            )
        )
    return verdicts


def recent_increase(samples: Sequence[tuple[int, Mapping[str, int]]], now_ms: int, window_ms: int) -> dict[str, int]:
    """How much each counter rose within the last `window_ms`, from samples (time, counters) oldest first.

    The base is the newest sample at or before the window's start; while the history is shorter
    than the window, it is zero, as every counter was when the worker started. Counters only grow.
    """
    if not samples:
        return {}
    start = now_ms - window_ms
    base: Mapping[str, int] = {}
    for at, counts in samples:
        if at > start:
            break
        base = counts
    latest = samples[-1][1]
    return {name: count - base.get(name, 0) for name, count in latest.items()}


# -- helpers -------------------------------------------------------------------------------------------------


def _verdict(
    name: CheckName,
    scope: Literal["overall", "channel", "worker"],
    labels: dict[str, str],
    failed: list[str],
    because: str,
    *,
    value: Fraction | float | None,
    limit: Fraction | float | None,
    figures: Mapping[str, float | None],
) -> CheckVerdict:
    return CheckVerdict(
        alert_name=name,
        scope=scope,
        labels=labels,
        firing=not failed,
        value=None if value is None else float(value),
        limit=None if limit is None else float(limit),
        figures=dict(figures),
        reason="; ".join(failed) if failed else because,
    )


def _stages(*funnels: ChannelFunnel | None) -> list[str]:
    seen: dict[str, None] = {}
    for funnel in funnels:
        if funnel is not None:
            seen.update(dict.fromkeys(funnel.stages))
    return list(seen)


def _entries(funnel: ChannelFunnel, stage: str) -> int:
    flow = funnel.stages.get(stage)
    return 0 if flow is None else flow.entries


def _pct(value: Fraction | float | None) -> str:
    return "n/a" if value is None else f"{float(value):.1%}"
