"""Benchmark `leadlag replay`'s peak memory on site visits: does memory follow visitors, or events?

    python bench/memory_bench.py [--scale 1.0] [--seed 7] [--keep DIR]
    make bench-memory

Generates four inputs of site visits only (generation is not measured), one
`site_visit` event per line in time order, each visitor on one channel and
the sessions spread evenly over the period:

    10,000 visitors ×  5 sessions over  30 days      50 k events
    10,000 visitors × 50 sessions over  30 days     500 k events
    10,000 visitors × 50 sessions over 365 days     500 k events
   100,000 visitors ×  5 sessions over  30 days     500 k events

Each is folded by `python -m stream.cli replay FILE --quiet --format json` in a
child process; the benchmark prints its events, wall time, events/s, peak RSS
(ru_maxrss of the child, from os.wait4) and the snapshot build time replay
reports, then the two ratios the targets are set on:

    RSS(10k × 50, 30 days)  / RSS(10k × 5, 30 days)    target ≤ 1.5
    RSS(10k × 50, 365 days) / RSS(10k × 50, 30 days)   target ≤ 1.3

A Python process's RSS includes the interpreter and its imports, so a replay
of a one-event file is measured first as the baseline; the column "above
baseline" is the part the events cost. The targets are judged on the peak RSS
itself. `--scale 0.1` shrinks the number of visitors (not the sessions per
visitor, nor the periods) for a quick run. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from schemas.channels import Channel

START = datetime(2025, 1, 1, tzinfo=UTC)
CHANNELS = tuple(Channel)
SNAPSHOT_LINE = re.compile(r"snapshot built in ([\d,.]+) ms")


@dataclass(frozen=True)
class Input:
    """One generated file: `visitors` × `sessions` site visits spread evenly over `days`."""

    key: str
    visitors: int
    sessions: int
    days: int

    @property
    def events(self) -> int:
        return self.visitors * self.sessions

    @property
    def label(self) -> str:
        return f"{self.visitors:,} visitors × {self.sessions} sessions, {self.days} days"


@dataclass(frozen=True)
class Run:
    events: int
    counted: int | None
    invalid: int | None
    wall_s: float
    peak_rss_kib: int
    snapshot_ms: float | None


def inputs(scale: float) -> list[Input]:
    def visitors(n: int) -> int:
        return max(1, round(n * scale))

    return [
        Input("10k×5,30d", visitors(10_000), 5, 30),
        Input("10k×50,30d", visitors(10_000), 50, 30),
        Input("10k×50,365d", visitors(10_000), 50, 365),
        Input("100k×5,30d", visitors(100_000), 5, 30),
    ]


def timestamp(ms: int) -> str:
    """RFC 3339 in UTC with milliseconds and an explicit offset."""
    moment = START + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def generate(spec: Input, path: Path, seed: int) -> None:
    """Write `spec`'s visits to `path` in time order: the sessions of all visitors interleaved at even steps.

    Session number i belongs to visitor i % visitors, so each visitor's sessions
    are `visitors` steps apart and all visitors are active over the whole period.
    The same seed gives the same visitors, channels and session figures whatever
    the period, so two inputs that differ only in `days` differ only in time.
    """
    rng = random.Random(seed)
    channels = [rng.choice(CHANNELS).value for _ in range(spec.visitors)]
    step_ms = spec.days * 86_400_000 / spec.events
    with path.open("wb") as out:
        lines: list[bytes] = []
        for i in range(spec.events):
            visitor = i % spec.visitors
            event = {
                "event_id": f"visit-{i}",
                "type": "site_visit",
                "occurred_at": timestamp(int(i * step_ms)),
                "session_id": f"session-{i}",
                "visitor_id": f"visitor-{visitor}",
                "channel": channels[visitor],
                "pageviews": rng.randint(1, 8),
                "engaged_seconds": rng.randint(0, 600),
            }
            lines.append(orjson.dumps(event))
            if len(lines) == 10_000:
                out.write(b"\n".join(lines) + b"\n")
                lines.clear()
        if lines:
            out.write(b"\n".join(lines) + b"\n")


def replay(path: Path, events: int) -> Run:
    """Run `replay --quiet --format json` on `path` in a child process and measure it."""
    with tempfile.TemporaryFile("w+b") as stdout, tempfile.TemporaryFile("w+") as stderr:
        started = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "replay", str(path), "--quiet", "--format", "json"],
            stdout=stdout,
            stderr=stderr,
        )
        _, status, usage = os.wait4(child.pid, 0)
        wall_s = time.perf_counter() - started
        stderr.seek(0)
        log = stderr.read()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"replay of {path.name} failed (exit {os.waitstatus_to_exitcode(status)}):\n{log}")
        stdout.seek(0)
        try:
            counts = orjson.loads(stdout.read()).get("input", {})
        except orjson.JSONDecodeError:
            counts = {}
    found = SNAPSHOT_LINE.search(log)
    return Run(
        events=events,
        counted=counts.get("accepted"),
        invalid=counts.get("invalid"),
        wall_s=wall_s,
        peak_rss_kib=usage.ru_maxrss,  # KiB on Linux
        snapshot_ms=float(found.group(1).replace(",", "")) if found else None,
    )


def mib(kib: int) -> float:
    return kib / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply the number of visitors, e.g. 0.1 for a quick run"
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated inputs (default 7)")
    parser.add_argument("--keep", type=Path, help="write the generated files into this directory and keep them")
    args = parser.parse_args()
    if args.scale <= 0:
        parser.error("--scale must be positive")

    specs = inputs(args.scale)
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)

        baseline_path = directory / "baseline-1-event.ndjson"
        generate(Input("baseline", 1, 1, 1), baseline_path, args.seed)
        print("replaying a 1-event file for the baseline RSS ...", flush=True)
        baseline = replay(baseline_path, 1)
        print(f"  baseline: {mib(baseline.peak_rss_kib):,.0f} MiB in {baseline.wall_s:.1f} s", flush=True)

        runs: dict[str, Run] = {}
        for spec in specs:
            path = directory / f"visits-{spec.visitors}x{spec.sessions}-{spec.days}d.ndjson"
            print(f"generating {spec.label} ({spec.events:,} events) ...", flush=True)
            started = time.perf_counter()
            generate(spec, path, args.seed)
            print(
                f"  {path.stat().st_size / 1e6:,.0f} MB in {time.perf_counter() - started:.1f} s; replaying ...",
                flush=True,
            )
            run = replay(path, spec.events)
            runs[spec.key] = run
            print(
                f"  {run.wall_s:.1f} s, {run.events / run.wall_s:,.0f} events/s, "
                f"peak RSS {mib(run.peak_rss_kib):,.0f} MiB",
                flush=True,
            )
            if run.counted is not None and run.counted != spec.events:
                print(f"  note: replay counted {run.counted:,} of {spec.events:,} events", flush=True)
            if run.invalid:
                print(f"  warning: replay found {run.invalid:,} invalid events", flush=True)

    print()
    print(f"leadlag replay --quiet --format json, site visits only (scale {args.scale:g}, seed {args.seed})")
    header = (
        f"{'input':<44} {'events':>9} {'wall s':>7} {'events/s':>9} "
        f"{'peak RSS MiB':>12} {'above baseline':>14} {'snapshot ms':>11}"
    )
    print(header)
    print("-" * len(header))

    def row(label: str, run: Run) -> None:
        snapshot = f"{run.snapshot_ms:,.1f}" if run.snapshot_ms is not None else "n/a"
        above = mib(run.peak_rss_kib - baseline.peak_rss_kib)
        print(
            f"{label:<44} {run.events:>9,} {run.wall_s:>7.1f} {run.events / run.wall_s:>9,.0f} "
            f"{mib(run.peak_rss_kib):>12,.0f} {above:>14,.0f} {snapshot:>11}"
        )

    row("baseline: 1 event", baseline)
    for spec in specs:
        row(spec.label, runs[spec.key])

    print()
    by_key = {spec.key: spec for spec in specs}
    for numerator, denominator, target, what in (
        ("10k×50,30d", "10k×5,30d", 1.5, "ten times the sessions per visitor"),
        ("10k×50,365d", "10k×50,30d", 1.3, "the same sessions over 365 days instead of 30"),
    ):
        top, bottom = runs[numerator], runs[denominator]
        ratio = top.peak_rss_kib / bottom.peak_rss_kib
        above_bottom = bottom.peak_rss_kib - baseline.peak_rss_kib
        above = (top.peak_rss_kib - baseline.peak_rss_kib) / above_bottom if above_bottom > 0 else float("nan")
        verdict = "met" if ratio <= target else "NOT met"
        print(
            f"RSS({by_key[numerator].label}) / RSS({by_key[denominator].label}) = {ratio:.2f}  "
            f"target ≤ {target}: {verdict}   ({what}; above baseline: {above:.2f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
