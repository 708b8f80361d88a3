"""SchedulerConfig and load_config: source precedence, validation messages, secrets, CLI."""

from __future__ import annotations

import os
import re
import tomllib
import traceback
from pathlib import Path

import pytest
from pydantic import ValidationError

from infinite_scheduler.cli import main
from infinite_scheduler.config import AUTO, ENV_PREFIX, SchedulerConfig, load_config
from infinite_scheduler.config_errors import ConfigProblem, mask_url
from infinite_scheduler.errors import ConfigError, SchedulerError
from infinite_scheduler.serve import summary
from repos.base import ShardPolicy
from repos.shards import Granularity

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config.toml"
PASSWORD = "hunter2-s3cret"
MYSQL_URL = f"mysql://app:{PASSWORD}@db.example:3307/jobs"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory (no ./config.toml) with none of our variables set.

    tests/conftest.py strips the variables too; the cwd matters because load_config() reads
    ./config.toml when it exists.
    """
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    return tmp_path


def write_toml(directory: Path, text: str, name: str = "settings.toml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def only_problem(exc: pytest.ExceptionInfo[ConfigError]) -> ConfigProblem:
    assert len(exc.value.errors) == 1, exc.value
    return exc.value.errors[0]


# --- sources and precedence ---------------------------------------------------------------


def test_defaults_load_without_a_file() -> None:
    config = load_config()
    assert config == SchedulerConfig()
    assert (config.fetch_interval_s, config.lookahead_s) == (25, 30)
    assert config.payload_ahead_s == 10
    assert (config.max_jobs_per_fetch, config.max_held, config.batch_size) == (
        10_000,
        100_000,
        1_000,
    )
    assert config.misfire_policy == "fire_once_now"
    assert config.shards.granularity is Granularity.DAY
    assert config.store_url == "sqlite:///var/infinite-scheduler.db"
    assert config.handlers.max_attempts == 5


def test_repo_config_toml_lists_every_key_at_its_default() -> None:
    data = tomllib.loads(REPO_CONFIG.read_text())
    fields = SchedulerConfig.model_fields
    assert set(data) == set(fields)
    for section in ("shards", "store", "handlers", "throttle"):
        sub_fields = type(getattr(SchedulerConfig(), section)).model_fields
        assert set(data[section]) == set(sub_fields), section
    assert load_config(REPO_CONFIG) == SchedulerConfig()


def test_cwd_config_toml_is_read_when_no_path_given(isolated: Path) -> None:
    write_toml(isolated, "batch_size = 500\n", name="config.toml")
    assert load_config().batch_size == 500


def test_toml_overrides_defaults(isolated: Path) -> None:
    path = write_toml(isolated, 'lookahead_s = 45\n[shards]\ngranularity = "hour"\n')
    config = load_config(path)
    assert config.lookahead_s == 45
    assert config.shards.granularity is Granularity.HOUR
    assert config.shards.create_ahead == 3  # the rest of the section keeps its defaults


def test_env_overrides_toml_including_nested_sections(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_toml(
        isolated, "lookahead_s = 45\n[store]\npool_size = 4\nlayout = 'partitioned'\n"
    )
    monkeypatch.setenv("INFINITE_SCHEDULER_LOOKAHEAD_S", "50")
    monkeypatch.setenv("INFINITE_SCHEDULER_STORE__POOL_SIZE", "8")
    monkeypatch.setenv("INFINITE_SCHEDULER_STORE__URL", MYSQL_URL)
    config = load_config(str(path))
    assert config.lookahead_s == 50
    assert config.store.pool_size == 8
    assert config.store.layout == "partitioned"  # from the file: env only replaced pool_size
    assert config.store_url == MYSQL_URL


def test_keyword_overrides_beat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFINITE_SCHEDULER_BATCH_SIZE", "10")
    assert load_config(batch_size=20).batch_size == 20


def test_config_is_frozen() -> None:
    config = load_config()
    with pytest.raises(ValidationError):
        config.batch_size = 5  # type: ignore[misc]


def test_wiring_helpers() -> None:
    config = load_config(shards={"granularity": "hour", "retention_s": 200_000})
    assert config.shard_policy == ShardPolicy(
        granularity=Granularity.HOUR, retention_ms=200_000_000
    )


# --- validation: key, value and source in every message --------------------------------------


@pytest.mark.parametrize(
    ("env", "key", "value", "source", "reason"),
    [
        ({"FETCH_INTERVAL_S": "0"}, "fetch_interval_s", "'0'", "env", "greater than 0"),
        ({"HANDLERS__TIMEOUT_S": "-1"}, "handlers.timeout_s", "'-1'", "env", "greater than 0"),
        ({"PAYLOAD_AHEAD_S": "0"}, "payload_ahead_s", "'0'", "env", "greater than 0"),
        ({"PAYLOAD_AHEAD_S": "soon"}, "payload_ahead_s", "'soon'", "env", "valid number"),
        (
            {"METRICS_PORT": "70000"},
            "metrics_port",
            "'70000'",
            "env",
            "less than or equal to 65535",
        ),
        ({"BATCH_SIZE": "many"}, "batch_size", "'many'", "env", "valid integer"),
        (
            {"MISFIRE_POLICY": "fire_twice"},
            "misfire_policy",
            "'fire_twice'",
            "env",
            "'fire_once_now'",
        ),
        ({"NODE_ID": "node 1/a"}, "node_id", "'node 1/a'", "env", "1-64 characters"),
        ({"SHARDS__CREATE_AHEAD": "0"}, "shards.create_ahead", "'0'", "env", "greater than 0"),
        ({"SHARDS__CREATE_AHEAD": "-1"}, "shards.create_ahead", "'-1'", "env", "greater than 0"),
        ({"SHARDS__RETENTION_S": "0"}, "shards.retention_s", "'0'", "env", "greater than 0"),
        (
            {"SHARDS__RETENTION_S": "-604800"},
            "shards.retention_s",
            "'-604800'",
            "env",
            "greater than 0",
        ),
        (
            {"SHARDS__MAINTENANCE_INTERVAL_S": "0"},
            "shards.maintenance_interval_s",
            "'0'",
            "env",
            "greater than 0",
        ),
        ({"SHARDS__GRANULARITY": "week"}, "shards.granularity", "'week'", "env", "'day' or 'hour'"),
        (
            {"STORE__URL": "mysql://nohost"},
            "store.url",
            "'mysql://nohost'",
            "env",
            "host, user and database are required",
        ),
        (
            {"STORE__URL": "postgres://x"},
            "store.url",
            "'postgres://x'",
            "env",
            "unknown scheme 'postgres'",
        ),
        (
            {"STORE__DRIVER": "pymysql"},
            "store.driver",
            "'pymysql'",
            "env",
            "'asyncmy' or 'aiomysql'",
        ),
    ],
)
def test_bad_env_value_is_named_with_its_variable(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    key: str,
    value: str,
    source: str,
    reason: str,
) -> None:
    for name, raw in env.items():
        monkeypatch.setenv(ENV_PREFIX + name, raw)
    with pytest.raises(ConfigError) as exc:
        load_config()
    problem = only_problem(exc)
    assert (problem.key, problem.value) == (key, value)
    assert problem.source == f"env {ENV_PREFIX}{next(iter(env))}"
    assert reason in problem.reason
    message = str(exc.value)
    assert key in message and value in message and problem.source in message
    assert "pydantic" not in message and "input_type" not in message


def test_bad_file_value_names_the_file(isolated: Path) -> None:
    path = write_toml(isolated, "[handlers]\nmax_attempts = 0\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    problem = only_problem(exc)
    assert (problem.key, problem.value, problem.source) == ("handlers.max_attempts", "0", str(path))
    assert str(exc.value) == (
        f"invalid configuration: handlers.max_attempts = 0 [{path}]: Input should be greater than 0"
    )


def test_lookahead_not_above_fetch_interval_names_both_values_and_sources(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_toml(isolated, "fetch_interval_s = 40\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    problem = only_problem(exc)
    assert (problem.key, problem.value, problem.source) == ("lookahead_s", "30.0", "default")
    assert "greater than fetch_interval_s = 40.0" in problem.reason
    assert f"fetch_interval_s [{path}]" in problem.reason

    monkeypatch.setenv("INFINITE_SCHEDULER_LOOKAHEAD_S", "40")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert only_problem(exc).source == "env INFINITE_SCHEDULER_LOOKAHEAD_S"


@pytest.mark.parametrize(
    ("toml", "key", "reason"),
    [
        ("max_held = 5000\n", "max_held", "at least max_jobs_per_fetch = 10000"),
        (
            "[handlers]\nbackoff_max_s = 0.5\n",
            "handlers.backoff_max_s",
            "at least backoff_base_s = 1.0",
        ),
        (
            "[shards]\nretention_s = 3600\n",
            "shards.retention_s",
            "misfire_horizon_s + lookahead_s = 86430",
        ),
    ],
)
def test_cross_field_errors_name_the_key_they_concern(
    isolated: Path, toml: str, key: str, reason: str
) -> None:
    path = write_toml(isolated, toml)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    problem = only_problem(exc)
    assert (problem.key, problem.source) == (key, str(path))
    assert reason in problem.reason


@pytest.mark.parametrize(
    ("toml", "key", "reason"),
    [
        ("lookahed_s = 40\n", "lookahed_s", "did you mean 'lookahead_s'?"),
        ("[store]\nuurl = 'sqlite:///x.db'\n", "store.uurl", "did you mean 'url'?"),
        ("[handlers]\nzzz = 1\n", "handlers.zzz", "allowed here: concurrency, timeout_s"),
    ],
)
def test_unknown_key_in_toml_is_an_error_naming_it(
    isolated: Path, toml: str, key: str, reason: str
) -> None:
    path = write_toml(isolated, toml)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    problem = only_problem(exc)
    assert (problem.key, problem.source) == (key, str(path))
    assert reason in problem.reason


def test_unknown_env_variable_is_an_error_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFINITE_SCHEDULER_STORE_URL", MYSQL_URL)  # single _ : a typo
    with pytest.raises(ConfigError) as exc:
        load_config()
    problem = only_problem(exc)
    assert (problem.key, problem.source) == ("store_url", "env INFINITE_SCHEDULER_STORE_URL")
    assert "INFINITE_SCHEDULER_STORE__URL" in problem.reason
    assert PASSWORD not in str(exc.value)


def test_every_problem_is_reported_at_once(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_toml(isolated, "batch_size = -3\nmisfire_policy = 'skip'\n")
    monkeypatch.setenv("INFINITE_SCHEDULER_STORE__POOL_SIZE", "0")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert {p.key for p in exc.value.errors} == {"batch_size", "misfire_policy", "store.pool_size"}
    assert str(exc.value).startswith("invalid configuration (3 problems):\n  - ")


def test_node_id_auto_and_explicit() -> None:
    auto = load_config()
    assert auto.node_id == AUTO
    assert re.fullmatch(r"[A-Za-z0-9_.:-]+-\d+-[0-9a-f]{4}", auto.resolved_node_id)
    assert auto.resolved_node_id == auto.resolved_node_id  # fixed for the object's lifetime
    assert len(auto.resolved_node_id) <= 64
    assert load_config(node_id="auto").node_id == AUTO  # never a literal node called "auto"
    assert load_config(node_id="worker-1.eu:a").resolved_node_id == "worker-1.eu:a"
    with pytest.raises(ConfigError) as exc:
        load_config(node_id="x" * 65)
    assert only_problem(exc).source == "argument"


def test_missing_config_path_is_an_error(isolated: Path) -> None:
    missing = isolated / "nope.toml"
    with pytest.raises(ConfigError) as exc:
        load_config(missing)
    problem = only_problem(exc)
    assert (problem.key, problem.value, problem.reason) == (
        "config file",
        repr(str(missing)),
        "no such file",
    )
    assert isinstance(exc.value, SchedulerError)


def test_malformed_toml_is_an_error(isolated: Path) -> None:
    path = write_toml(isolated, "lookahead_s = = 3\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert "cannot be read as TOML" in only_problem(exc).reason
    assert "line 1" in str(exc.value)


def test_bad_database_name_is_explained() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(store={"url": f"mysql://app:{PASSWORD}@db/bad-name"})
    problem = only_problem(exc)
    assert problem.value == "'mysql://app:***@db/bad-name'"
    assert problem.reason == (
        "invalid database name 'bad-name': must be lowercase letters, digits and _, "
        "not starting with a digit, at most 64 characters"
    )


# --- secrets ----------------------------------------------------------------------------------


def test_password_never_in_str_or_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFINITE_SCHEDULER_STORE__URL", MYSQL_URL)
    config = load_config()
    assert config.store_url == MYSQL_URL
    for text in (str(config), repr(config), repr(config.store), config.model_dump_json()):
        assert PASSWORD not in text
    assert PASSWORD not in repr(config.store.target)


@pytest.mark.parametrize(
    "url",
    [
        f"mysql://root:{PASSWORD}@/jobs",  # no host
        f"mysql://root:{PASSWORD}@db:port/jobs",  # port not a number
        f"postgres://root:{PASSWORD}@db/jobs",  # unknown scheme
        f"mysql://root:{PASSWORD}/x@db/jobs",  # unencoded / in the password
        f"mysql://root:{PASSWORD} x@db/bad-name",  # a space in the password, bad database name
    ],
)
def test_password_never_in_error_message(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("INFINITE_SCHEDULER_STORE__URL", url)
    monkeypatch.setenv("INFINITE_SCHEDULER_LOOKAHEAD_S", "1")  # a second error alongside
    with pytest.raises(ConfigError) as exc:
        load_config()
    keys = [p.key for p in exc.value.errors]
    assert "store.url" in keys
    assert PASSWORD not in str(exc.value)
    assert PASSWORD not in repr(exc.value.errors)
    # nor in a traceback: pydantic's own error (which shows raw input) is not chained on
    assert PASSWORD not in "".join(traceback.format_exception(exc.value))
    assert "root:***@" in str(exc.value)


def test_section_given_as_bad_json_is_reported_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFINITE_SCHEDULER_STORE", f'{{"url": "mysql://a:{PASSWORD}@h/x", oops')
    with pytest.raises(ConfigError) as exc:
        load_config()
    problem = only_problem(exc)
    assert (problem.key, problem.source) == ("store", "env INFINITE_SCHEDULER_STORE")
    assert "INFINITE_SCHEDULER_STORE__<KEY>" in problem.reason
    assert PASSWORD not in str(exc.value) and "a:***@h" in str(exc.value)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("mysql://u:p@h/db", "mysql://u:***@h/db"),
        ("mysql://:p@h/db", "mysql://:***@h/db"),
        ("mysql://u:p@x@h/db", "mysql://u:***@h/db"),
        ("mysql://h:3306/db", "mysql://h:3306/db"),
        ("mysql://u@h/db", "mysql://u@h/db"),
        ("sqlite:///var/a@b.db", "sqlite:///var/a@b.db"),
    ],
)
def test_mask_url(text: str, shown: str) -> None:
    assert mask_url(text) == shown


# --- CLI --------------------------------------------------------------------------------------


def test_cli_check_config_accepts_the_repo_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--config", str(REPO_CONFIG)]) == 0
    assert "valid" in capsys.readouterr().out


def test_without_config_toml_summary_and_check_config_say_built_in_defaults(
    isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config"]) == 0
    assert capsys.readouterr().out == "built-in defaults (no config.toml): configuration is valid\n"
    out = summary(load_config(), config_path="config.toml", demo=False)
    assert "  config   built-in defaults (no config.toml)\n" in out
    write_toml(isolated, "batch_size = 500\n", name="config.toml")
    assert main(["check-config"]) == 0
    assert capsys.readouterr().out == "config.toml: configuration is valid\n"
    out = summary(load_config(), config_path="config.toml", demo=True)
    assert "  config   config.toml (demo)\n" in out


def test_cli_bad_config_exits_2_with_one_clear_line(
    isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_toml(isolated, "fetch_interval_s = 30\nlookahead_s = 10\n")
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "lookahead_s = 10.0" in err and "fetch_interval_s = 30.0" in err and str(path) in err


def test_run_summary_shows_the_store_without_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFINITE_SCHEDULER_STORE__URL", MYSQL_URL)
    monkeypatch.setenv("INFINITE_SCHEDULER_NODE_ID", "node-a")
    out = summary(load_config(REPO_CONFIG), config_path=str(REPO_CONFIG), demo=True)
    assert "node-a" in out and "app@db.example:3307/jobs" in out
    assert "every 25 s, lookahead 30 s" in out
    assert PASSWORD not in out


def test_categories_and_the_age_boost_are_read_from_toml(isolated: Path) -> None:
    path = write_toml(
        isolated,
        "[priority]\nage_boost_per_minute = 2.5\n"
        "[categories.reports]\nconcurrency = 3\n[categories.mail]\nrate_per_s = 0.5\n",
    )
    config = load_config(path)
    assert config.priority.age_boost_per_minute == 2.5
    assert {n: (c.concurrency, c.rate_per_s) for n, c in config.categories.items()} == {
        "reports": (3, None),
        "mail": (None, 0.5),
    }


@pytest.mark.parametrize(
    ("toml", "key", "reason"),
    [
        ('[categories."Bad-Name"]\n', "categories", "category name 'Bad-Name' must be"),
        ("[categories.reports]\nconcurrency = 0\n", "categories.reports.concurrency", "greater"),
        ("[categories.reports]\nrate_per_s = 0\n", "categories.reports.rate_per_s", "greater"),
        ("[categories.reports]\nlimit = 3\n", "categories.reports.limit", "unknown key"),
        ("[priority]\nage_boost_per_minute = -1\n", "priority.age_boost_per_minute", "greater"),
    ],
)
def test_bad_categories_and_boosts_are_refused_naming_the_key(
    isolated: Path, toml: str, key: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write_toml(isolated, toml))
    [problem] = caught.value.errors
    assert problem.key == key and reason in problem.reason
