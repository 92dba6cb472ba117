""" "Traffic up, conversion down" end to end.

The simulator feeds a real embedded broker in accelerated live time and scripts the incident; the
worker folds it and publishes its own alert events; a real Prometheus scrapes the worker with the
shipped config and rules. The alert must fire in both, agree on the numbers, and resolve in both
once the incident is over; and every dashboard query must have data from the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas.snapshot.divergence import DivergenceAlert
from stream.core.divergence import two_proportion_z_test
from tests.integration.processes import get_json, produce_raw, running_worker, stop_group, values_of_key, wait_until
from tests.integration.prometheus import Prometheus, assert_every_panel_has_data, running_prometheus

pytestmark = pytest.mark.integration

ALERT = "TrafficUpConversionDown"
DEAD_LETTER_KEY = b"DeadLettersArriving:reason=not_json"
SPEED = 900
"""Simulated seconds per wall second: the 24h window passes in 96 s."""
START = "2026-01-07T00:00:00Z"
"""A Wednesday: the window and its baseline (Tuesday) are weekdays throughout, so the site's quieter
weekends cannot hide or fake the rise in traffic."""
BACKFILL_DAYS = 40
VISITS_PER_DAY = 1500
"""Weeks of history, so deals have closed and accounts churned for the lagging panels; a modest site, so
the backfill folds in well under a minute."""
INCIDENT_AFTER_MINUTES = 0.5
INCIDENT_MINUTES = 2.5
"""37.5 simulated hours of 1.6x traffic converting at 0.4x: the 24h window rises above its baseline by
+20 % about 8 simulated hours in, and stops once the baseline holds more than half a day of it."""


WORKER_SETTINGS = {
    "monthly_targets": "lead=800,mql=330,sql=150,opportunity=75,customer=25",
    "pipeline_target": "20000",
    "alert_for_seconds": "DeadLettersArriving=0",
}
"""OKRs for the funnel dashboard's target panels; dead letters alert at once, so the worker's event shows."""


@contextlib.contextmanager
def running_simulator(broker_url: str, prefix: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`leadlag simulate --live` with the scripted incident, as a user would run it; always stopped."""
    process = subprocess.Popen(
        [
            sys.executable, "-m", "stream.cli", "simulate",
            "--broker", broker_url,
            "--topic-prefix", prefix,
            "--live", "--speed", str(SPEED), "--start", START,
            "--backfill-hours", str(BACKFILL_DAYS * 24), "--visits-per-day", str(VISITS_PER_DAY),
            "--incident-after-minutes", str(INCIDENT_AFTER_MINUTES), "--incident-minutes", str(INCIDENT_MINUTES),
            "--seed", "7",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        yield process
    finally:
        stop_group(process, signal.SIGINT)


def overall_alerts(bootstrap: str, topic: str) -> list[DivergenceAlert]:
    """The worker's overall divergence events on the alert topic, oldest first."""
    return [
        DivergenceAlert.model_validate_json(value)
        for value in asyncio.run(values_of_key(bootstrap, topic, b"overall"))
        if json.loads(value).get("alert_name") == ALERT
    ]


def prometheus_state(prometheus: Prometheus) -> str:
    return prometheus.alerts(ALERT).get("all", "inactive")


def test_the_divergence_alert_fires_and_resolves_in_the_worker_and_in_prometheus(
    embedded_broker: Any, topic_prefix: str, tmp_path: Path
) -> None:
    alerts_topic = f"{topic_prefix}leadlag.alerts"
    with (
        running_worker(embedded_broker.url, topic_prefix, tmp_path / "data", **WORKER_SETTINGS) as worker,
        running_simulator(embedded_broker.url, topic_prefix, tmp_path / "simulator.log"),
        running_prometheus(worker.port, tmp_path, interval="1s") as prometheus,
    ):
        # a malformed message, so the dead-letter panels have something to show
        asyncio.run(produce_raw(embedded_broker.bootstrap, f"{topic_prefix}site.visits", [b"not json"]))
        # (b) Prometheus' rule reaches firing (after its `for: 1m`) on the scraped event-time figures ...
        wait_until(lambda: prometheus_state(prometheus) == "firing", 360, f"{ALERT} firing in Prometheus", worker.log)
        # ... and the worker published its own firing event, with the numbers that justify it
        firing = [alert for alert in overall_alerts(embedded_broker.bootstrap, alerts_topic) if alert.state == "firing"]
        assert firing, "no firing event for scope overall on leadlag.alerts"
        verdict = firing[0].verdict
        assert (verdict.sessions_change or 0) >= 0.2
        assert (verdict.conversion_change or 0) <= -0.2
        assert (verdict.p_value or 1) < 0.05
        assert min(verdict.sessions_now, verdict.sessions_baseline) >= 200
        assert verdict.leads_baseline >= 10
        assert verdict.window_end - verdict.window_start == verdict.baseline_end - verdict.baseline_start
        # the worker's own gauge said so too, as Prometheus recorded it
        assert prometheus.query('max_over_time(leadlag_divergence_firing{channel="all"}[5m]) == 1')
        assert_z_agrees(prometheus)

        # (c) once the incident has left the comparison, both resolve
        wait_until(lambda: prometheus_state(prometheus) == "inactive", 360, f"{ALERT} resolved", worker.log)
        wait_until(
            lambda: overall_alerts(embedded_broker.bootstrap, alerts_topic)[-1].state == "resolved",
            60,
            "the worker's resolved event",
            worker.log,
        )
        events = overall_alerts(embedded_broker.bootstrap, alerts_topic)
        states = [alert.state for alert in events]
        assert states[:2] == ["firing", "resolved"], states
        assert events[1].at > events[0].at

        # (a) every dashboard query has data from this run
        assert_every_panel_has_data(prometheus)
        # the worker's other verdicts, over HTTP: the malformed message is a dead letter of the last 15 min
        assert DEAD_LETTER_KEY.decode() in get_json(f"{worker.base}/api/alerts")["firing"]

    # the other alerts travel the same way: the malformed message raised DeadLettersArriving
    [dead_letters] = [
        json.loads(value)
        for value in asyncio.run(values_of_key(embedded_broker.bootstrap, alerts_topic, DEAD_LETTER_KEY))
    ][:1]
    assert dead_letters["state"] == "firing"
    assert dead_letters["verdict"]["figures"] == {"dead_letters": 1}


def assert_z_agrees(prometheus: Prometheus) -> None:
    """Prometheus' z over the gauges (max over workers) is the worker's z-test of the same four numbers."""
    at = time.time()
    sums = {
        (series["metric"]["__name__"], series["metric"]["period"]): int(float(series["value"][1]))
        for series in prometheus.query('{__name__=~"leadlag:divergence_(sessions|leads):sum", channel="all"}', at=at)
    }
    recorded = prometheus.query('leadlag:divergence:z_score{channel="all"}', at=at)
    test = two_proportion_z_test(
        sums["leadlag:divergence_leads:sum", "now"],
        sums["leadlag:divergence_sessions:sum", "now"],
        sums["leadlag:divergence_leads:sum", "baseline"],
        sums["leadlag:divergence_sessions:sum", "baseline"],
    )
    assert test is not None
    assert recorded
    assert float(recorded[0]["value"][1]) == pytest.approx(test.z, rel=1e-9)
