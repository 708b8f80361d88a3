"""The ``infinite-scheduler`` command: ``run``, ``check-config``, ``shards list|drop-expired``,
``nodes list``, ``store init|check``, ``api``, ``tokens create|list|revoke``,
``jobs list|show|cancel|pause|resume|run-now|reschedule``, ``history`` and ``sla``.

Exit codes: 0 ok, 1 store error, 2 bad configuration or arguments, or ``run`` refused by the
store (a live node has its node id; a second node on SQLite; a server the claim is unsafe on),
3 ``shards drop-expired`` refused to drop unfinished rows (not confirmed, no ``--force``):
nothing was dropped, or ``store check`` refused the server, or a ``jobs`` change refused by the
job's state (nothing changed; a bad ``jobs`` input or an unknown id is 2), 130
interrupted by SIGINT before the engine was running. The message goes to stderr, without a
traceback. 3 is apart from 1 so that a script can tell a broken store from a drop that only
wants a person's decision.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import cast

from infinite_scheduler import __version__, logs
from infinite_scheduler.api_commands import add_commands, tokens_main
from infinite_scheduler.config import SchedulerConfig, load_config
from infinite_scheduler.control_commands import add_control_commands, engine_main, schedules_main
from infinite_scheduler.demo import demo_config
from infinite_scheduler.errors import (
    ConfigError,
    DropRefused,
    InvalidJobRequest,
    InvalidSchedule,
    JobNotFound,
    JobStateRefused,
    NodeRefused,
    ScheduleNotFound,
    SchedulerError,
    UnsafeStore,
)
from infinite_scheduler.history_commands import add_history_commands, history_command
from infinite_scheduler.job_commands import add_jobs_commands, jobs_main
from infinite_scheduler.node_commands import nodes_main
from infinite_scheduler.serve import (
    AppSetup,
    config_source,
    describe_store,
    on_stop_signals,
    run_loop,
    serve,
    summary,
)
from infinite_scheduler.shard_commands import DropOptions, served_repositories, shards_main
from repos.registry import check_store, create_store
from repos.server_guard import Verdict

EXIT_OK = 0
EXIT_STORE = 1
EXIT_CONFIG = 2
EXIT_REFUSED = 3
NOTHING_TO_RUN = (
    "infinite-scheduler run: nothing to run: pass --app MODULE:FUNCTION (your function that\n"
    "registers entity types and handlers), or --demo for the built-in examples, e.g.\n"
    "  infinite-scheduler run --app myapp.jobs:register\n"
    "  infinite-scheduler run --demo\n"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and of ``python -m infinite_scheduler``."""
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _failed(exc, EXIT_CONFIG)
    command = _commands().get(args.command)
    if command is not None:
        return command(config, args)
    sys.stdout.write(f"{config_source(args.config or 'config.toml')}: configuration is valid\n")
    return EXIT_OK


Command = Callable[[SchedulerConfig, argparse.Namespace], int]


def _commands() -> dict[str, Command]:
    """What each command runs (``check-config``, the default, is main's own)."""
    return {
        "run": _run_command,
        "shards": lambda c, a: shards(c, a.action, dry_run=a.dry_run, force=a.force, app=a.app),
        "nodes": lambda c, a: nodes(c, app=a.app),
        "jobs": jobs,
        "store": lambda c, a: store_check(c) if a.action == "check" else store_init(c),
        "api": lambda c, a: api(c, app=a.app),
        "tokens": tokens,
        "history": history,
        "sla": history,
        "schedules": control,
        "engine": control,
    }


def _run_command(config: SchedulerConfig, args: argparse.Namespace) -> int:
    if not (args.app or args.demo):
        # An engine without entity types would open the store and fire nothing, silently.
        sys.stderr.write(NOTHING_TO_RUN)
        return EXIT_CONFIG
    return run(config, config_path=args.config or "config.toml", demo=args.demo, app=args.app)


def run(config: SchedulerConfig, *, config_path: str, demo: bool, app: str | None = None) -> int:
    """Run the engine until SIGINT/SIGTERM; a second signal exits at once."""
    if demo:
        config = demo_config(config)
    sys.stdout.write(summary(config, config_path=config_path, demo=demo))
    if config.metrics_port:
        address = f"{config.metrics_host}:{config.metrics_port}"
        sys.stdout.write(f"  metrics  http://{address}/metrics\n")
    sys.stdout.flush()
    logs.configure("WARNING" if demo else config.log_level)
    setup = load_app(app) if app else None
    try:
        run_loop(serve(config, demo=demo, setup=setup))
    except SchedulerError as exc:
        refused = isinstance(exc, ConfigError | NodeRefused | UnsafeStore)
        return _failed(exc, EXIT_CONFIG if refused else EXIT_STORE)
    return EXIT_OK


def api(config: SchedulerConfig, *, app: str | None) -> int:
    """Serve the HTTP API alone until SIGINT/SIGTERM (exit 2: no token and not open, or the
    port taken; 1: the store)."""
    from infinite_scheduler.api_commands import serve_api

    logs.configure(config.log_level)
    specs = [repo.spec for repo in served_repositories(config, load_app(app) if app else None)]
    try:
        run_loop(serve_api(config, specs, stop_signals=on_stop_signals))
    except ConfigError as exc:
        return _failed(exc, EXIT_CONFIG)
    except SchedulerError as exc:
        return _failed(exc, EXIT_STORE)
    return EXIT_OK


def tokens(config: SchedulerConfig, args: argparse.Namespace) -> int:
    """``tokens create|list|revoke``: exit 2 for a bad name or role, 1 for a store error, a
    name taken or no such token."""
    try:
        asyncio.run(tokens_main(config, args, sys.stdout))
    except ValueError as exc:
        return _failed(exc, EXIT_CONFIG)
    except (SchedulerError, LookupError) as exc:
        return _failed(exc, EXIT_STORE)
    return EXIT_OK


def history(config: SchedulerConfig, args: argparse.Namespace) -> int:
    """``history ENTITY ID`` and ``sla``: exit 2 for a bad argument, 1 for a store error."""
    try:
        history_command(config, args)
    except ValueError as exc:
        return _failed(exc, EXIT_CONFIG)
    except SchedulerError as exc:
        return _failed(exc, EXIT_STORE)
    return EXIT_OK


def shards(
    config: SchedulerConfig, action: str, *, dry_run: bool, force: bool = False, app: str | None
) -> int:
    """List the shards of every entity type, or drop the expired ones (``--dry-run``: show).

    Unfinished rows are dropped with ``--force`` or a yes typed at the terminal; with stdin not
    a terminal and no ``--force``, nothing is dropped (exit 3)."""
    logs.configure("WARNING")  # unfinished rows dropped: a warning on stderr besides the table
    ask = _ask if sys.stdin is not None and sys.stdin.isatty() else None
    options = DropOptions(dry_run=dry_run, force=force, ask=ask)
    try:
        shards_main(
            config, action, options=options, setup=load_app(app) if app else None, out=sys.stdout
        )
    except DropRefused as exc:
        return _failed(exc, EXIT_REFUSED)
    except SchedulerError as exc:
        return _failed(exc, EXIT_STORE)
    return EXIT_OK


def nodes(config: SchedulerConfig, *, app: str | None) -> int:
    """List the store's nodes: live ones, timed out ones, the last that left or died."""
    try:
        nodes_main(config, setup=load_app(app) if app else None, out=sys.stdout)
    except SchedulerError as exc:
        return _failed(exc, EXIT_STORE)
    return EXIT_OK


def jobs(config: SchedulerConfig, args: argparse.Namespace) -> int:
    """One jobs command over the job service: 2 for a bad input or an unknown id, 3 for a
    change the job's state refuses (nothing changed), 1 for a store error."""
    try:
        jobs_main(config, args, setup=load_app(args.app) if args.app else None, out=sys.stdout)
    except (InvalidJobRequest, JobNotFound) as exc:
        return _failed(exc, EXIT_CONFIG)
    except JobStateRefused as exc:
        return _failed(exc, EXIT_REFUSED)
    except SchedulerError as exc:
        return _failed(exc, EXIT_STORE)
    return EXIT_OK


def control(config: SchedulerConfig, args: argparse.Namespace) -> int:
    """One schedules or engine command: 2 for an unknown schedule, 1 for a store error."""
    try:
        if args.command == "engine":
            engine_main(config, args, sys.stdout)
        else:
            schedules_main(
                config, args, setup=load_app(args.app) if args.app else None, out=sys.stdout
            )
    except (ScheduleNotFound, InvalidSchedule) as exc:
        return _failed(exc, EXIT_CONFIG)
    except SchedulerError as exc:
        return _failed(exc, EXIT_STORE)
    return EXIT_OK


def _ask(question: str) -> str:
    try:
        return input(question)
    except EOFError:  # the terminal closed: no answer is no
        return ""


def store_init(config: SchedulerConfig) -> int:
    """Create the configured store (MySQL database or SQLite file) unless it exists; say which."""
    try:
        run_loop(_store_init(config))
    except SchedulerError as exc:
        return _failed(exc, EXIT_STORE)
    return EXIT_OK


def store_check(config: SchedulerConfig) -> int:
    """Print what the store guard finds on the configured server, and its verdict: exit 0 when
    accepted, 3 when refused (the engine would not start), 1 when it cannot be asked."""
    store = config.store
    try:
        verdict = asyncio.run(
            check_store(
                config.store_url,
                driver=store.driver,
                connect_timeout_s=store.connect_timeout_s,
                galera_multi_writer=store.galera_multi_writer,
                node_timeout_ms=config.cluster.node_timeout_ms,
            )
        )
    except SchedulerError as exc:
        return _failed(exc, EXIT_STORE)
    sys.stdout.write(render_verdict(describe_store(store), verdict))
    return EXIT_OK if verdict is None or verdict.accepted else EXIT_REFUSED


def render_verdict(store: str, verdict: Verdict | None) -> str:
    """``store check``'s report: the server, its Galera state, warnings, ACCEPTED/REFUSED."""
    if verdict is None:
        return f"  store    {store}\nACCEPTED: SQLite (the guard judges MySQL servers only)\n"
    found = verdict.identity
    galera = "no"
    if found.galera:
        galera = (
            f"node {found.wsrep_node_name or '?'}, cluster size {found.wsrep_cluster_size},"
            f" state {found.wsrep_local_state_comment or '?'},"
            f" ready {'ON' if found.wsrep_ready else 'OFF'}"
        )
    rows = [
        ("store", store),
        ("server", found.flavor),
        ("version", found.version),
        ("comment", found.version_comment or "-"),
        ("galera", galera),
        *(("warning", warning) for warning in verdict.warnings),
    ]
    body = "".join(f"  {name:<8} {value}\n" for name, value in rows)
    if verdict.accepted:
        return body + "ACCEPTED\n"
    return body + "".join(f"REFUSED: {reason}\n" for reason in verdict.refusals)


def _failed(error: Exception | str, exit_code: int) -> int:
    """Say what went wrong on one stderr line, no traceback; return the exit code."""
    sys.stderr.write(f"infinite-scheduler: {error}\n")
    return exit_code


async def _store_init(config: SchedulerConfig) -> None:
    store = config.store
    done = await create_store(
        config.store_url, driver=store.driver, connect_timeout_s=store.connect_timeout_s
    )
    sys.stdout.write(f"{done}\n")


def load_app(spec: str) -> AppSetup:
    """Import ``package.module:function``; the function registers entity types and handlers.

    The working directory goes first on the import path, as uvicorn and celery do: a console
    script's path holds its own directory, not the folder the user runs it from.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise _bad_app(f"--app wants module:function, got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise _bad_app(_not_found(spec, module_name, exc, cwd)) from None
    except ImportError as exc:
        raise _bad_app(f"--app {spec!r}: {exc}") from None
    setup = getattr(module, attr, None)
    if not callable(setup):
        raise _bad_app(f"{spec!r} is not a callable")
    return cast(AppSetup, setup)


def _not_found(spec: str, module_name: str, exc: ModuleNotFoundError, cwd: str) -> str:
    missing = exc.name or module_name
    if not (module_name + ".").startswith(missing + "."):  # the app imports something missing
        return f"--app {spec!r}: importing {module_name} failed: {exc}"
    top = module_name.split(".")[0]
    return (
        f"--app {spec!r}: no module named {missing!r} in the working directory {cwd} nor "
        f"elsewhere on the import path; run from the folder that holds the {top} package, or "
        "add that folder to PYTHONPATH"
    )


def _bad_app(message: str) -> SystemExit:
    return SystemExit(_failed(message, EXIT_CONFIG))


CONFIG_HELP = "TOML settings file (default: ./config.toml if present, else built-in defaults)"
APP_HELP = "function(engine) registering your entity types and handlers"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infinite-scheduler", description="Fire stored jobs at their scheduled time."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run_cmd = commands.add_parser("run", help="run the engine")
    run_cmd.add_argument("--config", metavar="PATH", help=CONFIG_HELP)
    run_cmd.add_argument(
        "--demo", action="store_true", help="example handlers, a demo producer, live status"
    )
    run_cmd.add_argument("--app", metavar="MODULE:FUNCTION", help=APP_HELP)
    check = commands.add_parser("check-config", help="validate the settings and exit")
    check.add_argument("--config", metavar="PATH", help=CONFIG_HELP)
    _add_shards_commands(commands)
    add_commands(commands, CONFIG_HELP, APP_HELP)
    add_history_commands(commands, CONFIG_HELP)
    nodes_cmd = commands.add_parser("nodes", help="list the nodes sharing the store")
    nodes_actions = nodes_cmd.add_subparsers(dest="action", required=True)
    nodes_list = nodes_actions.add_parser(
        "list",
        help="nodes, epochs, heartbeat ages (the database's clock) and claims held",
    )
    nodes_list.add_argument("--config", metavar="PATH", help=CONFIG_HELP)
    nodes_list.add_argument(
        "--app", metavar="MODULE:FUNCTION", help=APP_HELP + " (default: the examples)"
    )
    add_jobs_commands(commands, _config_and_app)
    add_control_commands(commands, _config_and_app)
    store_cmd = commands.add_parser("store", help="create or check the configured store")
    store_actions = store_cmd.add_subparsers(dest="action", required=True)
    init = store_actions.add_parser(
        "init", help="create the MySQL database or the SQLite file (and directory) if missing"
    )
    init.add_argument("--config", metavar="PATH", help=CONFIG_HELP)
    check = store_actions.add_parser(
        "check",
        help="identify the MySQL server and say whether the engine would accept it as a store",
    )
    check.add_argument("--config", metavar="PATH", help=CONFIG_HELP)
    return parser


def _config_and_app(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--config", metavar="PATH", help=CONFIG_HELP)
    cmd.add_argument("--app", metavar="MODULE:FUNCTION", help=APP_HELP + " (default: the examples)")


def _add_shards_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    shards_cmd = commands.add_parser("shards", help="list shards or drop expired ones")
    actions = shards_cmd.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="shards, time ranges and rows by status")
    listing.set_defaults(dry_run=False, force=False)
    drop = actions.add_parser(
        "drop-expired",
        help="drop the shards past retention now",
        description="Drop the shards past retention now. Shards holding unfinished rows are"
        " shown first and dropped only on a yes typed at the terminal, or with --force; with"
        " stdin not a terminal and no --force nothing is dropped and the exit code is 3.",
    )
    drop.add_argument(
        "--dry-run", action="store_true", help="show what would be dropped; drop nothing"
    )
    drop.add_argument(
        "--force", action="store_true", help="drop shards holding unfinished rows without asking"
    )
    for cmd in (listing, drop):
        cmd.add_argument("--config", metavar="PATH", help=CONFIG_HELP)
        cmd.add_argument(
            "--app", metavar="MODULE:FUNCTION", help=APP_HELP + " (default: the examples)"
        )
