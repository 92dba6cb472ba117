"""`leadlag demo` leaves nothing running, however it is stopped; a worker whose broker vanished stops on SIGTERM.

Each case starts the demo as a terminal would (in a session of its own), waits until the broker,
the worker and the simulator run and the worker folds events, stops it one way, and then checks
every child both by PID and by process group: none may survive. The demo is found by a marker in
its environment, which every child inherits.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from stream.broker import EmbeddedBroker
from stream.simulation import generate_count
from tests.integration.processes import (
    LiveProcess,
    alive,
    free_port,
    get,
    group_members,
    processes_with_env,
    produce_events,
    running_worker,
    wait_until,
)

pytestmark = pytest.mark.integration

CHILDREN_GONE_SECONDS = 30.0
"""The demo gives its children 20 s; the worker bounds its own shutdown to 15 s (a killed demo's children)."""

CRASHING_DEMO = """
import sys

import stream.cli.demo as demo

shown = demo.summary_line


def summary_then_crash(snapshot, elapsed_s):
    if snapshot and snapshot.get("as_of"):
        raise RuntimeError("the demo crashed on purpose")
    return shown(snapshot, elapsed_s)


demo.summary_line = summary_then_crash
from stream.cli.main import main

sys.argv = ["leadlag", *sys.argv[1:]]
main()
"""


def demo_command(port: int) -> list[str]:
    return ["demo", "--web-port", str(port), "--backfill-hours", "24", "--incident-after-minutes", "30"]


@contextmanager
def demo_started(marker: str, argv: list[str], **popen: object) -> Iterator[subprocess.Popen[bytes]]:
    """Start `argv` with `marker` in its environment, in a session of its own; SIGKILL whatever is left after."""
    process = subprocess.Popen(
        argv,
        env={**os.environ, "LEADLAG_DEMO_MARKER": marker},
        start_new_session=True,
        **popen,  # type: ignore[call-overload]
    )
    try:
        yield process
    finally:
        for leftover in processes_with_env(marker):
            os.kill(leftover.pid, signal.SIGKILL)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def demo_children(marker: str, port: int, log: Path) -> list[LiveProcess]:
    """The broker, the worker and the simulator, once the worker has folded events."""

    def folding() -> bool:  # /api/status answers 503 until the worker is ready, with the same document
        _, body = get(f"http://127.0.0.1:{port}/api/status")
        return bool(json.loads(body)["input"]["accepted"] > 0)

    wait_until(folding, 120, "the demo's worker folding events", log)
    children = [
        child
        for child in processes_with_env(marker)
        if "tansu" in child.command or "stream.cli worker" in child.command or "stream.cli simulate" in child.command
    ]
    kinds = sorted("broker" if "tansu" in c.command else c.command.split("stream.cli ")[1].split()[0] for c in children)
    assert kinds == ["broker", "simulate", "worker"], children
    return children


def assert_none_survives(marker: str, children: list[LiveProcess]) -> None:
    """By PID and by process group: every child gone, and nothing else of the demo either."""
    deadline = time.monotonic() + CHILDREN_GONE_SECONDS
    while time.monotonic() < deadline and (
        processes_with_env(marker) or any(alive(child.pid) or group_members(child.pgid) for child in children)
    ):
        time.sleep(0.25)
    assert [child for child in children if alive(child.pid)] == [], "children of the demo survived (by PID)"
    assert {child.pgid: group_members(child.pgid) for child in children} == {child.pgid: [] for child in children}
    assert processes_with_env(marker) == [], "processes of the demo survived"


@pytest.mark.parametrize(
    "stop", ["ctrl-c-piped", "reader-gone", "sigterm", "sighup", "demo-crash", "demo-sigkill"]
)  # fmt: skip
def test_no_process_of_the_demo_survives_its_stop(tmp_path: Path, stop: str) -> None:
    port = free_port()
    marker = f"demo-stops-{port}"
    log = tmp_path / "demo.log"
    command = demo_command(port)
    popen: dict[str, object] = {"stderr": log.open("wb")}
    if stop == "ctrl-c-piped":  # `leadlag demo | tee demo.out`, then Ctrl-C: the terminal signals the whole pipeline
        shell = f"{sys.executable} -m stream.cli {' '.join(command)} | tee {tmp_path / 'demo.out'} > /dev/null"
        argv = ["bash", "-c", shell]
    elif stop == "demo-crash":
        argv = [sys.executable, "-c", CRASHING_DEMO, *command]
        popen["stdout"] = (tmp_path / "demo.out").open("wb")
    else:
        argv = [sys.executable, "-m", "stream.cli", *command]
        popen["stdout"] = subprocess.PIPE if stop == "reader-gone" else (tmp_path / "demo.out").open("wb")
    with demo_started(marker, argv, **popen) as demo:
        if stop == "demo-crash":
            wait_until(lambda: demo.poll() is not None, 120, "the demo to crash", log)
            assert demo.returncode != 0
            assert "the demo crashed on purpose" in log.read_text()
            assert_none_survives(marker, [])
            return
        children = demo_children(marker, port, log)
        if stop == "ctrl-c-piped":
            os.killpg(demo.pid, signal.SIGINT)
        elif stop == "reader-gone":
            assert demo.stdout is not None
            demo.stdout.close()  # the next summary line meets EPIPE
        elif stop == "demo-sigkill":
            os.kill(demo.pid, signal.SIGKILL)  # the demo alone: its children must notice
        else:
            demo.send_signal(signal.SIGTERM if stop == "sigterm" else signal.SIGHUP)
        returncode = demo.wait(60)
        assert_none_survives(marker, children)
    if stop == "demo-sigkill":
        assert returncode == -signal.SIGKILL
        return
    if stop != "ctrl-c-piped":  # there the shell answers tee's end by Ctrl-C (130)
        assert returncode == 0, log.read_text()
    assert "stopped; nothing left running" in log.read_text()


def test_a_worker_whose_broker_vanished_mid_stream_stops_promptly_on_sigterm(tmp_path: Path, topic_prefix: str) -> None:
    with EmbeddedBroker() as broker, running_worker(broker.url, topic_prefix, tmp_path / "data") as worker:
        sent = asyncio.run(produce_events(broker.bootstrap, topic_prefix, generate_count(30_000, seed=3)))
        worker.wait_for(1)
        broker.stop()  # while the worker is still folding the rest
        assert worker.process is not None
        assert worker.process.poll() is None
        time.sleep(1)
        started = time.monotonic()
        os.killpg(worker.process.pid, signal.SIGTERM)
        returncode = worker.process.wait(30)
        stopped_s = time.monotonic() - started
    assert sent == 30_000
    assert stopped_s < 20, f"the worker took {stopped_s:.1f} s to stop"
    assert returncode in (0, 1), worker.log.read_text()[-3000:]
