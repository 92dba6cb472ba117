"""Readiness: whether the worker serves figures it can stand behind, and what is missing when it does not.

A worker is ready when all of these hold (docs/architecture.md, "Readiness"):

- `assignment`: the consumer group gave it an assignment;
- `rebalance`: the group is not rebalancing (partitions revoked, none assigned yet);
- `recovery`: every assigned partition has caught up with its changelog;
- `company`: the partitions owned by other workers have been read from their changelog up to where it
  stood when this worker started following them (the figures describe the whole company);
- `broker`: a request to the broker succeeded recently (the lag timer's, every few seconds);
- `lag`: the consumer lag of the current assignment has been measured;
- `snapshot`: a snapshot has been built (the views have something to serve).

`readiness` is pure: the worker gathers a `HealthFacts` and `/readyz`,
`/api/status` and `leadlag_ready` read the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

BROKER_STALE_SECONDS = 15.0
"""The broker counts as unreachable when no request to it succeeded for this long (three lag measurements)."""


@dataclass(frozen=True, slots=True)
class HealthFacts:
    """What readiness is judged from; times are monotonic seconds."""

    assignment_received: bool
    rebalancing: bool
    recovering: bool
    broker_seen_at: float | None
    lag_measured: bool
    snapshot_built: bool
    now: float
    company_behind: tuple[int, ...] = ()
    """Partitions owned elsewhere whose changelog has not been read up to where it stood yet."""


@dataclass(frozen=True, slots=True)
class Missing:
    """One condition of readiness that does not hold, and why."""

    condition: str
    reason: str


def readiness(facts: HealthFacts, stale_seconds: float = BROKER_STALE_SECONDS) -> tuple[Missing, ...]:
    """The conditions that do not hold, in the order an operator would fix them; empty when ready."""
    missing: list[Missing] = []
    if not facts.assignment_received:
        missing.append(Missing("assignment", "no partitions assigned by the consumer group yet"))
    elif facts.rebalancing:
        missing.append(Missing("rebalance", "the consumer group is rebalancing"))
    if facts.recovering:
        missing.append(Missing("recovery", "assigned partitions are still catching up with their changelog"))
    if facts.company_behind:
        missing.append(
            Missing(
                "company",
                f"reading the changelog of partitions {list(facts.company_behind)} (owned by other workers)",
            )
        )
    if facts.broker_seen_at is None:
        missing.append(Missing("broker", "no request to the broker has succeeded yet"))
    elif facts.now - facts.broker_seen_at > stale_seconds:
        silent = facts.now - facts.broker_seen_at
        missing.append(Missing("broker", f"the broker has not answered for {silent:.0f} s"))
    if not facts.lag_measured:
        missing.append(Missing("lag", "the consumer lag of the current assignment is not known yet"))
    if not facts.snapshot_built:
        missing.append(Missing("snapshot", "no snapshot built yet"))
    return tuple(missing)
