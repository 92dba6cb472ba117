"""The worker's own page at `/`, its static assets, and the monthly CSV (README, "The live page").

The page is plain HTML, CSS and JavaScript from the package (`stream/app/static/`),
with the uPlot chart library vendored there with its licence: it works with no
internet and no build step. It polls the JSON views; every figure it shows is
computed by the core and served by the read model, never in the browser.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust
from faust.web import Request, Response, View

CSV_PATH = "/api/months.csv"
Responder = Callable[[str], tuple[int, bytes]]
"""Path -> (status, body), the read model's answer."""
Guard = Callable[[View, Request], Response | None]
"""A refusal (e.g. 401 without the API token) or None to serve the request."""


def install_page(app: faust.App, respond: Responder, guard: Guard | None = None) -> None:
    """Add `/api/months.csv` (behind `guard`, like the JSON views)."""

    async def months_csv(self: View, request: Request, **_: Any) -> Response:
        denied = guard(self, request) if guard is not None else None
        if denied is not None:
            return denied
        status, body = respond(CSV_PATH)
        if status != 200:
            return self.bytes(body, content_type="application/json", status=status)
        return self.bytes(
            body,
            content_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="leadlag-months.csv"'},
        )

    app.page(CSV_PATH)(months_csv)
