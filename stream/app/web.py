"""The worker's HTTP pages: `/metrics`, the JSON views under `/api/`, and the probes `/healthz` and `/readyz`.

Thin wiring: every body comes from the read model (`stream.app.readmodel`),
which answers from the last snapshot it built, and every metric from the
collectors registered on the worker's registry (ours and Faust's own runtime
sensors), reading the same snapshot. No request builds a snapshot.

Nothing else is served: Faust's own pages (`/table/...`, which can return an
entity's raw state, `/router/...`, the statistics) are switched off where the
app is created (`stream.app.worker`). With `LEADLAG_API_TOKEN` set, `/metrics`
and the JSON views answer 401 without `Authorization: Bearer <token>`; the
probes stay open, and say nothing but whether the worker is alive or ready
(README, "HTTP").
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import faust
import orjson
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from stream.app.health import Missing
from stream.app.page import install_page
from stream.views import ROUTES

API_PATHS = ("/api", *ROUTES)
"""Every JSON view the pure `stream.views` answers, registered as a Faust web page."""
FAUST_METRICS_PREFIX = "leadlag_faust"

Responder = Callable[[str], tuple[int, bytes]]
"""Path -> (status, JSON body)."""
Readiness = Callable[[], tuple[Missing, ...]]
"""The readiness conditions that do not hold now (none: ready)."""


def install_pages(
    app: faust.App,
    registry: CollectorRegistry,
    respond: Responder,
    readiness: Readiness,
    token: str | None = None,
) -> None:
    """Add `/metrics` (with Faust's runtime metrics as `leadlag_faust_*`), the JSON views and the probes."""
    app.monitor = PrometheusMonitor(metrics=FaustMetrics.create(registry, FAUST_METRICS_PREFIX))
    expected = None if not token else f"Bearer {token}".encode()

    def refused(view: View, request: Request) -> Response | None:
        """401 unless the request carries the token (when one is set)."""
        if expected is None:
            return None
        given = str(request.headers.get("Authorization", "")).encode()
        if hmac.compare_digest(given, expected):
            return None
        body = orjson.dumps({"error": "a bearer token is required: send 'Authorization: Bearer <LEADLAG_API_TOKEN>'"})
        headers = {"WWW-Authenticate": 'Bearer realm="leadlag"'}
        return view.bytes(body, content_type="application/json", status=401, headers=headers)

    async def metrics_page(self: View, request: Request, **_: Any) -> Response:
        denied = refused(self, request)
        if denied is not None:
            return denied
        return self.bytes(generate_latest(registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    app.page("/metrics")(metrics_page)

    def page(path: str) -> None:
        async def handler(self: View, request: Request, **_: Any) -> Response:
            denied = refused(self, request)
            if denied is not None:
                return denied
            status, body = respond(str(request.url.path))
            return self.bytes(body, content_type="application/json", status=status)

        handler.__name__ = "api_" + path.strip("/").replace("/", "_").replace("{", "").replace("}", "")
        app.page(path)(handler)

    for path in API_PATHS:
        page(path)
    install_page(app, respond, refused)

    async def healthz(self: View, request: Request, **_: Any) -> Response:
        """Liveness: answering at all means the event loop runs."""
        return self.bytes(b'{"alive":true}', content_type="application/json")

    async def readyz(self: View, request: Request, **_: Any) -> Response:
        status, body = readiness_response(readiness())
        return self.bytes(body, content_type="application/json", status=status)

    app.page("/healthz")(healthz)
    app.page("/readyz")(readyz)


def readiness_response(missing: tuple[Missing, ...]) -> tuple[int, bytes]:
    """200 when nothing is missing, else 503 listing each missing condition and why."""
    body = {"ready": not missing, "missing": [{"condition": m.condition, "reason": m.reason} for m in missing]}
    return (503 if missing else 200), orjson.dumps(body)
