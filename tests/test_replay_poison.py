"""The poison corpus through `leadlag replay`, as a user runs it: no traceback, exit 0, each bad line reported
once with its line number, escaped, and the figures of the good events alone."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.parsing import InputLimits
from stream.app.intake import dead_letter_reason_kind
from stream.core.policy import Policy
from stream.replay import BadInput, ReplayCounts, bounded_lines, read_events, replay
from tests.poison import CORPUS, GOOD, good_lines, interleaved

RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""Anything but a newline that would reach a terminal raw."""
SKIPPED = re.compile(r"^skipped line (\d+)(?:, event (\d+))?: (.*)$")


def run_replay(path: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", "replay", str(path)],
        capture_output=True,
        timeout=300,
        check=False,
        env={**os.environ, "COLUMNS": "100"},
    )


def figures(snapshot: dict[str, Any]) -> dict[str, Any]:
    """What the events mean (everything but the input counts)."""
    return {key: value for key, value in snapshot.items() if key != "input"}


@pytest.fixture(scope="module")
def poisoned_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[bytes], dict[int, Any]]:
    lines, poisoned = interleaved()
    path = tmp_path_factory.mktemp("poison") / "poisoned.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return run_replay(path), poisoned


def test_the_corpus_replays_with_exit_0_and_no_traceback(poisoned_run: tuple[Any, Any]) -> None:
    result, _ = poisoned_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert b"Traceback" not in result.stderr
    assert b"MarkupError" not in result.stderr


def test_each_bad_line_is_reported_once_with_its_line_number_and_its_kind(poisoned_run: tuple[Any, Any]) -> None:
    result, poisoned = poisoned_run
    reported: dict[int, str] = {}
    for line in result.stderr.decode().splitlines():
        match = SKIPPED.match(line)
        if match:
            number = int(match.group(1))
            assert number not in reported, f"line {number} reported twice"
            reported[number] = match.group(3)
    assert sorted(reported) == sorted(poisoned)
    for number, reason in reported.items():
        poison = poisoned[number]
        if poison.counted == "rejected":  # "<type> <event_id>: <reason>"
            reason = reason.split(": ", 1)[1]
        assert dead_letter_reason_kind(reason) == poison.kind, (poison.name, reason)


def test_nothing_from_the_input_reaches_the_terminal_raw(poisoned_run: tuple[Any, Any]) -> None:
    result, _ = poisoned_run
    stderr = result.stderr.decode()
    assert RAW_CONTROL.search(stderr) is None
    assert len(stderr.splitlines()) <= len(CORPUS) + 5, "one line per bad line, and the summary"
    assert not any(line.startswith("skipped line 1:") for line in stderr.splitlines()), "a forged line"
    assert "[/bold]" in stderr
    assert "[red]:fire:[/red]" in stderr


def test_the_figures_are_those_of_the_good_events_alone(poisoned_run: tuple[Any, Any], tmp_path: Path) -> None:
    result, _ = poisoned_run
    clean = tmp_path / "good.ndjson"
    clean.write_bytes(b"\n".join(good_lines()) + b"\n")
    alone = run_replay(clean)
    assert alone.returncode == 0, alone.stderr
    poisoned_snapshot, good_snapshot = json.loads(result.stdout), json.loads(alone.stdout)
    assert figures(poisoned_snapshot) == figures(good_snapshot)
    counts = poisoned_snapshot["input"]
    assert counts["accepted"] == len(GOOD)
    invalid = sum(1 for poison in CORPUS if poison.counted == "invalid")
    assert (counts["invalid"], counts["rejected"]) == (invalid, len(CORPUS) - invalid)


def test_a_line_longer_than_the_largest_message_is_never_read_whole() -> None:
    stream = io.BytesIO(b"a\n" + b"x" * 10_000 + b"\nb\n" + b"y" * 50)
    assert [len(line) for line in bounded_lines(stream, 100)] == [2, 101, 2, 50]


def test_a_line_of_exactly_the_largest_message_is_read_and_its_newline_does_not_count() -> None:
    event = orjson.dumps(GOOD[0])
    limit = len(event)
    counts = ReplayCounts()
    stream = io.BytesIO(event + b"\n" + event + b" \n")
    events = list(read_events(bounded_lines(stream, limit), counts, InputLimits(max_message_bytes=limit)))
    assert len(events) == 1
    assert [(bad.line, bad.reason) for bad in counts.bad] == [
        (2, f"too large: message over {limit:,} bytes (LEADLAG_MAX_MESSAGE_BYTES)")
    ]


def test_replay_hears_of_each_bad_line_as_it_is_read_and_keeps_a_bounded_list() -> None:
    heard: list[BadInput] = []
    lines = [b"{not json"] * 1_500 + [orjson.dumps(GOOD[0])]
    _, counts = replay(iter(lines), Policy(), on_bad=heard.append)
    assert [bad.line for bad in heard] == list(range(1, 1_501))
    assert len(counts.bad) == 1_000
    assert (counts.invalid, counts.accepted) == (1_500, 1)
