"""The `leadlag` command: how a person drives the processor. Each command lives in its own module."""

from __future__ import annotations

import typer

from stream.cli.bench import bench_command
from stream.cli.broker import broker_command
from stream.cli.demo import demo_command
from stream.cli.replay import replay_command
from stream.cli.simulate import simulate_command
from stream.cli.worker import worker_command

app = typer.Typer(
    name="leadlag",
    help=(
        "Real-time revenue-funnel metrics from go-to-market events: traffic, leads, funnel, "
        "MRR, churn, CAC, LTV and the 'traffic up, conversion down' alert.\n\n"
        "Settings come from LEADLAG_* environment variables (see the README); options override them."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("demo")(demo_command)
app.command("replay")(replay_command)
app.command("simulate")(simulate_command)
app.command("worker")(worker_command)
app.command("broker")(broker_command)
app.command("bench")(bench_command)


def main() -> None:
    app()
