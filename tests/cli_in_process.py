"""The ``infinite-scheduler`` command run inside the test process, for the tests of every tier:
``cli.main(argv)`` on a thread of its own, stdout and stderr captured, stdin not a terminal (or
one with an answer typed on it), the exit code as a process would give it (``SystemExit``
included), as a ``subprocess.CompletedProcess``.

Why: a process per command costs ~0.8 s of interpreter start and imports, and most CLI tests
check parsing, output, exit codes and the store, none of which needs a process of its own. The
tests of what only a process shows (the console script and ``python -m``, signals, a terminal,
``--app`` imports from a working directory, ``run`` and ``api``) keep a real one.

A thread because the commands call ``asyncio.run`` (not allowed inside an async test's running
loop); the logging and ``gc.freeze`` state a command sets for its process is put back after it.
An exception ``main`` lets out is raised here: in a process it would be a traceback and exit 1.
"""

from __future__ import annotations

import gc
import io
import logging
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from unittest import mock

from infinite_scheduler.cli import main

TIMEOUT_S = 60


class Terminal(io.StringIO):
    """A stdin that says it is a terminal, on which `typed` has been typed."""

    def isatty(self) -> bool:
        return True


def cli(*args: str, typed: str | None = None) -> subprocess.CompletedProcess[str]:
    """``infinite-scheduler *args`` with stdin not a terminal (as under a script), or a terminal
    where `typed` is typed (its prompts go to stdout, as ``input`` writes them)."""
    stdin = io.StringIO("") if typed is None else Terminal(typed)
    out, err = io.StringIO(), io.StringIO()
    codes: list[int] = []
    failures: list[BaseException] = []

    def command() -> None:
        try:
            codes.append(main(list(args)))
        except SystemExit as exc:  # argparse, --app errors: what sys.exit would make of it
            codes.append(_exit_code(exc, err))
        except BaseException as exc:  # handed to the test's thread below
            failures.append(exc)

    with _process_state(), redirect_stdout(out), redirect_stderr(err):
        with mock.patch("sys.stdin", stdin):
            thread = threading.Thread(target=command, name=f"cli {' '.join(args)}", daemon=True)
            thread.start()
            thread.join(TIMEOUT_S)
    if thread.is_alive():
        raise TimeoutError(
            f"infinite-scheduler {' '.join(args)}: still running after {TIMEOUT_S} s"
        )
    if failures:
        raise failures[0]
    return subprocess.CompletedProcess(
        ["infinite-scheduler", *args], codes[0], out.getvalue(), err.getvalue()
    )


def _exit_code(exc: SystemExit, err: io.StringIO) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    err.write(f"{exc.code}\n")
    return 1


@contextmanager
def _process_state() -> Iterator[None]:
    """Put back what a command sets for the life of its process: the root logger's handlers
    and level (``logs.configure``), and objects frozen out of collection (``run_loop``)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    frozen = gc.get_freeze_count()
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        if not frozen:
            gc.unfreeze()
