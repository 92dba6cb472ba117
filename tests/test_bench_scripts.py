"""The benchmark commands of the README, run small: they keep working and print what they promise."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_the_replay_bench_prints_replay_s_figures_and_reads_every_event_alone() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "replay_bench.py"), "--events", "2000"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    out = done.stdout
    replayed = re.search(r"replayed ([\d,]+) events", out)
    read = re.search(
        r"reading alone \(parse \+ validate, nothing folded\): ([\d,]+) events in [\d.]+ s = ([\d,]+)", out
    )
    assert replayed, out
    assert read, out
    assert read.group(1) == replayed.group(1) == "2,000"
    assert int(read.group(2).replace(",", "")) > 0
    assert re.search(r"replay peak RSS: [\d,]+ MiB", out)
    assert re.search(r"final snapshot build: [\d.]+ ms", out)
    assert re.search(r"replay's own time per event: [\d.]+ µs, of which folding -?[\d.]+ µs", out)
