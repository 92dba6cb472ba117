"""The Alertmanager config is valid and routes leadlag alerts to the leadlag receivers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
INSTALL_HINT = "apt-get install -y prometheus prometheus-alertmanager"


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs amtool offline on the config; a missing binary is a failure, never a skip."""
    binary = shutil.which("amtool")
    assert binary is not None, f"amtool not found: {INSTALL_HINT}"
    return subprocess.run([binary, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def test_the_alertmanager_config_is_valid() -> None:
    result = amtool("check-config", str(CONFIG))
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=TrafficUpConversionDown", "service=leadlag", "scope=channel", "channel=paid"], "leadlag"),
        (["alertname=TrafficUpConversionDown", "service=leadlag", "scope=overall", "channel=all"], "leadlag"),
        (["alertname=LeadlagDown", "service=leadlag", "scope=worker", "severity=critical"], "leadlag-page"),
        (["alertname=SomethingElse", "severity=critical"], "default"),
    ],
)
def test_alerts_route_to_their_receiver(labels: list[str], receiver: str) -> None:
    result = amtool("config", "routes", "test", f"--config.file={CONFIG}", f"--verify.receivers={receiver}", *labels)
    assert result.returncode == 0, f"expected {receiver}:\n{result.stdout}\n{result.stderr}"
    assert result.stdout.strip() == receiver
