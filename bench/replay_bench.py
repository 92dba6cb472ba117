"""Benchmark `leadlag replay`: events/s and peak memory on a generated file of mixed events.

    python bench/replay_bench.py [--events 1000000] [--seed 7] [--keep FILE]

Generates the file first (not timed), then runs `leadlag replay` in a child
process and reports its wall time, events/s and peak RSS as measured by the
operating system, and the time replay reports for building the final snapshot.

Then, in another child, it only reads the same file: each line parsed and
validated as replay and the worker do (`stream.replay.read_events`), nothing
folded. That rate is the ceiling of replay on this machine, whatever the fold
costs (docs/architecture.md, "The hot path"). Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SNAPSHOT_LINE = re.compile(r"snapshot built in ([\d,.]+) ms")
FOLD_LINE = re.compile(r"replayed ([\d,]+) events .* in ([\d.]+) s")


def read_only(path: Path) -> None:
    """Parse and validate every line of `path` as replay does, fold nothing; print events and seconds."""
    from stream.replay import ReplayCounts, bounded_lines, bulk_gc, open_input, read_events
    from stream.settings import Settings

    limits = Settings().policy().limits
    counts = ReplayCounts()
    source = open_input(str(path))
    started = time.perf_counter()
    with source.lines, bulk_gc():
        for _ in read_events(bounded_lines(source.lines, limits.max_message_bytes), counts, limits):
            pass
    print(f"{counts.events} {time.perf_counter() - started}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="write the generated file here and keep it")
    parser.add_argument("--read-only", type=Path, help=argparse.SUPPRESS)  # the second child's task
    args = parser.parse_args()
    if args.read_only:
        read_only(args.read_only)
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "events.ndjson"
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "stream.cli",
                "simulate",
                "--events",
                str(args.events),
                "--seed",
                str(args.seed),
                "--incident",
                "--out",
                str(path),
            ],
            check=True,
        )
        generated_s = time.perf_counter() - started
        size_mb = path.stat().st_size / 1e6
        print(f"generated {args.events:,} events ({size_mb:,.0f} MB) in {generated_s:.1f} s")

        started = time.perf_counter()
        with tempfile.TemporaryFile("w+") as log:
            child = subprocess.Popen(
                [sys.executable, "-m", "stream.cli", "replay", str(path), "--quiet", "--format", "json"],
                stdout=subprocess.DEVNULL,
                stderr=log,
                # the simulated company bills some accounts in EUR (as `make replay-demo` does)
                env={**os.environ, "LEADLAG_FX_RATES": os.environ.get("LEADLAG_FX_RATES", "EUR=1.08")},
            )
            _, status, usage = os.wait4(child.pid, 0)
            elapsed = time.perf_counter() - started
            log.seek(0)
            summary = log.read().strip()
        if os.waitstatus_to_exitcode(status) != 0:
            print(summary, file=sys.stderr)
            return 1
        lines = summary.splitlines()
        print(next((line for line in reversed(lines) if line.startswith("replayed ")), lines[-1] if lines else ""))
        print(f"replay: {args.events:,} events in {elapsed:.1f} s wall = {args.events / elapsed:,.0f} events/s")
        print(f"replay peak RSS: {usage.ru_maxrss / 1024:,.0f} MiB   cpus: {os.cpu_count()}")
        built = SNAPSHOT_LINE.search(summary)
        if built:
            print(f"final snapshot build: {built.group(1)} ms (target ≤ 50 ms)")
        else:
            print("final snapshot build: not reported by this version of replay")

        reading = subprocess.run(
            [sys.executable, __file__, "--read-only", str(path)], check=True, capture_output=True, text=True
        )
        events, seconds = reading.stdout.split()
        read_rate = int(events) / float(seconds)
        print(
            f"reading alone (parse + validate, nothing folded): {int(events):,} events in {float(seconds):.1f} s"
            f" = {read_rate:,.0f} events/s, {1e6 / read_rate:.1f} µs an event: replay's ceiling on this machine"
        )
        folded = FOLD_LINE.search(summary)
        if folded:  # replay's own clock: reading and folding, without starting Python and building the snapshot
            replayed = int(folded.group(1).replace(",", ""))
            per_event = float(folded.group(2)) * 1e6 / replayed
            folding = per_event - 1e6 / read_rate
            print(f"replay's own time per event: {per_event:.1f} µs, of which folding {folding:.1f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
