"""Runs the engine under test as a child process (benchmarks/engine_app.py) and watches it.

The engine gets a config.toml written here and read by the real loader; the environment's
``INFINITE_SCHEDULER_*`` variables are stripped so that a stray one cannot change a figure.
The harness (the loader and the recorder) stays in this process, beside the engine.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import ROOT, Options, log
from benchmarks.records import Tail

START_TIMEOUT_S = 60.0
#: Settings every benchmark engine gets unless the workload says otherwise.
BASE_SETTINGS: dict[str, Any] = {
    "node_id": "bench-node",
    "metrics_port": 0,
    "log_level": "WARNING",
}


def write_config(
    path: Path, opts: Options, url: str, settings: Mapping[str, Any] | None = None
) -> Path:
    """A config.toml for the engine: top-level keys, then [store], [handlers], [cluster],
    [schedules] and [history]."""
    top = {**BASE_SETTINGS, "batch_size": opts.batch_size, **(settings or {})}
    handlers = top.pop("handlers", {})
    cluster = top.pop("cluster", {})
    schedules = top.pop("schedules", {})
    store = {"url": url, "layout": opts.layout, "driver": opts.driver}
    lines = [f"{key} = {_toml(value)}" for key, value in top.items()]
    history = {"enabled": opts.history}
    sections = {
        "store": store,
        "handlers": handlers,
        "cluster": cluster,
        "schedules": schedules,
        "history": history,
    }
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in values.items())
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


class EngineProcess:
    """One engine process: start (until READY), its STATUS lines, kill -9, graceful stop."""

    def __init__(self, config: Path, record: Path, log_path: Path, *, sync: bool) -> None:
        self.config = config
        self.record = record
        self.log_path = log_path
        self.sync = sync
        self.proc: asyncio.subprocess.Process | None = None
        self.ready_ms = 0
        self.spawned_ms = 0
        self.held = 0
        self.fired = 0
        self.acked = 0
        self._ready = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        argv = [sys.executable, "-m", "benchmarks.engine_app"]
        argv += ["--config", str(self.config), "--record", str(self.record), "--status-s", "0.2"]
        argv += ["--sync"] if self.sync else []
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFINITE_SCHEDULER_")}
        self.spawned_ms = time.time_ns() // 1_000_000
        with self.log_path.open("ab") as errors:
            self.proc = await asyncio.create_subprocess_exec(
                *argv, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=errors
            )
        self._reader = asyncio.create_task(self._read_stdout())
        try:
            await asyncio.wait_for(self._ready.wait(), START_TIMEOUT_S)
        except TimeoutError:
            raise RuntimeError(f"engine did not start; see {self.log_path}") from None
        if self.ready_ms < 0:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"engine exited before READY ({self.log_path}):\n{tail}")

    async def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            word, *values = raw.decode().split() or [""]
            if word == "READY":
                self.ready_ms = int(values[0])
                self._ready.set()
            elif word == "STATUS":
                self.held, self.fired, self.acked = (int(v) for v in values)
        if not self._ready.is_set():
            self._ready.set()  # died before READY: start() reports it
            self.ready_ms = -1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def rss_bytes(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    def peak_rss_bytes(self) -> int:
        """The kernel's high-water mark of the process's RSS (VmHWM), sampled or not."""
        status = Path(f"/proc/{self.pid}/status")
        if status.exists():
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return self.rss_bytes()

    def kill(self) -> None:
        """kill -9: no drain, no ack flush, no release of claims."""
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:  # exited between the check and the signal
                pass

    async def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM (graceful: drain, flush acks, release claims), kill -9 after timeout_s."""
        if self.proc is None:
            return
        if self.alive():
            self._signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout_s)
            except TimeoutError:
                log(f"engine did not stop within {timeout_s:g} s; killing it")
                self.kill()
        await self.proc.wait()
        if self._reader is not None:
            await self._reader


@asynccontextmanager
async def engine_running(
    opts: Options,
    url: str,
    name: str,
    settings: Mapping[str, Any] | None = None,
    *,
    sync: bool = False,
) -> AsyncIterator[EngineProcess]:
    """Start an engine on `url` (config, record and log files named after `name`); stop it after."""
    config = write_config(opts.workdir / f"{name}.toml", opts, url, settings)
    record = opts.workdir / f"{name}.rec"
    record.unlink(missing_ok=True)
    engine = EngineProcess(config, record, opts.workdir / f"{name}.log", sync=sync)
    try:
        await engine.start()
        yield engine
    finally:
        await engine.stop()


async def wait_fires(
    tail: Tail, want: int, *, deadline_s: float, progress: Any = None, idle_s: float = 0.05
) -> int:
    """Poll the record file until `want` records arrived or the monotonic deadline passed."""
    while len(tail.fires) < want and time.monotonic() < deadline_s:
        new = tail.poll()
        if progress is not None and new:
            progress.update(new)
        if len(tail.fires) < want:
            await asyncio.sleep(idle_s)
    return len(tail.fires)
