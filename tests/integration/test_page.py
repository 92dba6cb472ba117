"""The live page in a real browser: headless Chromium opens the page of a real worker fed with an incident.

The worker folds two months of a simulated company whose last day scripts "traffic up, conversion
down" (the events `leadlag simulate --events N --incident` writes), produced into the real embedded
broker. Every panel must have drawn data (the charts' data read back from uPlot, and pixels of the
series' colours on their canvases), and the divergence banner must show the worker's own numbers.
Screenshots are saved under `build/screenshots/` (gitignored) as test artifacts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stream.simulation import generate_count
from tests.integration.processes import get, get_json, produce_events, produce_raw, running_worker, wait_until

pytestmark = pytest.mark.integration

EVENTS = 80_000
"""Enough for the overall verdict to fire on the last day (about 1,900 sessions a weekday)."""
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
CHARTS = (
    "chart-hourly-volume",
    "chart-hourly-rate",
    "chart-daily-volume",
    "chart-daily-rate",
    "chart-funnel",
    "chart-mrr",
)
SERIES_COLOURS = {
    "chart-hourly-volume": (0x36, 0x62, 0xE3),
    "chart-hourly-rate": (0x2F, 0x9E, 0x44),
    "chart-daily-volume": (0x36, 0x62, 0xE3),
    "chart-daily-rate": (0x2F, 0x9E, 0x44),
    "chart-funnel": (0x36, 0x62, 0xE3),
    "chart-mrr": (0x36, 0x62, 0xE3),
}
"""A colour each chart's first drawn series uses (page.js): its pixels prove the canvas shows data."""

PIXELS_OF_COLOUR = """
const [id, r, g, b] = arguments;
const canvas = document.querySelector('#' + id + ' canvas');
const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
let found = 0;
for (let i = 0; i < data.length; i += 4) {
  const near = Math.abs(data[i] - r) < 12 && Math.abs(data[i + 1] - g) < 12 && Math.abs(data[i + 2] - b) < 12;
  if (data[i + 3] > 200 && near) found++;
}
return found;
"""
CHART_DATA = """
const chart = window.leadlag.charts[arguments[0]];
return chart ? chart.data.map((column) => Array.from(column)) : null;
"""


@contextlib.contextmanager
def headless_chromium() -> Iterator[Any]:
    """Selenium on Debian's chromium and chromedriver; Selenium Manager is never asked to download anything."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM, "needs Debian's chromium (tests/ensure-tools.sh installs it)"
    assert CHROMEDRIVER, "needs Debian's chromium-driver (tests/ensure-tools.sh installs it)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1366,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def full_page_screenshot(driver: Any, path: Path) -> None:
    """The whole page, and its upper part scaled to 3/4 (the README's picture, docs/live-page.png)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1366, min(int(height) + 140, 4000))
    driver.save_screenshot(str(path))
    clip = {"x": 0, "y": 0, "width": 1366, "height": 1480, "scale": 0.75}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "clip": clip})
    path.with_name(path.stem + "-readme.png").write_bytes(base64.b64decode(shot["data"]))
    driver.set_window_size(1366, 900)


def test_the_page_draws_every_panel_and_shows_the_divergence_banner_with_the_workers_numbers(
    embedded_broker: Any, topic_prefix: str, tmp_path: Path
) -> None:
    events = list(generate_count(EVENTS, seed=7, incident=True))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with running_worker(embedded_broker.url, topic_prefix, tmp_path / "data") as worker:
        asyncio.run(produce_events(embedded_broker.bootstrap, topic_prefix, events, envelope_size=200))
        asyncio.run(produce_raw(embedded_broker.bootstrap, f"{topic_prefix}site.visits", [b"not json"]))
        worker.wait_for(EVENTS + 1, seconds=240)
        wait_until(
            lambda: (
                "overall" in get_json(f"{worker.base}/api/divergence")["firing"]
                and get_json(f"{worker.base}/api/snapshot")["input"]["events"] >= EVENTS + 1
            ),
            60,
            "the overall verdict firing in the snapshot",
            worker.log,
        )
        divergence = get_json(f"{worker.base}/api/divergence")
        overall = next(v for v in divergence["verdicts"] if v["scope"] == "overall")
        status, csv_body = get(f"{worker.base}/api/months.csv")
        assert status == 200
        assert csv_body.decode().startswith("month,currency,sessions,")

        with headless_chromium() as driver:
            started = time.monotonic()
            driver.get(f"{worker.base}/")
            wait_until(
                lambda: (
                    driver.execute_script("return window.leadlag.updates") >= 1
                    and all(driver.execute_script(CHART_DATA, chart) for chart in CHARTS)
                ),
                60,
                "the page's first render",
            )
            first_paint_s = time.monotonic() - started
            driver.save_screenshot(str(SCREENSHOTS / "live-page-top.png"))
            full_page_screenshot(driver, SCREENSHOTS / "live-page.png")

            # every chart holds data: a non-empty x column and some series with a non-zero value ...
            for chart in CHARTS:
                columns = driver.execute_script(CHART_DATA, chart)
                assert columns[0], f"{chart}: no x values"
                assert any(value for column in columns[1:] for value in column if value is not None), chart
                # ... and its canvas shows it: pixels of the series' colour
                assert driver.execute_script(PIXELS_OF_COLOUR, chart, *SERIES_COLOURS[chart]) > 20, chart

            # the charts draw exactly what the worker serves
            hourly = get_json(f"{worker.base}/api/series/hourly")
            page_hourly = driver.execute_script(CHART_DATA, "chart-hourly-volume")
            assert page_hourly[1] == hourly["overall"]["sessions"]
            assert page_hourly[3] == hourly["overall"]["new_leads"]
            assert sum(page_hourly[1]) > 0
            daily = get_json(f"{worker.base}/api/series/daily")
            assert driver.execute_script(CHART_DATA, "chart-daily-volume")[1] == daily["overall"]["sessions"]
            mrr = driver.execute_script(CHART_DATA, "chart-mrr")
            revenue = get_json(f"{worker.base}/api/revenue")
            assert mrr[-1] == [month["mrr_at_end"] for month in revenue["months"].values()]

            # the tables are filled
            def rows(selector: str) -> int:
                return int(driver.execute_script(f"return document.querySelectorAll({json.dumps(selector)}).length"))

            assert rows("#headline tbody tr") == len(divergence["verdicts"])
            assert rows("#funnel tbody tr") >= 5
            assert rows("#attribution table[data-conversion] tbody tr") >= 3
            assert rows("#revenue-kpis .kpi") == 8
            assert rows("#health tbody tr") >= 5
            health = driver.find_element("id", "health").text
            assert "dead letters 1 (not_json 1)" in health

            # the divergence banner fires with the worker's numbers
            banner = driver.find_element("id", "divergence-banner")
            assert banner.is_displayed()
            assert "Traffic up, conversion down" in banner.text
            verdict = driver.find_element("css selector", '#divergence-banner .verdict[data-key="overall"]')
            for attribute, key in (
                ("data-sessions-change", "sessions_change"),
                ("data-conversion-change", "conversion_change"),
                ("data-z", "z"),
                ("data-p-value", "p_value"),
            ):
                assert float(verdict.get_attribute(attribute)) == pytest.approx(overall[key], rel=1e-12), key
            assert int(verdict.get_attribute("data-sessions-now")) == overall["sessions_now"]
            assert f"z = {overall['z']:.2f}" in verdict.text
            assert f"sessions +{overall['sessions_change'] * 100:.1f}%" in verdict.text
            banner.screenshot(str(SCREENSHOTS / "live-page-banner.png"))

            # a chosen channel redraws the charts from that channel's columns
            channel = next(iter(daily["by_channel"]))
            driver.execute_script(
                "const s = document.getElementById('channel'); s.value = arguments[0];"
                "s.dispatchEvent(new Event('change'));",
                channel,
            )
            assert (
                driver.execute_script(CHART_DATA, "chart-daily-volume")[1] == daily["by_channel"][channel]["sessions"]
            )
            assert not driver.execute_script("return window.leadlag.errors")
    print(f"first render of the page with {EVENTS:,} events: {first_paint_s:.2f} s")
