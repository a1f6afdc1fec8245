"""docker-compose.yml and the Dockerfile stay consistent with the code (no Docker engine needed)."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from dataclasses import fields
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from sessionwatch.cli import build_parser
from streams.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETTING_FIELDS = {f.name for f in fields(Settings)}


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        out.append((keyword.upper(), args.strip()))
        pending = ""
    return out


def last(instructions: list[tuple[str, str]], keyword: str) -> str:
    found = [args for kw, args in instructions if kw == keyword]
    assert found, f"Dockerfile has no {keyword}"
    return found[-1]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def dockerfile_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for kw, args in instructions:
        if kw == "ENV":
            for token in shlex.split(args):
                key, sep, value = token.partition("=")
                assert sep, f"use ENV KEY=value, not the legacy form: ENV {args}"
                env[key] = value
    return env


def service_env(service: dict) -> dict[str, str]:
    """A service's environment as the container sees it (strings), list or mapping form."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.partition("=")[::2] for item in raw)
    return {k: "" if v is None else str(v) for k, v in raw.items()}


def built_from(service: dict) -> Path | None:
    build = service.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        return ROOT / build / "Dockerfile"
    return ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")


def container_env(service: dict) -> dict[str, str]:
    """The image's ENV overridden by the service's environment."""
    dockerfile = built_from(service)
    base = dockerfile_env(dockerfile_instructions(dockerfile)) if dockerfile else {}
    return base | service_env(service)


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """'PLAINTEXT://:9092,CONTROLLER://kafka:9093' -> {name: (host, port)}."""
    out = {}
    for item in value.split(","):
        name, sep, address = item.strip().partition("://")
        assert sep, f"listener {item!r} is not NAME://host:port"
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


def names_of(service_name: str) -> set[str]:
    """Names other containers can reach a service by on the default network."""
    service = SERVICES[service_name]
    names = {service_name}
    if "hostname" in service:
        names.add(service["hostname"])
    return names


def command_of(service: dict) -> list[str]:
    command = service.get("command")
    if command is None:
        dockerfile = built_from(service)
        assert dockerfile, "a service with neither command nor build has nothing to check"
        return exec_form(last(dockerfile_instructions(dockerfile), "CMD"))
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def subcommands() -> set[str]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.choices and a.dest == "command"]
    return set(sub.choices)


SW_SERVICES = [name for name, s in SERVICES.items() if built_from(s) is not None]
DOCKERFILE = dockerfile_instructions(ROOT / "Dockerfile")


def test_services_present():
    assert {"kafka", "worker"} <= set(SERVICES)
    assert SW_SERVICES, "no service is built from the sessionwatch Dockerfile"


@pytest.mark.parametrize("name", list(SERVICES))
def test_every_sessionwatch_variable_is_a_setting(name: str):
    env = container_env(SERVICES[name])
    for var, value in env.items():
        if not var.startswith(ENV_PREFIX):
            continue
        field = var[len(ENV_PREFIX):].lower()
        assert field in SETTING_FIELDS, f"{name}: {var} is no field of Settings"
        Settings.load({var: value})  # raises ConfigError for an unknown or malformed variable


@pytest.mark.parametrize("name", list(SERVICES))
def test_settings_load_with_service_env(name: str):
    Settings.load(container_env(SERVICES[name]))


def test_worker_settings_are_the_production_ones():
    settings = Settings.load(container_env(SERVICES["worker"]))
    assert settings.store == "rocksdb"
    assert settings.partitions >= 1


def test_worker_bootstrap_is_an_advertised_kafka_listener():
    kafka_env = service_env(SERVICES["kafka"])
    bound = listeners(kafka_env["KAFKA_LISTENERS"])
    advertised = listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"])
    controllers = set(kafka_env["KAFKA_CONTROLLER_LISTENER_NAMES"].split(","))
    settings = Settings.load(container_env(SERVICES["worker"]))
    for server in settings.bootstrap_servers:
        host, _, port = server.rpartition(":")
        assert host in names_of("kafka"), f"bootstrap {server}: {host} is not the kafka service"
        matching = [n for n, (h, p) in advertised.items() if h == host and p == int(port)]
        assert matching, f"bootstrap {server} is not among KAFKA_ADVERTISED_LISTENERS {advertised}"
        for listener in matching:
            assert listener not in controllers, f"bootstrap {server} is the controller listener"
            assert bound.get(listener, (None, None))[1] == int(port), (
                f"bootstrap {server}: kafka does not listen on {port} as {listener} ({bound})"
            )


def test_kafka_is_single_node_kraft():
    env = service_env(SERVICES["kafka"])
    assert SERVICES["kafka"]["image"] == "apache/kafka:3.9.0"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["CLUSTER_ID"], "the apache/kafka image will not start in KRaft mode without it"
    bound = listeners(env["KAFKA_LISTENERS"])
    (controller,) = env["KAFKA_CONTROLLER_LISTENER_NAMES"].split(",")
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert len(voters) == 1
    node, _, address = voters[0].partition("@")
    host, _, port = address.rpartition(":")
    assert node == env["KAFKA_NODE_ID"]
    assert host in names_of("kafka") and int(port) == bound[controller][1]
    assert controller not in listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    healthcheck = " ".join(SERVICES["kafka"]["healthcheck"]["test"])
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in healthcheck


@pytest.mark.parametrize("name", SW_SERVICES)
def test_waits_for_a_healthy_kafka(name: str):
    depends = SERVICES[name]["depends_on"]
    assert depends["kafka"]["condition"] == "service_healthy"
    assert "healthcheck" in SERVICES["kafka"]
    assert SERVICES[name]["restart"] == "unless-stopped"


@pytest.mark.parametrize("name", SW_SERVICES)
def test_command_is_a_cli_subcommand(name: str):
    command = command_of(SERVICES[name])
    assert command[0] in subcommands(), f"{name}: {command[0]!r} is not a sessionwatch command"
    build_parser().parse_args(command)  # and its flags parse


def test_dockerfile_cmd_is_a_cli_subcommand():
    command = exec_form(last(DOCKERFILE, "CMD"))
    assert command == ["worker"]
    build_parser().parse_args(command)


def test_worker_data_dir_is_a_named_volume():
    worker = SERVICES["worker"]
    data_dir = str(Settings.load(container_env(worker)).data_dir)
    mounts = {}
    for volume in worker.get("volumes", []):
        if isinstance(volume, str):
            source, _, target = volume.partition(":")
            mounts[target.partition(":")[0]] = source
        else:
            mounts[volume["target"]] = volume.get("source")
    assert data_dir in mounts, f"{data_dir} is not mounted: state would die with the container"
    assert mounts[data_dir] in (COMPOSE.get("volumes") or {}), "not a named volume"


def test_dockerfile_installs_the_pipeline_extra():
    extras = PYPROJECT["project"]["optional-dependencies"]
    installed = set()
    for kw, args in DOCKERFILE:
        if kw == "RUN" and "pip install" in args:
            for group in re.findall(r"\.\[([\w,\s-]+)\]", args):
                installed.update(e.strip() for e in group.split(","))
    assert "pipeline" in installed, "the image must `pip install .[pipeline]`"
    assert installed <= set(extras), f"unknown extras {installed - set(extras)}"


def test_dockerfile_entrypoint_is_the_console_script():
    entrypoint = exec_form(last(DOCKERFILE, "ENTRYPOINT"))
    scripts = PYPROJECT["project"]["scripts"]
    assert entrypoint == ["sessionwatch"]
    assert entrypoint[0] in scripts
    assert scripts[entrypoint[0]] == "sessionwatch.cli:main"


def test_dockerfile_base_meets_requires_python():
    base = last(DOCKERFILE, "FROM").split()[0]
    match = re.fullmatch(r"python:(\d+)\.(\d+)(-slim)?", base)
    assert match, f"unexpected base image {base}"
    minimum = re.fullmatch(r">=\s*(\d+)\.(\d+)", PYPROJECT["project"]["requires-python"])
    assert minimum, "update this test for the new requires-python form"
    assert (int(match[1]), int(match[2])) >= (int(minimum[1]), int(minimum[2]))


def test_dockerfile_runs_as_non_root():
    user = last(DOCKERFILE, "USER").split(":")[0]
    assert user not in ("root", "0")


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule for a top-level entry: the last matching pattern wins, `!` re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if fnmatch.fnmatchcase(path, pattern):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_install_needs():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [s for s in (line.strip() for line in lines) if s and not s.startswith("#")]
    packages = {p.split(".")[0] for p in PYPROJECT["tool"]["setuptools"]["packages"]}
    for needed in ["pyproject.toml", "README.md", *sorted(packages)]:
        assert not _dockerignored(needed, patterns), f".dockerignore drops {needed}"
    for clutter in [".git", ".venv", "tests"]:
        assert _dockerignored(clutter, patterns), f".dockerignore lets in {clutter}"


def test_applier_writes_to_the_compose_redis():
    applier = SERVICES["applier"]
    assert command_of(applier) == ["apply"]
    settings = Settings.load(container_env(applier))
    assert settings.redis, "the applier needs SESSIONWATCH_REDIS"
    parts = urlsplit(settings.redis)
    assert parts.hostname in names_of("redis")
    assert (parts.port or 6379) == 6379
    assert applier["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "healthcheck" in SERVICES["redis"]


def test_redis_keeps_the_denylist_across_restarts():
    redis = SERVICES["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(str(v).endswith(":/data") for v in redis.get("volumes", []))


def test_archiver_writes_to_the_compose_clickhouse():
    archiver = SERVICES["archiver"]
    assert command_of(archiver) == ["archive"]
    settings = Settings.load(container_env(archiver))
    parts = urlsplit(settings.clickhouse)
    assert parts.scheme == "clickhouse" and parts.hostname in names_of("clickhouse")
    assert (parts.port or 9000) == 9000
    assert archiver["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    clickhouse_env = service_env(SERVICES["clickhouse"])
    assert settings.clickhouse_user == clickhouse_env["CLICKHOUSE_USER"]
    assert parts.path.strip("/") == clickhouse_env["CLICKHOUSE_DB"]
    # the password comes from the environment, never written in the file
    assert clickhouse_env["CLICKHOUSE_PASSWORD"].startswith("${")
    assert any(str(v).endswith(":/var/lib/clickhouse") for v in SERVICES["clickhouse"]["volumes"])
