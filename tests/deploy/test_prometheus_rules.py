"""The Prometheus config and rules are valid, their promtool unit tests pass, and they use only real metrics."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from stream.metrics import metrics_catalogue

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
INSTALL_HINT = "apt-get install -y prometheus prometheus-alertmanager"
METRIC_NAME = re.compile(r"\bleadlag[_:][a-zA-Z0-9_:]*")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs promtool from the repository root; a missing binary is a failure, never a skip."""
    binary = shutil.which("promtool")
    assert binary is not None, f"promtool not found: {INSTALL_HINT}"
    return subprocess.run([binary, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def assert_succeeds(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{' '.join(result.args)} failed:\n{result.stdout}\n{result.stderr}"


def rule_files() -> list[Path]:
    return sorted((PROMETHEUS / "rules").glob("*.yml"))


def rules() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            found.extend(group["rules"])
    return found


def test_the_prometheus_config_is_valid() -> None:
    assert_succeeds(promtool("check", "config", str(PROMETHEUS / "prometheus.yml")))


def test_the_rule_files_are_valid() -> None:
    assert rule_files(), "no rule files"
    assert_succeeds(promtool("check", "rules", *map(str, rule_files())))


def test_every_alert_fires_and_resolves_in_the_promtool_unit_tests() -> None:
    tests = sorted((PROMETHEUS / "tests").glob("*.yml"))
    assert tests, "no promtool unit tests"
    assert_succeeds(promtool("test", "rules", *map(str, tests)))
    tested = {match for path in tests for match in re.findall(r"alertname: (\w+)", path.read_text())}
    assert tested == {rule["alert"] for rule in rules() if "alert" in rule}


def test_rules_use_only_metrics_the_worker_exposes_or_recording_rules_define() -> None:
    known = {spec.name for spec in metrics_catalogue()} | {rule["record"] for rule in rules() if "record" in rule}
    used: set[str] = set()
    for rule in rules():
        used.update(METRIC_NAME.findall(rule["expr"]))
        for annotation in rule.get("annotations", {}).values():
            used.update(METRIC_NAME.findall(annotation))
    assert used, "no metric names found in the rules"
    assert used <= known, f"unknown metric names: {sorted(used - known)}"


def test_per_channel_alerts_carry_the_scope_alertmanager_inhibits_on() -> None:
    for rule in rules():
        if "alert" in rule:
            assert rule["labels"]["scope"] in {"overall", "channel", "worker"}, rule["alert"]
            assert rule["labels"]["service"] == "leadlag", rule["alert"]
    divergence = [rule["labels"]["scope"] for rule in rules() if rule.get("alert") == "TrafficUpConversionDown"]
    assert sorted(divergence) == ["channel", "overall"]
