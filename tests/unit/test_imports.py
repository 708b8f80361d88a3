"""The layering rule, read from the source: imports go one way (driver -> adapter -> engine).

Every import counts, a function's deferred one too: an import cycle that a lazy import hides
still ties the modules together, and breaks as soon as someone moves that import to the top.
"""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("repos", "infinite_scheduler")
#: What the engine's loops may import from repos/: the contracts (shards, membership,
#: dependencies, schedules, API tokens and audit, execution history), and the factory of
#: adapters.
ENGINE_MAY_IMPORT = frozenset(
    {
        "repos.base",
        "repos.cluster",
        "repos.access",
        "repos.control",
        "repos.dependencies",
        "repos.schedules",
        "repos.history",
        "repos.registry",
    }
)
#: infinite_scheduler's modules outside the engine: the front ends (they parse store URLs, make
#: stores, seed the examples) and the public errors module (it re-exports the store's errors).
NOT_THE_ENGINE = frozenset(
    {
        "infinite_scheduler",
        "infinite_scheduler.errors",
        "infinite_scheduler.__main__",
        "infinite_scheduler.cli",
        "infinite_scheduler.serve",
        "infinite_scheduler.config",
        "infinite_scheduler.demo",
        "infinite_scheduler.shard_commands",
        "infinite_scheduler.node_commands",
        "infinite_scheduler.api_commands",
        "infinite_scheduler.job_commands",
        "infinite_scheduler.history_commands",
        "infinite_scheduler.control_commands",
    }
)
DRIVERS = frozenset({"asyncmy", "aiomysql", "pymysql"})


def module_files() -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            files[name] = path
    return files


def imported(path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """Every module `path` imports, anywhere in it: ``from a import b`` is ``a.b`` when that is
    a module of ours, else ``a``."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: a relative import; the project uses absolute ones"
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                yield sub if sub in modules else str(node.module)


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules it imports (all of them, ours and others')."""
    modules = module_files()
    return {name: set(imported(path, modules)) for name, path in modules.items()}


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """An import cycle among our modules, as the modules along it ([] if there is none)."""
    ours = {name: {m for m in found if m in graph} for name, found in graph.items()}
    try:
        graphlib.TopologicalSorter(ours).prepare()
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return []


def test_the_graph_sees_deferred_imports() -> None:
    graph = import_graph()
    assert "repos.mysql.adapter" in graph["repos.registry"]  # imported inside a function
    assert "repos.mysql.sql" in graph["repos.mysql.adapter"]  # `from repos.mysql import sql`


def test_the_cycle_finder_finds_a_cycle() -> None:
    found = cycle({"a": {"b", "os"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert set(found) == {"a", "b", "c"}


def test_no_import_cycle() -> None:
    assert cycle(import_graph()) == []


def test_the_engine_imports_only_the_contract_from_repos() -> None:
    graph = import_graph()
    engine = {name for name in graph if name.startswith("infinite_scheduler")} - NOT_THE_ENGINE
    beyond = {
        name: sorted(m for m in graph[name] if m.startswith("repos") and m not in ENGINE_MAY_IMPORT)
        for name in sorted(engine)
    }
    assert {name: found for name, found in beyond.items() if found} == {}


def test_only_the_mysql_adapter_imports_a_mysql_driver() -> None:
    graph = import_graph()
    importers = {
        name for name, found in graph.items() if any(m.split(".")[0] in DRIVERS for m in found)
    }
    assert importers == {"repos.mysql.driver"}
