"""`leadlag replay` and `leadlag simulate` as a user runs them: real processes, real files, real pipes."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from schemas.jsonschema import JSON_DIR

LEADLAG = [sys.executable, "-m", "stream.cli"]


def run(
    *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    import os

    return subprocess.run(
        [*LEADLAG, *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def visit(n: int, minute: int, channel: str = "paid", **fields: Any) -> dict[str, Any]:
    return {
        "event_id": f"v-{n}",
        "type": "site_visit",
        "occurred_at": f"2026-11-23T09:{minute:02d}:00Z",
        "session_id": f"s-{n}",
        "visitor_id": f"visitor-{n}",
        "channel": channel,
        "pageviews": 2,
        "engaged_seconds": 30,
    } | fields


def lead(n: int, minute: int, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": f"l-{n}",
        "type": "stage_change",
        "occurred_at": f"2026-11-23T09:{minute:02d}:30Z",
        "contact_id": f"contact-{n}",
        "to_stage": "lead",
    } | fields


def ndjson(*events: Any) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


@pytest.fixture(scope="module")
def snapshot_schema() -> dict[str, Any]:
    return json.loads((JSON_DIR / "snapshot.schema.json").read_text())  # type: ignore[no-any-return]


def test_replay_prints_a_snapshot_that_matches_its_published_schema(
    tmp_path: Path, snapshot_schema: dict[str, Any]
) -> None:
    path = tmp_path / "events.ndjson"
    path.write_bytes(ndjson(*(visit(n, n) for n in range(10)), lead(1, 5)))
    result = run("replay", str(path))
    assert result.returncode == 0, result.stderr
    snapshot = json.loads(result.stdout)
    jsonschema.validate(snapshot, snapshot_schema)
    last_hour = snapshot["windows"]["1h"]["traffic"]
    assert last_hour["sessions"] == 10
    assert last_hour["new_leads"] == 1
    assert last_hour["visit_to_lead_rate"] == pytest.approx(0.1)
    assert snapshot["as_of"] == "2026-11-23T09:09:00Z"
    assert snapshot["input"] == {
        "events": 11,
        "accepted": 11,
        "duplicates": 0,
        "invalid": 0,
        "rejected": 0,
        "after_as_of": 0,
    }


def test_bad_lines_are_reported_with_line_number_and_reason_counted_and_never_stop_the_run(tmp_path: Path) -> None:
    lines = [
        orjson.dumps(visit(1, 1)),
        b"{not json",
        orjson.dumps(visit(2, 2, pageviews=0)),
        orjson.dumps([visit(3, 3), visit(4, 4, occurred_at="2026-11-23T09:04:00"), visit(5, 5)]),
        orjson.dumps(visit(1, 1)),  # duplicate of line 1
        orjson.dumps(
            {
                "event_id": "sub-1",
                "type": "subscription",
                "occurred_at": "2026-11-23T09:06:00Z",
                "account_id": "a",
                "subscription_id": "s",
                "status": "active",
                "amount": 10,
                "currency": "JPY",
                "interval": "month",
            }
        ),
    ]
    path = tmp_path / "mixed.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = run("replay", str(path))
    assert result.returncode == 0, result.stderr
    stderr = result.stderr.decode()
    assert "line 2: not JSON" in stderr
    assert "line 3: pageviews: Input should be greater than or equal to 1" in stderr
    assert "line 4, event 1: occurred_at: timestamp has no UTC offset" in stderr
    assert "line 6: subscription sub-1: unknown currency 'JPY'" in stderr
    snapshot = json.loads(result.stdout)
    assert snapshot["input"]["invalid"] == 3
    assert snapshot["input"]["rejected"] == 1
    assert snapshot["input"]["duplicates"] == 1
    assert snapshot["windows"]["1h"]["traffic"]["sessions"] == 3  # visits 1, 3 and 5


def test_replay_reads_gzip_and_stdin_alike(tmp_path: Path) -> None:
    data = ndjson(*(visit(n, n) for n in range(4)))
    gz = tmp_path / "events.ndjson.gz"
    gz.write_bytes(gzip.compress(data))
    from_gzip = json.loads(run("replay", str(gz)).stdout)
    from_stdin = json.loads(run("replay", "-", stdin=data).stdout)
    assert from_gzip["windows"]["1h"]["traffic"]["sessions"] == 4
    assert from_gzip == from_stdin


def test_as_of_describes_the_world_at_that_instant(tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson"
    path.write_bytes(ndjson(*(visit(n, n) for n in range(10))))
    snapshot = json.loads(run("replay", str(path), "--as-of", "2026-11-23T09:04:59Z").stdout)
    assert snapshot["windows"]["1h"]["traffic"]["sessions"] == 5
    assert snapshot["input"]["after_as_of"] == 5


@pytest.mark.parametrize(
    ("command", "option", "value", "why"),
    [
        ("replay", "--as-of", "2026-11-23T09:00:00", "no UTC offset"),
        ("replay", "--as-of", "yesterday", "not an RFC 3339 timestamp"),
        ("simulate", "--start", "2026-01-07", "no UTC offset"),
    ],
)
def test_an_instant_needs_its_utc_offset_and_the_error_names_the_option(
    command: str, option: str, value: str, why: str
) -> None:
    args = ["-"] if command == "replay" else ["--broker", "127.0.0.1:9", "--live"]
    result = run(command, *args, option, value, stdin=b"")
    assert result.returncode == 2
    assert option.encode() in result.stderr
    assert why.encode() in result.stderr


def test_a_bad_setting_stops_with_a_message_naming_it() -> None:
    result = run("replay", "-", stdin=b"", env={"LEADLAG_FX_RATES": "EUR"})
    assert result.returncode == 2
    assert b"LEADLAG_FX_RATES" in result.stderr
    assert b"EUR=1.08" in result.stderr


@pytest.mark.parametrize("command", [["worker"], ["bench", "--events", "10"], ["replay", "-"]])
def test_markup_in_a_bad_setting_is_printed_as_it_is(command: list[str]) -> None:
    result = run(*command, stdin=b"", env={"LEADLAG_FX_RATES": "[/bold]\x1b[2J"})
    assert result.returncode == 2, result.stderr
    assert b"Traceback" not in result.stderr
    assert b"'[/bold]" in result.stderr
    assert b"\x1b" not in result.stderr  # the escape shown escaped, never sent to the terminal


def test_a_missing_file_is_a_clear_error() -> None:
    result = run("replay", "/nonexistent/events.ndjson")
    assert result.returncode == 2
    assert b"cannot read /nonexistent/events.ndjson" in result.stderr


def test_simulated_events_replay_cleanly_and_the_table_shows_the_headline_figures(tmp_path: Path) -> None:
    path = tmp_path / "sim.ndjson"
    assert run("simulate", "--events", "20000", "--seed", "5", "--incident", "--out", str(path)).returncode == 0
    assert sum(1 for _ in path.open("rb")) == 20000
    result = run("replay", str(path), "--format", "table", "--fx-rate", "EUR=1.08")
    assert result.returncode == 0, result.stderr
    table = result.stdout.decode()
    for heading in ("Traffic, last 30 days", "Funnel, last 30 days", "Revenue now", "Acquisition", "conversion down"):
        assert heading in table
    assert "20,000 counted, 0 duplicates, 0 invalid, 0 rejected" in result.stderr.decode()
    assert re.search(r"final snapshot built in [\d,]+\.\d ms", result.stderr.decode())


def test_envelopes_give_the_same_snapshot_as_one_event_per_line(tmp_path: Path) -> None:
    single, batched = tmp_path / "single.ndjson", tmp_path / "batched.ndjson"
    run("simulate", "--events", "3000", "--seed", "9", "--out", str(single))
    run("simulate", "--events", "3000", "--seed", "9", "--envelope-size", "200", "--out", str(batched))
    assert sum(1 for _ in batched.open("rb")) == 15
    rates = ["--fx-rate", "EUR=1.08"]
    assert json.loads(run("replay", str(single), *rates).stdout) == json.loads(
        run("replay", str(batched), *rates).stdout
    )


def test_help_explains_each_command() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert b"replay" in result.stdout
    assert b"simulate" in result.stdout
    assert b"stdin" in run("replay", "--help").stdout


def test_the_demo_summary_shows_every_alert_that_fires() -> None:
    from rich.console import Console

    from stream.cli.demo import live_summary
    from stream.views import alerts_body
    from tests.test_metrics import RUNTIME, small_company_snapshot

    snapshot = small_company_snapshot().model_dump(mode="json")
    console = Console(record=True, width=200)
    console.print(live_summary(snapshot, None, 12, alerts_body(None, RUNTIME)))
    text = console.export_text()
    assert "no divergence alert" in text
    assert "FIRING DeadLettersArriving — reason=not_json: 2 dead letters (not_json) in the last 15 minutes" in text
    assert "ConsumerLagHigh" not in text  # judged, not firing
