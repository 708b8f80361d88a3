"""``infinite-scheduler api`` (the HTTP API alone, against the store the engines use) and
``infinite-scheduler tokens create|list|revoke`` (the API's bearer tokens).

The token commands act as the operator at the terminal: their audit rows name the actor
``cli:<user>``. A token's secret is printed once, by ``create``; the store keeps its hash.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from infinite_scheduler.api.audit import Auditor
from infinite_scheduler.api.tokens import TokenBook, TokenInfo
from infinite_scheduler.client import SchedulerClient
from infinite_scheduler.clock import SystemClock
from infinite_scheduler.config import SchedulerConfig
from infinite_scheduler.stores import store_access
from repos.base import EntitySpec
from repos.errors import utc_text

if TYPE_CHECKING:
    from infinite_scheduler.api.server import ApiAccess
    from infinite_scheduler.api.services import ApiServices

StopSignals = Callable[[Callable[[], None]], AbstractContextManager[None]]
HEADER = f"  {'name':<24} {'role':<9} {'owner':<24} {'created (UTC)':<20} revoked (UTC)\n"


def cli_actor() -> str:
    """The audit log's actor for a token command: the operator's login name."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


async def serve_api(
    config: SchedulerConfig,
    specs: Sequence[EntitySpec[Any, Any]],
    *,
    stop_signals: StopSignals,
    out: TextIO = sys.stdout,
) -> None:
    """Serve the API until SIGINT/SIGTERM, with the schedules of `specs`' entity types.
    Port 0 lets the system choose one; the first line printed says where it listens."""
    from infinite_scheduler.api.server import ApiServer, api_access  # FastAPI: only here

    clock = SystemClock()
    server = ApiServer(config.api)
    server.listen()
    try:
        async with (
            api_access(config, clock=clock) as access,
            SchedulerClient(config, *specs, clock=clock) as client,
        ):
            await server.serve(client_services(access, client))
            out.write(f"api http://{config.api.host}:{server.port} (docs at /docs)\n")
            out.flush()
            stop = asyncio.Event()
            with stop_signals(stop.set):
                await stop.wait()
    finally:
        await server.stop()


def client_services(access: ApiAccess, client: SchedulerClient) -> ApiServices:
    """What the API works on beside the engines: a client's repositories, book and pauses."""
    from infinite_scheduler.management import JobService

    jobs = JobService.over(client.config, client.repositories, clock=client.clock)
    return access.services(
        client.schedules, jobs=jobs, categories=client.categories, engine=client.engine_control
    )


async def tokens_main(config: SchedulerConfig, args: argparse.Namespace, out: TextIO) -> None:
    """One ``tokens`` subcommand; store errors and TokenExists propagate (exit 1), a bad name,
    role or owner raises ValueError (exit 2)."""
    clock = SystemClock()
    store = store_access(config)
    await store.open()
    try:
        book = TokenBook(store, Auditor(store, clock=clock), clock=clock)
        if args.action == "create":
            info, secret = await book.create(
                args.name, args.role, owner=args.owner, actor=cli_actor()
            )
            out.write(_created(info, secret, as_json=args.json))
        elif args.action == "list":
            tokens = await book.list()
            out.write(_json([t.as_dict() for t in tokens]) if args.json else render(tokens))
        elif not await book.revoke(args.name, actor=cli_actor()):
            raise LookupError(f"no live API token named {args.name!r}")
        else:
            out.write(_json({"revoked": args.name}) if args.json else f"revoked {args.name}\n")
    finally:
        await store.close()


def _created(info: TokenInfo, secret: str, *, as_json: bool) -> str:
    if as_json:
        return _json({**info.as_dict(), "secret": secret})
    return (
        f"created token {info.name!r} (role {info.role}, owner {info.owner!r}); its secret,"
        " shown this once:\n"
        f"{secret}\n"
    )


def render(tokens: Sequence[TokenInfo]) -> str:
    """The listing: one line per token, never its secret nor its hash."""
    if not tokens:
        return "no API tokens\n"
    lines = [
        f"  {t.name:<24} {t.role:<9} {t.owner:<24} {utc_text(t.created_at_ms)[:19]:<20}"
        f" {'-' if t.revoked_at_ms is None else utc_text(t.revoked_at_ms)[:19]}\n"
        for t in tokens
    ]
    return HEADER + "".join(lines)


def _json(value: object) -> str:
    return orjson.dumps(value).decode() + "\n"


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], config_help: str, app_help: str
) -> None:
    """The ``api`` and ``tokens`` subcommands of the CLI's parser."""
    api = commands.add_parser(
        "api", help="serve the HTTP API alone, against the configured store (api.host:api.port)"
    )
    api.add_argument("--config", metavar="PATH", help=config_help)
    api.add_argument("--app", metavar="MODULE:FUNCTION", help=app_help + " (default: the examples)")
    tokens = commands.add_parser("tokens", help="make, list or revoke HTTP API tokens")
    actions = tokens.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="make a token and print its secret, once")
    create.add_argument("--name", required=True, help="its name (the audit log's actor)")
    create.add_argument(
        "--role",
        required=True,
        help="READ, SCHEDULE, EXECUTE or ADMIN (each allows the ones before)",
    )
    create.add_argument("--owner", help="whose schedules it sees and changes (default: its name)")
    listing = actions.add_parser("list", help="the tokens, revoked ones too (never a secret)")
    revoke = actions.add_parser("revoke", help="revoke a token: it is refused from now on")
    revoke.add_argument("name")
    for cmd in (create, listing, revoke):
        cmd.add_argument("--config", metavar="PATH", help=config_help)
        cmd.add_argument("--json", action="store_true", help="JSON instead of a table")
