"""Each dialect's SQL lives in its sql module, as complete statements with named values.

The adapters choose a statement and fill in identifiers and lists; they never add SQL text of
their own (a WHERE clause, an ON DUPLICATE, a UNION ALL), and never bind a list of values
repeated once per shard.
"""

from __future__ import annotations

import ast
import re
import string
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from repos.mysql import sql as mysql_sql
from repos.sqlite import sql as sqlite_sql

ROOT = Path(__file__).resolve().parents[2]
SQL_MODULES = {ROOT / "repos/mysql/sql.py", ROOT / "repos/sqlite/sql.py"}
#: What any text of these words in a string (a docstring aside) is: a piece of a statement.
SQL_TEXT = re.compile(
    r"\b(SELECT|INSERT INTO|UPDATE|DELETE FROM|CREATE|ALTER TABLE|DROP|PRAGMA|BEGIN|COMMIT|"
    r"ROLLBACK|UNION|SET SESSION|WHERE|ON DUPLICATE|ON CONFLICT)\b"
)
#: The placeholders a template may have: identifiers, and lists the caller renders.
PLACEHOLDERS = {
    "target",
    "source",  # a shard target too: where a moved row comes from (repos/control.py)
    "statuses",  # rendered from ints, as epochs
    "table",
    "name",
    "database",
    "id",
    "at",
    "id_type",
    "shard_no",
    "end_ms",
    "rows",
    "keys",
    "epochs",
    "partitions",
    "parts",
    # a schedule step's values, rendered from ints (repos/mysql/schedules.py)
    "version",
    "state",
    "next_at_ms",
    "last_at_ms",
    "runs",
    # when the dependency release looks at edges again, rendered from an int
    "at_ms",
}


def docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes in `tree`."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def sql_in(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(), str(path))
    skip = docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            if SQL_TEXT.search(node.value):
                yield f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.strip()[:60]}"


def templates(module: ModuleType) -> dict[str, str]:
    """The module's statements by name (a dict of variants counts as one each)."""
    found = {}
    for name, value in vars(module).items():
        if name.isupper() and isinstance(value, str):
            found[name] = value
        elif name.isupper() and isinstance(value, dict):
            found |= {f"{name}[{key}]": v for key, v in value.items() if isinstance(v, str)}
    return found


def test_no_sql_outside_the_sql_modules() -> None:
    sources = sorted(set((ROOT / "repos").rglob("*.py")) - SQL_MODULES)
    assert [line for path in sources for line in sql_in(path)] == []


def test_the_finder_sees_sql() -> None:
    assert list(sql_in(ROOT / "repos/mysql/sql.py"))


@pytest.mark.parametrize("module", [mysql_sql, sqlite_sql], ids=["mysql", "sqlite"])
def test_templates_are_complete(module: ModuleType) -> None:
    """Braces hold identifiers and rendered lists only: no clause is left to be glued in."""
    fields = {
        name: {f for _, f, _, _ in string.Formatter().parse(text) if f} - PLACEHOLDERS
        for name, text in templates(module).items()
    }
    assert {name: extra for name, extra in fields.items() if extra} == {}


def test_mysql_values_are_named() -> None:
    positional = {
        name: text for name, text in templates(mysql_sql).items() if re.search(r"%[^(]", text)
    }
    assert positional == {}


def test_sqlite_values_are_named_or_numbered_before_a_list() -> None:
    """sqlite3 binds by name or by position: listing statements number their leading values."""
    wrong = {}
    for name, text in templates(sqlite_sql).items():
        lists = "{keys}" in text or "{rows}" in text
        if (lists and re.search(r":[a-z]|\?(?!\d)", text)) or (not lists and "?" in text):
            wrong[name] = text
    assert wrong == {}


def test_a_claim_over_shards_binds_each_value_once() -> None:
    targets = ["`sms_20261122`", "`sms_20261123`", "`sms_20261124`"]
    parts = mysql_sql.union_all(mysql_sql.CLAIM_SELECT_PART, targets, id="id", at="at")
    claim = mysql_sql.CLAIM_SELECT.format(parts=parts)
    # What the drivers do with a dict: %-format the escaped values in, client-side.
    sent = claim % {"payload_before_ms": "1005", "before_ms": "1007", "limit": "500"}
    assert sent.count(" UNION ALL ") == 2
    assert [sent.count(f"FROM {t}") for t in targets] == [1, 1, 1]
    assert sent.count("IF(due_at < 1005, payload, NULL)") == 3
    assert sent.count("due_at < 1007 ORDER BY due_at LIMIT 500") == 3
    assert sent.endswith(") ORDER BY due_at LIMIT 500")
