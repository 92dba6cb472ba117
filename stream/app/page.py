"""The worker's own page at `/`, its static assets, and the monthly CSV (README, "The live page").

The page is plain HTML, CSS and JavaScript from the package (`stream/app/static/`),
with the uPlot chart library vendored there with its licence: it works with no
internet and no build step. It polls the JSON views; every figure it shows is
computed by the core and served by the read model, never in the browser.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

import faust
from faust.web import Request, Response, View

CSV_PATH = "/api/months.csv"
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".LICENSE": "text/plain; charset=utf-8",
}
Responder = Callable[[str], tuple[int, bytes]]
"""Path -> (status, body), the read model's answer."""
Guard = Callable[[View, Request], Response | None]
"""A refusal (e.g. 401 without the API token) or None to serve the request."""


def static_files() -> dict[str, tuple[bytes, str]]:
    """name -> (content, content type) of every file in `stream/app/static/`, read once from the package."""
    files: dict[str, tuple[bytes, str]] = {}
    for entry in resources.files("stream.app").joinpath("static").iterdir():
        kind = next((kind for suffix, kind in STATIC_TYPES.items() if entry.name.endswith(suffix)), None)
        if kind is not None and entry.is_file():
            files[entry.name] = (entry.read_bytes(), kind)
    return files


def install_page(app: faust.App, respond: Responder, guard: Guard | None = None) -> None:
    """Add the page at `/`, its assets under `/static/`, and `/api/months.csv` (behind `guard`, like the views).

    The page and its assets hold no figures, so they are served without the API token; the page sends
    the token it is given in its address (`/#token=...`) with each request for data.
    """
    files = static_files()

    async def leadlag_page(self: View, request: Request, **_: Any) -> Response:
        body, kind = files["index.html"]
        return self.bytes(body, content_type=kind.split(";")[0], headers={"Cache-Control": "no-cache"})

    async def leadlag_static(self: View, request: Request, name: str = "", **_: Any) -> Response:
        found = files.get(name)
        if found is None:
            return self.bytes(b'{"error": "no such file"}', content_type="application/json", status=404)
        body, kind = found
        return self.bytes(body, content_type=kind.split(";")[0], headers={"Cache-Control": "max-age=300"})

    app.page("/")(leadlag_page)
    app.page("/static/{name}")(leadlag_static)

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
