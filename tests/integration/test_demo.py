"""`leadlag demo`, the README's first command: broker, worker and simulator, live metrics, nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.processes import free_port, get, wait_until

pytestmark = pytest.mark.integration


def processes_with(marker: str) -> list[int]:
    """Pids whose environment holds `marker` (the demo's unique web port): the demo's own children."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def scraped(base: str) -> dict[str, float]:
    status, text = get(f"{base}/metrics")
    assert status == 200
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("channel", "all") == "all" and labels.get("window") in (None, "24h"):
                values.setdefault(sample.name, sample.value)
    return values


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "terminal-closed"])
def test_the_demo_shows_live_sessions_leads_and_mrr_and_stops_cleanly(tmp_path: Path, stop_signal: int) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "demo.log"
    demo = subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "demo", "--web-port", str(port), "--backfill-hours", "24"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "LEADLAG_DEMO_MARKER": f"demo-{port}"},
        start_new_session=True,
    )
    try:

        def live_numbers() -> bool:
            values = scraped(base)
            return (
                values.get("leadlag_sessions", 0) > 0
                and values.get("leadlag_new_leads", 0) > 0
                and (values.get("leadlag_mrr", 0) > 0)
            )

        wait_until(live_numbers, 120, "sessions, leads and MRR on /metrics", log)
        assert processes_with(f"demo-{port}")  # broker, worker and simulator are running
        demo.send_signal(stop_signal)
        assert demo.wait(60) == 0, log.read_text()
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    deadline = time.monotonic() + 10
    while processes_with(f"demo-{port}") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_with(f"demo-{port}") == [], "the demo left processes behind"
    output = log.read_text()
    assert "/metrics" in output
    assert "memory only" in output
    if stop_signal == signal.SIGINT:
        assert "nothing left running" in output
