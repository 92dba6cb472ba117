"""The worker's HTTP side on a real broker: only leadlag's pages, a token when set, probes that tell the truth."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.processes import WORKER_READY_SECONDS, running_worker, wait_until

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token-for-the-test"


def request(url: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def first_answer(url: str, seconds: float = 60.0) -> tuple[int, dict[str, Any]]:
    """The first answer the worker gives at `url`, as soon as it listens."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            status, _, body = request(url)
            return status, json.loads(body)
        except (OSError, urllib.error.URLError):
            time.sleep(0.05)
    raise AssertionError(f"nothing answered at {url} within {seconds:.0f} s")


def test_probes_tell_the_truth_faust_pages_are_not_served_and_the_token_is_enforced(
    embedded_broker: Any, topic_prefix: str, tmp_path: Path
) -> None:
    with running_worker(embedded_broker.url, topic_prefix, tmp_path / "data", api_token=TOKEN) as worker:
        # before the first recovery completes: not ready, and why (the group has not assigned anything yet)
        status, body = first_answer(f"{worker.base}/readyz")
        assert status == 503, body
        assert body["ready"] is False
        conditions = [missing["condition"] for missing in body["missing"]]
        assert "assignment" in conditions or "recovery" in conditions, body
        assert request(f"{worker.base}/healthz")[0] == 200  # alive all the same

        wait_until(lambda: request(f"{worker.base}/readyz")[0] == 200, WORKER_READY_SECONDS, "ready", worker.log)
        ready = json.loads(request(f"{worker.base}/readyz")[2])
        assert ready == {"ready": True, "missing": []}

        # Faust's own pages: an entity's raw state, the router, the statistics: none of them served
        for path in ("/table/entities/", "/table/entities/contact:c1/", "/router/", "/router/entities/c1/", "/stats/"):
            assert request(f"{worker.base}{path}", TOKEN)[0] == 404, path

        # the token: required on /metrics and every JSON view, compared in constant time, never on the probes
        for path in ("/metrics", "/api/status", "/api/snapshot", "/api/windows/24h"):
            status, headers, body_bytes = request(f"{worker.base}{path}")
            assert status == 401, path
            assert headers.get("WWW-Authenticate") == 'Bearer realm="leadlag"'
            assert TOKEN not in body_bytes.decode()
            assert request(f"{worker.base}{path}", "wrong-token")[0] == 401
        status, _, metrics = request(f"{worker.base}/metrics", TOKEN)
        assert status == 200
        assert b"leadlag_ready 1.0" in metrics
        assert b"leadlag_snapshot_failures_total 0.0" in metrics
        status, _, status_body = request(f"{worker.base}/api/status", TOKEN)
        assert status == 200
        assert json.loads(status_body)["ready"] is True
        assert request(f"{worker.base}/healthz")[0] == 200
        assert request(f"{worker.base}/readyz")[0] == 200
    log = worker.log.read_text(errors="replace")
    assert TOKEN not in log
