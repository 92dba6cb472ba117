"""Running the real `leadlag worker` as a child process in tests, and talking to it over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

WORKER_READY_SECONDS = 90.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get_json(url: str) -> Any:
    status, body = get(url)
    assert status == 200, (url, status, body[:500])
    return json.loads(body)


def wait_until(condition: Callable[[], bool], seconds: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, urllib.error.URLError, json.JSONDecodeError, KeyError, TypeError):
            if condition():
                return
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-6000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}\n--- worker log ---\n{tail}")


def stop_group(process: subprocess.Popen[bytes], how: int = signal.SIGTERM, grace_s: float = 20.0) -> int:
    """Stop a child started with `start_new_session=True` and everything it started; SIGKILL after `grace_s`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, how)
    try:
        return process.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.wait()


class WorkerProcess:
    """`python -m stream.cli worker` with its own settings; always stopped by `stop()`."""

    def __init__(self, broker_url: str, prefix: str, data_dir: Path, **settings: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / f"worker-{prefix}-{self.port}.log"
        self.env = {
            **os.environ,
            "LEADLAG_BROKER": broker_url,
            "LEADLAG_BROKER_KIND": "embedded",
            "LEADLAG_TOPIC_PREFIX": prefix,
            "LEADLAG_APP_ID": f"{prefix}leadlag",
            "LEADLAG_WEB_PORT": str(self.port),
            "LEADLAG_DATA_DIR": str(data_dir),
            "LEADLAG_FX_RATES": "EUR=1.08",
            "LEADLAG_SNAPSHOT_INTERVAL_SECONDS": "2",
            **{f"LEADLAG_{k.upper()}": v for k, v in settings.items()},
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "worker", "--log-level", "info"],
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def status(self) -> dict[str, Any]:
        """`/api/status`: its body comes with 200 when the worker is ready, 503 (same body) while it is not."""
        status, body = get(f"{self.base}/api/status")
        assert status in (200, 503), (status, body[:500])
        return json.loads(body)  # type: ignore[no-any-return]

    def counted(self) -> int:
        """Events judged so far: counted, duplicate, invalid or rejected."""
        counts = self.status()["input"]
        return int(counts["accepted"] + counts["duplicates"] + counts["invalid"] + counts["rejected"])

    def wait_for(self, events: int, seconds: float = WORKER_READY_SECONDS) -> None:
        wait_until(lambda: self.alive() and self.counted() >= events, seconds, f"{events} events judged", self.log)

    def alive(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"worker exited {self.process.returncode}:\n{self.log.read_text()[-6000:]}")
        return True

    def stop(self, grace_s: float = 30.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise AssertionError(f"worker did not stop on SIGTERM within {grace_s} s") from None


@contextlib.contextmanager
def running_worker(broker_url: str, prefix: str, data_dir: Path, **settings: str) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(broker_url, prefix, data_dir, **settings).start()
    try:
        yield worker
    finally:
        worker.stop()


async def produce_events(bootstrap: str, prefix: str, events: Iterable[dict[str, Any]], envelope_size: int = 1) -> int:
    """Produce events with aiokafka as `leadlag simulate` would: keyed single events, or envelopes."""
    from stream.app.topics import Topics
    from stream.produce import messages_of

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=4 * 1024 * 1024)
    await producer.start()
    sent = 0
    try:
        for message in messages_of(events, Topics(prefix), envelope_size):
            await producer.send(message.topic, message.value, key=message.key)
            sent += message.events
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def produce_raw(bootstrap: str, topic: str, payloads: Iterable[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        for payload in payloads:
            await producer.send(topic, payload)
        await producer.flush()
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str, expected: int, seconds: float = 60.0) -> list[bytes]:
    """Read a topic from the beginning until `expected` messages arrived (or the deadline passed)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    values: list[bytes] = []
    deadline = time.monotonic() + seconds
    try:
        while len(values) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                values.extend(record.value or b"" for record in records)
    finally:
        await consumer.stop()
    return values


async def values_of_key(bootstrap: str, topic: str, key: bytes) -> list[bytes]:
    """Every value published under `key` on a topic so far, oldest first (read until the topic is idle)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        while batch := await consumer.getmany(timeout_ms=1500):
            for records in batch.values():
                values.extend(record.value or b"" for record in records if record.key == key)
    finally:
        await consumer.stop()
    return values


async def read_keyed(bootstrap: str, topic: str, key: bytes, seconds: float = 60.0) -> bytes:
    """The latest value of `key` on a topic, waiting until one has been published."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if values := await values_of_key(bootstrap, topic, key):
            return values[-1]
        await asyncio.sleep(1)
    raise AssertionError(f"no message with key {key!r} on {topic} within {seconds:.0f} s")


class LiveProcess(NamedTuple):
    pid: int
    pgid: int
    command: str


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) of a process from /proc; None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[2])


def alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (a dead child its new parent has not reaped yet)."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def processes_with_env(marker: str) -> list[LiveProcess]:
    """Live processes whose environment holds `marker`, other than this one: what a test's children started."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() not in (entry / "environ").read_bytes():
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        stat = _stat(int(entry.name))
        if stat is not None and stat[0] not in ("Z", "X"):
            found.append(LiveProcess(int(entry.name), stat[1], command))
    return found


def group_members(pgid: int) -> list[int]:
    """Live processes of process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[1] == pgid and stat[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members
