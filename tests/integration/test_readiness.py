"""Readiness on a real broker: not ready while the broker is stopped (SIGSTOP), ready again after SIGCONT."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from stream.broker import EmbeddedBroker
from stream.simulation import generate_count
from tests.integration.processes import WORKER_READY_SECONDS, get, produce_events, running_worker, wait_until

pytestmark = pytest.mark.integration

BROKER_SILENT_SECONDS = 60.0
"""Enough for the readiness limit (15 s) plus a lag measurement that times out (10 s) and the timer's 5 s."""


def readyz(base: str) -> tuple[int, dict[str, Any]]:
    status, body = get(f"{base}/readyz")
    return status, json.loads(body)


def test_a_worker_is_not_ready_while_its_broker_is_stopped_says_why_and_is_ready_again_after(
    topic_prefix: str, tmp_path: Path
) -> None:
    events = list(generate_count(300, seed=4))
    # a broker of its own: pausing the session's broker would stall every other test
    with EmbeddedBroker() as broker, running_worker(broker.url, topic_prefix, tmp_path / "data") as worker:
        asyncio.run(produce_events(broker.bootstrap, topic_prefix, events, envelope_size=50))
        worker.wait_for(len(events))
        wait_until(lambda: readyz(worker.base)[0] == 200, WORKER_READY_SECONDS, "ready", worker.log)
        assert worker.status()["ready"] is True

        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGSTOP)  # the binary itself: it runs in a session of its own
        stopped = time.monotonic()
        try:
            wait_until(
                lambda: readyz(worker.base)[0] == 503,
                BROKER_SILENT_SECONDS,
                "not ready with the broker stopped",
                worker.log,
            )
            print(f"not ready {time.monotonic() - stopped:.1f} s after the broker stopped")
            status, body = readyz(worker.base)
            assert status == 503
            assert body["ready"] is False
            broker_reason = [m for m in body["missing"] if m["condition"] == "broker"]
            assert broker_reason, body
            assert "has not answered for" in broker_reason[0]["reason"]
            status_code, status_body = get(f"{worker.base}/api/status")
            assert status_code == 503
            status_json = json.loads(status_body)
            assert status_json["ready"] is False
            assert "broker" in [m["condition"] for m in status_json["not_ready"]]
            assert status_json["input"]["accepted"] == len(events)  # still shown, for a person looking
            assert get(f"{worker.base}/healthz")[0] == 200  # alive: a liveness probe must not restart it
            worker.alive()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(broker.pid, signal.SIGCONT)

        resumed = time.monotonic()
        wait_until(lambda: readyz(worker.base)[0] == 200, 120, "ready again after SIGCONT", worker.log)
        print(f"ready again {time.monotonic() - resumed:.1f} s after the broker resumed")
        assert worker.status()["input"]["accepted"] == len(events)
        assert worker.stop() == 0
