"""Every panel of every shipped dashboard, queried through a real Prometheus that scrapes a real worker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream.dashboards import GRAFANA_DEFAULTS, expand_variables, load_dashboards, panel_catalogue
from stream.simulation import generate_count
from tests.integration.processes import free_port, get_json, produce_events, produce_raw, running_worker, wait_until

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
VIEW = {**GRAFANA_DEFAULTS, "window": "30d"}
"""The test's company is small (a few wins a week), so the panels are read over the last 30 days."""


def shipped_config_for(worker_port: int, folder: Path) -> Path:
    """The shipped Prometheus config and rules, scraping this test's worker every second."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {**config.get("global", {}), "scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(path) for path in sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))]
    config.pop("alerting", None)
    for job in config["scrape_configs"]:
        if job["job_name"] == "leadlag":
            job["static_configs"] = [{"targets": [f"127.0.0.1:{worker_port}"]}]
            job["scrape_interval"] = "1s"
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def query(base: str, expr: str) -> list[Any]:
    body = get_json(f"{base}/api/v1/query?query={urllib.parse.quote(expr)}")
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def test_every_dashboard_query_returns_data_from_a_live_worker(
    embedded_broker: Any, topic_prefix: str, tmp_path: Path
) -> None:
    events = list(generate_count(24000, seed=11, incident=True))
    first, trickle = events[:20000], events[20000:]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running_worker(embedded_broker.url, topic_prefix, tmp_path / "data") as worker:
        asyncio.run(produce_events(embedded_broker.bootstrap, topic_prefix, first, envelope_size=200))
        asyncio.run(produce_raw(embedded_broker.bootstrap, f"{topic_prefix}site.visits", [b"not json"]))
        worker.wait_for(len(first) + 1)
        # the health panels show rates: keep events flowing while Prometheus scrapes
        stop = threading.Event()

        def keep_producing() -> None:
            for start in range(0, len(trickle), 100):
                if stop.is_set():
                    return
                batch = trickle[start : start + 100]
                asyncio.run(produce_events(embedded_broker.bootstrap, topic_prefix, batch, envelope_size=50))
                time.sleep(0.5)

        producer = threading.Thread(target=keep_producing, daemon=True)
        producer.start()
        prometheus = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={shipped_config_for(worker.port, tmp_path)}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=(tmp_path / "prometheus.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until(lambda: bool(query(base, "leadlag_sessions")), 60, "Prometheus' first scrape of the worker")
            # rate() needs two samples in its range, and the rules one evaluation: wait for several scrapes
            wait_until(
                lambda: bool(query(base, "rate(leadlag_events_in_total[1m]) >= 0")), 60, "two scrapes of the worker"
            )
            panels = panel_catalogue(load_dashboards(DEPLOY / "grafana" / "dashboards"))
            empty = [
                f"{entry.dashboard} / {entry.title}: {entry.expr}"
                for entry in panels
                if not query(base, expand_variables(entry.expr, VIEW))
            ]
            assert empty == [], "panels whose query returns no data:\n" + "\n".join(empty)
        finally:
            stop.set()
            producer.join(30)
            os.killpg(prometheus.pid, signal.SIGTERM)
            try:
                prometheus.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(prometheus.pid, signal.SIGKILL)
                prometheus.wait()
