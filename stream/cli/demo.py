"""`leadlag demo`: the embedded broker, a worker and the simulator in one command, with a live summary.

Everything runs on 127.0.0.1 and is stopped on Ctrl-C, SIGTERM, SIGHUP, a
closed output pipe, an error of the demo itself or after `--duration`, leaving
no process behind; children of a demo killed outright (SIGKILL) get a
parent-death signal (`stream.lifeline`). The broker keeps its topics in memory
only: stopping the demo loses them (README.md, "Commands").
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from stream.cli.console import stderr

REFRESH_SECONDS = 3.0

DEMO_MONTHLY_TARGETS = "lead=2800,mql=1200,sql=550,opportunity=280,customer=90"
"""A little above what the simulated company reaches in a month (2,684 leads, 85 customers in January)."""
DEMO_PIPELINE_TARGET = "75000"
DEMO_MAX_FUTURE_HOURS = "8760"
"""The simulated clock runs 600 times faster than the wall clock: 24 h ahead after 144 s, a year after 14.6 h."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fetch_json(url: str, timeout: float = 5.0) -> Any:
    """GET a JSON document; None when the worker is not answering yet."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError):
        return None


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def live_summary(
    snapshot: dict[str, Any] | None,
    status: dict[str, Any] | None,
    elapsed_s: float,
    alerts_view: dict[str, Any] | None = None,
) -> Group:
    """A compact picture of the snapshot: traffic and conversion now, revenue, and the alerts that fire."""
    header = Text(f"leadlag demo · {elapsed_s:,.0f} s", style="bold")
    if not snapshot or snapshot.get("as_of") is None:
        waiting = "waiting for the worker to join the broker and fold the first events…"
        return Group(header, Text(waiting, style="dim"))
    counts = snapshot["input"]
    header.append(
        f" · as of {snapshot['as_of']} · {counts['accepted']:,} events counted, "
        f"{counts.get('invalid', 0) + counts.get('rejected', 0):,} dead-lettered"
    )
    table = Table(title="last 24 h by channel", title_justify="left", expand=False)
    for column in ("channel", "sessions", "visitors", "leads", "visit→lead"):
        table.add_column(column, justify="left" if column == "channel" else "right")
    traffic = snapshot["windows"]["24h"]["traffic"]
    for name, row in [("all", traffic), *sorted(traffic.get("by_channel", {}).items())]:
        table.add_row(
            name,
            f"{row['sessions']:,}",
            f"{row['unique_visitors']:,}",
            f"{row['new_leads']:,}",
            _pct(row.get("visit_to_lead_rate")),
        )
    revenue = snapshot["revenue"]
    currency = snapshot["reporting_currency"]
    money = Text(
        f"MRR {revenue['mrr']:,.2f} {currency} · ARR {revenue['arr']:,.2f} · paying customers "
        f"{revenue['paying_customers']:,}"
    )
    alerts = []
    for verdict in snapshot.get("divergence", []):
        scope = verdict.get("channel") or "overall"
        if verdict["firing"]:
            alerts.append(Text(f"FIRING traffic up, conversion down — {scope}: {verdict['reason']}", style="bold red"))
    if not alerts:
        alerts.append(Text("no divergence alert: traffic and conversion move together", style="green"))
    for check in (alerts_view or {}).get("checks", []):
        if check["firing"]:
            scope = ", ".join(f"{name}={value}" for name, value in sorted(check["labels"].items())) or "overall"
            alerts.append(Text(f"FIRING {check['alert_name']} — {scope}: {check['reason']}", style="red"))
    lag = 0
    if status:
        for partitions in status.get("runtime", {}).get("consumer_lag", {}).values():
            lag += sum(partitions.values())
    footer = Text(f"consumer lag {lag:,} messages · Ctrl-C stops everything", style="dim")
    return Group(header, table, money, *alerts, footer)


STOP_GRACE_SECONDS = 20.0
"""How long the worker and the simulator get to stop on SIGTERM before they are killed (the worker bounds its
own shutdown well below this, also when its broker is gone: see docs/architecture.md, "Stopping")."""


class StopRequest:
    """Why the demo stops: a signal (SIGINT, SIGTERM, SIGHUP) or its output closed; a second signal kills at once.

    Its handlers only set flags, so no Ctrl-C can interrupt the demo halfway through stopping its children.
    """

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.signals = 0
        self.reason: str | None = None

    def on_signal(self, signum: int, _frame: object) -> None:
        self.signals += 1
        self.stop(signal.Signals(signum).name)

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.requested.set()

    def kill_now(self) -> bool:
        return self.signals >= 2


class SummaryConsole(Console):
    """Rich's console, except that a closed output pipe stops the demo in order instead of exiting at once."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        detach_stdout()
        raise BrokenPipeError("the demo's output was closed")


def detach_stdout() -> None:
    """Point stdout at /dev/null: its reader is gone (EPIPE), and nothing may fail writing to it any more."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def summary_line(snapshot: dict[str, Any] | None, elapsed_s: float) -> str:
    """The summary in one line, for output that is not a terminal (a pipe, `| tee demo.log`)."""
    if not snapshot or snapshot.get("as_of") is None:
        return f"{elapsed_s:,.0f} s · waiting for the worker"
    counts = snapshot["input"]
    traffic = snapshot["windows"]["24h"]["traffic"]
    revenue = snapshot["revenue"]
    firing = [v.get("channel") or "overall" for v in snapshot.get("divergence", []) if v["firing"]]
    return (
        f"{elapsed_s:,.0f} s · as of {snapshot['as_of']} · {counts['accepted']:,} events · 24h sessions "
        f"{traffic['sessions']:,}, leads {traffic['new_leads']:,}, visit→lead {_pct(traffic.get('visit_to_lead_rate'))}"
        f" · MRR {revenue['mrr']:,.2f} {snapshot['reporting_currency']} · traffic up, conversion down: "
        f"{'FIRING ' + ', '.join(firing) if firing else 'no'}"
    )


def demo_command(
    duration: Annotated[
        float | None, typer.Option(help="Stop by itself after this many seconds (default: run until Ctrl-C).")
    ] = None,
    web_port: Annotated[int, typer.Option(help="Port of /metrics and the JSON views (0: any free port).")] = 6066,
    speed: Annotated[
        float, typer.Option(help="Simulated seconds per real second (600: a simulated day in 2.4 minutes).")
    ] = 600.0,
    backfill_hours: Annotated[
        float, typer.Option(help="History produced at once, so the window has its baseline a week earlier.")
    ] = 192.0,
    incident_after_minutes: Annotated[float, typer.Option(help="Start the scripted incident after this long.")] = 1.0,
    incident_minutes: Annotated[float, typer.Option(help="How long the incident lasts (real minutes).")] = 4.0,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 7,
) -> None:
    """Start the embedded broker, a worker and a simulator, and show the live numbers.

    The simulated company's traffic rises while its conversion falls after --incident-after-minutes: watch
    the divergence alert fire in the summary and on /metrics. Ctrl-C stops everything.
    """
    from stream.broker import port_is_free

    port = web_port or free_port()
    if not port_is_free(port):
        stderr.print(f"[red]error:[/] port {port} is in use: pass --web-port with a free port (0 picks one)")
        raise typer.Exit(2)
    stop = StopRequest()
    # Ctrl-C, `kill`, a closed terminal: each only sets a flag, and the children are stopped below whatever
    # happens; should the demo die without it (SIGKILL), its children get their parent-death signal
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, stop.on_signal) for signum in handled}
    try:
        _run_demo(stop, port, duration, speed, backfill_hours, incident_after_minutes, incident_minutes, seed)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if stop.reason == "output closed":
        detach_stdout()
    with contextlib.suppress(Exception):
        stderr.print("stopped; nothing left running.")


def _run_demo(
    stop: StopRequest,
    port: int,
    duration: float | None,
    speed: float,
    backfill_hours: float,
    incident_after_minutes: float,
    incident_minutes: float,
    seed: int,
) -> None:
    from stream.broker import EmbeddedBroker
    from stream.lifeline import die_with_parent, stop_process_groups

    base = f"http://127.0.0.1:{port}"
    children: list[subprocess.Popen[bytes]] = []

    def announce_kill(process: subprocess.Popen[bytes]) -> None:
        name = "the worker" if process is children[0] else "the simulator"
        stderr.print(f"{name} did not stop in time; killing it", highlight=False)

    with tempfile.TemporaryDirectory(prefix="leadlag-demo-") as tmp, EmbeddedBroker() as broker:
        logs = Path(tmp)
        env = {
            **os.environ,
            "LEADLAG_BROKER": broker.url,
            "LEADLAG_BROKER_KIND": "embedded",
            "LEADLAG_WEB_PORT": str(port),
            # a fresh data directory for a fresh broker: the demo never meets a store built on another one
            "LEADLAG_DATA_DIR": str(logs / "data"),
            "LEADLAG_FX_RATES": os.environ.get("LEADLAG_FX_RATES", "EUR=1.08"),
            # the same hours a week earlier: against the day before, a Monday looks like a surge and a
            # weekend hides the incident (the simulated site is quieter at weekends)
            "LEADLAG_DIVERGENCE_BASELINE": os.environ.get("LEADLAG_DIVERGENCE_BASELINE", "week_ago"),
            # OKRs for the simulated company (about 5,000 weekday sessions): drawn on the funnel dashboard
            "LEADLAG_MONTHLY_TARGETS": os.environ.get("LEADLAG_MONTHLY_TARGETS", DEMO_MONTHLY_TARGETS),
            "LEADLAG_PIPELINE_TARGET": os.environ.get("LEADLAG_PIPELINE_TARGET", DEMO_PIPELINE_TARGET),
            # the simulator runs ten minutes of company time per second, past the wall clock within minutes:
            # a year's allowance keeps its events countable for the demo's whole life
            "LEADLAG_MAX_FUTURE_HOURS": os.environ.get("LEADLAG_MAX_FUTURE_HOURS", DEMO_MAX_FUTURE_HOURS),
        }
        with contextlib.suppress(Exception):
            stderr.print(
                f"embedded broker on {broker.bootstrap} (memory only: stopping the demo loses every topic)\n"
                f"live page:  {base}/\n"
                f"metrics:    {base}/metrics\nJSON views: {base}/api/snapshot  {base}/api/status  "
                f"{base}/api/alerts\nCtrl-C stops everything.",
                highlight=False,
            )
        try:
            if not stop.requested.is_set():
                children.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "stream.cli", "worker", "--log-level", "warning"],
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=(logs / "worker.log").open("wb"),
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                        preexec_fn=die_with_parent(signal.SIGTERM),  # it bounds its own shutdown
                    )
                )
            if not stop.requested.is_set():
                children.append(
                    subprocess.Popen(
                        [
                            sys.executable, "-m", "stream.cli", "simulate",
                            "--broker", broker.url,
                            "--live",
                            "--speed", str(speed),
                            "--backfill-hours", str(backfill_hours),
                            "--incident-after-minutes", str(incident_after_minutes),
                            "--incident-minutes", str(incident_minutes),
                            "--seed", str(seed),
                        ],
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=(logs / "simulator.log").open("wb"),
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                        preexec_fn=die_with_parent(signal.SIGKILL),  # nothing to keep once the demo is gone
                    )
                )  # fmt: skip
            if len(children) == 2:
                _show_until_stopped(stop, base, duration, children[0], logs / "worker.log")
        finally:
            # the terminal may already be gone (SIGHUP): stopping the children must not depend on printing
            with contextlib.suppress(Exception):
                stderr.print("stopping the simulator, the worker and the broker…")
            stop_process_groups(children, STOP_GRACE_SECONDS, kill_now=stop.kill_now, on_kill=announce_kill)


def _show_until_stopped(
    stop: StopRequest, base: str, duration: float | None, worker: subprocess.Popen[bytes], worker_log: Path
) -> None:
    """Refresh the summary until a stop is requested, `duration` passed or the worker died (typer.Exit(1))."""
    console = SummaryConsole()
    started = time.monotonic()
    live = Live(live_summary(None, None, 0), console=console, auto_refresh=False) if console.is_terminal else None
    try:
        if live is not None:
            live.start(refresh=True)
        while not stop.requested.is_set() and (duration is None or time.monotonic() - started < duration):
            if worker.poll() is not None:
                with contextlib.suppress(Exception):
                    stderr.print(f"[red]the worker stopped (exit {worker.returncode}); its log:[/]")
                    stderr.print(worker_log.read_text(errors="replace")[-4000:], highlight=False)
                raise typer.Exit(1)
            snapshot = fetch_json(f"{base}/api/snapshot")
            elapsed = time.monotonic() - started
            if live is not None:
                status = fetch_json(f"{base}/api/status")
                alerts = fetch_json(f"{base}/api/alerts")
                live.update(live_summary(snapshot, status, elapsed, alerts), refresh=True)
            else:
                console.print(summary_line(snapshot, elapsed), highlight=False, soft_wrap=True)
                console.file.flush()
            stop.requested.wait(REFRESH_SECONDS)
    except BrokenPipeError:  # `leadlag demo | tee demo.log` and tee is gone: stop, as `yes | head` does
        stop.stop("output closed")
        detach_stdout()
    finally:
        if live is not None:
            try:
                live.stop()
            except OSError:  # EPIPE, or EIO from a terminal that hung up
                stop.stop("output closed")
                detach_stdout()
