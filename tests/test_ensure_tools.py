"""`make test` sets up the system tools it needs first: installs them as root with apt-get, or stops at once.

`tests/ensure-tools.sh` runs here with a PATH of stand-ins, so each case is the script's real
control flow: which tools it finds missing, what it asks apt-get for, what it tells a user who
cannot install.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "ensure-tools.sh"
TOOLS = ("promtool", "prometheus", "amtool", "docker-compose", "chromium", "chromedriver")
PACKAGES = "prometheus prometheus-alertmanager docker-compose chromium chromium-driver"


def stand_in(bin_dir: Path, name: str, body: str = "exit 0") -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def run(bin_dir: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        ["/bin/sh", str(SCRIPT)], env={"PATH": str(bin_dir)}, capture_output=True, text=True, timeout=30, check=False
    )
    return result, time.monotonic() - started


def test_nothing_happens_when_every_tool_is_there(tmp_path: Path) -> None:
    for tool in TOOLS:
        stand_in(tmp_path, tool)
    stand_in(tmp_path, "id", "echo 0")
    stand_in(tmp_path, "apt-get", f"touch {tmp_path}/apt-get-ran")

    result, _ = run(tmp_path)

    assert (result.returncode, result.stderr) == (0, "")
    assert not (tmp_path / "apt-get-ran").exists()


def test_a_user_who_cannot_install_gets_the_command_at_once(tmp_path: Path) -> None:
    stand_in(tmp_path, "promtool")
    stand_in(tmp_path, "prometheus")
    stand_in(tmp_path, "id", "echo 1000")
    stand_in(tmp_path, "apt-get", f"touch {tmp_path}/apt-get-ran")

    result, seconds = run(tmp_path)

    assert result.returncode == 1
    assert "missing system tools: amtool docker-compose chromium chromedriver\n" in result.stderr
    assert (
        "apt-get install -y --no-install-recommends prometheus-alertmanager docker-compose chromium chromium-driver'"
        in result.stderr
    )
    assert not (tmp_path / "apt-get-ran").exists()
    assert seconds < 5


def test_root_without_apt_get_gets_the_command_too(tmp_path: Path) -> None:
    stand_in(tmp_path, "id", "echo 0")

    result, _ = run(tmp_path)

    assert result.returncode == 1
    assert f"apt-get install -y --no-install-recommends {PACKAGES}" in result.stderr


def test_root_installs_the_missing_packages_with_apt_get(tmp_path: Path) -> None:
    stand_in(tmp_path, "id", "echo 0")
    installs = " ".join(f"{tmp_path}/{tool}" for tool in TOOLS)
    # the stand-in apt-get records its arguments and "installs" every tool
    stand_in(
        tmp_path,
        "apt-get",
        f'echo "$@" >> {tmp_path}/apt-get.log\n'
        f'for t in {installs}; do printf "#!/bin/sh\\nexit 0\\n" > "$t"; /bin/chmod 755 "$t"; done',
    )

    result, _ = run(tmp_path)

    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "apt-get.log").read_text().splitlines()
    assert calls == ["update -qq", f"install -y -qq --no-install-recommends {PACKAGES}"]


def test_a_failed_install_is_reported(tmp_path: Path) -> None:
    stand_in(tmp_path, "id", "echo 0")
    stand_in(tmp_path, "apt-get", "exit 0")

    result, _ = run(tmp_path)

    assert result.returncode == 1
    assert "promtool is still missing" in result.stderr
