"""The errors module holds the error classes, and draws their tree once, as it really is."""

from __future__ import annotations

import inspect
import re

import infinite_scheduler.errors
import repos.errors
from infinite_scheduler.errors import AccessDenied, SchedulerError
from repos.mysql.driver import ENGINE_PRIVILEGES, denied_privilege

#: A line of the drawn tree: its indent (4 characters a level) and the class named.
TREE_LINE = re.compile(r"^ {4}((?:[│ ] {3})*)(?:[├└]── )?([A-Z]\w+)\b")


def drawn_tree(doc: str) -> dict[str, str | None]:
    """Class name -> its parent's name as the docstring draws it (None for the root)."""
    parents: dict[str, str | None] = {}
    path: list[str] = []
    for line in doc.splitlines():
        match = TREE_LINE.match(line)
        if match is None:
            continue
        depth = len(match.group(1)) // 4 + (1 if "── " in line else 0)
        del path[depth:]
        parents[match.group(2)] = path[-1] if path else None
        path.append(match.group(2))
    return parents


def test_the_errors_module_defines_error_classes_only() -> None:
    own = {
        name: value
        for name, value in vars(infinite_scheduler.errors).items()
        if getattr(value, "__module__", None) == infinite_scheduler.errors.__name__
    }
    assert own
    assert {
        n for n, v in own.items() if not (inspect.isclass(v) and issubclass(v, SchedulerError))
    } == set()


def test_the_tree_is_drawn_once_and_as_the_classes_are() -> None:
    exported = {
        name: value
        for name, value in vars(infinite_scheduler.errors).items()
        if inspect.isclass(value) and issubclass(value, SchedulerError)
    }
    actual = {
        name: (None if cls is SchedulerError else cls.__bases__[0].__name__)
        for name, cls in exported.items()
    }
    assert drawn_tree(infinite_scheduler.errors.__doc__ or "") == actual
    assert drawn_tree(repos.errors.__doc__ or "") == {}


def denied(code: int, message: str) -> Exception:
    """A driver error as asyncmy and aiomysql raise it: the server's code and text."""
    return Exception(code, message)


def test_an_access_denied_names_the_privilege_the_server_refused() -> None:
    cases = [
        (denied(1142, "ALTER command denied to user 'u'@'h' for table `d`.`sms`"), "ALTER"),
        (denied(1143, "SELECT command denied to user 'u'@'h' for column 'x' in table 'n'"), "SELECT"),
        (denied(1227, "Access denied; you need (at least one of) the SUPER privilege(s) for this operation"), "SUPER"),
        (denied(1044, "Access denied for user 'u'@'h' to database 'd'"), None),
    ]  # fmt: skip
    assert [denied_privilege(exc) for exc, _ in cases] == [name for _, name in cases]
    error = AccessDenied(
        "add partitions", cases[0][0], privilege="ALTER", needed=ENGINE_PRIVILEGES, shard="sms"
    )
    assert str(error) == (
        "add partitions on shard 'sms' failed: the database user lacks the ALTER privilege"
        " ([1142] ALTER command denied to user 'u'@'h' for table `d`.`sms`); the engine's user"
        " needs SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER on its database"
        " (docs/deploy.md, Security)"
    )
    anonymous = AccessDenied("connect", cases[3][0], privilege=None, needed=("SELECT",))
    assert "the database user lacks a privilege ([1044] Access denied" in str(anonymous)
