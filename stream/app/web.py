"""The worker's HTTP pages: `/metrics` for Prometheus and the JSON views under `/api/`.

Thin wiring: every body comes from the read model (`stream.app.readmodel`),
which answers from the last snapshot it built, and every metric from the
collectors registered on the worker's registry (ours and Faust's own runtime
sensors), reading the same snapshot. No request builds a snapshot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust
from faust.sensors.prometheus import setup_prometheus_sensors
from faust.web import Request, Response, View
from prometheus_client import CollectorRegistry

from stream.app.page import install_page
from stream.views import ROUTES

API_PATHS = ("/api", *ROUTES)
"""Every JSON view the pure `stream.views` answers, registered as a Faust web page."""

Responder = Callable[[str], tuple[int, bytes]]
"""Path -> (status, JSON body)."""


def install_pages(app: faust.App, registry: CollectorRegistry, respond: Responder) -> None:
    """Add `/metrics` (with Faust's runtime metrics as `leadlag_faust_*`) and the JSON views to the app."""
    setup_prometheus_sensors(app, pattern="/metrics", registry=registry, name_prefix="leadlag_faust")

    def page(path: str) -> None:
        async def handler(self: View, request: Request, **_: Any) -> Response:
            status, body = respond(str(request.url.path))
            return self.bytes(body, content_type="application/json", status=status)

        handler.__name__ = "api_" + path.strip("/").replace("/", "_").replace("{", "").replace("}", "")
        app.page(path)(handler)

    for path in API_PATHS:
        page(path)
    install_page(app, respond)
