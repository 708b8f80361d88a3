"""SchedulerConfig: every setting, read once, validated before anything opens.

Sources, lowest to highest priority: field defaults < the TOML file < environment variables
``INFINITE_SCHEDULER_<KEY>`` (sections with ``__``: ``INFINITE_SCHEDULER_STORE__URL``) <
keyword overrides given to :func:`load_config`. Only :func:`load_config` (and pydantic-settings
under it) reads the environment; the engine receives the finished, frozen object.

A bad setting raises :class:`~infinite_scheduler.errors.ConfigError` naming the dotted key, the
bad value (store passwords masked), where it came from, and what is allowed.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from infinite_scheduler.config_errors import (
    ConfigProblem,
    Conflict,
    ConflictingSettings,
    allowed_keys,
    show_value,
    validation_problems,
)
from infinite_scheduler.errors import ConfigError, EntitySpecError
from infinite_scheduler.membership import timing_conflicts
from repos.base import ShardPolicy
from repos.entity import DEFAULT_MAX_PAYLOAD_BYTES, PAYLOAD_BYTES_CEILING
from repos.shards import Granularity
from repos.urls import Driver, LayoutName, MysqlUrl, SqliteUrl, parse_store_url

ENV_PREFIX = "INFINITE_SCHEDULER_"
DEFAULT_CONFIG_FILE = Path("config.toml")
DEFAULT_STORE_URL = "sqlite:///var/infinite-scheduler.db"
#: ``node_id`` value that asks for a generated id (matched case-insensitively).
AUTO = "AUTO"
#: The only address an open API (api.allow_open) may listen on.
LOCALHOST = "127.0.0.1"
_NODE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
#: A category's name: stored in each of its jobs' rows (repos/options.py, MAX_CATEGORY).
CATEGORY_NAME = re.compile(r"[a-z0-9_]{1,64}")

MisfirePolicyName = Literal["fire_once_now", "do_nothing"]
LogLevel = Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"]

#: The TOML source of the load_config call in progress; a ContextVar because
#: settings_customise_sources is a classmethod and cannot take per-call arguments.
_toml_source: ContextVar[TomlConfigSettingsSource | None] = ContextVar(
    "infinite_scheduler_toml_source", default=None
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ShardsConfig(_Section):
    """``[shards]``: how rows are spread over shards and how long shards live."""

    granularity: Granularity = Granularity.DAY
    create_ahead: PositiveInt = 3
    retention_s: PositiveInt = 7 * 86_400
    maintenance_interval_s: PositiveFloat = 300.0


class StoreConfig(_Section):
    """``[store]``: where rows live. `url` is a SecretStr so no repr or log shows the password."""

    url: SecretStr = SecretStr(DEFAULT_STORE_URL)
    layout: LayoutName = "multi-table"
    driver: Driver = "asyncmy"
    pool_size: PositiveInt = 10
    pool_recycle_s: PositiveInt = 3600
    connect_timeout_s: PositiveFloat = 5.0
    create_missing: bool = False
    #: The operator's word that engines write through several Galera nodes at once; without it
    #: an engine writing through another node than the live ones is refused at join
    #: (repos/server_guard.py).
    galera_multi_writer: bool = False
    max_payload_bytes: int = Field(
        default=DEFAULT_MAX_PAYLOAD_BYTES, ge=1, le=PAYLOAD_BYTES_CEILING
    )

    @field_validator("url")
    @classmethod
    def _parse_url(cls, url: SecretStr) -> SecretStr:
        try:
            parse_store_url(url.get_secret_value())
        except EntitySpecError as exc:
            raise ValueError(str(exc)) from None
        return url

    @property
    def target(self) -> SqliteUrl | MysqlUrl:
        """The parsed URL (the password stays out of its repr)."""
        return parse_store_url(self.url.get_secret_value())


class HandlersConfig(_Section):
    """``[handlers]``: how user handlers run and are retried."""

    concurrency: PositiveInt = 1000
    timeout_s: PositiveFloat = 30.0
    max_attempts: PositiveInt = 5
    backoff_base_s: PositiveFloat = 1.0
    backoff_max_s: PositiveFloat = 300.0
    drain_timeout_s: PositiveFloat = 10.0
    #: Threads for sync handlers; 0: as many as `concurrency` (started only when needed).
    threads: int = Field(default=0, ge=0)
    #: Warn when the event loop was blocked this long (an async handler that blocks).
    loop_lag_warn_s: PositiveFloat = 0.5

    @model_validator(mode="after")
    def _check_backoff(self) -> Self:
        if self.backoff_max_s < self.backoff_base_s:
            reason = f"must be at least backoff_base_s = {self.backoff_base_s}"
            raise ConflictingSettings(
                [Conflict("backoff_max_s", self.backoff_max_s, reason, ("backoff_base_s",))]
            )
        return self


class ClusterConfig(_Section):
    """``[cluster]``: how nodes sharing a store watch each other (heartbeat_interval_s <
    node_timeout_s <= lookahead_s, checked with the top-level settings)."""

    #: Every node renews its row in the store's nodes table this often.
    heartbeat_interval_s: PositiveFloat = 2.0
    #: A node whose heartbeat is this old by the database's clock is dead; a node that could
    #: not renew for this long minus one interval stops firing until it renews.
    node_timeout_s: PositiveFloat = 10.0

    @property
    def heartbeat_interval_ms(self) -> int:
        return int(self.heartbeat_interval_s * 1000)

    @property
    def node_timeout_ms(self) -> int:
        return int(self.node_timeout_s * 1000)


class DependenciesConfig(_Section):
    """``[dependencies]``: the release of jobs waiting for others (one node, under a lease)."""

    #: The holder of the lease looks at the waiting jobs this often: a job whose dependencies
    #: are done becomes claimable within about this long (and fires at its own time).
    poll_interval_s: PositiveFloat = 1.0


class CategoryConfig(_Section):
    """``[categories.NAME]``: a category of jobs and its limits on each node (none: no limit)."""

    #: Handlers of the category running at once on a node, at most.
    concurrency: PositiveInt | None = None
    #: Handlers of the category started per second on a node, at most (evenly spaced).
    rate_per_s: PositiveFloat | None = None


class PriorityConfig(_Section):
    """``[priority]``: the order of jobs due while more are due than handlers can run."""

    #: Points of priority a job gains per minute overdue (its effective priority).
    age_boost_per_minute: NonNegativeFloat = 10.0


class SchedulesConfig(_Section):
    """``[schedules]``: materialisation of recurring schedules (infinite_scheduler/schedules/),
    run by one node at a time under the lease ``schedules``."""

    #: A pass every this often turns the occurrences coming due into one-shot rows.
    interval_s: PositiveFloat = 5.0
    #: Schedules read, and occurrences stored, per batch.
    batch_size: PositiveInt = 250
    #: Occurrences of one schedule made per pass at most (a per-second trigger's window).
    max_per_schedule: PositiveInt = 1_000


class ApiConfig(_Section):
    """``[api]``: the HTTP management API (infinite_scheduler/api/), inside ``run`` and as
    ``infinite-scheduler api``."""

    #: TCP port; 0 turns the API off in ``run``.
    port: int = Field(default=8464, ge=0, le=65535)
    #: Address to listen on; 127.0.0.1 keeps it on this machine.
    host: str = Field(default="127.0.0.1", min_length=1)
    #: Serve requests without a token (as ADMIN): only with no token stored and host 127.0.0.1.
    allow_open: bool = False
    #: Largest request body taken; larger ones get 413 before they are read.
    max_body_bytes: int = Field(default=2_097_152, ge=1024)

    @model_validator(mode="after")
    def _open_only_locally(self) -> Self:
        if self.allow_open and self.host != LOCALHOST:
            reason = f"an open API (no token) listens on {LOCALHOST} only, not {self.host!r}"
            raise ConflictingSettings([Conflict("allow_open", self.allow_open, reason, ("host",))])
        return self


class HistoryConfig(_Section):
    """``[history]``: one row per attempt (repos/history.py), written with the acks."""

    #: Write the rows (false: no history writes at all, and no history tables made).
    enabled: bool = True
    #: Days a day's history table is kept after the day ends, then dropped whole.
    retention_days: PositiveInt = 7
    #: An attempt fired more than this after its due time counts as late in the SLA summary.
    late_threshold_ms: int = Field(default=1000, ge=0)

    @property
    def retention_ms(self) -> int:
        return self.retention_days * 86_400_000


class ThrottleConfig(_Section):
    """``[throttle]``: limits on this process's own CPU and memory, past which the engine
    claims less until it is back under them (infinite_scheduler/throttle.py). Off by default:
    how much of a core or of memory an engine may use depends on where it runs (a container's
    quota, other services on the host), which only the operator knows."""

    #: CPU over the last check interval, percent of one core (threads count: may pass 100).
    cpu_percent: NonNegativeFloat = 0.0
    #: Resident memory, in MB.
    memory_mb: NonNegativeFloat = 0.0
    #: Seconds between two measurements: the CPU window, and how soon a throttle starts or ends.
    check_interval_s: PositiveFloat = 5.0


class SchedulerConfig(BaseSettings):
    """All settings of one engine node. Frozen: read once, then only passed around.

    Build it with :func:`load_config`. ``SchedulerConfig()`` alone reads defaults and the
    environment but no file, and raises pydantic's ValidationError rather than ConfigError.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    node_id: str = AUTO
    fetch_interval_s: PositiveFloat = 25.0
    near_poll_interval_s: PositiveFloat = 0.5
    lookahead_s: PositiveFloat = 30.0
    payload_ahead_s: PositiveFloat = 10.0
    max_jobs_per_fetch: PositiveInt = 10_000
    max_held: PositiveInt = 100_000
    batch_size: PositiveInt = 1_000
    misfire_policy: MisfirePolicyName = "fire_once_now"
    misfire_horizon_s: PositiveInt = 86_400
    misfire_threshold_s: PositiveFloat = 60.0
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    #: Address the /metrics endpoint listens on; 0.0.0.0 lets a Prometheus elsewhere scrape it.
    metrics_host: str = Field(default=LOCALHOST, min_length=1)
    log_level: LogLevel = "INFO"
    shards: ShardsConfig = Field(default_factory=ShardsConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    handlers: HandlersConfig = Field(default_factory=HandlersConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    dependencies: DependenciesConfig = Field(default_factory=DependenciesConfig)
    priority: PriorityConfig = Field(default_factory=PriorityConfig)
    categories: dict[str, CategoryConfig] = Field(default_factory=dict)
    schedules: SchedulesConfig = Field(default_factory=SchedulesConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    history: HistoryConfig = Field(default_factory=HistoryConfig)
    throttle: ThrottleConfig = Field(default_factory=ThrottleConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Overrides > env > TOML > defaults; no .env or secrets dir, so nothing reads them."""
        toml = _toml_source.get()
        return (
            (init_settings, env_settings) if toml is None else (init_settings, env_settings, toml)
        )

    @field_validator("node_id")
    @classmethod
    def _check_node_id(cls, node_id: str) -> str:
        if node_id.upper() == AUTO:
            return AUTO
        if not _NODE_ID.fullmatch(node_id):
            raise ValueError(f"must be {AUTO} or 1-64 characters from A-Z a-z 0-9 _ . : -")
        return node_id

    @field_validator("categories")
    @classmethod
    def _check_category_names(cls, categories: dict[str, CategoryConfig]) -> Any:
        bad = [name for name in categories if not CATEGORY_NAME.fullmatch(name)]
        if bad:
            raise ValueError(
                f"category name {bad[0]!r} must be 1-64 characters from a-z 0-9 _"
                " (it is stored in each of its jobs' rows)"
            )
        return categories

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, level: object) -> object:
        return level.upper() if isinstance(level, str) else level

    @model_validator(mode="after")
    def _check_cross_fields(self) -> Self:
        conflicts: list[Conflict] = []
        if self.lookahead_s <= self.fetch_interval_s:
            reason = f"must be greater than fetch_interval_s = {self.fetch_interval_s}, or jobs due between two fetches are fetched late"
            conflicts.append(
                Conflict("lookahead_s", self.lookahead_s, reason, ("fetch_interval_s",))
            )
        if self.max_held < self.max_jobs_per_fetch:
            reason = f"must be at least max_jobs_per_fetch = {self.max_jobs_per_fetch}"
            conflicts.append(Conflict("max_held", self.max_held, reason, ("max_jobs_per_fetch",)))
        needed_s = self.misfire_horizon_s + self.lookahead_s
        if self.shards.retention_s < needed_s:
            reason = f"must be at least misfire_horizon_s + lookahead_s = {needed_s:g}, or shards holding rows that can still fire are dropped"
            related = ("misfire_horizon_s", "lookahead_s")
            conflicts.append(
                Conflict("shards.retention_s", self.shards.retention_s, reason, related)
            )
        conflicts += timing_conflicts(
            heartbeat_interval_s=self.cluster.heartbeat_interval_s,
            node_timeout_s=self.cluster.node_timeout_s,
            lookahead_s=self.lookahead_s,
        )
        if conflicts:
            raise ConflictingSettings(conflicts)
        return self

    @cached_property
    def resolved_node_id(self) -> str:
        """`node_id`, or for AUTO ``hostname-pid-<4 hex>``: unique per process, fixed per object."""
        if self.node_id != AUTO:
            return self.node_id
        host = re.sub(r"[^A-Za-z0-9_.:-]", "-", socket.gethostname())[:40] or "host"
        return f"{host}-{os.getpid()}-{secrets.token_hex(2)}"

    @property
    def store_url(self) -> str:
        """The store URL with its password, for the code that opens the store (never log it)."""
        return self.store.url.get_secret_value()

    @property
    def shard_policy(self) -> ShardPolicy:
        return ShardPolicy(
            granularity=self.shards.granularity, retention_ms=self.shards.retention_s * 1000
        )


def load_config(path: str | Path | None = None, **overrides: Any) -> SchedulerConfig:
    """Read defaults, then `path` (None: ./config.toml if present), then env, then `overrides`.

    Raises ConfigError listing every bad setting; a `path` that does not exist is an error,
    never a silent fallback to defaults.
    """
    toml_path, toml_label = _locate(path)
    toml = _read_toml(toml_path, toml_label) if toml_path is not None else None
    provenance = _Provenance(
        overrides=overrides,
        env=_prefixed_env(os.environ),
        toml=toml.toml_data if toml is not None else {},
        toml_label=toml_label,
    )
    problems = _unknown_env_keys(provenance.env, os.environ)
    token = _toml_source.set(toml)
    try:
        config = SchedulerConfig(**overrides)
    except ValidationError as exc:
        problems.extend(
            validation_problems(exc, source_of=provenance.source_of, model=SchedulerConfig)
        )
    except SettingsError as exc:
        problems.append(_settings_problem(exc, provenance))
    finally:
        _toml_source.reset(token)
    if problems:
        raise ConfigError(problems)
    return config


def _locate(path: str | Path | None) -> tuple[Path | None, str]:
    """The TOML file to read (None: none) and how messages name it."""
    if path is None:
        found = DEFAULT_CONFIG_FILE.is_file()
        return (DEFAULT_CONFIG_FILE if found else None), str(DEFAULT_CONFIG_FILE)
    toml_path = Path(path)
    if not toml_path.is_file():
        reason = "is a directory, not a file" if toml_path.is_dir() else "no such file"
        raise _file_error(str(path), reason)
    return toml_path, str(path)


def _read_toml(path: Path, label: str) -> TomlConfigSettingsSource:
    try:
        return TomlConfigSettingsSource(SchedulerConfig, toml_file=path)
    except (OSError, ValueError) as exc:  # TOMLDecodeError, UnicodeDecodeError: ValueErrors
        raise _file_error(label, f"cannot be read as TOML: {exc}") from None


def _file_error(label: str, reason: str) -> ConfigError:
    problem = ConfigProblem(
        key="config file", value=show_value(label), source="argument", reason=reason
    )
    return ConfigError([problem])


def _prefixed_env(environ: Mapping[str, str]) -> dict[str, str]:
    """Our variables, by upper-cased name (pydantic-settings matches them case-insensitively)."""
    return {name.upper(): name for name in environ if name.upper().startswith(ENV_PREFIX)}


def _unknown_env_keys(env: Mapping[str, str], environ: Mapping[str, str]) -> list[ConfigProblem]:
    """Top-level typos: pydantic-settings ignores unknown variables (nested ones it reports)."""
    known = allowed_keys(SchedulerConfig, ())
    problems = []
    for upper, name in env.items():
        key = upper.removeprefix(ENV_PREFIX).split("__")[0].lower()
        if key not in known:
            value = show_value(environ.get(name, ""))
            reason = "unknown key" + _section_hint(key)
            problems.append(
                ConfigProblem(key=key, value=value, source=f"env {name}", reason=reason)
            )
    return problems


def _section_hint(key: str) -> str:
    """``store_url`` is the likely typo for ``STORE__URL``: say so."""
    sections = ("shards", "store", "handlers", "cluster", "priority", "categories", "api")
    for section in (*sections, "history", "throttle"):
        if key.startswith(section + "_"):
            rest = key[len(section) + 1 :]
            return f"; section keys take a double underscore: {ENV_PREFIX}{section.upper()}__{rest.upper()}"
    return ""


def _settings_problem(exc: SettingsError, provenance: _Provenance) -> ConfigProblem:
    """pydantic-settings could not decode a variable: a whole section given as bad JSON."""
    match = re.search(r'field "([^"]+)"', str(exc))
    key = match.group(1) if match else "config"
    name = provenance.env.get(ENV_PREFIX + key.upper())
    value = show_value(os.environ.get(name, "")) if name else "?"
    reason = (
        f"not a JSON object; or set one key per variable: {ENV_PREFIX}{key.upper()}__<KEY>"
        if name
        else str(exc)
    )
    return ConfigProblem(key=key, value=value, source=provenance.source_of(key), reason=reason)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Provenance:
    """Answers "where did this key's value come from", highest-priority source first."""

    overrides: Mapping[str, Any]
    env: Mapping[str, str]  #: upper-cased name -> name as set
    toml: Mapping[str, Any]
    toml_label: str

    def source_of(self, key: str) -> str:
        parts = key.split(".")
        if _holds(self.overrides, parts):
            return "argument"
        for depth in range(len(parts), 0, -1):
            name = self.env.get(ENV_PREFIX + "__".join(parts[:depth]).upper())
            if name is not None:
                return f"env {name}"
        if _holds(self.toml, parts):
            return self.toml_label
        return "default"


def _holds(tree: Mapping[str, Any], parts: list[str]) -> bool:
    """Whether `tree` sets the dotted key; keys match case-insensitively, like the sources."""
    node: Any = tree
    for part in parts:
        if not isinstance(node, Mapping):
            return True  # a whole section given as one value holds everything under it
        match = next((k for k in node if str(k).lower() == part.lower()), None)
        if match is None:
            return False
        node = node[match]
    return True
