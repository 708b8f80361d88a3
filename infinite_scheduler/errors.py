"""Every error the scheduler raises on purpose, importable from one place.

    SchedulerError                 (repos.errors) root: catch this to catch them all
    ├── EntitySpecError            an entity type or one entity does not fit its spec
    │   ├── InvalidIdentifier      an entity, prefix, column or database name unfit for SQL
    │   ├── DuplicateJob           an id already in its shard, or twice in one insert
    │   ├── ShardExpired           a sharding time older than the retention horizon
    │   └── PayloadTooLarge        an encoded payload over the store's size limit
    ├── StoreError                 the database refused or failed a statement
    │   ├── StoreUnavailable       the database cannot be reached at all
    │   └── StoreMissing           the database or SQLite file does not exist (and is not created)
    ├── ConfigError                a setting is invalid, or the config file cannot be read
    │   └── PortUnavailable        the metrics port cannot be listened on (in use, say)
    ├── HandlerMissing             an entity type the engine has no handler for
    ├── EngineNotRunning           schedule() or cancel() outside ``async with engine:``
    └── DropRefused                shards drop-expired: unfinished rows, drop not confirmed

The store errors live in ``repos.errors`` (the adapters raise them and must not import the
engine); they are re-exported here so callers need one import.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import TYPE_CHECKING, Any

from repos.errors import DuplicateJob as DuplicateJob
from repos.errors import EntitySpecError as EntitySpecError
from repos.errors import InvalidIdentifier as InvalidIdentifier
from repos.errors import PayloadTooLarge as PayloadTooLarge
from repos.errors import SchedulerError as SchedulerError
from repos.errors import ShardExpired as ShardExpired
from repos.errors import StoreError as StoreError
from repos.errors import StoreMissing as StoreMissing
from repos.errors import StoreUnavailable as StoreUnavailable

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError
    from pydantic_core import ErrorDetails

#: ``scheme://user:PASSWORD@`` anywhere in a text (a URL inside JSON too). The password runs to
#: the last ``@`` of the text: masking too much is fine, leaking an unencoded ``@``, ``/`` or
#: space in a password is not.
_URL_PASSWORD = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@]*:)(?P<password>.*)@", re.DOTALL
)
_MAX_SHOWN = 120


def mask_url(text: str) -> str:
    """`text` with the password of every ``scheme://user:password@host`` URL replaced by ***."""
    return _URL_PASSWORD.sub(r"\g<head>***@", text)


def show_value(value: object) -> str:
    """How a bad value appears in a message: repr, URL password masked, length capped."""
    shown = repr(mask_url(value)) if isinstance(value, str) else repr(value)
    return shown if len(shown) <= _MAX_SHOWN else shown[: _MAX_SHOWN - 3] + "..."


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigProblem:
    """One invalid setting: which key, the value as shown (masked), where it came from, why."""

    key: str  #: dotted, e.g. ``store.url`` or ``lookahead_s``
    value: str  #: display form, password masked
    source: str  #: ``env INFINITE_SCHEDULER_X``, the TOML file's path, ``argument`` or ``default``
    reason: str  #: what is wrong and what is allowed

    def __str__(self) -> str:
        return f"{self.key} = {self.value} [{self.source}]: {self.reason}"


@dataclass(frozen=True, slots=True)
class Conflict:
    """A cross-field rule broken by `key` (relative to the model whose validator found it)."""

    key: str
    value: object
    reason: str
    related: tuple[str, ...] = field(default=())  #: the other keys in the rule, for their source


class ConflictingSettings(ValueError):
    """Raised inside model validators so pydantic carries the conflicts to ConfigError.

    A model validator's error has no field location of its own; this keeps the key concerned.
    """

    def __init__(self, conflicts: Sequence[Conflict]) -> None:
        self.conflicts = list(conflicts)
        super().__init__("; ".join(f"{c.key}: {c.reason}" for c in self.conflicts))


class ConfigError(SchedulerError):
    """Raised by ``load_config`` (and the CLI) when a setting is invalid or the file unreadable.

    Raised before anything is opened or stored. `errors` lists every problem found, not only the
    first; the message never holds a password (store URLs are shown with ``***``).
    """

    def __init__(self, errors: Sequence[ConfigProblem]) -> None:
        self.errors = list(errors)
        if len(self.errors) == 1:
            message = f"invalid configuration: {self.errors[0]}"
        else:
            lines = "".join(f"\n  - {problem}" for problem in self.errors)
            message = f"invalid configuration ({len(self.errors)} problems):{lines}"
        super().__init__(message)

    @classmethod
    def from_validation_error(
        cls, exc: ValidationError, *, source_of: Callable[[str], str], model: type[BaseModel]
    ) -> ConfigError:
        """Translate pydantic's errors; `source_of(dotted_key)` says where a value came from."""
        problems: list[ConfigProblem] = []
        for detail in exc.errors(include_url=False):
            problems.extend(_problems_of(detail, source_of, model))
        return cls(problems)


class PortUnavailable(ConfigError):
    """Raised on entering the engine when the port of `key` cannot be listened on (another
    process holds it, or no permission): before any store is opened or any job claimed."""

    def __init__(self, key: str, port: int, cause: OSError) -> None:
        self.key = key
        self.port = port
        self.cause = cause
        reason = "port already in use" if cause.errno == errno.EADDRINUSE else "cannot listen"
        reason += f" ({cause}); free it or choose another port (0 turns the endpoint off)"
        self.errors = [ConfigProblem(key=key, value=str(port), source="listen", reason=reason)]
        SchedulerError.__init__(self, f"{key} = {port}: {reason}")


class HandlerMissing(SchedulerError):
    """Raised when the engine meets an entity type with no handler registered.

    Raised on entering the engine (a served type without a handler) or on scheduling an entity
    of a type never served, before anything is stored.
    """

    def __init__(self, entities: Sequence[str]) -> None:
        self.entities = list(entities)
        super().__init__(
            f"no handler for entity type(s) {', '.join(map(repr, self.entities))}; "
            "register one before starting the engine"
        )


class EngineNotRunning(SchedulerError):
    """Raised by the engine's schedule() and cancel() before ``async with engine:`` or after it.

    Raised before anything is stored or changed: only a running engine can place a job due
    soon into its wheel or take a cancelled one out. The repository works without an engine.
    """

    #: operation -> (what it does, the repository method doing it without an engine)
    _WITHOUT_ENGINE = {"schedule": ("store jobs", "insert"), "cancel": ("cancel jobs", "cancel")}

    def __init__(self, operation: str) -> None:
        self.operation = operation
        purpose, method = self._WITHOUT_ENGINE[operation]
        super().__init__(
            f"{operation}() needs a running engine: call it inside `async with engine:` "
            f"(to {purpose} without an engine, use the repository's {method}())"
        )


class DropRefused(SchedulerError):
    """Raised by ``shards drop-expired`` when the shards to drop hold unfinished rows and the
    drop was neither forced (``--force``) nor confirmed by a person; nothing was dropped."""

    def __init__(self, shards: int, unfinished: int, *, asked: bool) -> None:
        self.shards = shards
        self.unfinished = unfinished
        self.asked = asked
        held = (
            f"{shards} shard holds" if shards == 1 else f"{shards} shards hold"
        ) + f" {unfinished} unfinished row{'' if unfinished == 1 else 's'}"
        why = (
            "the drop was not confirmed"
            if asked
            else "stdin is not a terminal to confirm on; pass --force to drop them anyway"
        )
        super().__init__(f"nothing dropped: {held} and {why}")


def _problems_of(
    detail: ErrorDetails, source_of: Callable[[str], str], model: type[BaseModel]
) -> list[ConfigProblem]:
    loc = tuple(str(part) for part in detail["loc"])
    cause = detail.get("ctx", {}).get("error")
    if isinstance(cause, ConflictingSettings):
        return [_conflict_problem(loc, c, source_of) for c in cause.conflicts]
    key = ".".join(loc) or "config"
    if detail["type"] == "extra_forbidden":
        reason = _unknown_key_reason(loc, model)
    else:
        reason = detail["msg"].removeprefix("Value error, ")
    return [
        ConfigProblem(
            key=key, value=show_value(detail["input"]), source=source_of(key), reason=reason
        )
    ]


def _conflict_problem(
    loc: tuple[str, ...], conflict: Conflict, source_of: Callable[[str], str]
) -> ConfigProblem:
    key = ".".join((*loc, conflict.key))
    related = [".".join((*loc, other)) for other in conflict.related]
    reason = conflict.reason
    if related:
        reason += " (" + ", ".join(f"{other} [{source_of(other)}]" for other in related) + ")"
    return ConfigProblem(
        key=key, value=show_value(conflict.value), source=source_of(key), reason=reason
    )


def _unknown_key_reason(loc: tuple[str, ...], model: type[BaseModel]) -> str:
    allowed = allowed_keys(model, loc[:-1])
    guess = get_close_matches(loc[-1].lower(), allowed, n=1)
    if guess:
        return f"unknown key; did you mean {guess[0]!r}?"
    return f"unknown key; allowed here: {', '.join(allowed)}"


def allowed_keys(model: type[BaseModel], section: Sequence[str]) -> list[str]:
    """Field names of `model`'s sub-model at `section` (``()`` for the top level)."""
    current: Any = model
    for name in section:
        info = current.model_fields.get(name)
        annotation = info.annotation if info is not None else None
        if not (isinstance(annotation, type) and hasattr(annotation, "model_fields")):
            return []
        current = annotation
    return list(current.model_fields)
