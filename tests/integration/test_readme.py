"""The README's Python blocks are the public API's contract: they run, in order, as one script,
and import nothing but the public surface (and the standard library)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import infinite_scheduler

README = Path(__file__).resolve().parents[2] / "README.md"
_IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w.]+))", re.MULTILINE)


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)


def test_readme_examples_import_only_the_public_surface() -> None:
    modules = {a or b for block in python_blocks() for a, b in _IMPORT.findall(block)}
    ours = {m for m in modules if m.split(".")[0] in ("infinite_scheduler", "repos")}
    assert ours == {"infinite_scheduler"}
    assert all(m.split(".")[0] in sys.stdlib_module_names for m in modules - ours)


def test_every_public_name_is_importable_from_the_package() -> None:
    missing = [name for name in infinite_scheduler.__all__ if not hasattr(infinite_scheduler, name)]
    assert not missing
    assert {"InfiniteScheduler", "EntitySpec", "JobContext", "load_config"} <= set(
        infinite_scheduler.__all__
    )


def test_readme_examples_run_as_one_script(tmp_path: Path) -> None:
    script = tmp_path / "readme_example.py"
    script.write_text("\n\n".join(python_blocks()))
    env = {
        **os.environ,
        "INFINITE_SCHEDULER_STORE__URL": f"sqlite:///{tmp_path}/readme.db",
        "INFINITE_SCHEDULER_METRICS_PORT": "0",
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        return done

    run("-m", "infinite_scheduler", "store", "init")  # as the README says, once
    assert run(str(script)).stdout == (
        "to +15550100: hi (key sms:1:1)\nPENDING\nWAITING\n"
        "no job of this id is stored, nor stored in this call\n"
        "['morning-digest', 'heartbeat']\n"
        "sms 1 attempt 1: ok\nfired 1, failed 0%\n"
        "urgent > normal > low\n"
    )
