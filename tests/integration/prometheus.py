"""A real Prometheus (Debian's `prometheus`) on loopback with the shipped config and rules, for tests."""

from __future__ import annotations

import contextlib
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stream.dashboards import GRAFANA_DEFAULTS, expand_variables, load_dashboards, panel_catalogue
from tests.integration.processes import free_port, get_json, stop_group, wait_until

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
VIEW = {**GRAFANA_DEFAULTS, "window": "30d"}
"""A simulated company has a few wins a week, so the panels are read over the last 30 days."""


def shipped_config_for(worker_port: int, folder: Path, interval: str = "1s") -> Path:
    """The shipped config and rules, unchanged but for where the worker is and how often to scrape and evaluate.

    Alertmanager is left out (the tests read alert states from Prometheus' own API); every rule file
    in deploy/prometheus/rules is loaded, as the shipped `rule_files` glob does.
    """
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {**config.get("global", {}), "scrape_interval": interval, "evaluation_interval": interval}
    config["rule_files"] = [str(path) for path in sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))]
    config.pop("alerting", None)
    for job in config["scrape_configs"]:
        if job["job_name"] == "leadlag":
            job["static_configs"] = [{"targets": [f"127.0.0.1:{worker_port}"]}]
            job["scrape_interval"] = interval
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass(frozen=True)
class Prometheus:
    base: str
    log: Path

    def query(self, expr: str, at: float | None = None) -> list[Any]:
        """The instant vector of `expr` now or `at` (Unix seconds), asserting the query itself succeeded."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        body = get_json(f"{self.base}/api/v1/query?{urllib.parse.urlencode(params)}")
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def alerts(self, name: str) -> dict[str, str]:
        """State (`pending` or `firing`) of each active alert called `name`, by its channel label."""
        body = get_json(f"{self.base}/api/v1/alerts")
        return {
            alert["labels"].get("channel", ""): alert["state"]
            for alert in body["data"]["alerts"]
            if alert["labels"]["alertname"] == name
        }


@contextlib.contextmanager
def running_prometheus(worker_port: int, folder: Path, interval: str = "1s") -> Iterator[Prometheus]:
    """Prometheus scraping the worker on `worker_port`; its TSDB and log under `folder`; always stopped."""
    port = free_port()
    log = folder / "prometheus.log"
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={shipped_config_for(worker_port, folder, interval)}",
            f"--storage.tsdb.path={folder / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield Prometheus(f"http://127.0.0.1:{port}", log)
    finally:
        stop_group(process)


def assert_every_panel_has_data(prometheus: Prometheus, view: dict[str, str] = VIEW) -> None:
    """Every query of every shipped dashboard, its variables set as in `view`, returns at least one series."""
    query = prometheus.query
    wait_until(lambda: bool(query("leadlag_sessions")), 60, "Prometheus' first scrape of the worker")
    # rate() needs two samples in its range, and the rules one evaluation: wait for several scrapes
    wait_until(lambda: bool(query("rate(leadlag_events_in_total[1m]) >= 0")), 60, "two scrapes of the worker")
    panels = panel_catalogue(load_dashboards(DEPLOY / "grafana" / "dashboards"))
    empty = [
        f"{entry.dashboard} / {entry.title}: {entry.expr}"
        for entry in panels
        if not query(expand_variables(entry.expr, view))
    ]
    assert empty == [], "panels whose query returns no data:\n" + "\n".join(empty)
