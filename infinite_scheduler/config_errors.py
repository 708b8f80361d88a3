"""How an invalid setting is described: the problems a ConfigError lists, and the translation
of pydantic's validation errors into them.

config.py raises ConflictingSettings from its cross-field validators and turns what pydantic
reports into ConfigProblems with :func:`validation_problems`; the error class itself is
:class:`infinite_scheduler.errors.ConfigError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import TYPE_CHECKING, Any

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


def validation_problems(
    exc: ValidationError, *, source_of: Callable[[str], str], model: type[BaseModel]
) -> list[ConfigProblem]:
    """Pydantic's errors as problems; `source_of(dotted_key)` says where a value came from."""
    problems: list[ConfigProblem] = []
    for detail in exc.errors(include_url=False):
        problems.extend(_problems_of(detail, source_of, model))
    return problems


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
