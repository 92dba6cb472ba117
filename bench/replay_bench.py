"""Benchmark `leadlag replay`: events/s and peak memory on a generated file of mixed events.

    python bench/replay_bench.py [--events 1000000] [--seed 7] [--keep FILE]

Generates the file first (not timed), then runs `leadlag replay` in a child
process and reports its wall time, events/s and peak RSS as measured by the
operating system, and the time replay reports for building the final snapshot.
Prints numbers; asserts nothing.
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="write the generated file here and keep it")
    args = parser.parse_args()

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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
