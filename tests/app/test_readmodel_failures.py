"""A snapshot build that raises never takes the worker down: counted, logged once, the last good one served."""

from __future__ import annotations

import logging

import pytest

from schemas.snapshot import InputCounts
from stream.app.readmodel import Facts, ReadModel
from stream.core.ledger import rebuild_totals
from stream.core.policy import Policy
from stream.metrics import RuntimeStats

POLICY = Policy()
COUNTS = InputCounts(events=1, accepted=1, duplicates=0, invalid=0, rejected=0)
AS_OF = 1_767_225_600_000


def test_a_failing_build_keeps_the_last_good_snapshot_counts_each_failure_and_logs_each_error_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    version = [1]
    poisoned = [False]

    def facts() -> Facts:
        if poisoned[0]:
            raise OverflowError("year 10000 is out of range")
        return Facts(rebuild_totals((), POLICY), AS_OF, AS_OF, COUNTS)

    model = ReadModel(POLICY, lambda: version[0], facts)
    assert model.refresh()
    good = model.current()
    assert good is not None

    poisoned[0] = True
    with caplog.at_level(logging.ERROR, logger="leadlag.readmodel"):
        for tick in range(2, 6):
            version[0] = tick
            model.built_at = 0.0  # as if the rate limit had passed
            assert model.refresh() is False
    assert model.failures == 4
    assert model.current() is good
    assert model.respond("/api/snapshot", RuntimeStats())[0] == 200
    logged = [r for r in caplog.records if "could not be built" in r.getMessage()]
    assert len(logged) == 1
    assert "OverflowError: year 10000 is out of range" in logged[0].getMessage()

    poisoned[0] = False
    version[0] = 6
    model.built_at = 0.0
    assert model.refresh()
    assert model.current() is not good
    assert model.failures == 4
